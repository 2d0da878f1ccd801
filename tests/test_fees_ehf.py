"""EHF Billing 3.0: every invoice and credit note as UBL that passes the schema and the
official EN 16931 + Peppol rules; the CLI, the download, and sending through an access point
with email as the fallback.

The official rule files live in ../shared/fixtures/peppol; without them the documents are
still checked against the UBL 2.1 schema, and the rule checks skip.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from lxml import etree

from crm.extensions import db
from crm.fees import ehf
from crm.fees.access_point import HttpAccessPoint
from crm.fees.delivery import deliver_invoice
from crm.fees.ehf import credit_note_document, invoice_document
from crm.fees.ehf_validation import validate_ehf
from crm.fees.errors import FeeError
from crm.fees.lines import LineSpec
from crm.fees.models import InvoiceDelivery
from crm.fees.services import create_invoice, credit_invoice, get_settings
from tests.conftest import SHARED
from tests.factories import make_invoiced_members, make_member

PEPPOL = SHARED / "fixtures" / "peppol"
RULES = PEPPOL if (PEPPOL / "PEPPOL-EN16931-UBL.sch").is_file() else None
needs_rules = pytest.mark.skipif(RULES is None, reason="../shared/fixtures/peppol is not here")
NS = {
    "cac": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
    "cbc": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
}


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


def check(document: bytes):
    """The validator's report; with the rule files when they are here."""
    report = validate_ehf(document, RULES)
    assert report.valid, report.summary()
    return report


def xpath(document: bytes, path: str) -> list[str]:
    return [
        value if isinstance(value, str) else (value.text or "")
        for value in etree.fromstring(document).xpath(path, namespaces=NS)
    ]


# --- acceptance 3: every document the scenarios make passes -----------------------------


@needs_rules
def test_membership_fee_invoice_passes_schema_and_every_official_rule(ctx):
    invoice = make_invoiced_members(1)[0]

    report = check(invoice_document(invoice, get_settings()))

    assert report.rules_checked == ("CEN-EN16931-UBL.sch", "PEPPOL-EN16931-UBL.sch")


@needs_rules
def test_credit_notes_full_and_partial_pass_schema_and_every_official_rule(ctx):
    first, second = make_invoiced_members(2)
    full = credit_invoice(first, "Meldt ut før fakturadato")
    partial = credit_invoice(second, "Rabatt etter avtale", amount_ore=50_000)
    db.session.commit()

    for note in (full, partial):
        check(credit_note_document(note, get_settings()))


@needs_rules
def test_pro_rata_membership_invoice_passes_schema_and_every_official_rule(ctx):
    from datetime import date

    from crm.fees.services import run_annual_invoicing
    from tests.factories import make_fee_schedule, make_fee_settings

    make_fee_settings(pro_rata="month")
    make_fee_schedule(2026)
    company = make_member("Ny i desember AS", employees=3)
    company.member_since = date(2026, 12, 3)
    db.session.commit()
    [invoice] = run_annual_invoicing(2026).created

    document = invoice_document(invoice, get_settings())

    check(document)
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == ["208.33"]
    assert "1 av 12 måneder" in xpath(document, "//cac:InvoiceLine/cac:Item/cbc:Name")[0]


@needs_rules
def test_vat_registered_cluster_in_foretaksregisteret_passes_without_no_r_002(ctx):
    invoice = make_invoiced_members(1)[0]
    settings = get_settings()
    settings.vat_registered = True
    settings.foretaksregisteret = True

    report = check(invoice_document(invoice, settings))

    assert report.warnings == []


def course_fee_invoice(company=None, vat_registered=True):
    """A course fee with 25 % VAT, as an event invoices it (two seats at 2 000 kr)."""
    settings = get_settings()
    settings.vat_registered = vat_registered
    settings.foretaksregisteret = True
    company = company or make_member("Kursdeltaker AS")
    invoice = create_invoice(
        company,
        [
            LineSpec("LEAN-kurs, 3 samlinger", 200_000, quantity=2, vat_category="S", vat_rate=25),
            LineSpec("Kursmateriell", 12_345, vat_category="S", vat_rate=25),
        ],
        kind="event",
    )
    db.session.commit()
    return invoice


@needs_rules
def test_course_fee_with_25_percent_vat_passes_and_carries_the_vat_number(ctx):
    make_invoiced_members(1)
    invoice = course_fee_invoice()

    document = invoice_document(invoice, get_settings())

    check(document)
    assert xpath(document, "//cac:AccountingSupplierParty//cac:PartyTaxScheme/cbc:CompanyID") == [
        "NO974760673MVA",
        "Foretaksregisteret",
    ]
    assert xpath(document, "//cac:TaxSubtotal/cac:TaxCategory/cbc:ID") == ["S"]
    assert xpath(document, "//cac:TaxSubtotal/cac:TaxCategory/cbc:Percent") == ["25"]
    # 4 123.45 net, VAT 25 % of it rounded half up: 1 030.86; the KID amount is the total.
    assert xpath(document, "/*/cac:TaxTotal/cbc:TaxAmount") == ["1030.86"]
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == ["5154.31"]
    assert invoice.amount_ore == 515_431
    assert xpath(document, "//cac:InvoiceLine/cbc:InvoicedQuantity") == ["2", "1"]


@needs_rules
def test_credit_note_of_a_course_fee_passes_with_its_vat(ctx):
    make_invoiced_members(1)
    invoice = course_fee_invoice()
    full = credit_invoice(invoice, "Kurset ble avlyst", amount_ore=100_000)
    db.session.commit()

    document = credit_note_document(full, get_settings())

    check(document)
    assert xpath(document, "//cac:TaxSubtotal/cac:TaxCategory/cbc:ID") == ["S"]
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == ["1000.00"]


@needs_rules
def test_the_validator_refuses_a_broken_copy_of_our_invoice(ctx):
    invoice = make_invoiced_members(1)[0]
    document = invoice_document(invoice, get_settings())
    broken = document.replace(
        b'<cbc:PayableAmount currencyID="NOK">', b'<cbc:PayableAmount currencyID="NOK">1', 1
    )

    report = validate_ehf(broken, RULES)

    assert not report.valid
    assert "BR-CO-16" in report.failed_rules


# --- what the document says -----------------------------------------------------------


def test_invoice_names_both_parties_by_orgnr_and_carries_kid_account_and_due_date(ctx):
    invoice = make_invoiced_members(1)[0]

    document = invoice_document(invoice, get_settings())

    check(document)
    assert xpath(document, "/*/cbc:CustomizationID") == [ehf.CUSTOMIZATION_ID]
    assert xpath(document, "/*/cbc:ProfileID") == [ehf.PROFILE_ID]
    assert xpath(document, "/*/cbc:ID") == [str(invoice.number)]
    assert xpath(document, "//cbc:EndpointID/@schemeID") == ["0192", "0192"]
    assert xpath(document, "//cbc:EndpointID") == ["974760673", invoice.customer_orgnr]
    assert xpath(document, "//cac:PartyLegalEntity/cbc:CompanyID") == [
        "974760673",
        invoice.customer_orgnr,
    ]
    assert xpath(document, "//cac:PaymentMeans/cbc:PaymentID") == [invoice.kid]
    assert xpath(document, "//cac:PayeeFinancialAccount/cbc:ID") == ["86011117947"]
    assert xpath(document, "/*/cbc:DueDate") == [invoice.due_date.isoformat()]
    assert xpath(document, "/*/cbc:BuyerReference") == ["Frida Faktura"]
    # Membership fee: outside the scope of VAT, with its reason, no seller VAT number.
    assert xpath(document, "//cac:TaxSubtotal/cac:TaxCategory/cbc:ID") == ["O"]
    assert xpath(document, "//cac:TaxCategory/cbc:TaxExemptionReasonCode") == ["VATEX-EU-O"]
    assert xpath(document, "//cac:PartyTaxScheme") == []
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == [
        f"{invoice.amount_ore // 100}.{invoice.amount_ore % 100:02d}"
    ]


def test_credit_note_refers_to_its_invoice(ctx):
    invoice = make_invoiced_members(1)[0]
    note = credit_invoice(invoice, "Feil beløp", amount_ore=10_000)
    db.session.commit()

    document = credit_note_document(note, get_settings())

    check(document)
    assert etree.QName(etree.fromstring(document)).localname == "CreditNote"
    assert xpath(document, "/*/cbc:CreditNoteTypeCode") == ["381"]
    assert xpath(document, "//cac:InvoiceDocumentReference/cbc:ID") == [str(invoice.number)]
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == ["100.00"]


def test_a_buyer_without_organisation_number_gets_a_clear_refusal(ctx):
    invoice = make_invoiced_members(1)[0]
    invoice.customer_orgnr = ""

    with pytest.raises(FeeError, match="customer's organisation number"):
        invoice_document(invoice, get_settings())


def test_vat_charged_by_a_cluster_not_registered_for_vat_is_refused(ctx):
    make_invoiced_members(1)
    invoice = course_fee_invoice(vat_registered=False)

    with pytest.raises(FeeError, match="not VAT-registered"):
        invoice_document(invoice, get_settings())


def test_an_invoice_mixing_vat_and_outside_scope_lines_is_refused_as_ehf(ctx):
    make_invoiced_members(1)
    get_settings().vat_registered = True
    invoice = create_invoice(
        make_member("Blandet AS"),
        [
            LineSpec("Kontingent", 100_000),
            LineSpec("Kurs", 100_000, vat_category="S", vat_rate=25),
        ],
    )

    with pytest.raises(FeeError, match="cannot mix"):
        invoice_document(invoice, get_settings())


# --- crm fees ehf NUMBER ----------------------------------------------------------------


def test_cli_writes_the_invoice_as_ehf_to_stdout(ctx, runner):
    invoice = make_invoiced_members(1)[0]

    result = runner.invoke(args=["fees", "ehf", str(invoice.number)])

    assert result.exit_code == 0, result.output
    document = result.stdout_bytes
    assert xpath(document, "/*/cbc:ID") == [str(invoice.number)]
    check(document)


def test_cli_writes_a_credit_note_by_its_number_and_validates_it(ctx, runner):
    invoice = make_invoiced_members(1)[0]
    note = credit_invoice(invoice, "Utmeldt")
    db.session.commit()

    result = runner.invoke(args=["fees", "ehf", str(note.number), "--validate"])

    assert result.exit_code == 0, result.output
    assert b"<CreditNote" in result.stdout_bytes
    assert "valid (UBL 2.1 schema" in result.stderr


def test_cli_refuses_an_unknown_number_with_a_clear_message(ctx, runner):
    make_invoiced_members(1)

    result = runner.invoke(args=["fees", "ehf", "999999"])

    assert result.exit_code != 0
    assert "no invoice or credit note number 999999" in result.output
    assert "<Invoice" not in result.output


# --- download from the invoice page -------------------------------------------------------


def test_treasurer_downloads_the_invoice_ehf_from_the_invoice_page(app, client, auth):
    with app.app_context():
        invoice = make_invoiced_members(1)[0]
        invoice_id, number = invoice.id, invoice.number
    auth.login("treasurer")

    page = client.get(f"/fees/invoices/{invoice_id}")
    response = client.get(f"/fees/invoices/{invoice_id}/ehf.xml")

    assert f"/fees/invoices/{invoice_id}/ehf.xml".encode() in page.data
    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert f'filename="faktura-{number}-ehf.xml"' in response.headers["Content-Disposition"]
    assert xpath(response.data, "/*/cbc:ID") == [str(number)]


def test_staff_cannot_download_an_invoice_ehf(app, client, auth):
    with app.app_context():
        invoice_id = make_invoiced_members(1)[0].id
    auth.login("staff")

    assert client.get(f"/fees/invoices/{invoice_id}/ehf.xml").status_code == 403


# --- sending: EHF through the access point, email as the fallback ------------------------


def test_a_company_registered_for_ehf_gets_it_through_the_access_point(ctx, tmp_path):
    invoice = make_invoiced_members(1)[0]
    ctx.config.update(
        EHF_BACKEND="local", EHF_LOCAL_RECEIVERS=invoice.customer_orgnr, EHF_OUTBOX_DIR=tmp_path
    )
    try:
        delivery = deliver_invoice(invoice)
        db.session.commit()
    finally:
        ctx.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")

    assert delivery.channel == "ehf"
    assert delivery.recipient == f"0192:{invoice.customer_orgnr}"
    assert invoice.sent_at is not None and invoice.send_count == 1
    (sent,) = tmp_path.glob("*.xml")
    assert xpath(sent.read_bytes(), "//cac:PaymentMeans/cbc:PaymentID") == [invoice.kid]
    check(sent.read_bytes())


def test_a_company_that_cannot_receive_ehf_gets_the_email_with_pdf(ctx):
    from crm.mail.models import EmailMessage

    invoice = make_invoiced_members(1)[0]
    ctx.config.update(EHF_BACKEND="local", EHF_LOCAL_RECEIVERS="999999999")
    try:
        delivery = deliver_invoice(invoice)
        db.session.commit()
    finally:
        ctx.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")

    assert delivery.channel == "email"
    assert delivery.recipient.endswith("@example.no")
    assert db.session.query(EmailMessage).count() == 1
    assert [d.channel for d in invoice.deliveries] == ["email"]


def test_each_sending_is_recorded_with_channel_and_time(ctx, tmp_path):
    invoice = make_invoiced_members(1)[0]
    deliver_invoice(invoice)  # EHF_BACKEND none: email
    ctx.config.update(EHF_BACKEND="local", EHF_LOCAL_RECEIVERS="*", EHF_OUTBOX_DIR=tmp_path)
    try:
        deliver_invoice(invoice)
        db.session.commit()
    finally:
        ctx.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")

    rows = db.session.query(InvoiceDelivery).order_by(InvoiceDelivery.id).all()
    assert [row.channel for row in rows] == ["email", "ehf"]
    assert all(row.delivered_at.tzinfo is not None for row in rows)
    assert invoice.send_count == 2


def test_sending_unsent_invoices_uses_ehf_where_registered_and_email_elsewhere(ctx, tmp_path):
    from crm.fees.tasks import send_invoices

    registered, other = make_invoiced_members(2)
    ctx.config.update(
        EHF_BACKEND="local", EHF_LOCAL_RECEIVERS=registered.customer_orgnr, EHF_OUTBOX_DIR=tmp_path
    )
    try:
        result = send_invoices([registered.id, other.id])
    finally:
        ctx.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")

    assert result == {"sent": 2, "problems": []}
    db.session.expire_all()
    assert [d.channel for d in registered.deliveries] == ["ehf"]
    assert [d.channel for d in other.deliveries] == ["email"]


def test_treasurer_sends_a_credit_note_as_ehf_after_the_invoice_went_as_ehf(
    app, client, auth, tmp_path
):
    with app.test_request_context():
        invoice = make_invoiced_members(1)[0]
        app.config.update(
            EHF_BACKEND="local", EHF_LOCAL_RECEIVERS=invoice.customer_orgnr, EHF_OUTBOX_DIR=tmp_path
        )
        deliver_invoice(invoice)
        note = credit_invoice(invoice, "Utmeldt")
        db.session.commit()
        invoice_id, note_id, number = invoice.id, note.id, note.number
    auth.login("treasurer")
    try:
        page = client.get(f"/fees/invoices/{invoice_id}")
        response = client.post(f"/fees/credit-notes/{note_id}/send-ehf")
    finally:
        app.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")

    assert f"/fees/credit-notes/{note_id}/send-ehf".encode() in page.data
    assert response.status_code == 302
    sent = [p for p in tmp_path.glob("*.xml") if p.name.startswith("credit-note")]
    assert len(sent) == 1
    assert xpath(sent[0].read_bytes(), "/*/cbc:ID") == [str(number)]
    with app.test_request_context():
        rows = db.session.query(InvoiceDelivery).order_by(InvoiceDelivery.id).all()
        assert [(r.channel, r.credit_note_id) for r in rows] == [("ehf", None), ("ehf", note_id)]


def test_a_credit_note_is_not_sent_as_ehf_to_a_company_that_does_not_take_it(ctx):
    from crm.fees.delivery import send_credit_note_as_ehf

    invoice = make_invoiced_members(1)[0]
    note = credit_invoice(invoice, "Utmeldt")

    with pytest.raises(FeeError, match="does not receive EHF"):
        send_credit_note_as_ehf(note)
    assert invoice.deliveries == []


class _AccessPointServer:
    """A local HTTP access point: records requests, answers as told."""

    def __init__(self, receivers=(), send_status=201):
        self.requests = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self, status, body=b""):
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                outer.requests.append(("GET", self.path, dict(self.headers), b""))
                orgnr = self.path.rsplit("%3A", 1)[-1]
                self._answer(200 if orgnr in receivers else 404, b"{}")

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append(("POST", self.path, dict(self.headers), body))
                answer = json.dumps({"id": "msg-42"}).encode()
                self._answer(send_status, answer if send_status < 300 else b'{"error":"no"}')

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_access_point(ctx):
    servers = []

    def start(**kwargs):
        server = _AccessPointServer(**kwargs)
        servers.append(server)
        ctx.config.update(
            EHF_BACKEND="http", EHF_ACCESS_POINT_URL=server.url, EHF_ACCESS_POINT_API_KEY="k3y"
        )
        return server

    yield start
    ctx.config.update(EHF_BACKEND="none", EHF_ACCESS_POINT_URL="", EHF_ACCESS_POINT_API_KEY="")
    for server in servers:
        server.close()


def test_http_access_point_gets_the_xml_with_participants_and_api_key(ctx, http_access_point):
    invoice = make_invoiced_members(1)[0]
    server = http_access_point(receivers={invoice.customer_orgnr})

    delivery = deliver_invoice(invoice)
    db.session.commit()

    lookup, post = server.requests
    assert lookup[0] == "GET" and lookup[1] == f"/api/participants/0192%3A{invoice.customer_orgnr}"
    assert post[0] == "POST" and post[1] == "/api/documents"
    headers = {k.lower(): v for k, v in post[2].items()}
    assert headers["authorization"] == "Bearer k3y"
    assert headers["content-type"] == "application/xml"
    assert headers["x-peppol-sender"] == "0192:974760673"
    assert headers["x-peppol-receiver"] == f"0192:{invoice.customer_orgnr}"
    assert headers["x-document-type"] == "invoice"
    assert headers["idempotency-key"] == f"invoice-{invoice.id}-1"
    assert xpath(post[3], "/*/cbc:ID") == [str(invoice.number)]
    assert (delivery.channel, delivery.reference) == ("ehf", "msg-42")


def test_http_access_point_lookup_404_falls_back_to_email(ctx, http_access_point):
    invoice = make_invoiced_members(1)[0]
    server = http_access_point(receivers=set())

    delivery = deliver_invoice(invoice)

    assert delivery.channel == "email"
    assert [r[0] for r in server.requests] == ["GET"]


def test_a_refused_ehf_is_reported_and_nothing_is_recorded(ctx, http_access_point):
    invoice = make_invoiced_members(1)[0]
    http_access_point(receivers={invoice.customer_orgnr}, send_status=422)

    with pytest.raises(FeeError, match="refused the document \\(422\\)"):
        deliver_invoice(invoice)

    assert invoice.deliveries == [] and invoice.send_count == 0


def test_an_access_point_that_does_not_answer_is_a_clear_error(ctx):
    access_point = HttpAccessPoint(
        {"EHF_ACCESS_POINT_URL": "http://127.0.0.1:9/api", "EHF_ACCESS_POINT_TIMEOUT_SECONDS": 2}
    )
    invoice = make_invoiced_members(1)[0]
    ctx.config.update(EHF_BACKEND="http", EHF_ACCESS_POINT_URL="http://127.0.0.1:9/api")
    try:
        with pytest.raises(FeeError, match="did not answer"):
            deliver_invoice(invoice)
    finally:
        ctx.config.update(EHF_BACKEND="none", EHF_ACCESS_POINT_URL="")
    assert access_point.name == "http"
