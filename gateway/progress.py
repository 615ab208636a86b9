"""Progress for long command-line work: a bar on stderr, only when someone is watching.

Output is data and progress is not, so progress goes to stderr, and only when stderr is a
terminal or the user asked with ``--progress``. On a terminal it is one line rewritten in place
(at most ten times a second); forced off a terminal (a CI log) it is one plain line per tenth
of the work, so the log shows it without a flood. ``--no-progress`` silences it everywhere.

    add_progress_argument(parser)                      # --progress / --no-progress
    with Progress("re-encrypting", total, enabled=args.progress, unit="records") as progress:
        for batch in batches:
            ...
            progress.advance(len(batch))

A ``Progress`` is also a ``(done, total)`` callable, the shape ``audit.verify`` reports through.
Only the standard library is imported, so any command can use it without loading the gateway.
"""

from __future__ import annotations

import argparse
import sys
import time
from types import TracebackType
from typing import TextIO

_BAR_WIDTH = 24
_UNKNOWN_TOTAL_LOG_SECONDS = 5.0


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: only on a terminal) as ``args.progress``."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress on stderr (default: only when stderr is a terminal)",
    )


class Progress:
    """``done`` out of ``total`` (None if unknown) units of work, shown on ``stream``."""

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        unit: str = "",
        min_interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self._tty = _isatty(self._stream)
        self.active = self._tty if enabled is None else enabled
        self._unit = f" {unit}" if unit else ""
        self._min_interval = min_interval
        self._started = time.monotonic()
        self._last_shown = -1.0
        self._last_tenth = -1
        self._width = 0

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __call__(self, done: int, total: int | None = None) -> None:
        """Report ``done`` so far (and the total, if it became known): a progress callback."""
        self.update(done, total)

    def advance(self, count: int = 1) -> None:
        """``count`` more units are done."""
        self.update(self.done + count)

    def update(self, done: int, total: int | None = None) -> None:
        """``done`` units are done in all."""
        self.done = done
        if total is not None:
            self.total = total
        if not self.active:
            return
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if self._tty:
            if now - self._last_shown < self._min_interval and not finished:
                return
        elif self.total:
            tenth = min(10, done * 10 // self.total)
            if tenth == self._last_tenth:
                return
            self._last_tenth = tenth
        elif now - self._last_shown < _UNKNOWN_TOTAL_LOG_SECONDS:
            return
        self._last_shown = now
        self._show(self.render(now))

    def render(self, now: float | None = None) -> str:
        """The progress line as it would be shown now."""
        elapsed = (time.monotonic() if now is None else now) - self._started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        if not self.total:
            return f"{self.label}: {self.done:,}{self._unit}, {rate:,.0f}/s"
        fraction = min(1.0, self.done / self.total)
        filled = int(fraction * _BAR_WIDTH)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        remaining = (self.total - self.done) / rate if rate > 0 else 0.0
        return (
            f"{self.label} [{bar}] {fraction:4.0%} {self.done:,}/{self.total:,}{self._unit}"
            f" {rate:,.0f}/s ETA {max(0.0, remaining):.0f}s"
        )

    def _show(self, line: str) -> None:
        if self._tty:
            padding = " " * max(0, self._width - len(line))
            self._width = len(line)
            self._stream.write("\r" + line + padding)
        else:
            self._stream.write(line + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Show the final state and end the line."""
        if not self.active:
            return
        if self._tty:
            self._show(self.render())
            self._stream.write("\n")
            self._stream.flush()
        elif self._last_shown < 0 or (self.total and self._last_tenth < 10):
            self._show(self.render())
        self.active = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
