"""Time helpers: store timezone-aware UTC, show Europe/Oslo."""

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

OSLO = ZoneInfo("Europe/Oslo")


def utcnow() -> datetime:
    return datetime.now(UTC)


def today_oslo():
    return datetime.now(OSLO).date()
