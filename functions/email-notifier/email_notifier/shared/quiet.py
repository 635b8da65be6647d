"""Quiet hours: when a subscriber is not to be disturbed (pure: tested with plain data).

A subscriber's quiet hours are the ClusterSubscription's annotation
``kubeevent.io/quiet-hours`` (``"22:00-08:00 Asia/Shanghai"``; ``"off"``: none, whatever
the default), carried in the notification request; ``QUIET_HOURS`` (same form) is every
other subscriber's. A window whose start is after its end runs over midnight; times are
the wall clock of the time zone (UTC when none is named), so a window follows daylight
saving time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ANNOTATION = "kubeevent.io/quiet-hours"
OFF = "off"
_FORM = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})(?:\s+(\S+))?\s*$")


class QuietHoursError(ValueError):
    """Not a quiet-hours value; the message says what is expected."""


@dataclass(frozen=True)
class QuietHours:
    start: int  # minutes after midnight, wall clock of ``zone``
    end: int
    zone: str = "UTC"

    def _local(self, at: float) -> datetime:
        return datetime.fromtimestamp(at, ZoneInfo(self.zone))

    def active(self, at: float) -> bool:
        local = self._local(at)
        minute = local.hour * 60 + local.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def ends(self, at: float) -> float:
        """When the quiet period ``at`` falls in ends (``at`` when it is not quiet)."""
        if not self.active(at):
            return at
        local = self._local(at)
        end = local.replace(hour=self.end // 60, minute=self.end % 60, second=0,
                            microsecond=0)
        if end <= local:
            end = (end.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=end.tzinfo)
        return end.timestamp()

    def __str__(self) -> str:
        return (f"{self.start // 60:02d}:{self.start % 60:02d}-"
                f"{self.end // 60:02d}:{self.end % 60:02d} {self.zone}")


def parse(text: str) -> QuietHours | None:
    """``"22:00-08:00 Asia/Shanghai"`` → ``QuietHours``; ``""`` or ``"off"`` → ``None``."""
    if not text.strip() or text.strip().lower() == OFF:
        return None
    found = _FORM.match(text)
    if found is None:
        raise QuietHoursError(f"quiet hours {text!r} are not HH:MM-HH:MM [time zone], "
                              "e.g. 22:00-08:00 Asia/Shanghai")
    sh, sm, eh, em, zone = found.groups()
    if int(sh) > 23 or int(eh) > 23 or int(sm) > 59 or int(em) > 59:
        raise QuietHoursError(f"quiet hours {text!r}: not a time of day")
    start, end = int(sh) * 60 + int(sm), int(eh) * 60 + int(em)
    if start == end:
        raise QuietHoursError(f"quiet hours {text!r} start and end at the same time")
    zone = zone or "UTC"
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise QuietHoursError(f"quiet hours {text!r}: {zone!r} is not a known time zone"
                              ) from None
    return QuietHours(start, end, zone)
