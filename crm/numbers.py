"""Reading numbers from text that people type or other systems send."""


def is_digits(text: str) -> bool:
    """Only the ASCII digits 0-9, at least one.

    str.isdigit() alone also takes "²", "٣" and other digits that int() refuses (a 500)
    or reads as a different number.
    """
    return text.isascii() and text.isdigit()
