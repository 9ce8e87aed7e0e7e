"""Business hours: when the team is in, and when it is next in.

The format is one or more day ranges with opening times, separated by commas, then an IANA time
zone::

    Mon-Fri 09:00-18:00 Europe/Prague
    Mon-Fri 09:00-18:00, Sat 10:00-14:00 Europe/Prague
    Mon-Sun 00:00-24:00 UTC

Days are ``Mon Tue Wed Thu Fri Sat Sun`` (case-insensitive, a range may wrap: ``Fri-Mon``);
``Daily`` means every day. Times are ``HH:MM``, the end after the start (``24:00`` ends the day).
An empty string means always open (:func:`parse_business_hours` returns ``None``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_FULL_DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
EXAMPLE = "Mon-Fri 09:00-18:00 Europe/Prague"
_RANGE = re.compile(
    r"^(?P<days>[A-Za-z]+(?:\s*-\s*[A-Za-z]+)?)\s+"
    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$"
)


@dataclass(frozen=True, slots=True)
class Opening:
    """Open on ``days`` (0 = Monday) from ``start`` to ``end`` minutes after midnight."""

    days: frozenset[int]
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class BusinessHours:
    openings: tuple[Opening, ...]
    zone: ZoneInfo
    text: str

    @property
    def zone_name(self) -> str:
        return self.zone.key

    def is_open(self, at: datetime) -> bool:
        local = at.astimezone(self.zone)
        minute = local.hour * 60 + local.minute
        return any(local.weekday() in o.days and o.start <= minute < o.end for o in self.openings)

    def next_opening(self, at: datetime) -> datetime:
        """``at`` itself when open, else the next opening time (aware, in the hours' zone)."""
        if self.is_open(at):
            return at.astimezone(self.zone)
        local = at.astimezone(self.zone)
        for offset in range(8):
            day: date = local.date() + timedelta(days=offset)
            starts = sorted(o.start for o in self.openings if day.weekday() in o.days)
            for start in starts:
                hour, minute = divmod(start, 60)
                candidate = datetime.combine(day, time(hour, minute), tzinfo=self.zone)
                if candidate > local:
                    return candidate
        raise AssertionError("business hours with no opening in a week")  # parse forbids this


def _minutes(value: str, *, key: str) -> int:
    hour, minute = (int(part) for part in value.split(":"))
    if not (0 <= hour <= 24 and 0 <= minute < 60) or (hour == 24 and minute):
        raise ValueError(f"{value!r} is not a time of day (HH:MM, 00:00 to 24:00) in {key!r}")
    return hour * 60 + minute


def _day(name: str, *, key: str) -> int:
    word = name.strip().lower()
    for index, full in enumerate(_FULL_DAYS):
        if len(word) >= 3 and full.startswith(word):
            return index
    raise ValueError(f"unknown day {name.strip()!r} in {key!r}: use Mon, Tue, Wed, Thu, Fri, Sat, Sun")


def _days(spec: str, *, key: str) -> frozenset[int]:
    if spec.lower() == "daily":
        return frozenset(range(7))
    if "-" not in spec:
        return frozenset({_day(spec, key=key)})
    first, last = (_day(part, key=key) for part in spec.split("-"))
    span = (last - first) % 7
    return frozenset((first + i) % 7 for i in range(span + 1))


def parse_business_hours(text: str) -> BusinessHours | None:
    """Parse the setting; ``None`` for an empty one; ``ValueError`` with a clear reason otherwise."""
    spec = " ".join(text.split())
    if not spec:
        return None
    body, _, zone_name = spec.rpartition(" ")
    if not body or not zone_name or ":" in zone_name:
        raise ValueError(f"end with a time zone, e.g. {EXAMPLE!r}")
    try:
        zone = ZoneInfo(zone_name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {zone_name!r}: use an IANA name such as Europe/Prague or UTC"
        ) from None
    openings = []
    for part in (p.strip() for p in body.split(",")):
        match = _RANGE.match(part)
        if match is None:
            raise ValueError(f"cannot read {part!r}: expected days and hours such as {EXAMPLE!r}")
        start = _minutes(match["start"], key=part)
        end = _minutes(match["end"], key=part)
        if end <= start:
            raise ValueError(f"in {part!r} the closing time must be after the opening time")
        openings.append(Opening(_days(match["days"].replace(" ", ""), key=part), start, end))
    return BusinessHours(tuple(openings), zone, spec)
