"""Invoice and reminder PDFs in the Norwegian layout, drawn with fpdf2 (pure Python).

Sender top left, the recipient where a window envelope shows it, invoice facts top
right, the fee line, and a payment block with account number, KID, amount and due
date. Always in Norwegian: the invoice is a document for the member, not a page in
the treasurer's chosen language. fpdf2's core Helvetica covers Latin-1, so æ, ø and
å need no embedded font.
"""

from datetime import date

from babel.numbers import format_decimal
from flask_babel import force_locale
from flask_babel import gettext as _
from fpdf import FPDF

from crm.fees.models import CreditNote, FeeSettings, Invoice, Reminder, vat_breakdown
from crm.fees.money import kroner
from crm.fees.services import amount_to_pay_ore
from crm.numbers import is_digits
from crm.organisation import services as organisation

INK = (29, 39, 51)
MUTED = (95, 107, 122)
LINE = (200, 208, 218)
ACCENT = (23, 74, 109)


def nok(ore: int) -> str:
    """`kr 12 500,00` with plain spaces (the PDF's core font is Latin-1 only)."""
    number = format_decimal(kroner(ore), format="#,##0.00", locale="nb")
    return "kr " + number.replace("\u00a0", " ").replace("\u202f", " ")


def _date(value: date) -> str:
    return value.strftime("%d.%m.%Y")


def _orgnr(orgnr: str) -> str:
    return f"{orgnr[:3]} {orgnr[3:6]} {orgnr[6:]}" if len(orgnr) == 9 else orgnr


def _account(account: str) -> str:
    if len(account) == 11 and is_digits(account):
        return f"{account[:4]}.{account[4:6]}.{account[6:]}"
    return account


def _latin1(text: str) -> str:
    return (text or "").encode("latin-1", "replace").decode("latin-1")


def pdf_filename(invoice: Invoice, reminder: Reminder | None = None) -> str:
    if reminder is not None:
        return f"purring-{reminder.level}-faktura-{invoice.number}.pdf"
    return f"faktura-{invoice.number}.pdf"


class _Document(FPDF):
    def __init__(self, footer_text: str):
        super().__init__(orientation="P", unit="mm", format="A4")
        self.footer_text = footer_text
        self.set_auto_page_break(auto=True, margin=20)
        self.set_margins(20, 18, 20)

    def footer(self):
        self.set_y(-14)
        self.set_font("Helvetica", size=8)
        self.set_text_color(*MUTED)
        self.cell(0, 5, _latin1(self.footer_text), align="C")

    def text_line(self, text: str, size: float = 10, style: str = "", color=INK, h: float = 5):
        self.set_font("Helvetica", style=style, size=size)
        self.set_text_color(*color)
        self.cell(0, h, _latin1(text), new_x="LMARGIN", new_y="NEXT")


def invoice_pdf(invoice: Invoice, settings: FeeSettings, reminder: Reminder | None = None) -> bytes:
    """The invoice (or, with `reminder`, the reminder of it) as PDF bytes."""
    with force_locale("nb"):
        return _draw(invoice, settings, reminder)


def _seller_orgnr(settings: FeeSettings, invoice: Invoice) -> str:
    """`Org. no. 999 999 999`, followed by MVA when the invoice charges VAT (a seller
    registered for VAT shows it so, bokføringsforskriften § 5-1-1)."""
    seller = organisation.get()
    if not seller.orgnr:
        return ""
    text = _("Org. no. %(orgnr)s", orgnr=_orgnr(seller.orgnr))
    if any(line.vat_category == "S" for line in invoice.lines):
        text += " MVA"
    return text


def _footer(settings: FeeSettings, invoice: Invoice) -> str:
    seller = organisation.get()
    parts = (seller.name, _seller_orgnr(settings, invoice), organisation.invoice_email(seller))
    return " · ".join(part for part in parts if part)


def _sender(pdf: "_Document", settings: FeeSettings, invoice: Invoice) -> None:
    """Sender, top left: the organisation's logo (when it has one), name and address."""
    seller = organisation.get()
    logo = organisation.logo_path(seller)
    if logo is not None:
        # In the top margin, above the name: the lines below keep their places (the
        # recipient must stay where a window envelope shows it).
        pdf.image(str(logo), x=pdf.l_margin, y=5, h=11)
    pdf.text_line(seller.name, size=14, style="B", color=ACCENT, h=7)
    for line in (
        seller.street_address,
        f"{seller.postal_code} {seller.postal_place}".strip(),
        _seller_orgnr(settings, invoice),
        organisation.invoice_email(seller),
    ):
        if line:
            pdf.text_line(line, size=9, color=MUTED, h=4.5)


def _facts(pdf: "_Document", title: str, facts: list[tuple[str, str]]) -> None:
    """Title and facts, top right."""
    pdf.set_xy(120, 18)
    pdf.set_font("Helvetica", style="B", size=20)
    pdf.set_text_color(*INK)
    pdf.cell(70, 10, _latin1(title), align="R", new_x="LEFT", new_y="NEXT")
    pdf.ln(2)
    for label, value in facts:
        pdf.set_x(120)
        pdf.set_font("Helvetica", size=9)
        pdf.set_text_color(*MUTED)
        pdf.cell(32, 5.5, _latin1(label))
        pdf.set_font("Helvetica", style="B", size=9.5)
        pdf.set_text_color(*INK)
        pdf.cell(38, 5.5, _latin1(value), align="R", new_x="LEFT", new_y="NEXT")


def _recipient(pdf: "_Document", invoice: Invoice) -> None:
    """Recipient, where a C5 window envelope shows it."""
    pdf.set_xy(20, 50)
    pdf.text_line(invoice.customer_name, size=11, style="B", h=6)
    for line in (
        invoice.customer_address,
        f"{invoice.customer_postal_code} {invoice.customer_postal_place}".strip(),
    ):
        if line:
            pdf.text_line(line, size=10.5, h=5.5)


def invoices_pdf(invoices, settings: FeeSettings) -> bytes:
    """Several invoices in one PDF, one after the other (to print and post)."""
    with force_locale("nb"):
        pdf = _Document(_footer(settings, invoices[0]))
        pdf.set_title(_latin1(f"{organisation.get().name}: {_('Invoices')}"))
        pdf.set_author(_latin1(organisation.get().name))
        for invoice in invoices:
            _draw(invoice, settings, None, pdf)
        return bytes(pdf.output())


def _draw(
    invoice: Invoice,
    settings: FeeSettings,
    reminder: Reminder | None,
    pdf: "_Document | None" = None,
) -> bytes | None:
    """Draw the invoice on a new page; a document of its own unless `pdf` is given."""
    own = pdf is None
    if own:
        pdf = _Document(_footer(settings, invoice))
        pdf.set_title(_latin1(f"{organisation.get().name} {invoice.number}"))
        pdf.set_author(_latin1(organisation.get().name))
    pdf.add_page()
    _sender(pdf, settings, invoice)

    if reminder is None:
        title = _("INVOICE")
    else:
        title = _("REMINDER %(level)s", level=reminder.level)
    due = reminder.new_due_date if reminder else invoice.due_date
    facts = [
        (_("Invoice number"), str(invoice.number)),
        (_("Invoice date"), _date(invoice.issue_date)),
    ]
    if reminder is not None:
        facts.append((_("Reminder date"), _date(reminder.sent_on)))
        facts.append((_("Original due date"), _date(invoice.due_date)))
    facts.append((_("Due date"), _date(due)))
    if invoice.customer_orgnr:
        facts.append((_("Customer org. no."), _orgnr(invoice.customer_orgnr)))
    facts += [
        (_("KID"), invoice.kid),
        (_("Account number"), _account(settings.bank_account)),
    ]
    _facts(pdf, title, facts)
    _recipient(pdf, invoice)

    # The fee lines.
    pdf.set_y(max(pdf.get_y(), 88) + 6)
    if reminder is not None:
        pdf.set_font("Helvetica", size=10)
        pdf.set_text_color(*INK)
        pdf.multi_cell(
            0,
            5,
            _latin1(
                _(
                    "We cannot see that invoice %(number)s, due %(due)s, has been paid. "
                    "Please pay the amount below by %(new_due)s. If you have paid in the "
                    "last few days, please disregard this reminder.",
                    number=invoice.number,
                    due=_date(invoice.due_date),
                    new_due=_date(reminder.new_due_date),
                )
            ),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.ln(4)
    _lines_table(pdf, invoice.lines, invoice.net_ore, invoice.amount_ore)
    for note in invoice.credit_notes:
        _table_row(
            pdf,
            _("Credit note %(number)s: %(reason)s", number=note.number, reason=note.reason),
            nok(-note.amount_ore),
        )
        if note.fees_cancelled_ore:
            _table_row(
                pdf,
                _("Reminder fees cancelled by credit note %(number)s", number=note.number),
                nok(-note.fees_cancelled_ore),
            )
    for earlier in invoice.reminders:
        if earlier.fee_ore and (reminder is None or earlier.level <= reminder.level):
            _table_row(pdf, _("Reminder fee (no VAT)"), nok(earlier.fee_ore))
    paid = invoice.paid_ore + invoice.written_off_ore
    if paid:
        _table_row(pdf, _("Paid"), nok(-paid))
    to_pay = amount_to_pay_ore(invoice, reminder)
    pdf.ln(1)
    pdf.set_draw_color(*INK)
    pdf.line(20, pdf.get_y(), 190, pdf.get_y())
    pdf.ln(1.5)
    pdf.set_font("Helvetica", style="B", size=11)
    pdf.set_text_color(*INK)
    pdf.cell(130, 7, _latin1(_("Amount to pay")))
    pdf.cell(40, 7, _latin1(nok(to_pay)), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*MUTED)
    if all(line.vat_category == "O" for line in invoice.lines):
        closing = _("Membership fees are not subject to VAT. Please use the KID when you pay.")
    else:
        closing = _("Please use the KID when you pay.")
    pdf.multi_cell(0, 4.5, _latin1(closing), new_x="LMARGIN", new_y="NEXT")

    # Payment block, like the bottom of a giro.
    top = 222
    pdf.set_draw_color(*LINE)
    pdf.set_fill_color(245, 247, 250)
    pdf.rect(20, top, 170, 40, style="DF")
    pdf.set_xy(25, top + 4)
    pdf.set_font("Helvetica", style="B", size=10)
    pdf.set_text_color(*ACCENT)
    pdf.cell(0, 6, _latin1(_("Payment information")), new_x="LMARGIN", new_y="NEXT")
    blocks = [
        (_("To account"), _account(settings.bank_account)),
        (_("KID"), invoice.kid),
        (_("Amount"), nok(to_pay)),
        (_("Due date"), _date(due)),
    ]
    for index, (label, value) in enumerate(blocks):
        x = 25 + index * 41
        pdf.set_xy(x, top + 14)
        pdf.set_font("Helvetica", size=8.5)
        pdf.set_text_color(*MUTED)
        pdf.cell(40, 5, _latin1(label))
        pdf.set_xy(x, top + 20)
        pdf.set_font("Helvetica", style="B", size=11.5)
        pdf.set_text_color(*INK)
        pdf.cell(40, 7, _latin1(value))
    pdf.set_xy(25, top + 31)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*MUTED)
    pdf.cell(0, 5, _latin1(_("Payer: %(name)s", name=invoice.customer_name)))
    return bytes(pdf.output()) if own else None


def _rate(rate) -> str:
    return f"{rate.normalize():f}".replace(".", ",") + " %"


def _quantity(quantity) -> str:
    return f"{quantity.normalize():f}".replace(".", ",")


def _lines_table(pdf: FPDF, lines, net_ore: int, gross_ore: int) -> None:
    """The document's lines (description, quantity, unit price, VAT rate, net amount),
    then the total without VAT, the VAT per rate and the total with VAT."""
    widths = (82, 18, 28, 14, 28)
    header = (_("Description"), _("Quantity"), _("Unit price"), _("VAT"), _("Amount"))
    pdf.set_font("Helvetica", style="B", size=8.5)
    pdf.set_text_color(*MUTED)
    for index, (width, text) in enumerate(zip(widths, header, strict=True)):
        pdf.cell(width, 7, _latin1(text), align="L" if index == 0 else "R")
    pdf.ln(7)
    pdf.set_draw_color(*LINE)
    pdf.line(20, pdf.get_y(), 190, pdf.get_y())
    for line in lines:
        values = (
            _latin1(line.description)[:48],
            _quantity(line.quantity),
            nok(line.unit_price_ore),
            _rate(line.vat_rate),
            nok(line.net_ore),
        )
        pdf.set_font("Helvetica", size=9.5)
        pdf.set_text_color(*INK)
        for index, (width, text) in enumerate(zip(widths, values, strict=True)):
            pdf.cell(width, 7, _latin1(text), align="L" if index == 0 else "R")
        pdf.ln(7)
        pdf.line(20, pdf.get_y(), 190, pdf.get_y())
    _table_row(pdf, _("Total excl. VAT"), nok(net_ore))
    for group in vat_breakdown(lines):
        if group.category == "O":
            label = _("No VAT (outside the scope of VAT) on %(amount)s", amount=nok(group.net_ore))
        else:
            label = _(
                "VAT %(rate)s of %(amount)s", rate=_rate(group.rate), amount=nok(group.net_ore)
            )
        _table_row(pdf, label, nok(group.vat_ore))
    _table_row(pdf, _("Total incl. VAT"), nok(gross_ore), bold=True)


def credit_note_pdf(note: CreditNote, settings: FeeSettings) -> bytes:
    """The credit note as PDF bytes: its lines, VAT per rate and totals."""
    with force_locale("nb"):
        return _draw_credit_note(note, settings)


def credit_note_filename(note: CreditNote) -> str:
    return f"kreditnota-{note.number}.pdf"


def _draw_credit_note(note: CreditNote, settings: FeeSettings) -> bytes:
    invoice = note.invoice
    pdf = _Document(_footer(settings, invoice))
    pdf.set_title(_latin1(f"{organisation.get().name} {note.number}"))
    pdf.set_author(_latin1(organisation.get().name))
    pdf.add_page()
    _sender(pdf, settings, invoice)
    facts = [
        (_("Credit note number"), str(note.number)),
        (_("Credit note date"), _date(note.issue_date)),
        (_("Credits invoice"), str(invoice.number)),
        (_("Invoice date"), _date(invoice.issue_date)),
    ]
    if invoice.customer_orgnr:
        facts.append((_("Customer org. no."), _orgnr(invoice.customer_orgnr)))
    _facts(pdf, _("CREDIT NOTE"), facts)
    _recipient(pdf, invoice)
    pdf.set_y(max(pdf.get_y(), 88) + 6)
    pdf.set_font("Helvetica", size=10)
    pdf.set_text_color(*INK)
    pdf.multi_cell(
        0,
        5,
        _latin1(_("Reason: %(reason)s", reason=note.reason)),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    pdf.ln(3)
    _lines_table(pdf, note.lines, note.net_ore, note.amount_ore)
    pdf.ln(3)
    pdf.set_font("Helvetica", size=8.5)
    pdf.set_text_color(*MUTED)
    pdf.multi_cell(
        0,
        4.5,
        _latin1(
            _(
                "The amount is credited on invoice %(number)s (KID %(kid)s).",
                number=invoice.number,
                kid=invoice.kid,
            )
        ),
        new_x="LMARGIN",
        new_y="NEXT",
    )
    if note.fees_cancelled_ore:
        pdf.set_font("Helvetica", size=10)
        pdf.set_text_color(*INK)
        pdf.ln(2)
        pdf.multi_cell(0, 5, _latin1(fees_cancelled_text(note)), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def fees_cancelled_text(note: CreditNote) -> str:
    """What a credit note says of the reminder fees it cancelled (PDF and EHF)."""
    return _(
        "The reminder fees of %(amount)s on invoice %(number)s are cancelled too: nothing "
        "is owed on the invoice.",
        amount=nok(note.fees_cancelled_ore),
        number=note.invoice.number,
    )


def _table_row(pdf: FPDF, text: str, amount: str, header: bool = False, bold: bool = False) -> None:
    if header:
        pdf.set_font("Helvetica", style="B", size=8.5)
        pdf.set_text_color(*MUTED)
    else:
        pdf.set_font("Helvetica", style="B" if bold else "", size=10)
        pdf.set_text_color(*INK)
    pdf.cell(130, 7, _latin1(text)[:90])
    pdf.cell(40, 7, _latin1(amount), align="R", new_x="LMARGIN", new_y="NEXT")
    pdf.set_draw_color(*LINE)
    pdf.line(20, pdf.get_y(), 190, pdf.get_y())
