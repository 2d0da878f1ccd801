"""Invoice and credit note lines: amounts, VAT and rounding, in integer øre.

Rounding, the same for every document (and what EN 16931 / EHF expects):

- A line's net amount is quantity × unit price, rounded half up (away from zero) to
  the øre.
- VAT is computed per VAT group (category and rate): the group's net sum × rate,
  rounded half up to the øre (EN 16931 BR-CO-17). Each line carries its share of its
  group's VAT: its own rounded VAT, with the group's rounding difference (at most a few
  øre) put on the line with the largest net amount, so the lines add up to the group.
- The document's gross total is net + VAT; for an invoice it is `Invoice.amount_ore`,
  the amount paid with the KID.

Credit notes (amounts positive, like the note itself):

- Crediting everything that is left of an invoice that has no credit notes yet copies
  the invoice's lines as they are (same descriptions, quantities, prices and VAT).
- Crediting what is left after earlier credit notes gives one line per VAT group with
  exactly the net and VAT not yet credited at that rate.
- A partial credit (a gross amount less than what is left) is split over the VAT groups
  in proportion to what is left to credit in each (largest remainder, whole øre); within
  a group the VAT is taken out of the gross part: net = gross / (1 + rate) rounded half
  up, VAT = gross − net (chosen, when one exists, so that VAT = net × rate rounded).
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation

from flask_babel import force_locale
from flask_babel import gettext as _

from crm.fees.errors import FeeError
from crm.fees.models import (
    QUANTITY_SCALE,
    RATE_SCALE,
    VAT_CATEGORIES,
    CreditNoteLine,
    Invoice,
    InvoiceLine,
    vat_breakdown,
)

# Categories whose rate must be 0 (EN 16931 BR-Z-05, BR-E-05, BR-AE-05, BR-IC-05,
# BR-G-05; for O the rate is not even stated, BR-O-05). Only S carries a positive rate.
ZERO_RATE_CATEGORIES = frozenset(VAT_CATEGORIES) - {"S"}
MAX_QUANTITY = Decimal(10) ** 9


@dataclass(frozen=True)
class LineSpec:
    """What to put on one invoice line.

    description: shown on the invoice (at most 300 characters).
    unit_price_ore: the net price of one unit in øre, WITHOUT VAT (may be negative for
        a discount line; the invoice's total may not be).
    quantity: Decimal, int or text ("1,5"), at most three decimals; default 1.
    vat_category: EN 16931 code: "S" standard rate (with vat_rate > 0, e.g. 25 for
        course fees), "Z" zero rated, "E" exempt, "O" outside the scope of VAT
        (membership fees), "AE", "K", "G"; default "O".
    vat_rate: percent as Decimal/int/text, at most two decimals (25, "15", "12.00");
        must be 0 for every category but "S", and more than 0 for "S".
    """

    description: str
    unit_price_ore: int
    quantity: Decimal | int | str = 1
    vat_category: str = "O"
    vat_rate: Decimal | int | str = 0


def _decimal(value, places: int, what: str) -> Decimal:
    try:
        number = Decimal(str(value).strip().replace(",", ".")) if value != "" else None
    except InvalidOperation:
        number = None
    if number is None or not number.is_finite() or abs(number) >= MAX_QUANTITY:
        raise FeeError(_("%(what)s is not a number.", what=what))
    scaled = number.scaleb(places)
    if scaled != scaled.to_integral_value():
        raise FeeError(_("%(what)s has too many decimals.", what=what))
    return number


def round_half_up(value: Decimal) -> int:
    """Whole øre, halves away from zero."""
    return int(value.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _group_vat(net_ore: int, rate_centi: int) -> int:
    return round_half_up(Decimal(net_ore) * rate_centi / (100 * RATE_SCALE))


def build_lines(specs: Sequence[LineSpec]) -> list[InvoiceLine]:
    """Invoice lines (not added to a session) from specs, with net and VAT worked out.

    Raises FeeError for no lines, an unknown VAT category, a rate that does not fit the
    category, a quantity of zero or with more than three decimals, or a negative total.
    """
    if not specs:
        raise FeeError(_("An invoice needs at least one line."))
    lines = []
    for position, spec in enumerate(specs, start=1):
        description = (spec.description or "").strip()
        if not description:
            raise FeeError(_("Every invoice line needs a description."))
        category = (spec.vat_category or "").strip().upper()
        if category not in VAT_CATEGORIES:
            raise FeeError(_("Unknown VAT category %(code)s.", code=spec.vat_category))
        quantity = _decimal(spec.quantity, 3, _("The quantity"))
        if quantity == 0:
            raise FeeError(_("The quantity cannot be zero."))
        rate = _decimal(spec.vat_rate, 2, _("The VAT rate"))
        if not 0 <= rate <= 100:
            raise FeeError(_("The VAT rate must be between 0 and 100 %."))
        if category in ZERO_RATE_CATEGORIES and rate != 0:
            raise FeeError(_("VAT category %(code)s has no VAT rate.", code=category))
        if category == "S" and rate == 0:
            raise FeeError(_("VAT category S needs a VAT rate above 0."))
        if not isinstance(spec.unit_price_ore, int) or isinstance(spec.unit_price_ore, bool):
            raise FeeError(_("The unit price must be whole øre."))
        quantity_milli = int(quantity.scaleb(3))
        net = round_half_up(Decimal(quantity_milli) * spec.unit_price_ore / QUANTITY_SCALE)
        lines.append(
            InvoiceLine(
                position=position,
                description=description[:300],
                quantity_milli=quantity_milli,
                unit_price_ore=spec.unit_price_ore,
                vat_category=category,
                vat_rate_centi=int(rate.scaleb(2)),
                net_ore=net,
                vat_ore=0,
            )
        )
    spread_vat(lines)
    if sum(line.net_ore + line.vat_ore for line in lines) < 0:
        raise FeeError(_("An invoice's total cannot be negative."))
    return lines


def spread_vat(lines: Iterable) -> None:
    """Set each line's `vat_ore` so that the lines of a VAT group add up to the group's
    VAT (group net × rate, rounded half up)."""
    groups: dict[tuple[str, int], list] = {}
    for line in lines:
        groups.setdefault((line.vat_category, line.vat_rate_centi), []).append(line)
    for (_category, rate_centi), members in groups.items():
        for line in members:
            line.vat_ore = _group_vat(line.net_ore, rate_centi)
        difference = _group_vat(sum(m.net_ore for m in members), rate_centi) - sum(
            m.vat_ore for m in members
        )
        if difference:
            max(members, key=lambda m: abs(m.net_ore)).vat_ore += difference


def totals(lines: Iterable) -> tuple[int, int, int]:
    """(net, VAT, gross) of lines."""
    net = vat = 0
    for line in lines:
        net += line.net_ore
        vat += line.vat_ore
    return net, vat, net + vat


def _net_of_gross(gross: int, rate_centi: int) -> tuple[int, int]:
    """Split a gross amount into (net, VAT) at a rate, VAT = net × rate where possible."""
    if rate_centi == 0:
        return gross, 0
    first = round_half_up(Decimal(gross) * 100 * RATE_SCALE / (100 * RATE_SCALE + rate_centi))
    for net in (first, first - 1, first + 1):
        if net + _group_vat(net, rate_centi) == gross:
            return net, gross - net
    return first, gross - first


def credit_lines(invoice: Invoice, amount_ore: int) -> list[CreditNoteLine]:
    """The lines of a credit note of `amount_ore` (gross) on `invoice` (see the module
    docstring for how VAT is split). The caller has checked the amount is more than 0
    and at most what is left to credit."""
    invoice_groups = vat_breakdown(invoice.lines)
    credited: dict[tuple[str, int], list[int]] = {}
    for note in invoice.credit_notes:
        for group in vat_breakdown(note.lines):
            sums = credited.setdefault((group.category, group.rate_centi), [0, 0])
            sums[0] += group.net_ore
            sums[1] += group.vat_ore
    left = []
    for group in invoice_groups:
        net_done, vat_done = credited.get((group.category, group.rate_centi), (0, 0))
        left.append((group, group.net_ore - net_done, group.vat_ore - vat_done))
    left_gross = sum(net + vat for _g, net, vat in left)

    if amount_ore == left_gross and not invoice.credit_notes:
        return [
            CreditNoteLine(
                position=line.position,
                description=line.description,
                quantity_milli=line.quantity_milli,
                unit_price_ore=line.unit_price_ore,
                vat_category=line.vat_category,
                vat_rate_centi=line.vat_rate_centi,
                net_ore=line.net_ore,
                vat_ore=line.vat_ore,
            )
            for line in invoice.lines
        ]

    with force_locale("nb"):
        description = _("Credit of invoice %(number)s", number=invoice.number)
    if amount_ore == left_gross:
        parts = [(group, net, vat) for group, net, vat in left if net or vat]
    else:
        parts = []
        shares = _shares(amount_ore, [max(net + vat, 0) for _g, net, vat in left])
        for (group, _net, _vat), share in zip(left, shares, strict=True):
            if share:
                net, vat = _net_of_gross(share, group.rate_centi)
                parts.append((group, net, vat))
    return [
        CreditNoteLine(
            position=position,
            description=description,
            quantity_milli=QUANTITY_SCALE,
            unit_price_ore=net,
            vat_category=group.category,
            vat_rate_centi=group.rate_centi,
            net_ore=net,
            vat_ore=vat,
        )
        for position, (group, net, vat) in enumerate(parts, start=1)
    ]


def _shares(amount: int, weights: list[int]) -> list[int]:
    """`amount` split in proportion to `weights`, in whole units (largest remainder)."""
    total = sum(weights)
    if total <= 0:
        return [amount] + [0] * (len(weights) - 1)
    floors = [amount * w // total for w in weights]
    remainders = sorted(range(len(weights)), key=lambda i: (-(amount * weights[i] % total), i))
    for i in remainders[: amount - sum(floors)]:
        floors[i] += 1
    return floors
