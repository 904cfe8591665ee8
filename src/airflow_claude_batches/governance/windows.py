"""
Submit windows: the hours of the day, in a time zone, when a job type's jobs may be admitted.

A window is written ``"HH:MM-HH:MM"``; an end before the start runs across midnight
(``"22:00-06:00"`` is 22:00 to 06:00 the next morning). Times are wall-clock times in
``time_zone`` (IANA name), so a window follows its zone's daylight saving time. The window includes
its start and excludes its end.

A job that asks for room outside its window waits, deferred, until it opens. What happens to a job
still waiting when its window closes is the job type's choice (``on_close``): ``wait`` keeps its
place in line for the next window, ``fail`` ends it.
"""

from __future__ import annotations

import re
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

__all__ = ["SubmitWindow"]

_HOURS = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)-([01]\d|2[0-3]):([0-5]\d)$")


class SubmitWindow(BaseModel):
    """When a job type's jobs may be admitted; a plain string is taken as ``hours`` in UTC."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hours: str = Field(description='"HH:MM-HH:MM", across midnight when the end is before the start.')
    time_zone: str = Field(default="UTC", description="IANA time zone of the hours, e.g. Europe/Berlin.")
    on_close: Literal["wait", "fail"] = Field(
        default="wait", description="A job still waiting at the close: wait for the next window, or fail."
    )

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"hours": data} if isinstance(data, str) else data

    @field_validator("hours")
    @classmethod
    def _check_hours(cls, value: str) -> str:
        match = _HOURS.match(value)
        if match is None:
            raise PydanticCustomError(
                "window", f'{value!r} is not "HH:MM-HH:MM" (24-hour clock, e.g. "22:00-06:00")'
            )
        if match[1] == match[3] and match[2] == match[4]:
            raise PydanticCustomError(
                "window", f"{value!r} is empty: start and end are the same (omit window for always)"
            )
        return value

    @field_validator("time_zone")
    @classmethod
    def _check_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise PydanticCustomError(
                "window", f"unknown time zone {value!r} (an IANA name like Europe/Berlin)"
            ) from None
        return value

    def __str__(self) -> str:
        return f"{self.hours} {self.time_zone}"

    def local(self, moment: datetime) -> str:
        """``moment`` as a wall-clock time of the window's zone, for messages."""
        return moment.astimezone(ZoneInfo(self.time_zone)).strftime("%Y-%m-%d %H:%M %Z")

    def _occurrence(self, day: date) -> tuple[datetime, datetime]:
        """The window that opens on local ``day``: (start, end) in UTC (compared as instants)."""
        zone = ZoneInfo(self.time_zone)
        start_text, end_text = self.hours.split("-")
        start_time, end_time = time.fromisoformat(start_text), time.fromisoformat(end_text)
        end_day = day + timedelta(days=1) if end_time <= start_time else day
        start = datetime.combine(day, start_time, tzinfo=zone)
        end = datetime.combine(end_day, end_time, tzinfo=zone)
        return start.astimezone(timezone.utc), end.astimezone(timezone.utc)

    def _occurrences(self, now: datetime, days: range) -> list[tuple[datetime, datetime]]:
        local = now.astimezone(ZoneInfo(self.time_zone)).date()
        return [self._occurrence(local + timedelta(days=d)) for d in days]

    def is_open(self, now: datetime) -> bool:
        return any(start <= now < end for start, end in self._occurrences(now, range(-1, 1)))

    def next_open(self, now: datetime) -> datetime:
        """``now`` if the window is open, else when it opens next."""
        if self.is_open(now):
            return now
        return min(start for start, _ in self._occurrences(now, range(0, 2)) if start > now)

    def next_close(self, now: datetime) -> datetime:
        """The end of the window that is open at ``now``, or else of the next one."""
        return min(end for _, end in self._occurrences(now, range(-1, 2)) if end > now)

    def last_close(self, now: datetime) -> datetime:
        """When the window last closed, at or before ``now``."""
        return max(end for _, end in self._occurrences(now, range(-2, 1)) if end <= now)
