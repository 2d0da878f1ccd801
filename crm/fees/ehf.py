"""Invoices and credit notes as EHF Billing 3.0 (Peppol BIS Billing 3.0, UBL 2.1).

One document per invoice (`Invoice`, type 380) or credit note (`CreditNote`, type 381),
built with lxml in the element order the UBL 2.1 schema demands. The rules it follows
(ids as in the official rule files, see crm/fees/ehf_validation.py):

- Seller and buyer are identified by organisation number: `EndpointID` and
  `PartyLegalEntity/CompanyID` with scheme 0192 (Brønnøysundregistrene).
- The seller's VAT number `NO<orgnr>MVA` (NO-R-001) is given only when the cluster is
  VAT-registered and the document has no line outside the scope of VAT: BR-O-02 forbids
  a seller VAT identifier on a document with category O, and category O may not be mixed
  with any other category (BR-O-11 … BR-O-14). "Foretaksregisteret" (NO-R-002, the
  foretaksregisterloven § 10-2 text for AS, ASA and branches) when the settings say the
  cluster is registered there.
- The KID is `PaymentMeans/PaymentID` with means code 30 (credit transfer) and the bank
  account as `PayeeFinancialAccount`; the invoice's due date is `DueDate`.
- `BuyerReference` (PEPPOL-EN16931-R003: buyer reference or order reference) is the
  buyer's invoice contact ("Deres ref."), else the buyer's organisation number.
- VAT per category and rate in `TaxTotal/TaxSubtotal`; category O carries an exemption
  reason (BR-O-10) and no rate; S carries its rate (BR-S-05).
- A credit note refers to its invoice in `BillingReference` (number and date). Reminder
  fees it cancelled are said in its `Note`, not put on a line: the fees were never on
  the invoice, and an O line could not go on a note with VAT lines (BR-O-11 … BR-O-14).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from flask_babel import gettext as _
from lxml import etree

from crm.fees.errors import FeeError
from crm.fees.models import CreditNote, FeeSettings, Invoice
from crm.fees.money import plain
from crm.organisation import services as organisation

CUSTOMIZATION_ID = "urn:cen.eu:en16931:2017#compliant#urn:fdc:peppol.eu:2017:poacc:billing:3.0"
PROFILE_ID = "urn:fdc:peppol.eu:2017:poacc:billing:01:1.0"
ORGNR_SCHEME = "0192"  # ISO 6523 ICD of the Norwegian organisation number
CURRENCY = "NOK"
CREDIT_TRANSFER = "30"  # UNCL 4461

NS_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
NS_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"
CAC = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
CBC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"

OUTSIDE_SCOPE = "O"
STANDARD_RATE = "S"
# The VAT exemption reason (BT-120/121) that categories other than S must carry
# (BR-O-10, BR-E-10, BR-AE-10, BR-IC-10, BR-G-10; VATEX code list), in the buyer's language.
EXEMPTION_REASONS = {
    "O": ("VATEX-EU-O", "Utenfor merverdiavgiftsområdet (medlemskontingent)"),
    "E": (None, "Fritatt for merverdiavgift"),
    "AE": ("VATEX-EU-AE", "Omvendt avgiftsplikt"),
    "K": ("VATEX-EU-IC", "Leveranse innen EØS"),
    "G": ("VATEX-EU-G", "Eksport utenfor EØS"),
}


@dataclass(frozen=True)
class EhfLine:
    """One invoice or credit note line as EHF shows it (amounts in øre, net of VAT)."""

    name: str
    quantity: Decimal
    unit_price_ore: int  # never negative (BR-27): a discount is a negative quantity
    net_ore: int
    category: str  # "O" outside the scope of VAT, "S" standard rate, …
    percent: Decimal | None  # None for O
    vat_ore: int = 0  # the line's share of its VAT group's VAT (crm/fees/lines.py)


def _ehf_line(line) -> EhfLine:
    quantity, price = line.quantity, line.unit_price_ore
    if price < 0:
        quantity, price = -quantity, -price
    return EhfLine(
        name=line.description,
        quantity=quantity,
        unit_price_ore=price,
        net_ore=line.net_ore,
        category=line.vat_category,
        percent=None if line.vat_category == OUTSIDE_SCOPE else line.vat_rate,
        vat_ore=line.vat_ore,
    )


def invoice_lines(invoice: Invoice) -> list[EhfLine]:
    """The invoice's lines (`InvoiceLine`) as EHF lines."""
    return [_ehf_line(line) for line in invoice.lines]


def credit_note_lines(note: CreditNote) -> list[EhfLine]:
    """The credit note's lines (`CreditNoteLine`, positive like the note) as EHF lines."""
    return [_ehf_line(line) for line in note.lines]


# --- building ---------------------------------------------------------------------------


# Characters XML 1.0 cannot hold (lxml raises): C0 controls but tab and line breaks, and
# the surrogates and U+FFFE/U+FFFF. Pasted text brings them (Word's line break is U+000B).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _el(parent, tag: str, text=None, **attrib):
    ns, _sep, name = tag.partition(":")
    element = etree.SubElement(parent, f"{{{CAC if ns == 'cac' else CBC}}}{name}", **attrib)
    if text is not None:
        element.text = _NOT_XML.sub(" ", str(text))
    return element


def _amount(parent, tag: str, ore: int):
    return _el(parent, tag, plain(ore), currencyID=CURRENCY)


def _number(value: Decimal) -> str:
    """A decimal without trailing zeros and never in exponent form ("1", "2.5", "25")."""
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


def _check(settings: FeeSettings, buyer_orgnr: str) -> None:
    missing = [
        label
        for label, value in (
            (_("the cluster's organisation number"), organisation.get().orgnr),
            (_("the cluster's name"), organisation.get().name),
            (_("the bank account"), settings.bank_account),
            (_("the customer's organisation number"), buyer_orgnr),
        )
        if not value
    ]
    if missing:
        raise FeeError(_("EHF needs %(missing)s.", missing=", ".join(missing)))


def _address(party, street: str, postal_code: str, place: str) -> None:
    address = _el(party, "cac:PostalAddress")
    if street:
        _el(address, "cbc:StreetName", street)
    if place:
        _el(address, "cbc:CityName", place)
    if postal_code:
        _el(address, "cbc:PostalZone", postal_code)
    _el(_el(address, "cac:Country"), "cbc:IdentificationCode", "NO")


def _seller(root, settings: FeeSettings, with_vat_number: bool) -> None:
    seller = organisation.get()
    party = _el(_el(root, "cac:AccountingSupplierParty"), "cac:Party")
    _el(party, "cbc:EndpointID", seller.orgnr, schemeID=ORGNR_SCHEME)
    _el(_el(party, "cac:PartyName"), "cbc:Name", seller.name)
    _address(party, seller.street_address, seller.postal_code, seller.postal_place)
    if with_vat_number:
        scheme = _el(party, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", f"NO{seller.orgnr}MVA")
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "VAT")
    if settings.foretaksregisteret:
        scheme = _el(party, "cac:PartyTaxScheme")
        _el(scheme, "cbc:CompanyID", "Foretaksregisteret")
        _el(_el(scheme, "cac:TaxScheme"), "cbc:ID", "TAX")
    legal = _el(party, "cac:PartyLegalEntity")
    _el(legal, "cbc:RegistrationName", seller.name)
    _el(legal, "cbc:CompanyID", seller.orgnr, schemeID=ORGNR_SCHEME)
    if organisation.invoice_email(seller):
        _el(_el(party, "cac:Contact"), "cbc:ElectronicMail", organisation.invoice_email(seller))


def _buyer(root, invoice: Invoice) -> None:
    party = _el(_el(root, "cac:AccountingCustomerParty"), "cac:Party")
    _el(party, "cbc:EndpointID", invoice.customer_orgnr, schemeID=ORGNR_SCHEME)
    _el(_el(party, "cac:PartyName"), "cbc:Name", invoice.customer_name)
    _address(
        party,
        invoice.customer_address,
        invoice.customer_postal_code,
        invoice.customer_postal_place,
    )
    legal = _el(party, "cac:PartyLegalEntity")
    _el(legal, "cbc:RegistrationName", invoice.customer_name)
    _el(legal, "cbc:CompanyID", invoice.customer_orgnr, schemeID=ORGNR_SCHEME)


def buyer_reference(invoice: Invoice) -> str:
    """The buyer's reference (BT-10): the invoice contact's name, else the orgnr."""
    from crm.fees.services import invoice_contact

    if invoice.company is None:
        return invoice.customer_orgnr or invoice.customer_name
    try:
        contact = invoice_contact(invoice.company)
    except FeeError:
        return invoice.customer_orgnr
    return contact.name or invoice.customer_orgnr


def _tax_and_totals(root, lines: list[EhfLine]) -> None:
    """TaxTotal with one TaxSubtotal per (category, rate), then LegalMonetaryTotal.

    A group's VAT is the sum of its lines' shares, which crm/fees/lines.py made equal to
    the group's net × rate rounded half up (BR-CO-17), so the document's totals are the
    invoice's own (the KID amount is the PayableAmount)."""
    groups: dict[tuple[str, Decimal | None], list[int]] = {}
    for line in lines:
        net_and_vat = groups.setdefault((line.category, line.percent), [0, 0])
        net_and_vat[0] += line.net_ore
        net_and_vat[1] += line.vat_ore
    vat_total = sum(vat for _net, vat in groups.values())
    tax_total = _el(root, "cac:TaxTotal")
    _amount(tax_total, "cbc:TaxAmount", vat_total)
    for (category, percent), (net, vat) in groups.items():
        subtotal = _el(tax_total, "cac:TaxSubtotal")
        _amount(subtotal, "cbc:TaxableAmount", net)
        _amount(subtotal, "cbc:TaxAmount", vat)
        _tax_category(subtotal, "cac:TaxCategory", category, percent, with_reason=True)
    net_total = sum(net for net, _vat in groups.values())
    totals = _el(root, "cac:LegalMonetaryTotal")
    _amount(totals, "cbc:LineExtensionAmount", net_total)
    _amount(totals, "cbc:TaxExclusiveAmount", net_total)
    _amount(totals, "cbc:TaxInclusiveAmount", net_total + vat_total)
    _amount(totals, "cbc:PayableAmount", net_total + vat_total)


def _tax_category(parent, tag, category: str, percent: Decimal | None, with_reason: bool):
    element = _el(parent, tag)
    _el(element, "cbc:ID", category)
    if category != OUTSIDE_SCOPE:
        _el(element, "cbc:Percent", _number(percent or Decimal(0)))
    if with_reason and category in EXEMPTION_REASONS:
        code, reason = EXEMPTION_REASONS[category]
        if code:
            _el(element, "cbc:TaxExemptionReasonCode", code)
        _el(element, "cbc:TaxExemptionReason", reason)
    _el(_el(element, "cac:TaxScheme"), "cbc:ID", "VAT")


def _lines(root, lines: list[EhfLine], credit: bool) -> None:
    for number, line in enumerate(lines, start=1):
        element = _el(root, "cac:CreditNoteLine" if credit else "cac:InvoiceLine")
        _el(element, "cbc:ID", number)
        _el(
            element,
            "cbc:CreditedQuantity" if credit else "cbc:InvoicedQuantity",
            _number(line.quantity),
            unitCode="C62",  # "one" (UN/ECE rec. 20): a unit without a measure
        )
        _amount(element, "cbc:LineExtensionAmount", line.net_ore)
        item = _el(element, "cac:Item")
        _el(item, "cbc:Name", line.name[:200])
        _tax_category(item, "cac:ClassifiedTaxCategory", line.category, line.percent, False)
        _amount(_el(element, "cac:Price"), "cbc:PriceAmount", line.unit_price_ore)


def _head(root, number: int, issue_date: date) -> None:
    _el(root, "cbc:CustomizationID", CUSTOMIZATION_ID)
    _el(root, "cbc:ProfileID", PROFILE_ID)
    _el(root, "cbc:ID", number)
    _el(root, "cbc:IssueDate", issue_date.isoformat())


def _check_vat(settings: FeeSettings, lines: list[EhfLine]) -> bool:
    """Whether the seller's VAT number goes in; FeeError when VAT is charged without it."""
    categories = {line.category for line in lines}
    charges_vat = bool(categories - {OUTSIDE_SCOPE})
    if charges_vat and not settings.vat_registered:
        raise FeeError(
            _("VAT is charged, but the fee settings say the cluster is not VAT-registered.")
        )
    if charges_vat and OUTSIDE_SCOPE in categories:
        # BR-O-11..14: an EHF document with category O can have no other category.
        raise FeeError(_("EHF cannot mix lines outside the scope of VAT with lines with VAT."))
    return charges_vat


def invoice_document(invoice: Invoice, settings: FeeSettings) -> bytes:
    """The invoice as an EHF Billing 3.0 UBL `Invoice` (UTF-8 bytes)."""
    _check(settings, invoice.customer_orgnr)
    lines = invoice_lines(invoice)
    with_vat_number = _check_vat(settings, lines)
    root = etree.Element(
        f"{{{NS_INVOICE}}}Invoice", nsmap={None: NS_INVOICE, "cac": CAC, "cbc": CBC}
    )
    _head(root, invoice.number, invoice.issue_date)
    _el(root, "cbc:DueDate", invoice.due_date.isoformat())
    _el(root, "cbc:InvoiceTypeCode", "380")
    _el(root, "cbc:DocumentCurrencyCode", CURRENCY)
    _el(root, "cbc:BuyerReference", buyer_reference(invoice)[:200])
    _seller(root, settings, with_vat_number)
    _buyer(root, invoice)
    means = _el(root, "cac:PaymentMeans")
    _el(means, "cbc:PaymentMeansCode", CREDIT_TRANSFER)
    _el(means, "cbc:PaymentID", invoice.kid)
    _el(_el(means, "cac:PayeeFinancialAccount"), "cbc:ID", settings.bank_account)
    _el(
        _el(root, "cac:PaymentTerms"),
        "cbc:Note",
        f"Betales innen {invoice.due_date.strftime('%d.%m.%Y')} med KID {invoice.kid}",
    )
    _tax_and_totals(root, lines)
    _lines(root, lines, credit=False)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def credit_note_document(note: CreditNote, settings: FeeSettings) -> bytes:
    """The credit note as an EHF Billing 3.0 UBL `CreditNote` (UTF-8 bytes)."""
    invoice = note.invoice
    _check(settings, invoice.customer_orgnr)
    lines = credit_note_lines(note)
    with_vat_number = _check_vat(settings, lines)
    root = etree.Element(
        f"{{{NS_CREDIT_NOTE}}}CreditNote", nsmap={None: NS_CREDIT_NOTE, "cac": CAC, "cbc": CBC}
    )
    _head(root, note.number, note.issue_date)
    _el(root, "cbc:CreditNoteTypeCode", "381")
    _el(root, "cbc:Note", credit_note_text(note))
    _el(root, "cbc:DocumentCurrencyCode", CURRENCY)
    _el(root, "cbc:BuyerReference", buyer_reference(invoice)[:200])
    reference = _el(_el(root, "cac:BillingReference"), "cac:InvoiceDocumentReference")
    _el(reference, "cbc:ID", invoice.number)
    _el(reference, "cbc:IssueDate", invoice.issue_date.isoformat())
    _seller(root, settings, with_vat_number)
    _buyer(root, invoice)
    _tax_and_totals(root, lines)
    _lines(root, lines, credit=True)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8", pretty_print=True)


def credit_note_text(note: CreditNote) -> str:
    """The credit note's note (BT-22, at most one): its reason, and the reminder fees it
    cancelled, which are no line of it (see `CreditNote`), in Norwegian like the rest."""
    if not note.fees_cancelled_ore:
        return note.reason
    amount = plain(note.fees_cancelled_ore).replace(".", ",")
    return (
        f"{note.reason}. Purregebyr kr {amount} på faktura {note.invoice.number} er også "
        "kansellert: ingenting skyldes på fakturaen."
    )


def document_for_number(number: int, settings: FeeSettings) -> tuple[str, bytes]:
    """("invoice" | "credit_note", EHF bytes) of the document with that number in the one
    series invoices and credit notes share; FeeError when there is none."""
    from sqlalchemy import select

    from crm.extensions import db

    invoice = db.session.scalar(select(Invoice).where(Invoice.number == number))
    if invoice is not None:
        return "invoice", invoice_document(invoice, settings)
    note = db.session.scalar(select(CreditNote).where(CreditNote.number == number))
    if note is not None:
        return "credit_note", credit_note_document(note, settings)
    raise FeeError(_("There is no invoice or credit note number %(number)s.", number=number))


def ehf_filename(number: int, kind: str = "invoice") -> str:
    return f"{'kreditnota' if kind == 'credit_note' else 'faktura'}-{number}-ehf.xml"
