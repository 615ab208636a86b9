"""Small server-rendered SVG charts for the console: no JavaScript, no inline style.

The console's Content-Security-Policy forbids inline scripts and ``style`` attributes, and the
pages must work without JavaScript, so a chart is an ``<svg>`` element written here and placed
in the page as it is. Colours are presentation attributes (``fill="#1f5fa8"``), which the
policy allows. Every drawn value is a ``<rect class="bar">`` carrying its numbers in ``data-*``
attributes and a ``<title>`` (the browser's tooltip, and what a screen reader or a test reads),
so what a chart shows can be checked element by element against the data it was drawn from.

Two shapes cover the Reports page: ``bar_chart`` (vertical bars in groups, each bar a stack of
segments: accesses per institution per day, allowed and denied; a histogram is groups of one
bar of one segment) and ``row_chart`` (horizontal rows, each with side-by-side bars: denials by
reason, subjects without consent per institution). Text goes through ``xml_escape``; every
caller-provided string is treated as untrusted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

from markupsafe import Markup

PALETTE = ("#1f5fa8", "#b3261e", "#1d7a3a", "#8a5a00", "#6b3fa0", "#0f7c86")
"""Fills for the series, in order: blue, red, green, amber, purple, teal."""
AXIS = "#5b6675"
GRID = "#d8dde5"
FONT = 'font-family="system-ui, sans-serif" font-size="11"'


@dataclass(frozen=True)
class Segment:
    """One value drawn: a stacked part of a bar, or one bar of a row."""

    value: int
    series: str
    """Which series it belongs to (a legend entry); picks the fill."""
    title: str
    """The tooltip: the value in words."""
    data: Mapping[str, str] = field(default_factory=dict)
    """``data-*`` attributes (without the prefix) besides ``data-value`` and ``data-series``."""


@dataclass(frozen=True)
class Bar:
    """A vertical bar of stacked segments (``bar_chart``), or a row (``row_chart``)."""

    label: str
    segments: tuple[Segment, ...]


@dataclass(frozen=True)
class Group:
    """Bars side by side under one label (a day)."""

    label: str
    bars: tuple[Bar, ...]


def nice_ceiling(value: int) -> int:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` (at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** (len(str(value)) - 1)  # exact, unlike log10 near powers of ten
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power  # pragma: no cover - the loop always returns


def tick_values(peak: int) -> list[int]:
    """Whole-number gridline values from 0 to ``peak`` (a ``nice_ceiling``): five steps when
    ``peak`` divides by five, else one per unit (``peak`` is then 1 or 2)."""
    steps = 5 if peak % 5 == 0 else peak
    return [peak * i // steps for i in range(steps + 1)]


def _attrs(values: Mapping[str, str | int | float]) -> str:
    return " ".join(f"{name}={quoteattr(str(value))}" for name, value in values.items())


def _fills(series: Sequence[str]) -> dict[str, str]:
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}


def _legend(series: Sequence[str], labels: Mapping[str, str], x: float, y: float) -> list[str]:
    fills = _fills(series)
    parts = []
    for name in series:
        text = labels.get(name, name)
        parts.append(
            f'<rect x="{x:.1f}" y="{y - 9:.1f}" width="10" height="10" fill="{fills[name]}"/>'
            f'<text x="{x + 14:.1f}" y="{y:.1f}" {FONT} fill="{AXIS}">{escape(text)}</text>'
        )
        x += 24 + 7 * len(text)
    return parts


def _open(chart_id: str, title: str, width: int, height: int, css_class: str = "") -> list[str]:
    classes = quoteattr(f"chart {css_class}".strip())
    return [
        f'<svg xmlns="http://www.w3.org/2000/svg" id={quoteattr(chart_id)} class={classes} '
        f'role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f"aria-label={quoteattr(title)}>",
        f"<title>{escape(title)}</title>",
    ]


def _segment_rect(segment: Segment, fill: str, x: float, y: float, w: float, h: float) -> str:
    data: dict[str, str | int | float] = {
        "data-value": segment.value,
        "data-series": segment.series,
    }
    data.update({f"data-{name}": value for name, value in segment.data.items()})
    return (
        f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" '
        f'fill="{fill}" {_attrs(data)}><title>{escape(segment.title)}</title></rect>'
    )


def bar_chart(
    groups: Sequence[Group],
    *,
    chart_id: str,
    title: str,
    series: Sequence[str],
    series_labels: Mapping[str, str] | None = None,
    height: int = 260,
    bar_width: int = 18,
    peak: int = 0,
    css_class: str = "",
) -> Markup:
    """Vertical stacked bars in labelled groups, a y axis with whole-number gridlines, a legend.

    ``peak`` fixes the top of the scale (so several charts compare at a glance); 0 scales to
    the tallest bar. A zero segment is not drawn (a rect of height 0 shows nothing and would
    only confuse a count of what is drawn); a group with no bars still takes its place.
    """
    labels = dict(series_labels or {})
    fills = _fills(series)
    top, bottom, left, right = 28, 40, 44, 12
    gap = bar_width // 2
    widths = [max(len(g.bars), 1) * (bar_width + 2) + gap * 2 for g in groups]
    width = max(left + sum(widths) + right, 240)
    plot = height - top - bottom
    tallest = max((sum(s.value for s in b.segments) for g in groups for b in g.bars), default=0)
    peak = nice_ceiling(max(peak, tallest))
    parts = _open(chart_id, title, width, height, css_class)
    for value in tick_values(peak):
        y = top + plot - plot * value / peak
        parts.append(
            f'<line x1="{left}" y1="{y:.1f}" x2="{width - right}" y2="{y:.1f}" stroke="{GRID}"/>'
            f'<text x="{left - 4}" y="{y + 4:.1f}" {FONT} fill="{AXIS}" text-anchor="end">'
            f"{value}</text>"
        )
    x = float(left)
    for group, group_width in zip(groups, widths, strict=True):
        bar_x = x + gap
        for bar in group.bars:
            y = float(top + plot)
            for segment in bar.segments:
                if segment.value <= 0:
                    continue
                h = plot * segment.value / peak
                y -= h
                parts.append(_segment_rect(segment, fills[segment.series], bar_x, y, bar_width, h))
            bar_x += bar_width + 2
        parts.append(
            f'<text x="{x + group_width / 2:.1f}" y="{top + plot + 14}" {FONT} fill="{AXIS}" '
            f'text-anchor="middle" class="group-label">{escape(group.label)}</text>'
        )
        x += group_width
    parts.append(
        f'<line x1="{left}" y1="{top + plot}" x2="{width - right}" y2="{top + plot}" '
        f'stroke="{AXIS}"/>'
    )
    parts += _legend(series, labels, left, height - 8) if len(series) > 1 else []
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above


def row_chart(
    rows: Sequence[Bar],
    *,
    chart_id: str,
    title: str,
    series: Sequence[str],
    series_labels: Mapping[str, str] | None = None,
    width: int = 560,
    bar_height: int = 12,
) -> Markup:
    """Horizontal rows, label on the left, one bar per segment side by side, value at its end."""
    labels = dict(series_labels or {})
    fills = _fills(series)
    label_width = min(max((len(r.label) for r in rows), default=4) * 7 + 8, 220)
    per_row = max((len(r.segments) for r in rows), default=1) * (bar_height + 2) + 8
    top, legend = 8, (22 if len(series) > 1 else 0)
    height = top + per_row * max(len(rows), 1) + legend + 4
    plot = width - label_width - 48
    peak = nice_ceiling(max((s.value for r in rows for s in r.segments), default=0))
    parts = _open(chart_id, title, width, height)
    y = float(top)
    for row in rows:
        middle = y + (per_row - 8) / 2 + 4
        parts.append(
            f'<text x="{label_width - 6}" y="{middle:.1f}" {FONT} fill="{AXIS}" '
            f'text-anchor="end" class="row-label">{escape(row.label)}</text>'
        )
        bar_y = y
        for segment in row.segments:
            if segment.value <= 0:  # not drawn, as in bar_chart; its slot stays empty
                bar_y += bar_height + 2
                continue
            w = plot * segment.value / peak
            parts.append(
                _segment_rect(segment, fills[segment.series], label_width, bar_y, w, bar_height)
            )
            parts.append(
                f'<text x="{label_width + w + 4:.1f}" y="{bar_y + bar_height - 2:.1f}" {FONT} '
                f'fill="{AXIS}">{segment.value}</text>'
            )
            bar_y += bar_height + 2
        y += per_row
    if legend:
        parts += _legend(series, labels, label_width, height - 8)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text is escaped above
