"""What URLs carry: ids within what the database can hold, query text a person could type,
and where a redirect may send the browser."""

import unicodedata
from urllib.parse import urlsplit

from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # PostgreSQL integer; larger values would raise in the driver


class IdConverter(IntegerConverter):
    """`<int:id>` that answers 404 (no match) for ids the database cannot hold."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def clean_query(value, limit: int = 200) -> str:
    """Typed search text from a query string: printable characters only, at most `limit`."""
    # Control characters (NUL above all) cannot reach PostgreSQL in a string literal.
    text = "".join(ch for ch in str(value or "") if ch.isprintable())
    return text.strip()[:limit]


def safe_next(target, fallback: str) -> str:
    """`target` if it is a path on this site, else `fallback`: the one open-redirect check.

    Browsers drop tabs and line breaks inside URLs and read a backslash as a slash, so
    `/<TAB>/evil.example` becomes `//evil.example`, another host. Any control, format or
    space character therefore disqualifies a target, as do backslashes and anything
    with a scheme or host. A line break would also make the Location header raise.
    """
    if not isinstance(target, str) or not target or len(target) > 2000:
        return fallback
    if "\\" in target or any(unicodedata.category(ch)[0] in "CZ" for ch in target):
        return fallback
    if not target.startswith("/") or target.startswith("//"):
        return fallback
    try:
        parts = urlsplit(target)
    except ValueError:
        return fallback
    if parts.scheme or parts.netloc:
        return fallback
    return target


def init_app(app) -> None:
    app.url_map.converters["int"] = IdConverter
