"""Working days on the PRC public-holiday calendar, for the deadlines of the measures (Art. 16).

Art. 16 counts in working days: the subject files with the information provider within 5
working days of being told to, the provider answers in writing within 10 working days of
receiving the application. A PRC working day is not "Monday to Friday minus the holidays":
every year the State Council moves days around the Spring Festival, National Day and other
holidays, so some Saturdays and Sundays are working days (调休上班) and some weekdays are not.
Those notices change every year, so the calendar comes from a maintained library
(``holidays.China``, which carries each year's adjusted working weekends as
``weekend_workdays``) rather than a hand-made list that would silently go stale.

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
import threading
from dataclasses import dataclass

import holidays

BEIJING = dt.timezone(dt.timedelta(hours=8), "CST")
"""China Standard Time: the calendar the measures' deadlines are counted in."""
MAX_WORKING_DAYS = 366
"""Longer periods are not a deadline of these workflows; refused to bound the day walk."""


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

    Safe to share: the underlying calendar fills in years lazily, so lookups are serialized.
    """

    def __init__(self, calendar: holidays.HolidayBase | None = None) -> None:
        self._calendar = calendar if calendar is not None else holidays.country_holidays("CN")
        self._lock = threading.Lock()

    def is_working_day(self, day: dt.date) -> bool:
        """Whether people work on ``day`` in mainland China (adjusted weekends included)."""
        with self._lock:
            return bool(self._calendar.is_working_day(day))

    def holiday_name(self, day: dt.date) -> str | None:
        """The holiday's name (English), or ``None`` on a day that is no public holiday."""
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
        """The period of ``working_days`` that starts with a notice (or receipt) at an instant."""
        start = beijing_date(notified_at)
        due_on = self.add_working_days(start, working_days)
        return Deadline(start, working_days, due_on, end_of_day(due_on))
