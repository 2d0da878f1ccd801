"""What URLs carry: ids within what the database can hold, query text a person could type."""

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


def init_app(app) -> None:
    app.url_map.converters["int"] = IdConverter
