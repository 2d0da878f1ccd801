"""A treasurer imports a bank file through the upload page and sees the overview change."""

from datetime import date

import pytest

from crm.extensions import db
from crm.fees.services import import_ocr_file
from tests.browser import login
from tests.factories import PASSWORD, build_ocr, make_invoiced_members, make_user

pytestmark = pytest.mark.browser


def test_upload_of_an_ocr_file_changes_the_dashboard(
    app, page, live_server, artifacts_dir, tmp_path
):
    with app.test_request_context():
        make_user("treasurer", email="kasserer@example.no")
        invoices = make_invoiced_members(36)
        # Two earlier bank files: part of the members have paid already.
        import_ocr_file(
            build_ocr([[(i.kid, i.amount_ore) for i in invoices[:9]]], "0000201", date(2026, 2, 9))
        )
        import_ocr_file(
            build_ocr(
                [[(i.kid, i.amount_ore) for i in invoices[9:15]], [(invoices[15].kid, 100_000)]],
                "0000202",
                date(2026, 2, 23),
            )
        )
        db.session.commit()
        upload = build_ocr(
            [[(i.kid, i.amount_ore) for i in invoices[16:27]], [("1234567897", 250_000)]],
            "0000203",
            date(2026, 3, 9),
        )
        partly_paid = str(invoices[15].number)
        expected_paid = sum(i.amount_ore for i in invoices[:15] + invoices[16:27]) + 100_000
    path = tmp_path / "OCR.D090326.txt"
    path.write_text(upload)

    login(page, live_server, "kasserer@example.no", PASSWORD)
    page.goto(f"{live_server.url}/fees/?year=2026")
    paid_before = page.locator("[data-figure=paid]").inner_text()

    page.click("text=Importer innbetalinger")
    page.set_input_files("input[type=file]", str(path))
    page.click("#import-submit")
    page.wait_for_url(lambda url: "/fees/imports/" in url)
    assert page.locator("#matched-count").inner_text() == "11"
    assert page.locator("#unmatched-count").inner_text() == "1"

    page.goto(f"{live_server.url}/fees/?year=2026")
    paid_after = page.locator("[data-figure=paid]").inner_text()
    assert paid_after != paid_before
    kroner, ore = divmod(expected_paid, 100)
    assert paid_after.replace("\u00a0", "").replace(" ", "") == f"kr{kroner},{ore:02d}"
    assert page.locator("svg.fee-chart path").count() >= 2
    page.screenshot(path=str(artifacts_dir / "fees-dashboard.png"), full_page=True)

    # A second upload of the same file is refused on the page, with nothing changed.
    page.goto(f"{live_server.url}/fees/import")
    page.set_input_files("input[type=file]", str(path))
    page.click("#import-submit")
    assert "allerede importert" in page.locator("#import-error").inner_text()
    page.screenshot(path=str(artifacts_dir / "fees-import-refused.png"), full_page=True)
    page.goto(f"{live_server.url}/fees/?year=2026")
    assert page.locator("[data-figure=paid]").inner_text() == paid_after

    page.goto(f"{live_server.url}/fees/invoices?year=2026")
    page.click(f"text={partly_paid}")
    assert "Delbetalt" in page.locator("h1").inner_text()
    page.screenshot(path=str(artifacts_dir / "fees-invoice.png"), full_page=True)


def test_treasurer_sends_unsent_invoices_sees_the_skipped_and_what_an_import_paid(
    app, page, live_server, artifacts_dir, tmp_path
):
    from crm.fees.lines import LineSpec
    from crm.fees.services import Customer, create_invoice, run_annual_invoicing
    from tests.factories import make_company

    with app.test_request_context():
        make_user("treasurer", email="kasserer2@example.no")
        invoices = make_invoiced_members(4)
        make_company("Uten Kontakt AS", membership_status="member", employees=4)
        make_company("Bare Papir AS", membership_status="member", employees=40)
        run_annual_invoicing(2026)
        course = create_invoice(
            Customer(name="Kari Kurs", email="kari@example.no"),
            [LineSpec("Kurs i årsregnskap", 100_000, vat_category="S", vat_rate=25)],
            kind="event",
        )
        db.session.commit()
        upload = build_ocr(
            [[(invoices[0].kid, invoices[0].amount_ore), (invoices[1].kid, 100_000),
              (course.kid, course.amount_ore), ("1234567897", 5_000)]],
            "0000301",
            date(2026, 3, 9),
        )  # fmt: skip
        paid_numbers = [str(invoices[0].number), str(invoices[1].number), str(course.number)]
    path = tmp_path / "OCR.D090326.txt"
    path.write_text(upload)

    login(page, live_server, "kasserer2@example.no", PASSWORD)
    page.goto(f"{live_server.url}/fees/invoices?year=2026")
    page.once("dialog", lambda dialog: dialog.accept())
    page.click("text=Send usendte fakturaer")
    page.wait_for_url(lambda url: "/fees/invoices/unsendable" in url)
    flash = page.locator(".flash-warning").first.inner_text()
    assert "2 fakturaer ble ikke sendt" in flash and "Uten Kontakt AS" in flash
    rows = page.locator("#unsendable tbody tr")
    assert rows.count() == 2
    page.screenshot(path=str(artifacts_dir / "fees-unsendable.png"), full_page=True)

    # One goes to an address the treasurer types; the other is printed and posted.
    row = page.locator("#unsendable tbody tr", has_text="Uten Kontakt AS")
    row.locator("input[type=email]").fill("post@utenkontakt.no")
    row.locator("button", has_text="Send").click()
    assert "post@utenkontakt.no" in page.locator(".flash-success").first.inner_text()
    assert page.locator("#unsendable tbody tr").count() == 1
    page.click("#mark-posted")
    assert "sendt i posten" in page.locator(".flash-success").first.inner_text()
    assert "Alle usendte fakturaer" in page.locator(".card.empty").inner_text()

    page.goto(f"{live_server.url}/fees/?year=2026")
    assert page.locator("#unsendable-note").count() == 0

    page.goto(f"{live_server.url}/fees/import")
    page.set_input_files("input[type=file]", str(path))
    page.click("#import-submit")
    page.wait_for_url(lambda url: "/fees/imports/" in url)
    table = page.locator("#paid-invoices").inner_text()
    for number in paid_numbers:
        assert number in table
    assert "Kari Kurs" in table and "Delbetalt" in table
    page.screenshot(path=str(artifacts_dir / "fees-import-paid.png"), full_page=True)

    page.goto(f"{live_server.url}/fees/invoices?year=2026")
    page.click(f"text={paid_numbers[2]}")
    assert "Sum inkl. mva." in page.locator("#invoice-lines").inner_text()
    page.screenshot(path=str(artifacts_dir / "fees-invoice-lines.png"), full_page=True)

    page.goto(f"{live_server.url}/fees/accounting?start=2026-01-01&end=2026-12-31&fmt=generic")
    assert page.locator("#accounting-totals").count() == 1
    page.screenshot(path=str(artifacts_dir / "fees-accounting.png"), full_page=True)
