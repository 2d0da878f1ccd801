"""Reading single values: text, employee counts, dates, place names."""

import re
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from crm.members.importing.messages import N_, Message
from crm.members.importing.records import Record
from crm.numbers import is_digits
from crm.timeutil import OSLO

MAX_EMPLOYEES = 1_000_000
# NUL and lone surrogates: PostgreSQL refuses them in text, so a value holding one is an error.
UNSTORABLE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def clean_text(value: str) -> str:
    return value.replace("\u00a0", " ").strip()


def set_employees(record: Record, raw: Any) -> None:
    # Length first: int() and str() refuse numbers of over 4,300 digits with a ValueError.
    if isinstance(raw, str):
        digits = raw.replace(" ", "")
        number = int(digits) if is_digits(digits) and len(digits) <= 9 else None
        shown = raw[:50]
    elif isinstance(raw, int) and not isinstance(raw, bool):
        number = raw if 0 <= raw <= MAX_EMPLOYEES else None
        shown = str(raw) if number is not None or abs(raw) < 10**40 else "…"
    else:
        number = None
        shown = type(raw).__name__ if not isinstance(raw, (float, Decimal)) else str(raw)[:50]
    if number is None or number > MAX_EMPLOYEES:
        record.errors.append(
            Message(
                N_("employees: %(value)s is not a whole number of employees."),
                value=repr(shown[:50]),
            )
        )
    else:
        record.values["employees"] = number


def parse_datetime(raw: str) -> datetime | None:
    """A time as our exports write it (Oslo wall clock, or ISO with its offset), in UTC."""
    for pattern in ("%d.%m.%Y %H:%M", "%d.%m.%Y %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            moment = datetime.strptime(raw, pattern)
        except ValueError:
            continue
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=OSLO)
        return moment.astimezone(UTC)
    return None


def parse_date(raw: str) -> date | None:
    for pattern in ("%d.%m.%Y", "%Y-%m-%d"):
        try:
            return datetime.strptime(raw, pattern).date()
        except ValueError:
            continue
    return None


def place_name(value: str) -> str:
    """KONGSVINGER → Kongsvinger, VÅLER I SOLØR → Våler i Solør (the register shouts)."""
    if not value.isupper():
        return value
    small = {"i", "på", "og"}
    words = value.title().split(" ")
    return " ".join(w.lower() if i and w.lower() in small else w for i, w in enumerate(words))


def printable(text: str) -> str:
    """Text safe to show and print: a lone surrogate from a JSON escape becomes '?'."""
    return text.encode("utf-8", "replace").decode("utf-8")
