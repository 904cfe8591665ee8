"""Submit windows: open or not at a moment, across midnight, in a time zone, and bad input."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from pydantic import ValidationError

from airflow_claude_batches.governance.windows import SubmitWindow

NIGHT_BERLIN = SubmitWindow(hours="22:00-06:00", time_zone="Europe/Berlin")


def utc(day: int, hour: int, minute: int = 0, month: int = 1) -> datetime:
    return datetime(2027, month, day, hour, minute, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("moment", "is_open"),
    [
        (utc(13, 20, 59), False),  # 21:59 in Berlin (UTC+1 in January)
        (utc(13, 21, 0), True),  # 22:00: the start is inside
        (utc(13, 23, 30), True),  # 00:30 next day in Berlin: across midnight
        (utc(14, 4, 59), True),
        (utc(14, 5, 0), False),  # 06:00: the end is outside
        (utc(14, 12, 0), False),
    ],
)
def test_a_night_window_runs_across_midnight_in_its_time_zone(moment, is_open):
    assert NIGHT_BERLIN.is_open(moment) is is_open


def test_next_open_next_close_and_last_close():
    evening = utc(13, 18)
    assert NIGHT_BERLIN.next_open(evening) == utc(13, 21)
    assert NIGHT_BERLIN.next_close(evening) == utc(14, 5)
    assert NIGHT_BERLIN.last_close(evening) == utc(13, 5)
    inside = utc(14, 1)
    assert NIGHT_BERLIN.next_open(inside) == inside
    assert NIGHT_BERLIN.next_close(inside) == utc(14, 5)
    assert NIGHT_BERLIN.local(utc(13, 21)) == "2027-01-13 22:00 CET"


def test_summer_time_moves_the_window_in_utc():
    assert NIGHT_BERLIN.next_open(utc(13, 12, month=7)) == utc(13, 20, month=7)  # CEST is UTC+2


def test_a_plain_string_is_hours_in_utc():
    window = SubmitWindow.model_validate("09:00-17:00")
    assert (window.time_zone, window.on_close) == ("UTC", "wait")
    assert window.is_open(utc(13, 9)) and not window.is_open(utc(13, 17))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("25:00-06:00", 'is not "HH:MM-HH:MM"'),
        ("22:00", 'is not "HH:MM-HH:MM"'),
        ("06:00-06:00", "is empty"),
        ({"hours": "22:00-06:00", "time_zone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"hours": "22:00-06:00", "on_close": "drop"}, "'wait' or 'fail'"),
    ],
)
def test_bad_windows_are_refused_with_a_clear_message(data, message):
    with pytest.raises(ValidationError, match=message):
        SubmitWindow.model_validate(data)
