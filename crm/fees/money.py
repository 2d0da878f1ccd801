"""Øre and kroner at the edges: integers inside, `Decimal` and text outside. Never float."""

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

MAX_KRONER = Decimal(10) ** 12


def kroner(ore: int) -> Decimal:
    """Øre as a `Decimal` amount of kroner with two decimals."""
    return (Decimal(ore) / 100).quantize(Decimal("0.01"))


def plain(ore: int) -> str:
    """`12500.00`: kroner with a dot and two decimals, as exports and SPEC.md want."""
    sign = "-" if ore < 0 else ""
    whole, part = divmod(abs(ore), 100)
    return f"{sign}{whole}.{part:02d}"


def to_ore(amount: Decimal | int | str) -> int:
    """Kroner (Decimal, int or text like `12 500,50`) as whole øre; ValueError if not money."""
    if isinstance(amount, str):
        text = amount.strip().replace("\u00a0", "").replace(" ", "").replace(",", ".")
        text = text.removeprefix("kr").removeprefix("NOK").strip()
        try:
            amount = Decimal(text)
        except InvalidOperation as exc:
            raise ValueError(f"not an amount: {amount!r}") from exc
    amount = Decimal(amount)
    # Far beyond any fee; also keeps quantize within Decimal's 28 digits.
    if not amount.is_finite() or abs(amount) >= MAX_KRONER:
        raise ValueError("not an amount")
    ore = (amount * 100).quantize(Decimal("1"), rounding=ROUND_HALF_UP)
    if ore != amount * 100:
        raise ValueError("amounts have at most two decimals")
    return int(ore)
