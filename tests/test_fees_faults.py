"""The treasurer's faults of issue 13, each shown fixed: late-sent due dates, reminders by
the Norwegian rules, invoices that could not be emailed, pro-rata fees, Nets' signed OCR
files and readable refusals, what an import paid, bank account numbers, and a settings
history without invoice-number noise."""

import io
import zlib
from datetime import UTC, date, datetime

import pytest
from sqlalchemy import func, select

from crm.audit import AuditEntry
from crm.extensions import db
from crm.fees.errors import OcrFileError
from crm.fees.forms import ACCOUNT_FIELDS
from crm.fees.models import FeeSettings, Invoice, OcrImport, Payment
from crm.fees.ocr import parse_ocr
from crm.fees.reminders import MAX_REMINDER_FEE_ORE, reminders_due, send_reminder
from crm.fees.services import (
    get_settings,
    import_ocr_file,
    queue_invoice_email,
    run_annual_invoicing,
)
from crm.mail.models import EmailMessage
from crm.timeutil import today_oslo
from tests.conftest import SHARED
from tests.factories import (
    build_ocr,
    make_company,
    make_fee_schedule,
    make_fee_settings,
    make_invoiced_members,
    make_member,
)


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


def _invoice_made_on(day: date, **company) -> Invoice:
    make_fee_settings(due_days=30)
    make_fee_schedule(day.year)
    make_member(**company)
    [invoice] = run_annual_invoicing(day.year, today=day).created
    db.session.commit()
    return invoice


# --- due dates and reminders ----------------------------------------------------------


def test_an_invoice_emailed_weeks_after_it_was_made_is_due_30_days_after_it_goes_out(ctx):
    invoice = _invoice_made_on(date(2026, 1, 2))
    assert invoice.due_date == date(2026, 2, 1)
    queue_invoice_email(invoice, today=date(2026, 3, 1))
    assert invoice.due_date == date(2026, 3, 31)
    # A resend is not a new start: the due date stays.
    queue_invoice_email(invoice, today=date(2026, 3, 20))
    assert invoice.due_date == date(2026, 3, 31)


def test_no_reminder_before_14_days_past_the_due_date_of_a_late_sent_invoice(ctx):
    invoice = _invoice_made_on(date(2026, 1, 2))
    queue_invoice_email(invoice, today=date(2026, 3, 1))
    db.session.commit()
    for day in (date(2026, 3, 1), date(2026, 3, 31), date(2026, 4, 13)):
        assert reminders_due(day) == [], day
    assert reminders_due(date(2026, 4, 14)) == [(invoice, 1)]


def test_an_invoice_sent_before_the_fix_is_not_reminded_within_14_days_of_sending(ctx):
    invoice = _invoice_made_on(date(2026, 1, 2))
    # Old data: sent on 1 March with the due date of 1 February left as it was.
    invoice.sent_at = datetime(2026, 3, 1, 9, tzinfo=UTC)
    invoice.send_count = 1
    db.session.commit()
    assert reminders_due(date(2026, 3, 14)) == []
    assert reminders_due(date(2026, 3, 15)) == [(invoice, 1)]


def test_a_reminder_gives_14_days_and_its_fee_never_passes_the_legal_cap(ctx):
    invoice = _invoice_made_on(date(2026, 1, 2))
    queue_invoice_email(invoice, today=date(2026, 1, 2))
    settings = get_settings()
    settings.reminder_fee_ore = MAX_REMINDER_FEE_ORE * 3  # saved before the cap existed
    reminder = send_reminder(invoice, 1, today=date(2026, 2, 20))
    assert reminder.new_due_date == date(2026, 3, 6)
    assert reminder.fee_ore == MAX_REMINDER_FEE_ORE == 3_500


def test_a_never_sent_invoice_is_never_reminded(ctx):
    _invoice_made_on(date(2026, 1, 2))
    assert reminders_due(date(2026, 12, 31)) == []


# --- invoices that cannot be emailed --------------------------------------------------


def _pdf_pages(data: bytes) -> int:
    return data.count(b"/Type /Page\n") or data.count(b"/Type /Page ") or data.count(b"/Page>>")


def test_send_unsent_names_the_skipped_companies_and_offers_address_post_and_print(
    app, client, auth
):
    with app.test_request_context("/"):
        make_invoiced_members(1)
        lost = make_company("Uten Kontakt AS", membership_status="member", employees=4)
        run_annual_invoicing(2026)
        db.session.commit()
        lost_invoice = db.session.scalar(select(Invoice).where(Invoice.company_id == lost.id))
        lost_id, lost_number = lost_invoice.id, lost_invoice.number
    auth.login("treasurer")
    response = client.post("/fees/invoices/send", data={"year": 2026}, follow_redirects=True)
    page = response.get_data(as_text=True)
    assert "1 faktura ble ikke sendt: Uten Kontakt AS har ingen fakturakontakt" in page
    assert 'id="unsendable"' in page and str(lost_number) in page
    assert "Rett fakturakontakten" in page

    dashboard = client.get("/fees/?year=2026").get_data(as_text=True)
    assert "1 usendt faktura kan ikke sendes på e-post" in dashboard

    printed = client.post("/fees/invoices/print", data={"year": 2026, "invoice_id": [lost_id]})
    assert printed.status_code == 200 and printed.mimetype == "application/pdf"
    text = zlib.decompress(printed.data.split(b"stream\n")[1].split(b"\nendstream")[0])
    assert b"Uten Kontakt AS" in text

    sent = client.post(f"/fees/invoices/{lost_id}/send-to", data={"email": "post@uten.no"})
    assert sent.status_code == 302
    with app.test_request_context("/"):
        message = db.session.scalar(
            select(EmailMessage).where(EmailMessage.to_email == "post@uten.no")
        )
        assert message is not None and message.key == f"invoice:{lost_id}:1"
    assert "Uten Kontakt AS" not in client.get("/fees/?year=2026").get_data(as_text=True)


def test_marking_invoices_sent_by_post_counts_them_as_sent_from_today(app, client, auth):
    with app.test_request_context("/"):
        make_fee_settings()
        make_fee_schedule(2026)
        make_company("Papir AS", membership_status="member", employees=4)
        [invoice] = run_annual_invoicing(2026, today=date(2026, 1, 2)).created
        db.session.commit()
        invoice_id = invoice.id
    auth.login("treasurer")
    client.post("/fees/invoices/mark-posted", data={"year": 2026, "invoice_id": [invoice_id]})
    with app.test_request_context("/"):
        invoice = db.session.get(Invoice, invoice_id)
        assert invoice.sent_at is not None and invoice.send_count == 1
        assert invoice.due_date >= today_oslo()
    page = client.get("/fees/invoices/unsendable?year=2026").get_data(as_text=True)
    assert "Papir AS" not in page


def test_a_typed_address_that_is_not_an_address_changes_nothing(app, client, auth):
    with app.test_request_context("/"):
        make_fee_settings()
        make_fee_schedule(2026)
        make_company("Papir AS", membership_status="member", employees=4)
        [invoice] = run_annual_invoicing(2026).created
        db.session.commit()
        invoice_id = invoice.id
    auth.login("treasurer")
    response = client.post(f"/fees/invoices/{invoice_id}/send-to", data={"email": "ikke en"})
    assert response.status_code == 302
    with app.test_request_context("/"):
        assert db.session.get(Invoice, invoice_id).send_count == 0
        assert db.session.scalar(select(func.count()).select_from(EmailMessage)) == 0


# --- pro rata -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "rule, joined, amount, explained",
    [
        ("year", date(2026, 12, 3), 250_000, None),
        ("month", date(2026, 12, 3), 20_833, "innmeldt 03.12.2026: 1 av 12 måneder av kr 2 500,00"),
        ("month", date(2026, 4, 30), 187_500, "innmeldt 30.04.2026: 9 av 12 måneder"),
        ("month", date(2026, 1, 15), 250_000, None),
        ("half_year", date(2026, 7, 1), 125_000, "innmeldt 01.07.2026: halvt år (andre halvår)"),
        ("half_year", date(2026, 6, 30), 250_000, None),
        ("month", date(2025, 12, 3), 250_000, None),  # a member since last year
    ],
)
def test_a_company_joining_during_the_year_pays_by_the_pro_rata_setting(
    ctx, rule, joined, amount, explained
):
    make_fee_settings(pro_rata=rule)
    make_fee_schedule(2026)
    company = make_member(employees=3)  # the 2 500 kr tier
    company.member_since = joined
    db.session.commit()
    [invoice] = run_annual_invoicing(2026).created
    [line] = invoice.lines
    assert invoice.amount_ore == line.net_ore == amount
    if explained is None:
        assert line.description == "Medlemskontingent 2026"
    else:
        assert explained in line.description and explained in invoice.pricing_note


# --- OCR: Nets' signed form -----------------------------------------------------------


def _signed(text: str, negative: set[tuple[str, int]]) -> str:
    """Put "-" on the given (assignment, transaction number) amounts, of any type, and
    make the end records' totals the signed sums, as Nets' specification example does."""
    lines = text.rstrip("\n").split("\n")
    out, assignment, assignment_total, transmission_total = [], None, 0, 0
    for line in lines:
        code = line[6:8]
        if code == "20":
            assignment, assignment_total = line[17:24], 0
        elif code == "30":
            amount = int(line[32:49])
            if (assignment, int(line[8:15])) in negative:
                line = line[:31] + "-" + line[32:]
                amount = -amount
            assignment_total += amount
        elif code == "88":
            line = line[:24] + f"{assignment_total:017d}" + line[41:]
            transmission_total += assignment_total
        elif code == "89":
            line = line[:24] + f"{transmission_total:017d}" + line[41:]
        out.append(line)
    return "\n".join(out) + "\n"


def test_nets_signed_file_with_minus_on_ordinary_types_is_imported_with_net_amounts(ctx):
    a, b = make_invoiced_members(2, employees=(5, 20))  # 2 500 kr and 7 500 kr
    text = _signed(
        build_ocr([[(a.kid, 250_000, 13), (b.kid, 100_000, 13), (b.kid, 20_000, 13)]]),
        negative={("0000001", 3)},
    )
    assert text.split("\n")[6][31] == "-"  # type 13, an ordinary payment type
    result = import_ocr_file(text, "spec.txt")
    db.session.commit()
    assert result.ocr_import.total_ore == 250_000 + 100_000 - 20_000
    assert (a.paid_ore, a.status) == (250_000, "paid")
    assert (b.paid_ore, b.status) == (80_000, "partially_paid")


def test_a_minus_the_totals_do_not_vouch_for_is_refused_and_nothing_changes(ctx):
    a, b = make_invoiced_members(2, employees=(5, 20))
    good = build_ocr([[(a.kid, 250_000, 13), (b.kid, 100_000, 13)]])
    lines = good.split("\n")
    lines[2] = lines[2][:31] + "-" + lines[2][32:]  # "-" but the totals are unsigned
    signed = _signed(good, {("0000001", 2)}).split("\n")
    end = next(i for i, line in enumerate(signed) if line[6:8] == "88")
    signed[end] = signed[end][:24] + f"{150_001:017d}" + signed[end][41:]
    for bad in ("\n".join(lines), "\n".join(signed)):
        with pytest.raises(OcrFileError) as caught:
            import_ocr_file(bad, "bad.txt")
        db.session.rollback()
        assert "filen kan være skadet" in str(caught.value) or "damaged" in str(caught.value)
    assert db.session.scalar(select(func.count()).select_from(OcrImport)) == 0
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0
    assert a.paid_ore == b.paid_ore == 0


def test_totals_that_do_not_add_up_either_way_are_refused_in_kroner(ctx):
    text = build_ocr([[("0000010017", 250_000, 13)]])
    lines = text.split("\n")
    end = next(i for i, line in enumerate(lines) if line[6:8] == "88")
    lines[end] = lines[end][:24] + f"{250_001:017d}" + lines[end][41:]
    with pytest.raises(OcrFileError) as caught:
        parse_ocr("\n".join(lines))
    assert "kr 2 500,01" in caught.value.reason and "kr 2 500,00" in caught.value.reason


@pytest.mark.parametrize(
    "position, char, words",
    [
        (40, "X", "amount (characters 33–49) is not a number"),
        (17, "9", "settlement date (characters 16–21) is not a date"),  # 39th of a month
        (31, "+", "the sign (character 32) must be 0 or -"),
        (60, "A", "the KID (characters 50–74) may hold only digits"),
    ],
)
def test_refusals_say_which_field_is_wrong_without_parser_internals(ctx, position, char, words):
    text = build_ocr([[("0000010017", 250_000, 13)]])
    lines = text.split("\n")
    lines[2] = lines[2][:position] + char + lines[2][position + 1 :]
    with pytest.raises(OcrFileError) as caught:
        parse_ocr("\n".join(lines))
    reason = caught.value.reason
    assert words in reason and caught.value.line == 3
    for internal in ("TransactionAmountItem", "did not match", "unconverted", "record formats"):
        assert internal not in reason


def test_nets_own_sample_file_imports_with_everything_unmatched(ctx):
    sample = SHARED / "fixtures" / "nets-ocr-giro-sample.txt"
    if not sample.is_file():
        pytest.skip("../shared is not here")
    make_fee_settings()
    data = sample.read_bytes()
    transmission = parse_ocr(data)
    result = import_ocr_file(data, sample.name)
    db.session.commit()
    assert result.matched == 0 and result.unmatched == result.total == 20
    assert result.ocr_import.total_ore == transmission.total_ore == 5_144_900
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 0


def test_the_import_page_shows_which_invoices_the_file_paid(app, client, auth):
    with app.test_request_context("/"):
        a, b = make_invoiced_members(2, employees=(5, 20))
        numbers = (a.number, b.number)
        text = build_ocr([[(a.kid, 250_000), (b.kid, 100_000), ("1234567897", 500)]])
    auth.login("treasurer")
    response = client.post(
        "/fees/import",
        data={"file": (io.BytesIO(text.encode()), "bank.txt")},
        content_type="multipart/form-data",
        follow_redirects=True,
    )
    page = response.get_data(as_text=True)
    assert 'id="paid-invoices"' in page
    table = page.split('id="paid-invoices"')[1].split("</table>")[0]
    assert str(numbers[0]) in table and str(numbers[1]) in table
    assert "Betalt" in table and "Delbetalt" in table


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "account",
    ["1234566", "00000000000", "00001234566", "8601111794", "86011117948"],
)
def test_unusable_bank_account_numbers_are_refused_in_the_fee_settings(app, client, auth, account):
    auth.login("treasurer")
    with app.test_request_context("/"):
        make_fee_settings()
    form = {
        "cluster_name": "Klynge",
        "orgnr": "974760673",
        "bank_account": account,
        "next_invoice_number": 1001,
        "kid_length": 10,
        "kid_scheme": "mod10",
        "due_days": 30,
        "pro_rata": "year",
        **{name: "1500" for name in ACCOUNT_FIELDS},
    }
    response = client.post("/fees/settings", data=form)
    assert response.status_code == 200
    assert "Ikke et gyldig norsk kontonummer" in response.get_data(as_text=True)
    with app.test_request_context("/"):
        assert get_settings().bank_account == "86011117947"
    form["bank_account"] = "8601.11.17947"
    saved = client.post("/fees/settings", data=form)
    assert saved.status_code == 302, saved.get_data(as_text=True).split('class="field-error')[1:3]


def test_invoice_numbers_taken_by_invoicing_are_not_settings_changes(ctx):
    make_invoiced_members(3)
    assert get_settings().next_invoice_number == 1004
    updates = db.session.scalars(
        select(AuditEntry).where(
            AuditEntry.record_type == FeeSettings.__tablename__, AuditEntry.action == "update"
        )
    ).all()
    assert not [entry for entry in updates if "next_invoice_number" in entry.changes]
