"""The accounting export: invoices, credit notes, reminder fees and payments of a period
as balanced vouchers (bilag), for the accountant's system.

Each voucher's debits equal its credits. The ledger accounts come from the fee settings
(defaults from Norsk Standard kontoplan NS 4102):

- invoice (dated its issue date): debit receivable (gross); credit income per line's
  VAT group (net; lines with VAT to "income with VAT", the others to "income without
  VAT"); credit output VAT (the VAT).
- credit note (its date): the same postings reversed, from its own lines; a credit note
  that cancelled reminder fees (`CreditNote.fees_cancelled_ore`) also debits reminder
  fees and credits receivable by that much, in the same voucher.
- reminder fee (the reminder's date): debit receivable, credit reminder fees (no VAT).
- payment (the date paid): debit bank, credit receivable; a refund the other way round;
  a write-off: debit losses on receivables, credit receivable.

Payments on the unmatched list belong to no invoice yet and are not in the export until
they are assigned to one.

Formats (`FORMATS`), and what is documented about each:

- `generic`: our own CSV (semicolons, decimal comma, dd.mm.yyyy, UTF-8 with BOM, so
  Norwegian Excel opens it in columns): one row per posting, `GENERIC_COLUMNS` below.
- `tripletex`: Mamut GBAT10, which Tripletex's import page lists among the formats it
  reads (alongside its own Excel formats). The GBAT10 columns are Mamut's published
  layout (semicolon-separated, dates YYYYMMDD, amount with a decimal point, positive
  debit and negative credit). VAT is exported as separate postings with VAT code 1
  ("no VAT") on every row, the method Mamut's description gives for files that carry
  their own VAT lines; the voucher types (1 invoice, 3 credit note, 4 payment) and the
  customer numbers (company id, or 500000 + invoice id for a person) are our choice:
  map them in Tripletex's import settings if its defaults differ.
- `poweroffice`: PowerOffice Go lists "Mamut GBAT10-import" among the formats of its
  voucher journal (bilagsjournal) import, so this is the same GBAT10 file. Go's own
  standard import ([Vouchers] sheet) is described in a downloadable file we could not
  read, so it is not offered.
- `fiken`: Fiken publishes no import of vouchers or journals (postings are entered as
  "fri postering"); it imports customers from a sheet with documented headings (Navn,
  Orgnr, Adresse, Adresse2, Postnr, Poststed, Land, E-post, Telefon, Medlemsnummer).
  This format gives that customer sheet for the period's customers; the vouchers
  themselves come from the generic file.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from flask_babel import force_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import case, func, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.fees.models import (
    CreditNote,
    CreditNoteLine,
    FeeSettings,
    Invoice,
    InvoiceLine,
    Payment,
    Reminder,
    vat_breakdown,
)
from crm.fees.money import plain
from crm.spreadsheet import neutralise

FORMATS = ("generic", "tripletex", "poweroffice", "fiken")
FORMAT_LABELS = {
    "generic": _l("Generic CSV (all accounting systems)"),
    "tripletex": _l("Tripletex (Mamut GBAT10)"),
    "poweroffice": _l("PowerOffice Go (Mamut GBAT10, voucher journal)"),
    "fiken": _l("Fiken (customer import; vouchers from the generic CSV)"),
}
VOUCHER_KINDS = ("invoice", "credit_note", "reminder_fee", "payment", "refund", "write_off")
# Norwegian SAF-T standard VAT codes (Skatteetaten): 3 output VAT 25 %, 31 15 %, 33 12 %,
# 5 zero-rated sales, 6 sales outside the VAT Act, 0 no VAT treatment.
_SAFT_VAT_BY_RATE = {2500: "3", 1500: "31", 1200: "33"}
_SAFT_VAT_BY_CATEGORY = {"Z": "5", "E": "6", "O": "0", "AE": "0", "K": "0", "G": "0"}


def saft_vat_code(category: str, rate_centi: int) -> str:
    if category == "S":
        return _SAFT_VAT_BY_RATE.get(rate_centi, "3")
    return _SAFT_VAT_BY_CATEGORY.get(category, "0")


@dataclass
class Posting:
    account: str
    debit_ore: int = 0
    credit_ore: int = 0
    vat_code: str = ""
    vat_rate_centi: int = 0
    text: str = ""


@dataclass
class Voucher:
    """One bilag: balanced postings of one invoice, credit note, reminder or payment."""

    number: str
    day: date
    kind: str
    text: str
    invoice: Invoice
    postings: list[Posting] = field(default_factory=list)
    # Of a credit note: what it credited, and the reminder fees it cancelled.
    credited_ore: int = 0
    fees_cancelled_ore: int = 0

    @property
    def debit_ore(self) -> int:
        return sum(p.debit_ore for p in self.postings)

    @property
    def credit_ore(self) -> int:
        return sum(p.credit_ore for p in self.postings)

    @property
    def balanced(self) -> bool:
        return self.debit_ore == self.credit_ore


def _income_postings(settings: FeeSettings, lines, text: str, debit: bool) -> list[Posting]:
    postings = []
    for group in vat_breakdown(lines):
        code = saft_vat_code(group.category, group.rate_centi)
        account = (
            settings.account_income_vat if group.category == "S" else settings.account_income_no_vat
        )
        if group.net_ore:
            postings.append(
                Posting(
                    account,
                    group.net_ore if debit else 0,
                    0 if debit else group.net_ore,
                    code,
                    group.rate_centi,
                    text,
                )
            )
        if group.vat_ore:
            postings.append(
                Posting(
                    settings.account_output_vat,
                    group.vat_ore if debit else 0,
                    0 if debit else group.vat_ore,
                    code,
                    group.rate_centi,
                    text,
                )
            )
    return postings


def vouchers(start: date, end: date, settings: FeeSettings) -> list[Voucher]:
    """Every voucher dated from `start` to `end` (both included), in date order."""
    with force_locale("nb"):
        return _vouchers(start, end, settings)


def _vouchers(start: date, end: date, settings: FeeSettings) -> list[Voucher]:
    receivable, bank = settings.account_receivable, settings.account_bank
    result: list[Voucher] = []
    invoices = db.session.scalars(
        select(Invoice)
        .options(selectinload(Invoice.lines))
        .where(Invoice.issue_date.between(start, end))
        .order_by(Invoice.number)
    )
    for invoice in invoices:
        text = _(
            "Invoice %(number)s %(customer)s", number=invoice.number, customer=invoice.customer_name
        )
        voucher = Voucher(str(invoice.number), invoice.issue_date, "invoice", text, invoice)
        voucher.postings.append(Posting(receivable, debit_ore=invoice.amount_ore, text=text))
        voucher.postings += _income_postings(settings, invoice.lines, text, debit=False)
        result.append(voucher)
    notes = db.session.scalars(
        select(CreditNote)
        .options(selectinload(CreditNote.lines), selectinload(CreditNote.invoice))
        .where(CreditNote.issue_date.between(start, end))
        .order_by(CreditNote.number)
    )
    for note in notes:
        text = _(
            "Credit note %(number)s for invoice %(invoice)s",
            number=note.number,
            invoice=note.invoice.number,
        )
        voucher = Voucher(
            str(note.number),
            note.issue_date,
            "credit_note",
            text,
            note.invoice,
            credited_ore=note.amount_ore,
            fees_cancelled_ore=note.fees_cancelled_ore,
        )
        voucher.postings += _income_postings(settings, note.lines, text, debit=True)
        voucher.postings.append(Posting(receivable, credit_ore=note.amount_ore, text=text))
        if note.fees_cancelled_ore:
            fee_text = _(
                "Reminder fees cancelled by credit note %(number)s, invoice %(invoice)s",
                number=note.number,
                invoice=note.invoice.number,
            )
            voucher.postings += [
                Posting(
                    settings.account_reminder_fees,
                    debit_ore=note.fees_cancelled_ore,
                    text=fee_text,
                ),
                Posting(receivable, credit_ore=note.fees_cancelled_ore, text=fee_text),
            ]
        result.append(voucher)
    reminders = db.session.scalars(
        select(Reminder)
        .options(selectinload(Reminder.invoice))
        .where(Reminder.sent_on.between(start, end), Reminder.fee_ore > 0)
        .order_by(Reminder.id)
    )
    for reminder in reminders:
        text = _("Reminder fee, invoice %(number)s", number=reminder.invoice.number)
        voucher = Voucher(
            f"P{reminder.id}", reminder.sent_on, "reminder_fee", text, reminder.invoice
        )
        voucher.postings += [
            Posting(receivable, debit_ore=reminder.fee_ore, text=text),
            Posting(settings.account_reminder_fees, credit_ore=reminder.fee_ore, text=text),
        ]
        result.append(voucher)
    payments = db.session.scalars(
        select(Payment)
        .options(selectinload(Payment.invoice))
        .where(Payment.paid_on.between(start, end))
        .order_by(Payment.paid_on, Payment.id)
    )
    for payment in payments:
        invoice = payment.invoice
        amount = abs(payment.amount_ore)
        if payment.kind == "write_off":
            kind, debit_account = "write_off", settings.account_losses
            text = _("Write-off, invoice %(number)s", number=invoice.number)
        elif payment.amount_ore < 0:
            kind, debit_account = "refund", receivable
            text = _("Refund, invoice %(number)s", number=invoice.number)
        else:
            kind, debit_account = "payment", bank
            text = _("Payment, invoice %(number)s", number=invoice.number)
        credit_account = bank if kind == "refund" else receivable
        voucher = Voucher(f"B{payment.id}", payment.paid_on, kind, text, invoice)
        voucher.postings += [
            Posting(debit_account, debit_ore=amount, text=text),
            Posting(credit_account, credit_ore=amount, text=text),
        ]
        result.append(voucher)
    result.sort(key=lambda v: (v.day, VOUCHER_KINDS.index(v.kind), v.number))
    return result


@dataclass
class PeriodTotals:
    """What the period's vouchers add up to, per kind, in øre."""

    invoiced: int = 0  # gross, of invoices
    vat: int = 0  # output VAT of invoices less credit notes
    credited: int = 0
    reminder_fees: int = 0
    fees_cancelled: int = 0  # reminder fees cancelled by credit notes
    received: int = 0
    refunded: int = 0
    written_off: int = 0
    count: int = 0

    @property
    def net_invoiced(self) -> int:
        """Invoiced less credited, plus reminder fees less those cancelled: what customers
        came to owe."""
        return self.invoiced - self.credited + self.reminder_fees - self.fees_cancelled

    @property
    def net_received(self) -> int:
        return self.received - self.refunded


def totals(items: Iterable[Voucher], settings: FeeSettings) -> PeriodTotals:
    result = PeriodTotals()
    for voucher in items:
        result.count += 1
        postings = voucher.postings
        if voucher.kind == "invoice":
            result.invoiced += postings[0].debit_ore
            result.vat += sum(
                p.credit_ore for p in postings if p.account == settings.account_output_vat
            )
        elif voucher.kind == "credit_note":
            result.credited += voucher.credited_ore
            result.fees_cancelled += voucher.fees_cancelled_ore
            result.vat -= sum(
                p.debit_ore for p in postings if p.account == settings.account_output_vat
            )
        elif voucher.kind == "reminder_fee":
            result.reminder_fees += postings[0].debit_ore
        elif voucher.kind == "payment":
            result.received += postings[0].debit_ore
        elif voucher.kind == "refund":
            result.refunded += postings[0].debit_ore
        else:
            result.written_off += postings[0].debit_ore
    return result


def kind_label(kind: str) -> str:
    return {
        "invoice": _("Invoice"),
        "credit_note": _("Credit note"),
        "reminder_fee": _("Reminder fee"),
        "payment": _("Payment"),
        "refund": _("Refund"),
        "write_off": _("Write-off"),
    }.get(kind, kind)


# --- files ------------------------------------------------------------------------------

GENERIC_COLUMNS = (
    _l("Voucher number"),
    _l("Voucher date"),
    _l("Voucher type"),
    _l("Account"),
    _l("Debit"),
    _l("Credit"),
    _l("VAT code"),
    _l("VAT rate"),
    _l("Text"),
    _l("Invoice number"),
    _l("KID"),
    _l("Customer"),
    _l("Org. no."),
    _l("Due date"),
)


def generic_rows(items: Iterable[Voucher]) -> tuple[list[str], list[tuple]]:
    """Headers (in the reader's language) and one row per posting, amounts in kroner."""
    from crm.fees.money import kroner

    headers = [str(h) for h in GENERIC_COLUMNS]
    rows = []
    for voucher in items:
        invoice = voucher.invoice
        for p in voucher.postings:
            rows.append(
                (
                    voucher.number,
                    voucher.day,
                    kind_label(voucher.kind),
                    p.account,
                    kroner(p.debit_ore) if p.debit_ore else None,
                    kroner(p.credit_ore) if p.credit_ore else None,
                    p.vat_code,
                    f"{p.vat_rate_centi // 100}" if p.vat_rate_centi else "",
                    p.text,
                    invoice.number,
                    invoice.kid,
                    invoice.customer_name,
                    invoice.customer_orgnr,
                    invoice.due_date,
                )
            )
    return headers, rows


GBAT10_VOUCHER_TYPES = {
    "invoice": "1",
    "reminder_fee": "1",
    "credit_note": "3",
    "payment": "4",
    "refund": "4",
    "write_off": "4",
}
PERSON_CUSTOMER_BASE = 500_000


def customer_number(invoice: Invoice) -> int:
    if invoice.company_id is not None:
        return invoice.company_id
    return PERSON_CUSTOMER_BASE + invoice.id


def _gbat_text(value: str, length: int) -> str:
    # The file is a .csv, which opens in Excel: a name typed on the public event form
    # ("=HYPERLINK(…)") must not become a formula there (crm.spreadsheet's rule).
    text = (value or "").replace(";", ",").replace("\n", " ").replace("\r", " ")
    return neutralise(text)[:length]


def gbat10(items: Iterable[Voucher], settings: FeeSettings) -> bytes:
    """The vouchers as a Mamut GBAT10 file (see the module docstring), one line per
    posting; the receivable lines carry the customer (reskontro), invoice number, KID
    and due date. Windows-1252 like Mamut's own files (unmappable letters become ?)."""
    lines = []
    for index, voucher in enumerate(items, start=1):
        invoice = voucher.invoice
        for p in voucher.postings:
            ledger = p.account == settings.account_receivable
            amount = p.debit_ore - p.credit_ore
            fields = [
                "GBAT10",
                str(index),
                voucher.day.strftime("%Y%m%d"),
                GBAT10_VOUCHER_TYPES[voucher.kind],
                f"{voucher.day.month}",
                f"{voucher.day.year}",
                p.account,
                "1",
                plain(amount),
                str(customer_number(invoice)) if ledger else "",
                "",
                _gbat_text(invoice.customer_name, 30) if ledger else "",
                _gbat_text(invoice.customer_address, 200) if ledger else "",
                _gbat_text(invoice.customer_postal_code, 30) if ledger else "",
                _gbat_text(invoice.customer_postal_place, 30) if ledger else "",
                str(invoice.number),
                invoice.kid if ledger else "",
                invoice.due_date.strftime("%Y%m%d") if ledger else "",
                "",
                "",
                _gbat_text(p.text, 100),
                _gbat_text(p.text, 100) if ledger else "",
                "1",
                "",
                "",
                "",
            ]
            lines.append(";".join(fields))
    return ("\r\n".join(lines) + "\r\n").encode("cp1252", "replace")


FIKEN_CUSTOMER_COLUMNS = (
    "Navn",
    "Orgnr",
    "Adresse",
    "Adresse2",
    "Postnr",
    "Poststed",
    "Land",
    "E-post",
    "Telefon",
    "Medlemsnummer",
)


def fiken_customers(items: Iterable[Voucher]) -> tuple[list[str], list[tuple]]:
    """The customers of the period's vouchers, in Fiken's customer import headings."""
    seen: dict[int, tuple] = {}
    for voucher in items:
        invoice = voucher.invoice
        number = customer_number(invoice)
        if number not in seen:
            seen[number] = (
                invoice.customer_name,
                invoice.customer_orgnr,
                invoice.customer_address,
                "",
                invoice.customer_postal_code,
                invoice.customer_postal_place,
                "Norge",
                invoice.customer_email,
                "",
                str(number),
            )
    return list(FIKEN_CUSTOMER_COLUMNS), list(seen.values())


def _output_vat_of_lines(line, parent_id, dated, settings: FeeSettings):
    """What the income postings of the dated documents' lines put on the output VAT
    account: each line's VAT, plus its net where that income account is the VAT account
    (as `totals` counts every posting to that account)."""
    net_on_vat_account = []
    if settings.account_income_vat == settings.account_output_vat:
        net_on_vat_account.append(case((line.vat_category == "S", line.net_ore), else_=0))
    if settings.account_income_no_vat == settings.account_output_vat:
        net_on_vat_account.append(case((line.vat_category != "S", line.net_ore), else_=0))
    amount = line.vat_ore
    for extra in net_on_vat_account:
        amount = amount + extra
    return select(func.coalesce(func.sum(amount), 0)).where(parent_id.in_(dated))


def period_totals(start: date, end: date, settings: FeeSettings) -> PeriodTotals:
    """`totals(vouchers(start, end, settings), settings)`, added up by the database.

    The accounting page shows only these figures: building every voucher of a year
    (tens of thousands of invoices and payments) to sum them took seconds.
    """
    result = PeriodTotals()
    invoices = select(Invoice.id).where(Invoice.issue_date.between(start, end))
    count, gross = db.session.execute(
        select(func.count(Invoice.id), func.coalesce(func.sum(Invoice.amount_ore), 0)).where(
            Invoice.issue_date.between(start, end)
        )
    ).one()
    result.count += count
    result.invoiced = int(gross)
    result.vat = int(
        db.session.scalar(
            _output_vat_of_lines(InvoiceLine, InvoiceLine.invoice_id, invoices, settings)
        )
    )
    notes = select(CreditNote.id).where(CreditNote.issue_date.between(start, end))
    count, credited, fees_cancelled = db.session.execute(
        select(
            func.count(CreditNote.id),
            func.coalesce(func.sum(CreditNote.amount_ore), 0),
            func.coalesce(func.sum(CreditNote.fees_cancelled_ore), 0),
        ).where(CreditNote.issue_date.between(start, end))
    ).one()
    result.count += count
    result.credited = int(credited)
    result.fees_cancelled = int(fees_cancelled)
    result.vat -= int(
        db.session.scalar(
            _output_vat_of_lines(CreditNoteLine, CreditNoteLine.credit_note_id, notes, settings)
        )
    )
    count, fees = db.session.execute(
        select(func.count(Reminder.id), func.coalesce(func.sum(Reminder.fee_ore), 0)).where(
            Reminder.sent_on.between(start, end), Reminder.fee_ore > 0
        )
    ).one()
    result.count += count
    result.reminder_fees = int(fees)
    kind = case(
        (Payment.kind == "write_off", "write_off"),
        (Payment.amount_ore < 0, "refund"),
        else_="payment",
    )
    for voucher_kind, count, amount in db.session.execute(
        select(
            kind, func.count(Payment.id), func.coalesce(func.sum(func.abs(Payment.amount_ore)), 0)
        )
        .where(Payment.paid_on.between(start, end))
        .group_by(kind)
    ):
        result.count += count
        if voucher_kind == "write_off":
            result.written_off = int(amount)
        elif voucher_kind == "refund":
            result.refunded = int(amount)
        else:
            result.received = int(amount)
    return result
