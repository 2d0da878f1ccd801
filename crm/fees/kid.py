"""KID numbers (kundeidentifikasjon): the one place for their check digits.

A KID is the invoice number, left-padded with zeros to the configured length less one,
followed by a check digit: MOD10 (Luhn, the default) or MOD11. MOD11 has no digit for
a remainder of 10 (written `-`), which many bank agreements refuse; numbers that would
need it are skipped when generating, so every KID we issue is digits only.
"""

from stdnum import luhn

from crm.numbers import is_digits

MOD10 = "mod10"
MOD11 = "mod11"
SCHEMES = (MOD10, MOD11)
MIN_LENGTH = 2
MAX_LENGTH = 25  # the KID field of an OCR record


class KidError(ValueError):
    """The base number cannot become a KID with this length and scheme."""


def mod11_check_digit(base: str) -> str:
    """The MOD11 check digit of `base`: weights 2..7 repeating from the right.

    11 - (sum mod 11); a result of 11 is `0`, and 10 is `-` (no digit).
    """
    total = sum(int(digit) * (2 + i % 6) for i, digit in enumerate(reversed(base)))
    check = 11 - total % 11
    if check == 11:
        return "0"
    if check == 10:
        return "-"
    return str(check)


def check_digit(base: str, scheme: str = MOD10) -> str:
    if scheme == MOD10:
        return luhn.calc_check_digit(base)
    if scheme == MOD11:
        return mod11_check_digit(base)
    raise KidError(f"unknown KID scheme {scheme!r}")


def is_valid(kid: str | None, scheme: str = MOD10) -> bool:
    """True when `kid` is digits only, of a KID's length, with a right check digit."""
    if not kid or not is_digits(kid):
        return False
    if not MIN_LENGTH <= len(kid) <= MAX_LENGTH:
        return False
    return check_digit(kid[:-1], scheme) == kid[-1]


def make_kid(number: int, length: int, scheme: str = MOD10) -> str | None:
    """The KID for `number`, or None when MOD11 would need the `-` check digit.

    Raises KidError when the number does not fit in `length - 1` digits.
    """
    if not MIN_LENGTH <= length <= MAX_LENGTH:
        raise KidError(f"KID length must be {MIN_LENGTH}-{MAX_LENGTH}, not {length}")
    if number < 0:
        raise KidError("KID base number cannot be negative")
    base = str(number).zfill(length - 1)
    if len(base) > length - 1:
        raise KidError(f"number {number} does not fit in a KID of {length} digits")
    digit = check_digit(base, scheme)
    if digit == "-":
        return None
    return base + digit


def next_kid(number: int, length: int, scheme: str = MOD10) -> tuple[int, str]:
    """The first number from `number` on that gives a KID, with that KID.

    Under MOD10 that is `number` itself; under MOD11 about one number in eleven is
    skipped.
    """
    while True:
        kid = make_kid(number, length, scheme)
        if kid is not None:
            return number, kid
        number += 1
