"""Credit notes against write-offs and reminder fees: the invoice page and the ledger agree.

A credit note takes at most what is creditable: the invoice amount less what is already
credited and less what is written off beyond the reminder fees (a write-off is a loss
booked already, so no credit note covers it again). The credit note that takes all of it
cancels the reminder fees not written off. Either way, each invoice's receivable in the
accounting export is what its page says is owed less what is owed back.
"""

from collections import defaultdict
from datetime import date, timedelta

import pytest
from sqlalchemy import func, select

from crm.extensions import db
from crm.fees import accounting
from crm.fees.ehf import credit_note_document
from crm.fees.errors import FeeError
from crm.fees.models import CreditNote, Invoice, Payment, Reminder
from crm.fees.pdf import credit_note_pdf, invoice_pdf
from crm.fees.reminders import send_due_reminders, send_reminder
from crm.fees.services import (
    credit_invoice,
    dashboard,
    get_settings,
    invoices_for_year,
    register_payment,
)
from crm.timeutil import utcnow
from tests.concurrency import second_meets_first_uncommitted
from tests.factories import make_fee_settings, make_invoiced_members
from tests.test_fees_ehf import check, course_fee_invoice, xpath
from tests.test_fees_invoicing import pdf_text

FEE = 3_500


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


def ledger_receivable(invoice: Invoice) -> int:
    """The invoice's receivable in the accounting export; every voucher balances."""
    settings = get_settings()
    items = accounting.vouchers(date(2020, 1, 1), date(2030, 12, 31), settings)
    assert all(v.balanced for v in items), [v.number for v in items if not v.balanced]
    totals = accounting.totals(items, settings)
    assert accounting.period_totals(date(2020, 1, 1), date(2030, 12, 31), settings) == totals
    receivable: dict[int, int] = defaultdict(int)
    for voucher in items:
        for posting in voucher.postings:
            if posting.account == settings.account_receivable:
                receivable[voucher.invoice.id] += posting.debit_ore - posting.credit_ore
    return receivable[invoice.id]


def assert_page_is_ledger(invoice: Invoice) -> None:
    db.session.expire_all()
    assert ledger_receivable(invoice) == invoice.outstanding_ore - invoice.refund_due_ore


def reminded(invoice: Invoice) -> Invoice:
    """The invoice sent, and reminded with the reminder fee 14 days after its due date."""
    make_fee_settings(reminder_fee_ore=FEE)
    invoice.sent_at = utcnow()
    db.session.commit()
    (reminder,) = send_due_reminders(invoice.due_date + timedelta(days=14)).sent
    db.session.commit()
    assert reminder.fee_ore == FEE and invoice.fees_ore == FEE
    return invoice


def test_a_credit_note_after_a_write_off_credits_only_what_is_not_written_off(ctx):
    invoice = make_invoiced_members(1)[0]  # 2 500 kr
    register_payment(invoice, 30_000, date(2026, 3, 1), kind="write_off", note="Småbeløp")
    db.session.commit()
    assert invoice.creditable_ore == 220_000

    with pytest.raises(FeeError, match="at most NOK.2,200.00"):
        credit_invoice(invoice, "Feil", amount_ore=250_000)
    db.session.rollback()
    assert db.session.scalar(select(func.count()).select_from(CreditNote)) == 0

    note = credit_invoice(invoice, "Meldte seg ut")  # all that is creditable
    db.session.commit()
    assert (note.amount_ore, note.fees_cancelled_ore) == (220_000, 0)
    # The write-off stands as a loss; nothing is owed and nothing is owed back.
    assert (invoice.status, invoice.written_off_ore, invoice.credited_ore) == (
        "paid",
        30_000,
        220_000,
    )
    assert (invoice.outstanding_ore, invoice.refund_due_ore, invoice.creditable_ore) == (0, 0, 0)
    assert ledger_receivable(invoice) == 0
    assert_page_is_ledger(invoice)
    with pytest.raises(FeeError, match="Nothing is left to credit"):
        credit_invoice(invoice, "Igjen")


def test_money_received_after_a_write_off_and_full_credit_is_all_owed_back(ctx):
    invoice = make_invoiced_members(1)[0]
    register_payment(invoice, 100_000, date(2026, 3, 1))
    register_payment(invoice, 50_000, date(2026, 3, 2), kind="write_off")
    credit_invoice(invoice, "Feil antall ansatte")
    db.session.commit()
    assert invoice.credited_ore == 200_000  # 2 500 less the 500 written off
    assert (invoice.status, invoice.outstanding_ore, invoice.refund_due_ore) == (
        "overpaid",
        0,
        100_000,
    )
    assert ledger_receivable(invoice) == -100_000
    assert_page_is_ledger(invoice)
    assert invoices_for_year(2026, refund_due=True) == [invoice]
    assert dashboard(2026).refund_due.ore == 100_000


def test_a_full_credit_of_a_reminded_invoice_cancels_its_reminder_fee(ctx):
    invoice = reminded(make_invoiced_members(1)[0])

    note = credit_invoice(invoice, "Meldte seg ut før årsskiftet", today=date(2026, 4, 1))
    db.session.commit()

    assert (note.amount_ore, note.fees_cancelled_ore) == (invoice.amount_ore, FEE)
    assert (invoice.status, invoice.fees_ore, invoice.outstanding_ore) == ("credited", 0, 0)
    assert invoice.refund_due_ore == 0
    assert ledger_receivable(invoice) == 0
    assert_page_is_ledger(invoice)
    # Booked with the credit note: reminder fees debited, receivable credited.
    settings = get_settings()
    (voucher,) = [
        v
        for v in accounting.vouchers(date(2026, 1, 1), date(2026, 12, 31), settings)
        if v.kind == "credit_note"
    ]
    assert voucher.balanced
    fee_postings = [p for p in voucher.postings if p.account == settings.account_reminder_fees]
    assert [(p.debit_ore, p.credit_ore) for p in fee_postings] == [(FEE, 0)]
    totals = accounting.totals([voucher], settings)
    assert (totals.credited, totals.fees_cancelled) == (invoice.amount_ore, FEE)
    figures = dashboard(2026)
    assert (figures.outstanding.ore, figures.credited.count) == (0, 1)
    # The credit note says so, on paper and in EHF (which still passes every rule).
    assert "35,00" in pdf_text(credit_note_pdf(note, settings))
    assert "35,00" in pdf_text(invoice_pdf(invoice, settings))
    document = credit_note_document(note, settings)
    check(document)
    assert "Purregebyr kr 35,00" in xpath(document, "/*/cbc:Note")[0]
    assert xpath(document, "//cac:LegalMonetaryTotal/cbc:PayableAmount") == ["2500.00"]


def test_a_full_credit_of_a_reminded_partly_paid_invoice_owes_all_money_back(ctx):
    invoice = reminded(make_invoiced_members(1)[0])
    register_payment(invoice, 100_000, invoice.due_date + timedelta(days=20))
    db.session.commit()

    credit_invoice(invoice, "Feil mottaker")
    db.session.commit()

    assert (invoice.status, invoice.outstanding_ore, invoice.refund_due_ore) == (
        "credited",
        0,
        100_000,
    )
    assert ledger_receivable(invoice) == -100_000
    assert_page_is_ledger(invoice)


def test_a_written_off_reminder_fee_is_not_cancelled_again(ctx):
    invoice = reminded(make_invoiced_members(1)[0])
    register_payment(invoice, invoice.amount_ore, invoice.due_date + timedelta(days=20))
    register_payment(invoice, FEE, invoice.due_date + timedelta(days=21), kind="write_off")
    db.session.commit()
    assert invoice.status == "paid"
    # The write-off took the fee: the whole invoice amount is still creditable.
    assert invoice.creditable_ore == invoice.amount_ore

    note = credit_invoice(invoice, "Ikke medlem likevel")
    db.session.commit()

    assert (note.amount_ore, note.fees_cancelled_ore) == (invoice.amount_ore, 0)
    assert (invoice.status, invoice.refund_due_ore) == ("credited", invoice.amount_ore)
    assert_page_is_ledger(invoice)


def test_a_partial_credit_leaves_the_reminder_fee_and_the_last_one_cancels_it(ctx):
    invoice = reminded(make_invoiced_members(1)[0])
    first = credit_invoice(invoice, "Rabatt", amount_ore=50_000)
    db.session.commit()
    assert first.fees_cancelled_ore == 0 and invoice.outstanding_ore == 200_000 + FEE
    assert_page_is_ledger(invoice)

    last = credit_invoice(invoice, "Resten", amount_ore=invoice.creditable_ore)
    db.session.commit()
    assert last.fees_cancelled_ore == FEE and invoice.status == "credited"
    assert_page_is_ledger(invoice)


def test_a_course_fee_with_vat_credited_with_its_reminder_fee_still_passes_ehf(ctx):
    make_invoiced_members(1)  # settings, organisation and schedule
    invoice = reminded(course_fee_invoice())

    note = credit_invoice(invoice, "Kurset ble avlyst")
    db.session.commit()

    assert note.fees_cancelled_ore == FEE
    document = credit_note_document(note, get_settings())
    check(document)
    # No line outside the scope of VAT beside the VAT lines (BR-O-11..14).
    assert set(xpath(document, "//cac:TaxSubtotal/cac:TaxCategory/cbc:ID")) == {"S"}
    assert_page_is_ledger(invoice)


def test_staff_form_refuses_a_credit_note_beyond_what_is_creditable(app, client, auth):
    with app.test_request_context():
        invoice = make_invoiced_members(1)[0]
        register_payment(invoice, 30_000, date(2026, 3, 1), kind="write_off")
        db.session.commit()
        invoice_id = invoice.id
        before = (
            db.session.scalar(select(func.count()).select_from(CreditNote)),
            db.session.scalar(select(func.count()).select_from(Payment)),
            get_settings().next_invoice_number,
        )
    auth.login("treasurer")
    url = f"/fees/invoices/{invoice_id}"
    page = client.get(url).get_data(as_text=True)
    assert "kr\xa02\xa0200,00" in page and 'id="creditable"' in page

    response = client.post(f"{url}/credit", data={"reason": "Feil", "amount": "2 500"})

    assert response.status_code == 302
    page = client.get(url).get_data(as_text=True)
    assert "kan være høyst kr\xa02\xa0200,00" in page
    with app.test_request_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert (invoice.status, invoice.credited_ore) == ("partially_paid", 0)
        after = (
            db.session.scalar(select(func.count()).select_from(CreditNote)),
            db.session.scalar(select(func.count()).select_from(Payment)),
            get_settings().next_invoice_number,
        )
        assert after == before

    # Credit in full (the amount left empty) credits exactly what is creditable.
    client.post(f"{url}/credit", data={"reason": "Meldte seg ut", "amount": ""})
    with app.test_request_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert (invoice.credited_ore, invoice.outstanding_ore, invoice.refund_due_ore) == (
            220_000,
            0,
            0,
        )
        assert_page_is_ledger(invoice)
    assert 'id="creditable"' not in client.get(url).get_data(as_text=True)


def _credit_in_full(invoice_id: int, before_commit=lambda: None) -> None:
    from crm.audit import acting_as

    with acting_as("test"):
        credit_invoice(db.session.get(Invoice, invoice_id), "Feil medlemskap")
        before_commit()
        db.session.commit()


def _refused_after_a_full_credit_note(app, invoice_id: int, second) -> None:
    """`second()` starts while a full credit note of the invoice is made, not yet
    committed: it waits for the credit note and is then refused (FeeError)."""
    raised = second_meets_first_uncommitted(
        app, lambda hold: _credit_in_full(invoice_id, hold), second
    )
    assert [type(exc) for exc in raised] == [FeeError], raised


def _concurrent_invoice(app) -> tuple[int, int]:
    """(id, amount) of an invoice, on PostgreSQL (concurrent writers; SQLite has one
    writer at a time)."""
    with app.app_context():
        if db.engine.dialect.name != "postgresql":
            pytest.skip("concurrent writers need PostgreSQL")
        make_fee_settings()
        invoice = make_invoiced_members(1)[0]
        db.session.commit()
        return invoice.id, invoice.amount_ore


def test_two_full_credit_notes_at_once_credit_the_invoice_once(app):
    """Two staff crediting one invoice in full at the same moment: the second waits for
    the first and then finds nothing left to credit."""
    invoice_id, amount = _concurrent_invoice(app)
    _refused_after_a_full_credit_note(app, invoice_id, lambda: _credit_in_full(invoice_id))
    with app.app_context():
        assert db.session.get(Invoice, invoice_id).credited_ore == amount
        assert db.session.scalar(select(func.count(CreditNote.id))) == 1


def _sent_with_a_reminder_fee(app, invoice_id: int) -> date:
    """The invoice sent, the reminder fee set: the day its first reminder is due."""
    with app.app_context():
        make_fee_settings(reminder_fee_ore=FEE)
        invoice = db.session.get(Invoice, invoice_id)
        invoice.sent_at = utcnow()
        db.session.commit()
        return invoice.due_date + timedelta(days=14)


def test_a_reminder_sent_while_the_invoice_is_credited_in_full_is_refused(app):
    """A treasurer credits an overdue invoice in full while another sends its first
    reminder: the reminder waits for the credit note and is then refused, so no reminder
    fee (or email) lands on a credited invoice."""
    invoice_id, amount = _concurrent_invoice(app)
    overdue = _sent_with_a_reminder_fee(app, invoice_id)

    def remind() -> None:
        send_reminder(db.session.get(Invoice, invoice_id), 1, overdue)
        db.session.commit()

    _refused_after_a_full_credit_note(app, invoice_id, remind)
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert db.session.scalar(select(func.count(Reminder.id))) == 0
        assert (invoice.status, invoice.credited_ore, invoice.outstanding_ore) == (
            "credited",
            amount,
            0,
        )


def test_an_invoice_credited_in_full_while_its_reminder_is_sent_cancels_the_fee(app):
    """The other order: the reminder goes first; the credit note waits for it and
    cancels its fee with the rest, so nothing is left owing."""
    invoice_id, amount = _concurrent_invoice(app)
    overdue = _sent_with_a_reminder_fee(app, invoice_id)

    def remind(hold) -> None:
        send_reminder(db.session.get(Invoice, invoice_id), 1, overdue)
        hold()
        db.session.commit()

    assert second_meets_first_uncommitted(app, remind, lambda: _credit_in_full(invoice_id)) == []
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        (note,) = invoice.credit_notes
        assert (note.fees_cancelled_ore, invoice.credited_ore) == (FEE, amount)
        assert invoice.outstanding_ore == invoice.refund_due_ore == 0
        assert_page_is_ledger(invoice)


def test_a_full_credit_note_and_a_write_off_at_once_cancel_no_more_than_the_invoice(app):
    """One staff member credits the invoice in full while another writes off what the
    page still showed outstanding: the write-off waits for the credit note and is then
    refused."""
    from crm.audit import acting_as

    invoice_id, amount = _concurrent_invoice(app)

    def write_off() -> None:
        with acting_as("test"):
            invoice = db.session.get(Invoice, invoice_id)
            assert invoice.outstanding_ore == amount  # as the page showed it
            register_payment(invoice, amount, date(2026, 3, 1), kind="write_off")
            db.session.commit()

    _refused_after_a_full_credit_note(app, invoice_id, write_off)
    with app.app_context():
        invoice = db.session.get(Invoice, invoice_id)
        assert (invoice.credited_ore, invoice.written_off_ore) == (amount, 0)
        assert invoice.outstanding_ore - invoice.refund_due_ore == invoice.balance_ore == 0
