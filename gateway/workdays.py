"""Working days on the PRC public-holiday calendar, for the deadlines of the measures (Art. 16).

Art. 16 counts in working days: the subject files with the information provider within 5
working days of being told to, the provider answers in writing within 10 working days of
receiving the application. A PRC working day is not "Monday to Friday minus the holidays":
every year the State Council moves days around the Spring Festival, National Day and other
holidays, so some Saturdays and Sundays are working days (调休上班) and some weekdays are not.
Those notices change every year, so the calendar comes from a maintained library
(``holidays.China``, which carries each year's adjusted working weekends as
``weekend_workdays``) rather than a hand-made list that would silently go stale.

**Published years.** The State Council publishes a year's notice late in the year before, and
the library knows only the notices shipped in its release; for later years it *guesses* (the
statutory holidays without the adjusted weekends). ``library_published_years`` says which
years the installed library carries a notice for (the years of ``ChinaStaticHolidays``'s
adjustments: each notice since 2001 moves some day, so a year without one is a year whose
notice the library has not seen). An operator extends them without a code change by loading
a year's notice from a calendar file (``gateway.calendar_file``, ``[workdays]`` in
gateway.toml), which then decides that year. A deadline whose counted days touch a year that
is neither is *provisional* (``Deadline.provisional_year``): the API, the CLI and the
subject's view say so, and a warning is logged once per year per process.

Counting follows the PRC rule for periods (Civil Procedure Law Art. 85): the day on which a
period starts is not counted, and the period ends at the end (24:00 Beijing time) of its last
day. Dates are Beijing dates; instants are timezone-aware and converted here, so a notice at
23:30 UTC counts from the next Beijing day.

    calendar = WorkdayCalendar()
    calendar.add_working_days(dt.date(2026, 2, 13), 5)   # 2026-02-27: Feb 14 (a Saturday) is
                                                         # worked, the Spring Festival is not
    calendar.deadline(notified_at, 10).due_at            # 24:00 Beijing time on the 10th day
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import holidays
from holidays.countries.china import ChinaStaticHolidays

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")
"""China Standard Time: the calendar the measures' deadlines are counted in."""
MAX_WORKING_DAYS = 366
"""Longer periods are not a deadline of these workflows; refused to bound the day walk."""
FIRST_CHECKED_YEAR = 2001
"""The first year ``holidays.China`` is checked against the State Council's notice (its
docstring: "Only checked with the official General Office of the State Council Notice from
2001 onwards")."""

log = logging.getLogger(__name__)
_warned_years: set[int] = set()
"""Years already warned about in this process (``WorkdayCalendar`` warns once per year)."""
_warned_lock = threading.Lock()


def library_published_years() -> frozenset[int]:
    """The years whose State Council holiday notice the installed ``holidays`` carries.

    Every notice since 2001 swaps some weekdays off for worked weekends (or extends a
    holiday), and the library records those swaps per year in
    ``ChinaStaticHolidays.special_public_holidays``; its own limitation note says the years
    before 2001 are unchecked. So the published years are 2001 through the last year that has
    swaps: the notice the release shipped last. Years after it are the library's estimate."""
    swaps = ChinaStaticHolidays.special_public_holidays
    return frozenset(range(FIRST_CHECKED_YEAR, max(swaps) + 1))


@dataclass(frozen=True)
class YearCalendar:
    """One year's published calendar, as an operator loaded it (``gateway.calendar_file``).

    For its year it replaces the library: a day is a working day when it is an adjusted
    working weekend (调休上班), or a weekday that is no listed holiday."""

    year: int
    holidays: Mapping[dt.date, str]
    """Every day off in the notice (statutory holidays and the weekdays given off for them)."""
    working_weekends: frozenset[dt.date]
    origin: str = field(default="", compare=False)
    """Where it was loaded from (a file path), for messages."""

    def is_working_day(self, day: dt.date) -> bool:
        if day in self.working_weekends:
            return True
        return day.weekday() < 5 and day not in self.holidays


@dataclass(frozen=True)
class Deadline:
    """The last day of a period and the instant it ends (24:00 Beijing time, in UTC)."""

    starts_after: dt.date
    """The Beijing date the period starts from (not itself counted)."""
    working_days: int
    due_on: dt.date
    """The last working day of the period (inclusive)."""
    due_at: dt.datetime
    """The end of ``due_on``: the first instant at which the period has run out (UTC)."""
    provisional_year: int | None = None
    """The first year the period counts days in whose holiday notice is not published (not in
    the library, not loaded from a file): ``due_on`` is then an estimate. ``None``: firm."""

    @property
    def provisional(self) -> bool:
        return self.provisional_year is not None

    @property
    def due_text(self) -> str:
        """The last day as step notes give it, marked when it is an estimate."""
        if self.provisional_year is None:
            return f"{self.due_on}"
        return f"{self.due_on} ({provisional_words(self.provisional_year)})"

    def overdue(self, now: dt.datetime) -> bool:
        """Whether the period has run out at ``now`` (timezone-aware)."""
        return now >= self.due_at


def beijing_date(moment: dt.datetime) -> dt.date:
    """The Beijing calendar date of an aware instant."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("naive datetime: pass a timezone-aware instant")
    return moment.astimezone(BEIJING).date()


def end_of_day(day: dt.date) -> dt.datetime:
    """24:00 Beijing time at the end of ``day``, as an aware UTC instant."""
    midnight = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(), BEIJING)
    return midnight.astimezone(dt.UTC)


class WorkdayCalendar:
    """PRC working days: weekdays that are no public holiday, plus adjusted working weekends.

    ``published`` are the years an operator loaded from calendar files; they decide their
    year, and with ``library_years`` (default: ``library_published_years()``) make up the
    years whose deadlines are firm. Safe to share: the underlying calendar fills in years
    lazily, so lookups are serialized.
    """

    def __init__(
        self,
        calendar: holidays.HolidayBase | None = None,
        *,
        published: Iterable[YearCalendar] = (),
        library_years: Iterable[int] | None = None,
    ) -> None:
        self._calendar = calendar if calendar is not None else holidays.country_holidays("CN")
        self._lock = threading.Lock()
        self._loaded: dict[int, YearCalendar] = {}
        for year in published:
            if year.year in self._loaded:
                raise ValueError(f"two calendars for {year.year}")
            self._loaded[year.year] = year
        self._library_years = frozenset(
            library_published_years() if library_years is None else library_years
        )

    @property
    def loaded_years(self) -> frozenset[int]:
        """The years loaded from calendar files."""
        return frozenset(self._loaded)

    def is_published(self, year: int) -> bool:
        """Whether ``year``'s holiday notice is known: loaded from a file or in the library."""
        return year in self._loaded or year in self._library_years

    def first_unpublished(self, after: dt.date, through: dt.date) -> int | None:
        """The first year of the days after ``after`` up to ``through`` whose notice is not
        published (``None`` when every one is): what makes a period counted there provisional."""
        first = (after + dt.timedelta(days=1)).year
        return next((y for y in range(first, through.year + 1) if not self.is_published(y)), None)

    def is_working_day(self, day: dt.date) -> bool:
        """Whether people work on ``day`` in mainland China (adjusted weekends included)."""
        loaded = self._loaded.get(day.year)
        if loaded is not None:
            return loaded.is_working_day(day)
        with self._lock:
            return bool(self._calendar.is_working_day(day))

    def holiday_name(self, day: dt.date) -> str | None:
        """The holiday's name (English; a loaded year's as its file gives it), or ``None`` on
        a day that is no public holiday."""
        loaded = self._loaded.get(day.year)
        if loaded is not None:
            return loaded.holidays.get(day)
        with self._lock:
            name = self._calendar.get(day)
        return str(name) if name is not None else None

    def add_working_days(self, start: dt.date, count: int) -> dt.date:
        """The ``count``-th working day after ``start`` (``start`` itself is not counted)."""
        if not 1 <= count <= MAX_WORKING_DAYS:
            raise ValueError(f"count must be 1 to {MAX_WORKING_DAYS} working days")
        day, found = start, 0
        while found < count:
            day += dt.timedelta(days=1)
            if self.is_working_day(day):
                found += 1
        return day

    def working_days_after(self, start: dt.date, until: dt.date) -> int:
        """How many working days lie after ``start`` up to and including ``until``."""
        day, found = start, 0
        while day < until:
            day += dt.timedelta(days=1)
            found += self.is_working_day(day)
        return found

    def deadline(self, notified_at: dt.datetime, working_days: int) -> Deadline:
        """The period of ``working_days`` that starts with a notice (or receipt) at an instant;
        provisional (and warned about, once per year) when it counts days in a year whose
        notice is not published."""
        start = beijing_date(notified_at)
        due_on = self.add_working_days(start, working_days)
        missing = self.first_unpublished(start, due_on)
        if missing is not None:
            warn_unpublished(missing)
        return Deadline(start, working_days, due_on, end_of_day(due_on), missing)


def warn_unpublished(year: int) -> None:
    """Log, once per year in this process, that deadlines counted in ``year`` are estimates."""
    with _warned_lock:
        if year in _warned_years:
            return
        _warned_years.add(year)
    log.warning(
        "deadlines counting days in %d are provisional: the State Council's %d holiday notice "
        "is not in the installed holidays library nor in a [workdays] calendar file, so the "
        "working days of %d are estimated (load the notice with [workdays] calendar_files)",
        year,
        year,
        year,
    )


def provisional_words(year: int) -> str:
    """How a provisional deadline is marked for people (CLI, next-step texts, step notes)."""
    return f"provisional: {year} calendar not published"
