"""Small helpers shared by the native renderers of the bank and department mocks.

They keep every mock deterministic — the same population gives the same query ids, as-of
times and sequence of malformed payloads on every run — so a test can name the exact
breakage it expects instead of hoping a random draw produced it.
"""

from __future__ import annotations

import datetime as dt

from credgate.adapters.mocks.population import REFERENCE_TIME, SourceView, State, Subject


def source_as_of(lag: dt.timedelta) -> dt.datetime:
    """The source's own "data as of" clock: the population's reference time minus its lag."""
    return REFERENCE_TIME - lag


class MalformedCycle:
    """Round-robin over a mock's malformed variants.

    ``cursor`` is public so a test (or an integrator reproducing a failure) can pick the next
    variant: ``mock.malformed.select("entity_bomb")``.
    """

    def __init__(self, variants: tuple[str, ...]) -> None:
        if not variants:
            raise ValueError("a mock needs at least one malformed variant")
        self.variants = variants
        self.cursor = 0

    def next(self) -> str:
        variant = self.variants[self.cursor % len(self.variants)]
        self.cursor += 1
        return variant

    def select(self, variant: str) -> None:
        self.cursor = self.variants.index(variant)


class QueryIds:
    """Sequential query serial numbers in a source's own style (prefix + date + counter)."""

    def __init__(self, prefix: str, width: int = 8) -> None:
        self._prefix = prefix
        self._width = width
        self._counter = 0

    def next(self) -> str:
        self._counter += 1
        return f"{self._prefix}{REFERENCE_TIME:%Y%m%d}{self._counter:0{self._width}d}"


def exemption_date(subject: Subject, view: SourceView) -> dt.date | None:
    """The day the exemption took effect, if a source of this kind has recorded it."""
    if subject.state_seen_by(view) is State.RESTORED and subject.case is not None:
        return subject.case.restored_on
    return None


def yuan(fen: int) -> str:
    """Fen as a yuan string with two decimals, without going through floats."""
    return f"{fen // 100}.{fen % 100:02d}"
