"""URL converters: ids in URLs stay within what the database can hold."""

from werkzeug.routing import IntegerConverter

MAX_ID = 2**31 - 1  # PostgreSQL integer; larger values would raise in the driver


class IdConverter(IntegerConverter):
    """`<int:id>` that answers 404 (no match) for ids the database cannot hold."""

    def __init__(self, map, fixed_digits=0, min=None, max=MAX_ID, signed=False):
        super().__init__(map, fixed_digits=fixed_digits, min=min, max=max, signed=signed)


def init_app(app) -> None:
    app.url_map.converters["int"] = IdConverter
