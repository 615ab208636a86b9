"""A year's PRC holiday calendar from a data file: the State Council's notice, loaded without a
code change (``[workdays] calendar_files`` in gateway.toml; docs/configuration.md).

The ``holidays`` library knows a year only once a release carries its notice
(``gateway.workdays.library_published_years``); until then deadlines counted in that year are
provisional. When the notice is out, an operator writes it down in one small TOML file and
lists the file in the configuration; on the next start that year is firm::

    # The State Council's notice for 2027 (国务院办公厅关于2027年部分节假日安排的通知).
    year = 2027
    source = "https://www.gov.cn/..."          # where the notice was published (optional)

    [[holidays]]                               # every day off, one table each
    date = 2027-01-01
    name = "New Year's Day"

    [[working_weekends]]                       # adjusted working weekends (调休上班)
    date = 2027-02-20
    name = "Spring Festival"                   # what it makes up for (optional)

A file is checked strictly, so a typo stops the gateway at start instead of moving a deadline:
unknown keys, a date outside the file's year, a "working weekend" on a weekday, a day both off
and worked, or a day listed twice are refused with the file and the field
(``holidays[3].date``) or, for broken TOML, the line. A holiday may fall on a weekend (it
changes no working day but keeps the notice's list whole). A notice that moves a day in the
previous year (rare: 2002's did) is written in that year's file too.
"""

from __future__ import annotations

import datetime as dt
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from credgate.gateway.workdays import YearCalendar

MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_NAME = 100
_TOP_KEYS = {"year", "source", "holidays", "working_weekends"}
_DAY_KEYS = {"date", "name"}


class CalendarFileError(ValueError):
    """A calendar file that cannot be used; the message names the file and the field or line."""


def load_calendar_file(path: Path) -> YearCalendar:
    """Read and check one calendar file."""
    try:
        with path.open("rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise CalendarFileError(f"{path}: cannot read calendar file: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:  # its message carries the line and column
        raise CalendarFileError(f"{path}: invalid TOML: {exc}") from None
    return parse_calendar(document, str(path))


def parse_calendar(document: Mapping[str, Any], origin: str) -> YearCalendar:
    """Check a parsed calendar document (``origin`` names it in errors)."""

    def fail(where: str, problem: str) -> CalendarFileError:
        return CalendarFileError(f"{origin}: {where}: {problem}")

    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise fail(unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    year = document.get("year")
    if not isinstance(year, int) or isinstance(year, bool):
        raise fail("year", "is required and must be an integer")
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise fail("year", f"must be {MIN_YEAR} to {MAX_YEAR}")
    if "source" in document and not isinstance(document["source"], str):
        raise fail("source", "must be a string")
    holidays = _days(document, "holidays", year, fail, required=True)
    working = _days(document, "working_weekends", year, fail, required=False)
    off = {day: name for _, day, name in holidays}
    for where, day, _ in working:
        if day.weekday() < 5:
            raise fail(where, f"{day} is a weekday, not a weekend")
        if day in off:
            raise fail(where, f"{day} is also listed in holidays")
    return YearCalendar(year, off, frozenset(day for _, day, _ in working), origin)


def _days(
    document: Mapping[str, Any],
    key: str,
    year: int,
    fail: Callable[[str, str], CalendarFileError],
    *,
    required: bool,
) -> list[tuple[str, dt.date, str]]:
    """``key``'s days as (field path of the date, date, name), checked."""
    raw = document.get(key, [])
    if not isinstance(raw, list) or (required and not raw):
        problem = "is required and must be a non-empty" if required else "must be an"
        raise fail(key, f"{problem} array of tables ([[{key}]])")
    found: list[tuple[str, dt.date, str]] = []
    seen: set[dt.date] = set()
    for i, item in enumerate(raw):
        where = f"{key}[{i}]"
        if not isinstance(item, dict):
            raise fail(where, "must be a table with date and name")
        unknown = sorted(set(item) - _DAY_KEYS)
        if unknown:
            raise fail(f"{where}.{unknown[0]}", "unknown key (known: date, name)")
        day = _date(item.get("date"))
        if day is None:
            raise fail(f"{where}.date", "is required and must be a date (2027-01-01)")
        if day.year != year:
            raise fail(f"{where}.date", f"{day} is not in {year}")
        if day in seen:
            raise fail(f"{where}.date", f"{day} is listed twice")
        seen.add(day)
        name = item.get("name")
        if required and name is None:
            raise fail(f"{where}.name", "is required")
        if name is not None and (not isinstance(name, str) or not 1 <= len(name) <= MAX_NAME):
            raise fail(f"{where}.name", f"must be 1 to {MAX_NAME} characters")
        found.append((f"{where}.date", day, name or ""))
    return found


def _date(value: object) -> dt.date | None:
    """A TOML local date, or a ``YYYY-MM-DD`` string; nothing else (no times)."""
    if isinstance(value, dt.datetime):
        return None
    if isinstance(value, dt.date):
        return value
    if isinstance(value, str):
        try:
            return dt.date.fromisoformat(value) if len(value) == 10 else None
        except ValueError:
            return None
    return None
