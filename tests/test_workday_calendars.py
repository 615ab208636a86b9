"""Honest deadlines (issue 14, item 4): which years' holiday notices are published, deadlines
that reach an unpublished year marked provisional (with one warning per year), and a year's
notice loaded from a calendar file — checked strictly — that turns them firm.

The 2027 file used here (``tests/data/calendars/TEST-ONLY-2027.toml``) is made-up test data, not
the State Council's notice: it gives 2027-01-04 off and makes Saturday 2027-01-09 a working day,
which the ``holidays`` library's estimate for 2027 does not, so a test can tell the two apart.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import subprocess
import sys
from pathlib import Path

import holidays
import pytest
from holidays.countries.china import ChinaStaticHolidays

from credgate.api.credit_repair.v1 import workflow_pb2 as wf
from credgate.gateway import workdays
from credgate.gateway.calendar_file import CalendarFileError, load_calendar_file, parse_calendar
from credgate.gateway.commands.workflows import deadline_text
from credgate.gateway.config import ConfigError, config_from_mapping
from credgate.gateway.workdays import (
    BEIJING,
    WorkdayCalendar,
    library_published_years,
)
from credgate.gateway.workflows.messages import deadline

D = dt.date
TEST_2027 = Path(__file__).parent / "data" / "calendars" / "TEST-ONLY-2027.toml"
THROUGH_2026 = range(2001, 2027)
"""The published years of ``holidays`` 0.109, fixed so these tests do not change meaning when a
later release ships the 2027 notice."""


def beijing(year: int, month: int, day: int, hour: int = 10) -> dt.datetime:
    return dt.datetime(year, month, day, hour, tzinfo=BEIJING).astimezone(dt.UTC)


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts with no year warned about yet in this process."""
    monkeypatch.setattr(workdays, "_warned_years", set())


@pytest.fixture
def estimated() -> WorkdayCalendar:
    return WorkdayCalendar(library_years=THROUGH_2026)


@pytest.fixture
def loaded() -> WorkdayCalendar:
    return WorkdayCalendar(library_years=THROUGH_2026, published=[load_calendar_file(TEST_2027)])


# -- which years are published ---------------------------------------------------------------------


def test_the_published_years_are_those_whose_notice_the_library_carries() -> None:
    years = library_published_years()
    swaps = ChinaStaticHolidays.special_public_holidays
    assert min(years) == 2001
    assert max(years) == max(swaps)
    assert set(range(2001, max(swaps) + 1)) == years  # no gap: every year since 2001
    # The installed release carries the 2026 notice (tests/test_workdays.py relies on it too).
    assert 2026 in years
    # The year after the last one is an estimate: the library has no adjusted weekend for it,
    # although every published notice since 2001 has some adjusted day.
    after = max(years) + 1
    assert after not in swaps
    guessed = holidays.country_holidays("CN", years=after)
    assert not {d for d in guessed.weekend_workdays if d.year == after}


def test_the_calendar_says_which_years_are_published(
    estimated: WorkdayCalendar, loaded: WorkdayCalendar
) -> None:
    assert estimated.is_published(2026)
    assert not estimated.is_published(2027)
    assert not estimated.is_published(2000)  # before the library is checked against notices
    assert loaded.is_published(2027)
    assert not loaded.is_published(2028)
    assert loaded.loaded_years == {2027}


# -- provisional deadlines across the year boundary ------------------------------------------------


def test_a_ten_day_period_from_mid_december_2026_is_provisional_then_firm_from_the_file(
    estimated: WorkdayCalendar, loaded: WorkdayCalendar
) -> None:
    started = beijing(2026, 12, 18)  # a Friday: 9 working days are left in 2026
    guess = estimated.deadline(started, 10)
    assert guess.provisional
    assert guess.provisional_year == 2027
    assert guess.due_on == D(2027, 1, 4)  # the library's estimate: only 1 January off
    assert guess.due_text == "2027-01-04 (provisional: 2027 calendar not published)"

    firm = loaded.deadline(started, 10)
    assert not firm.provisional
    assert firm.provisional_year is None
    assert firm.due_on == D(2027, 1, 5)  # the file gives 4 January off too
    assert firm.due_at == dt.datetime(2027, 1, 5, 16, 0, tzinfo=dt.UTC)  # 24:00 Beijing
    assert firm.due_text == "2027-01-05"


def test_a_period_ending_on_the_last_working_day_of_2026_is_firm(
    estimated: WorkdayCalendar,
) -> None:
    period = estimated.deadline(beijing(2026, 12, 16), 10)
    assert period.due_on == D(2026, 12, 30)
    assert not period.provisional
    # One day later it counts 31 December only: still firm.
    assert not estimated.deadline(beijing(2026, 12, 17), 10).provisional
    # The day of the notice is not counted: a notice on 31 December reaches into 2027.
    assert estimated.deadline(beijing(2026, 12, 31), 1).provisional_year == 2027


def test_a_loaded_year_decides_its_days_holidays_and_adjusted_weekends(
    estimated: WorkdayCalendar, loaded: WorkdayCalendar
) -> None:
    saturday = D(2027, 1, 9)
    assert not estimated.is_working_day(saturday)
    assert loaded.is_working_day(saturday)  # 调休上班 in the file
    assert estimated.is_working_day(D(2027, 1, 4))
    assert not loaded.is_working_day(D(2027, 1, 4))
    assert loaded.holiday_name(D(2027, 1, 4)) == "New Year's Day bridge (test data)"
    assert loaded.holiday_name(D(2027, 1, 5)) is None
    # Days the file does not list off are ordinary: the library's 2027 Spring Festival guess
    # (6-10 February) is not used for a loaded year.
    assert loaded.is_working_day(D(2027, 2, 10))
    # Other years are untouched.
    assert loaded.is_working_day(D(2026, 2, 14))
    assert not loaded.is_working_day(D(2026, 2, 23))
    # 14 working days from 18 December: on the file, 4 January is off and the period ends on
    # the worked Saturday; on the estimate it ends on Friday 8 January.
    assert loaded.deadline(beijing(2026, 12, 18), 14).due_on == saturday
    assert estimated.deadline(beijing(2026, 12, 18), 14).due_on == D(2027, 1, 8)


def test_a_period_reaching_a_year_after_the_loaded_one_stays_provisional(
    loaded: WorkdayCalendar,
) -> None:
    period = loaded.deadline(beijing(2027, 12, 20), 10)
    assert period.provisional_year == 2028


def test_the_warning_is_logged_once_per_year(
    estimated: WorkdayCalendar, loaded: WorkdayCalendar, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="credgate.gateway.workdays")
    for day in (18, 21, 22):
        estimated.deadline(beijing(2026, 12, day), 10)
    WorkdayCalendar(library_years=THROUGH_2026).deadline(beijing(2026, 12, 23), 10)
    loaded.deadline(beijing(2026, 12, 18), 10)  # firm: no warning
    assert [r.getMessage()[:40] for r in caplog.records] == [
        "deadlines counting days in 2027 are prov"
    ]
    loaded.deadline(beijing(2027, 12, 20), 10)
    assert len(caplog.records) == 2
    assert "2028" in caplog.records[1].getMessage()


# -- what readers see ------------------------------------------------------------------------------


def test_the_api_and_the_cli_mark_a_provisional_deadline(
    estimated: WorkdayCalendar, loaded: WorkdayCalendar
) -> None:
    started = beijing(2026, 12, 18)
    guess = estimated.deadline(started, 10)
    now = beijing(2026, 12, 21)
    shown = deadline(
        wf.DEADLINE_KIND_SOURCE_REPLY,
        wf.RESPONSIBLE_PARTY_SOURCE,
        "credit-registry",
        started,
        10,
        guess.due_at,
        None,
        now,
        estimated,
    )
    assert shown.provisional
    assert shown.unpublished_calendar_year == 2027
    assert (shown.due_on.year, shown.due_on.month, shown.due_on.day) == (2027, 1, 4)
    text = deadline_text(shown)
    assert "running until 2027-01-04 (provisional: 2027 calendar not published)" in text
    assert "met" not in text.split("—")[1]

    firm = loaded.deadline(started, 10)
    shown = deadline(
        wf.DEADLINE_KIND_SOURCE_REPLY,
        wf.RESPONSIBLE_PARTY_SOURCE,
        "credit-registry",
        started,
        10,
        firm.due_at,
        None,
        now,
        loaded,
    )
    assert not shown.provisional
    assert shown.unpublished_calendar_year == 0
    assert "provisional" not in deadline_text(shown)


# -- calendar files, checked strictly --------------------------------------------------------------


def _document(**changes: object) -> dict[str, object]:
    document: dict[str, object] = {
        "year": 2027,
        "holidays": [{"date": D(2027, 1, 1), "name": "New Year's Day"}],
        "working_weekends": [{"date": D(2027, 1, 9)}],
    }
    document.update(changes)
    return {k: v for k, v in document.items() if v is not None}


@pytest.mark.parametrize(
    ("changes", "field", "problem"),
    [
        ({"yaer": 2027}, "yaer", "unknown key"),
        ({"year": None}, "year", "is required"),
        ({"year": "2027"}, "year", "must be an integer"),
        ({"year": 1899}, "year", "must be 2000 to 2100"),
        ({"holidays": []}, "holidays", "non-empty array"),
        ({"holidays": None}, "holidays", "non-empty array"),
        ({"holidays": [{"date": D(2028, 1, 1), "name": "x"}]}, "holidays[0].date", "not in 2027"),
        ({"holidays": [{"date": "2027-13-01", "name": "x"}]}, "holidays[0].date", "must be a date"),
        (
            {"holidays": [{"date": dt.datetime(2027, 1, 1, 8), "name": "x"}]},
            "holidays[0].date",
            "must be a date",
        ),
        ({"holidays": [{"date": D(2027, 1, 1)}]}, "holidays[0].name", "is required"),
        ({"holidays": [{"date": D(2027, 1, 1), "name": ""}]}, "holidays[0].name", "1 to 100"),
        (
            {
                "holidays": [
                    {"date": D(2027, 1, 1), "name": "a"},
                    {"date": D(2027, 1, 1), "name": "b"},
                ]
            },
            "holidays[1].date",
            "listed twice",
        ),
        (
            {"holidays": [{"date": D(2027, 1, 1), "name": "a", "off": True}]},
            "holidays[0].off",
            "unknown key",
        ),
        ({"working_weekends": [{"date": D(2027, 1, 8)}]}, "working_weekends[0].date", "weekday"),
        (
            {
                "holidays": [{"date": D(2027, 1, 9), "name": "a Saturday off"}],
                "working_weekends": [{"date": D(2027, 1, 9)}],
            },
            "working_weekends[0].date",
            "also listed in holidays",
        ),
        ({"working_weekends": "2027-01-09"}, "working_weekends", "array of tables"),
        ({"source": 7}, "source", "must be a string"),
    ],
)
def test_a_bad_calendar_is_refused_naming_the_field(
    changes: dict[str, object], field: str, problem: str
) -> None:
    with pytest.raises(CalendarFileError) as caught:
        parse_calendar(_document(**changes), "cal.toml")
    message = str(caught.value)
    assert message.startswith(f"cal.toml: {field}: ")
    assert problem in message


def test_a_good_calendar_parses_with_string_or_toml_dates() -> None:
    year = parse_calendar(
        _document(holidays=[{"date": "2027-01-01", "name": "New Year's Day"}]), "cal.toml"
    )
    assert year.year == 2027
    assert dict(year.holidays) == {D(2027, 1, 1): "New Year's Day"}
    assert year.working_weekends == {D(2027, 1, 9)}


def _config(files: list[str]) -> dict[str, object]:
    return {"workdays": {"calendar_files": files}}


def test_the_configuration_loads_calendar_files_relative_to_itself(tmp_path: Path) -> None:
    (tmp_path / "calendars").mkdir()
    (tmp_path / "calendars" / "2027.toml").write_bytes(TEST_2027.read_bytes())
    config = config_from_mapping(_config(["calendars/2027.toml"]), base_dir=tmp_path, environ={})
    assert config.workdays.calendar_files == (tmp_path / "calendars" / "2027.toml",)
    [year] = config.workdays.calendars
    assert year.year == 2027
    assert WorkdayCalendar(published=config.workdays.calendars).is_published(2027)
    assert config_from_mapping({}, base_dir=tmp_path, environ={}).workdays.calendars == ()


def test_a_bad_calendar_file_stops_the_start_naming_file_and_field_or_line(
    tmp_path: Path,
) -> None:
    bad = tmp_path / "2027.toml"
    bad.write_text(
        'year = 2027\n[[holidays]]\ndate = 2027-01-08\nname = "x"\n'
        "[[working_weekends]]\ndate = 2027-01-08\n"
    )
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_config(["2027.toml"]), base_dir=tmp_path, environ={})
    assert str(caught.value) == (
        f"workdays.calendar_files[0]: {bad}: working_weekends[0].date: 2027-01-08 is a "
        "weekday, not a weekend"
    )

    bad.write_text("year = 2027\n[[holidays]]\ndate = 2027-01-0\n")
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_config(["2027.toml"]), base_dir=tmp_path, environ={})
    assert str(caught.value).startswith(f"workdays.calendar_files[0]: {bad}: invalid TOML")
    assert "line 3" in str(caught.value)

    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_config(["missing.toml"]), base_dir=tmp_path, environ={})
    assert f"{tmp_path / 'missing.toml'}: cannot read calendar file" in str(caught.value)


def test_two_files_for_one_year_are_refused(tmp_path: Path) -> None:
    for name in ("a.toml", "b.toml"):
        (tmp_path / name).write_bytes(TEST_2027.read_bytes())
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(_config(["a.toml", "b.toml"]), base_dir=tmp_path, environ={})
    assert "calendar_files[1]" in str(caught.value)
    assert "year 2027 is already loaded from" in str(caught.value)
    with pytest.raises(ValueError, match="two calendars for 2027"):
        WorkdayCalendar(published=[load_calendar_file(TEST_2027)] * 2)


def test_calendar_files_can_come_from_the_environment(tmp_path: Path) -> None:
    config = config_from_mapping(
        {}, base_dir=tmp_path, environ={"CREDGATE_WORKDAYS_CALENDAR_FILES": str(TEST_2027)}
    )
    assert [c.year for c in config.workdays.calendars] == [2027]


def test_credgate_serve_with_a_bad_calendar_file_exits_2_naming_it_without_a_traceback(
    tmp_path: Path,
) -> None:
    (tmp_path / "2027.toml").write_text(
        'year = 2027\n[[holidays]]\ndate = 2027-01-01\nname = "x"\nbridge = true\n'
    )
    (tmp_path / "gateway.toml").write_text('[workdays]\ncalendar_files = ["2027.toml"]\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    result = subprocess.run(
        [sys.executable, "-m", "credgate.gateway.cli", "serve", "--config", "gateway.toml"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert (
        f"workdays.calendar_files[0]: {tmp_path / '2027.toml'}: holidays[0].bridge: unknown key"
        in result.stderr
    )
    assert "Traceback" not in result.stderr + result.stdout
