"""Quiet hours (shared/quiet.py), with plain data."""

from __future__ import annotations

import calendar
import time

import pytest

from shared.quiet import QuietHours, QuietHoursError, parse


def at(text: str) -> float:
    """A UTC time of day on 2026-12-07 (a Monday) as a timestamp."""
    return float(calendar.timegm(time.strptime(f"2026-12-07 {text}", "%Y-%m-%d %H:%M")))


def test_a_window_over_midnight_is_quiet_late_and_early_but_not_by_day() -> None:
    quiet = parse("22:00-08:00")
    assert quiet == QuietHours(22 * 60, 8 * 60, "UTC")
    assert [quiet.active(at(t)) for t in ("21:59", "22:00", "03:00", "07:59", "08:00")] \
        == [False, True, True, True, False]


def test_it_ends_at_the_next_end_of_the_window() -> None:
    quiet = parse("22:00-08:00")
    assert quiet is not None
    assert quiet.ends(at("23:30")) == at("08:00") + 86400  # tomorrow morning
    assert quiet.ends(at("03:00")) == at("08:00")
    assert quiet.ends(at("12:00")) == at("12:00"), "not quiet: now"


def test_a_window_within_a_day_and_a_time_zone() -> None:
    quiet = parse(" 12:30 - 13:30  Asia/Shanghai ")  # UTC+8: 04:30-05:30 UTC
    assert quiet is not None and str(quiet) == "12:30-13:30 Asia/Shanghai"
    assert [quiet.active(at(t)) for t in ("04:29", "04:30", "05:29", "05:30")] \
        == [False, True, True, False]
    assert quiet.ends(at("05:00")) == at("05:30")


def test_the_wall_clock_follows_daylight_saving_time() -> None:
    quiet = parse("22:00-07:00 Europe/Berlin")  # UTC+1 in winter, UTC+2 in summer
    assert quiet is not None
    # 05:30 UTC is 06:30 in Berlin in January (quiet) and 07:30 in July (not)
    winter = float(calendar.timegm(time.strptime("2026-01-15 05:30", "%Y-%m-%d %H:%M")))
    summer = float(calendar.timegm(time.strptime("2026-07-15 05:30", "%Y-%m-%d %H:%M")))
    assert quiet.active(winter) and not quiet.active(winter + 3600)
    assert not quiet.active(summer) and quiet.active(summer - 3600)
    assert quiet.ends(summer - 3600) == summer - 1800  # 07:00 Berlin summer time


@pytest.mark.parametrize("text", ["", "  ", "off", "OFF"])
def test_empty_or_off_is_none(text: str) -> None:
    assert parse(text) is None


@pytest.mark.parametrize("text, says", [
    ("22-08", "are not HH:MM-HH:MM [time zone]"),
    ("22:00", "are not HH:MM-HH:MM [time zone]"),
    ("25:00-08:00", "not a time of day"),
    ("22:00-08:61", "not a time of day"),
    ("08:00-08:00", "start and end at the same time"),
    ("22:00-08:00 Mars/Olympus", "'Mars/Olympus' is not a known time zone"),
    ("22:00-08:00 UTC extra", "are not HH:MM-HH:MM [time zone]"),
])
def test_what_is_not_quiet_hours_says_why(text: str, says: str) -> None:
    with pytest.raises(QuietHoursError) as raised:
        parse(text)
    assert says in str(raised.value)
