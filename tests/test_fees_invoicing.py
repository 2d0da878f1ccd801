"""The annual invoice run, prices, credit notes, manual payments, PDFs, emails and the CLI."""

import csv
import io
import re
import zlib
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from crm.audit import AuditEntry, history_for
from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import FeeError
from crm.fees.models import CreditNote, FeeOverride, Invoice, Payment
from crm.fees.pdf import invoice_pdf
from crm.fees.services import (
    credit_invoice,
    get_settings,
    queue_invoice_email,
    register_payment,
    run_annual_invoicing,
)
from crm.timeutil import today_oslo
from tests.concurrency import second_meets_first_uncommitted
from tests.factories import (
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


def pdf_text(data: bytes) -> str:
    """The text drawn in a PDF from fpdf2 (its page streams are zlib-compressed)."""
    assert data.startswith(b"%PDF-")
    chunks = []
    for stream in re.findall(rb"stream\r?\n(.*?)\r?\nendstream", data, re.S):
        # A decompressor object, not zlib.decompress: the regex may cut a stream's last
        # byte when it happens to be "\r", and all the text is there before it.
        try:
            chunks.append(zlib.decompressobj().decompress(stream).decode("latin-1"))
        except zlib.error:
            chunks.append(stream.decode("latin-1"))
    return "".join(re.findall(r"\((.*?)\) ?Tj", "".join(chunks)))


def test_annual_run_invoices_every_member_once_priced_by_tier(ctx):
    make_fee_settings(next_invoice_number=5001, due_days=30)
    make_fee_schedule(2026)
    small = make_member("Liten AS", employees=3)
    unknown = make_member("Ukjent AS", employees=None)
    large = make_member("Stor AS", employees=450)
    make_company("Prospekt AS", membership_status="prospect", employees=20)
    make_company("Utmeldt AS", membership_status="resigned", employees=20)

    run = run_annual_invoicing(2026)
    db.session.commit()

    assert {i.company_id for i in run.created} == {small.id, unknown.id, large.id}
    by_company = {i.company_id: i for i in run.created}
    assert by_company[small.id].amount_ore == 250_000
    assert by_company[unknown.id].amount_ore == 250_000  # unknown size: the lowest tier
    assert by_company[large.id].amount_ore == 2_500_000
    assert sorted(i.number for i in run.created) == [5001, 5002, 5003]
    for invoice in run.created:
        assert kidlib.is_valid(invoice.kid) and len(invoice.kid) == 10
        assert invoice.status == "open"
        assert invoice.due_date == invoice.issue_date + timedelta(days=30)
        assert invoice.customer_address == "Storgata 10"
        assert invoice.description == "Medlemskontingent 2026"
    assert get_settings().next_invoice_number == 5004


def test_running_the_invoice_run_again_creates_nothing_new(ctx, runner):
    make_invoiced_members(4)
    count = db.session.scalar(select(func.count()).select_from(Invoice))
    result = runner.invoke(args=["fees", "invoice", "--year", "2026"])
    assert result.exit_code == 0, result.output
    assert "created 0 invoices for 2026; 4 existed already" in result.output
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == count == 4

    make_member("Ny AS", employees=12)
    result = runner.invoke(args=["fees", "invoice", "--year", "2026"])
    assert "created 1 invoices for 2026; 4 existed already" in result.output
    # The CLI speaks English, but the invoice's price basis is Norwegian like the rest.
    new = db.session.scalar(select(Invoice).order_by(Invoice.id.desc()))
    assert new.pricing_note.startswith("Trinn 10–49 ansatte"), new.pricing_note


def test_the_database_refuses_a_second_membership_invoice_for_the_same_company_and_year(ctx):
    invoice = make_invoiced_members(1)[0]
    db.session.add(
        Invoice(
            number=99_999, company_id=invoice.company_id, year=2026, membership_year=2026,
            kid="0000999993", amount_ore=1, issue_date=date(2026, 1, 1),
            due_date=date(2026, 2, 1),
        )
    )  # fmt: skip
    with pytest.raises(IntegrityError):
        db.session.flush()
    db.session.rollback()


def test_a_year_without_schedule_uses_the_latest_earlier_one(ctx):
    make_fee_settings()
    make_fee_schedule(2024, ((0, 49, 100_000), (50, None, 200_000)))
    make_fee_schedule(2025, ((0, 49, 150_000), (50, None, 300_000)))
    make_fee_schedule(2030, ((0, None, 999_900),))
    make_member(employees=60)
    run = run_annual_invoicing(2027)
    assert run.created[0].amount_ore == 300_000
    assert "2025" in run.created[0].pricing_note


def test_the_run_is_refused_without_schedule_or_settings(ctx):
    make_member()
    with pytest.raises(FeeError, match="bank account"):
        run_annual_invoicing(2026)
    make_fee_settings()
    with pytest.raises(FeeError, match="no fee schedule"):
        run_annual_invoicing(2026)
    assert db.session.scalar(select(func.count()).select_from(Invoice)) == 0


def test_company_overrides_and_discounts_are_applied_with_their_reason(ctx):
    make_fee_settings()
    make_fee_schedule(2026)
    fixed = make_member("Fast AS", employees=300)
    discounted = make_member("Rabatt AS", employees=20)
    other_year = make_member("Annet År AS", employees=20)
    db.session.add_all(
        [
            FeeOverride(company_id=fixed.id, amount_ore=1_000_000, reason="Styrevedtak 2025"),
            FeeOverride(company_id=discounted.id, discount_percent=33, year=2026, reason="Gründer"),
            FeeOverride(company_id=other_year.id, discount_percent=50, year=2025, reason="Gammel"),
        ]
    )
    db.session.commit()
    by_company = {i.company_id: i for i in run_annual_invoicing(2026).created}
    assert by_company[fixed.id].amount_ore == 1_000_000
    assert "Styrevedtak 2025" in by_company[fixed.id].pricing_note
    assert by_company[discounted.id].amount_ore == 502_500  # 7 500 kr less 33 %, to the øre
    assert by_company[other_year.id].amount_ore == 750_000


def test_credit_note_cancels_an_invoice_which_is_never_deleted(ctx):
    invoice = make_invoiced_members(1)[0]
    note = credit_invoice(invoice, "Meldt ut før forfall")
    db.session.commit()
    assert invoice.status == "credited"
    assert note.amount_ore == invoice.amount_ore and note.number == invoice.number + 1
    assert db.session.get(Invoice, invoice.id) is not None
    with pytest.raises(FeeError):
        credit_invoice(invoice, "igjen")
    with pytest.raises(FeeError, match="credited"):
        register_payment(invoice, 100, today_oslo())
    actions = {(e.record_type, e.action) for e in db.session.scalars(select(AuditEntry))}
    assert ("credit_note", "create") in actions and ("invoice", "update") in actions


def test_partial_credit_lowers_what_is_owed(ctx):
    invoice = make_invoiced_members(1)[0]  # 2 500 kr
    credit_invoice(invoice, "Feil antall ansatte", amount_ore=100_000)
    register_payment(invoice, 150_000, today_oslo())
    db.session.commit()
    assert invoice.status == "paid"
    assert invoice.outstanding_ore == 0
    with pytest.raises(FeeError):
        credit_invoice(invoice, "for mye", amount_ore=150_001)
    assert db.session.scalar(select(func.count()).select_from(CreditNote)) == 1


def test_manual_payment_refund_and_write_off_move_the_status_and_are_audited(ctx):
    invoice = make_invoiced_members(1)[0]  # 2 500 kr
    payment = register_payment(invoice, 100_000, date(2026, 3, 1), note="Bank uten KID")
    assert invoice.status == "partially_paid"
    register_payment(invoice, 200_000, date(2026, 3, 5))
    assert (invoice.status, invoice.paid_ore) == ("overpaid", 300_000)
    register_payment(invoice, 50_000, date(2026, 3, 9), kind="refund")
    assert (invoice.status, invoice.paid_ore) == ("paid", 250_000)
    with pytest.raises(FeeError, match="refund"):
        register_payment(invoice, 250_001, date(2026, 3, 9), kind="refund")
    db.session.commit()

    second = make_member("Skylder AS", employees=5)
    run = run_annual_invoicing(2026)
    db.session.commit()
    owed = next(i for i in run.created if i.company_id == second.id)
    register_payment(owed, 200_000, date(2026, 3, 1))
    with pytest.raises(FeeError, match="write-off"):
        register_payment(owed, 50_001, date(2026, 3, 2), kind="write_off")
    register_payment(owed, 50_000, date(2026, 3, 2), kind="write_off", note="Småbeløp")
    db.session.commit()
    assert (owed.status, owed.paid_ore, owed.written_off_ore) == ("paid", 200_000, 50_000)

    entries = db.session.scalars(
        select(AuditEntry).where(AuditEntry.record_type == "payment")
    ).all()
    assert len(entries) == 5
    assert any(
        e.record_id == payment.id and e.changes["note"][1] == "Bank uten KID" for e in entries
    )
    assert history_for(invoice)[0].changes["status"] == ["overpaid", "paid"]


def test_invoice_pdf_shows_sender_recipient_kid_account_amount_and_due_date(ctx):
    invoice = make_invoiced_members(1, employees=(20,))[0]
    text = pdf_text(invoice_pdf(invoice, get_settings()))
    for expected in (
        "Kongsvingerregionen Industriklynge",
        "974 760 673",
        "FAKTURA",
        invoice.customer_name,
        "Storgata 10",
        "2212 Kongsvinger",
        invoice.kid,
        "8601.11.17947",
        "kr 7 500,00",
        invoice.due_date.strftime("%d.%m.%Y"),
    ):
        assert expected in text, expected


def test_invoice_is_emailed_to_the_invoice_contact_with_its_pdf_and_can_be_resent(ctx):
    from crm.mail.models import EmailMessage

    invoice = make_invoiced_members(1)[0]
    first = queue_invoice_email(invoice)
    db.session.commit()
    assert first.key == f"invoice:{invoice.id}:1"
    assert first.to_email.startswith("faktura")
    assert first.attachments[0].filename == f"faktura-{invoice.number}.pdf"
    assert first.attachments[0].content.startswith(b"%PDF")
    assert invoice.kid in first.text_body and "kr 2 500,00" in first.text_body.replace("\xa0", " ")
    second = queue_invoice_email(invoice)
    db.session.commit()
    assert second.key == f"invoice:{invoice.id}:2" and invoice.send_count == 2
    assert db.session.scalar(select(func.count()).select_from(EmailMessage)) == 2


def test_invoice_email_asks_for_what_is_left_after_a_credit_and_a_payment(ctx):
    invoice = make_invoiced_members(1)[0]  # kr 2 500,00
    credit_invoice(invoice, "Halvt år", amount_ore=125_000)
    first = queue_invoice_email(invoice)
    db.session.commit()
    text = first.text_body.replace("\xa0", " ")
    assert "Å betale: kr 1 250,00" in text and "Kreditert: −kr 1 250,00" in text
    assert "kr 1 250,00" in first.html_body.replace("\xa0", " ")
    pdf = pdf_text(first.attachments[0].content)
    assert "1 250,00" in pdf.replace("\xa0", " ")

    register_payment(invoice, 50_000, date(2026, 3, 1))
    second = queue_invoice_email(invoice)
    db.session.commit()
    text = second.text_body.replace("\xa0", " ")
    assert "Å betale: kr 750,00" in text and "Betalt: −kr 500,00" in text
    assert "kr 2 500,00" in text  # the invoiced amount, shown above what was taken off
    assert "750,00" in pdf_text(second.attachments[0].content).replace("\xa0", " ")


def test_invoice_without_an_invoice_contact_is_not_sent(ctx):
    make_fee_settings()
    make_fee_schedule(2026)
    make_company("Uten Kontakt AS", membership_status="member", employees=4)
    invoice = run_annual_invoicing(2026).created[0]
    with pytest.raises(FeeError, match="no invoice contact"):
        queue_invoice_email(invoice)


def test_worker_sends_the_invoice_email_with_the_pdf(app, auth, client, run_worker):
    with app.test_request_context("/?lang=en"):
        invoice = make_invoiced_members(1)[0]
        invoice_id, number = invoice.id, invoice.number
    auth.login("treasurer")
    response = client.post("/fees/invoices/send", data={"year": 2026})
    assert response.status_code == 302
    run_worker()
    with app.test_request_context("/?lang=en"):
        from crm.mail.models import EmailMessage

        message = db.session.scalar(select(EmailMessage))
        assert message.key == f"invoice:{invoice_id}:1"
        assert message.state in ("sent", "delivered"), (message.state, message.last_error)
        emls = list((__import__("pathlib").Path(app.config["OUTBOX_DIR"])).glob("*.eml"))
        assert any(f"faktura-{number}.pdf" in p.read_text(errors="replace") for p in emls)


def test_fees_list_cli_prints_the_spec_columns(ctx, runner):
    invoices = make_invoiced_members(2, employees=(300, 5))
    register_payment(invoices[1], 100_000, date(2026, 3, 1))
    db.session.commit()
    result = runner.invoke(args=["fees", "list", "--year", "2026", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    # SPEC.md's columns first; the kind and the VAT split follow them.
    assert list(rows[0]) == [
        "invoice_number", "orgnr", "company", "kid", "amount", "paid", "status", "due_date",
        "kind", "net", "vat",
    ]  # fmt: skip
    assert (rows[0]["kind"], rows[0]["net"], rows[0]["vat"]) == ("membership", "25000.00", "0.00")
    assert rows[0]["amount"] == "25000.00" and rows[0]["paid"] == "0.00"
    assert rows[0]["status"] == "open"
    assert rows[1]["amount"] == "2500.00" and rows[1]["paid"] == "1000.00"
    assert rows[1]["status"] == "partially_paid"
    assert (
        rows[0]["kid"] == invoices[0].kid
        and rows[0]["due_date"] == invoices[0].due_date.isoformat()
    )

    table = runner.invoke(args=["fees", "list", "--year", "2026", "--format", "table"])
    assert table.exit_code == 0
    assert "25000.00" in table.output and "2 invoices" in table.output


def test_payments_of_credited_invoices_are_kept(ctx):
    invoice = make_invoiced_members(1)[0]
    register_payment(invoice, invoice.amount_ore, date(2026, 2, 1))
    credit_invoice(invoice, "Dobbelt medlemskap")
    db.session.commit()
    assert invoice.status == "credited"
    assert db.session.scalar(select(func.count()).select_from(Payment)) == 1
    assert invoice.paid_ore == invoice.amount_ore


def test_two_payments_at_once_on_one_invoice_are_both_counted(app):
    """Two requests registering payments on one invoice at the same moment: the second
    waits for the first (the invoice row is locked before the sums are read), so the
    stored paid sum holds both. PostgreSQL only: SQLite has one writer at a time."""
    from crm.audit import acting_as

    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("concurrent writers need PostgreSQL")
        invoice_id = make_invoiced_members(1)[0].id

    def pay(amount_ore: int, before_commit=lambda: None) -> None:
        with acting_as("test"):
            register_payment(db.session.get(Invoice, invoice_id), amount_ore, date(2026, 3, 1))
            before_commit()
            db.session.commit()

    raised = second_meets_first_uncommitted(
        app, lambda hold: pay(100_000, hold), lambda: pay(50_000)
    )
    assert not raised, raised
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert (invoice.paid_ore, invoice.status) == (150_000, "partially_paid")
