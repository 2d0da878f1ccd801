"""A treasurer downloads an invoice's EHF from the invoice page and sends it as EHF."""

import pytest

from crm.extensions import db
from crm.fees.ehf_validation import validate_ehf
from crm.fees.lines import LineSpec
from crm.fees.services import create_invoice, credit_invoice, get_settings
from tests.browser import login
from tests.conftest import SHARED
from tests.factories import PASSWORD, make_invoiced_members, make_member, make_user

pytestmark = pytest.mark.browser

PEPPOL = SHARED / "fixtures" / "peppol"
RULES = PEPPOL if (PEPPOL / "PEPPOL-EN16931-UBL.sch").is_file() else None


def test_treasurer_downloads_the_ehf_and_sends_the_invoice_as_ehf(
    app, page, live_server, artifacts_dir, tmp_path
):
    with app.test_request_context():
        make_user("treasurer", email="kasserer@example.no")
        make_invoiced_members(1)
        settings = get_settings()
        settings.vat_registered = True
        settings.foretaksregisteret = True
        invoice = create_invoice(
            make_member("Kursdeltaker AS"),
            [LineSpec("LEAN-kurs, 3 samlinger", 250_000, vat_category="S", vat_rate=25)],
            kind="event",
        )
        credit_invoice(invoice, "Én deltaker mindre", amount_ore=62_500)
        db.session.commit()
        invoice_id, number, kid, orgnr = (
            invoice.id,
            invoice.number,
            invoice.kid,
            invoice.customer_orgnr,
        )
    app.config.update(EHF_BACKEND="local", EHF_LOCAL_RECEIVERS=orgnr, EHF_OUTBOX_DIR=tmp_path)
    try:
        login(page, live_server, "kasserer@example.no", PASSWORD)
        page.goto(f"{live_server.url}/fees/invoices/{invoice_id}")

        with page.expect_download() as download_info:
            page.click("#download-ehf")
        download = download_info.value
        assert download.suggested_filename == f"faktura-{number}-ehf.xml"
        download.save_as(tmp_path / "download.xml")
        document = (tmp_path / "download.xml").read_bytes()
        assert f"<cbc:PaymentID>{kid}</cbc:PaymentID>".encode() in document
        report = validate_ehf(document, RULES)
        assert report.valid, report.summary()

        page.click("text=Send faktura")
        page.wait_for_selector("#deliveries")
        assert "sendt som EHF" in page.locator(".flash").first.inner_text()
        assert "EHF" in page.locator("#deliveries").inner_text()
        assert f"0192:{orgnr}" in page.locator("#deliveries").inner_text()
        # The credit note follows the invoice the same way.
        page.click("text=Send som EHF")
        page.wait_for_selector("text=er sendt som EHF")
        assert "kreditnota" in page.locator("#deliveries").inner_text()
        page.screenshot(path=str(artifacts_dir / "fees-invoice-ehf.png"), full_page=True)
    finally:
        app.config.update(EHF_BACKEND="none", EHF_LOCAL_RECEIVERS="")
    assert len(list(tmp_path.glob("invoice-*.xml"))) == 1
    assert len(list(tmp_path.glob("credit-note-*.xml"))) == 1


def test_treasurer_marks_the_cluster_vat_registered_in_the_fee_settings(
    app, page, live_server, artifacts_dir
):
    with app.test_request_context():
        make_user("treasurer", email="kasserer@example.no")
        make_invoiced_members(1)

    login(page, live_server, "kasserer@example.no", PASSWORD)
    page.goto(f"{live_server.url}/fees/settings")
    page.check("input[name=vat_registered]")
    page.check("input[name=foretaksregisteret]")
    page.click("main form button[type=submit]")
    page.wait_for_selector(".flash")
    page.screenshot(path=str(artifacts_dir / "fees-settings-ehf.png"), full_page=True)

    with app.test_request_context():
        db.session.expire_all()
        assert get_settings().vat_registered and get_settings().foretaksregisteret
