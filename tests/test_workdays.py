"""Working-day deadlines on the PRC calendar (measures Art. 16): 5 working days for the subject
to file with the provider, 10 for the provider's written reply.

The expected dates are worked out by hand from the State Council's holiday notices for 2025 and
2026 (Spring Festival and National Day, with their adjusted working weekends), which is what
the ``holidays`` library must reproduce.
"""

from __future__ import annotations

import datetime as dt

import pytest

from credgate.gateway.workdays import BEIJING, WorkdayCalendar, beijing_date, end_of_day

D = dt.date


@pytest.fixture(scope="module")
def calendar() -> WorkdayCalendar:
    return WorkdayCalendar()


@pytest.mark.parametrize(
    ("day", "working"),
    [
        (D(2025, 1, 26), True),  # Sunday worked for the 2025 Spring Festival
        (D(2025, 2, 8), True),  # Saturday worked for the 2025 Spring Festival
        (D(2025, 1, 29), False),  # Spring Festival
        (D(2025, 2, 4), False),  # weekday given off in exchange
        (D(2025, 9, 28), True),  # Sunday worked for the 2025 National Day
        (D(2025, 10, 11), True),  # Saturday worked for the 2025 National Day
        (D(2025, 10, 8), False),  # weekday given off in exchange
        (D(2026, 2, 14), True),  # Saturday worked for the 2026 Spring Festival
        (D(2026, 2, 28), True),  # Saturday worked for the 2026 Spring Festival
        (D(2026, 2, 23), False),  # Monday given off in exchange
        (D(2026, 9, 20), True),  # Sunday worked for the 2026 National Day
        (D(2026, 10, 10), True),  # Saturday worked for the 2026 National Day
        (D(2026, 10, 7), False),  # Wednesday given off in exchange
        (D(2026, 10, 17), False),  # an ordinary Saturday
        (D(2026, 10, 16), True),  # an ordinary Friday
    ],
)
def test_adjusted_weekends_and_holidays_are_on_the_official_calendar(
    calendar: WorkdayCalendar, day: dt.date, working: bool
) -> None:
    assert calendar.is_working_day(day) is working


@pytest.mark.parametrize(
    ("notified_on", "days", "due_on"),
    [
        # 2025 Spring Festival: Sun 26 Jan worked, 28 Jan - 4 Feb off, Sat 8 Feb worked.
        (D(2025, 1, 24), 5, D(2025, 2, 7)),
        (D(2025, 1, 27), 10, D(2025, 2, 17)),
        # 2025 National Day: Sun 28 Sep worked, 1-8 Oct off, Sat 11 Oct worked.
        (D(2025, 9, 26), 5, D(2025, 10, 10)),
        (D(2025, 9, 30), 10, D(2025, 10, 21)),
        # 2026 Spring Festival: Sat 14 Feb worked, 15-23 Feb off, Sat 28 Feb worked.
        (D(2026, 2, 13), 5, D(2026, 2, 27)),
        (D(2026, 2, 13), 10, D(2026, 3, 5)),
        # 2026 Mid-Autumn and National Day: Sun 20 Sep worked, 25 Sep off, 1-7 Oct off,
        # Sat 10 Oct worked.
        (D(2026, 9, 18), 5, D(2026, 9, 24)),
        (D(2026, 9, 24), 10, D(2026, 10, 15)),
    ],
)
def test_deadlines_count_working_days_across_the_long_holidays(
    calendar: WorkdayCalendar, notified_on: dt.date, days: int, due_on: dt.date
) -> None:
    assert calendar.add_working_days(notified_on, days) == due_on
    assert calendar.working_days_after(notified_on, due_on) == days


def test_the_day_of_notice_is_not_counted_and_a_holiday_end_moves_on(
    calendar: WorkdayCalendar,
) -> None:
    # Notified on a working Friday: day one is the next working day, not the Friday itself.
    assert calendar.add_working_days(D(2026, 10, 16), 1) == D(2026, 10, 19)
    # Notified on a holiday: counting starts after it, on the next working day.
    assert calendar.add_working_days(D(2026, 10, 1), 1) == D(2026, 10, 8)


def test_a_deadline_ends_at_midnight_beijing_time_counted_from_the_beijing_date(
    calendar: WorkdayCalendar,
) -> None:
    # 17:00 UTC on 12 Feb is already 01:00 on 13 Feb in Beijing.
    notified = dt.datetime(2026, 2, 12, 17, 0, tzinfo=dt.UTC)
    deadline = calendar.deadline(notified, 5)
    assert deadline.starts_after == D(2026, 2, 13)
    assert deadline.due_on == D(2026, 2, 27)
    assert deadline.due_at == dt.datetime(2026, 2, 28, 0, 0, tzinfo=BEIJING)
    assert not deadline.overdue(deadline.due_at - dt.timedelta(seconds=1))
    assert deadline.overdue(deadline.due_at)


def test_naive_instants_and_unbounded_periods_are_refused(calendar: WorkdayCalendar) -> None:
    with pytest.raises(ValueError, match="naive"):
        beijing_date(dt.datetime(2026, 1, 1, 12, 0))
    with pytest.raises(ValueError, match="count"):
        calendar.add_working_days(D(2026, 1, 1), 0)
    assert end_of_day(D(2026, 1, 1)) == dt.datetime(2026, 1, 1, 16, 0, tzinfo=dt.UTC)
    assert calendar.holiday_name(D(2026, 10, 1)) == "National Day"
    assert calendar.holiday_name(D(2026, 10, 16)) is None
