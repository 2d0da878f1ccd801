"""The page number of a list, read from the query string the same way everywhere."""

from flask import request

from crm.numbers import is_digits

MAX_PAGE = 100_000  # beyond this an OFFSET only burns time (and can overflow the driver)


def parse_page(value) -> int:
    """A page number from untrusted text: garbage and out-of-range values give 1 or the cap."""
    text = str(value or "").strip()
    if not is_digits(text) or len(text) > 6:
        return 1
    return min(max(int(text), 1), MAX_PAGE)


def requested_page() -> int:
    return parse_page(request.args.get("page"))
