"""Acceptance 6: a paid course registration from a member company is invoiced through the
fees area (25 % VAT line, KID) and an OCR file pays it; cancelling credits it before the
deadline, and after it the cancellation fee stays due."""

from datetime import timedelta

from crm.events import services
from crm.events.models import Registration
from crm.extensions import db
from crm.fees.models import Invoice
from crm.fees.services import import_ocr_file
from crm.timeutil import utcnow
from tests.events_factories import make_event
from tests.factories import build_ocr, make_fee_settings, make_member


def _course(**fields):
    fields.setdefault("cancellation_deadline", utcnow() + timedelta(days=5))
    fields.setdefault("cancellation_fee_ore", 150_000)
    fields.setdefault("capacity", 10)
    return make_event(
        "LEAN grunnkurs",
        sessions=3,
        member_price_ore=690_000,
        price_ore=990_000,
        vat_percent=25,
        **fields,
    )


def _register(event, name, email, company=None) -> Registration:
    registration = services.register(
        event.id, name=name, email=email, company=company, company_name=""
    ).registration
    db.session.commit()
    return registration


def test_a_member_company_is_invoiced_the_member_price_with_25_percent_vat(app_ctx):
    make_fee_settings()
    company = make_member("Glåmdal Sag AS")
    registration = _register(_course(), "Kari", "kari@example.no", company)
    invoice = db.session.get(Invoice, registration.invoice_id)
    assert invoice.company_id == company.id and invoice.kind == "event"
    (line,) = invoice.lines
    assert (line.vat_category, line.vat_rate_centi) == ("S", 2500)
    assert (line.net_ore, line.vat_ore) == (690_000, 172_500)
    assert invoice.amount_ore == 862_500
    assert invoice.kid and invoice.sent_at is not None
    assert "LEAN grunnkurs" in line.description

    result = import_ocr_file(build_ocr([[(invoice.kid, 862_500)]]), "event.ocr")
    db.session.commit()
    assert result.matched == 1
    db.session.refresh(invoice)
    assert invoice.status == "paid"


def test_others_are_invoiced_as_persons_at_the_other_price(app_ctx):
    make_fee_settings()
    registration = _register(_course(), "Per Privat", "per@example.no")
    invoice = db.session.get(Invoice, registration.invoice_id)
    assert invoice.company_id is None
    assert invoice.customer_name == "Per Privat"
    assert invoice.amount_ore == 1_237_500


def test_waitlisted_people_are_not_invoiced_until_they_take_a_seat(app_ctx):
    make_fee_settings()
    event = _course()
    event.capacity = 1
    db.session.commit()
    first = _register(event, "A", "a@example.no")
    second = _register(event, "B", "b@example.no")
    assert second.invoice_id is None
    services.cancel(first)
    db.session.commit()
    services.accept_offer(db.session.get(Registration, second.id))
    db.session.commit()
    assert db.session.get(Registration, second.id).invoice_id is not None


def test_cancelling_before_the_deadline_credits_the_whole_invoice(app_ctx):
    make_fee_settings()
    registration = _register(_course(), "Kari", "kari@example.no", make_member())
    services.cancel(registration)
    db.session.commit()
    invoice = db.session.get(Invoice, registration.invoice_id)
    assert invoice.status == "credited"
    assert invoice.credited_ore == invoice.amount_ore


def test_after_the_deadline_only_the_cancellation_fee_stays_due(app_ctx):
    make_fee_settings()
    event = _course(cancellation_deadline=utcnow() - timedelta(hours=1))
    registration = _register(event, "Kari", "kari@example.no", make_member())
    services.cancel(registration, by_staff=True)  # the person can no longer cancel
    db.session.commit()
    invoice = db.session.get(Invoice, registration.invoice_id)
    assert invoice.amount_ore - invoice.credited_ore == 187_500  # 1 500 kr + 25 % VAT


def test_a_free_event_makes_no_invoice_and_missing_fee_settings_do_not_lose_a_seat(app_ctx):
    free = make_event(capacity=5)
    assert _register(free, "A", "a@example.no").invoice_id is None
    paid = _register(_course(), "B", "b@example.no")  # no fee settings yet
    assert paid.status == "confirmed" and paid.invoice_id is None


def test_the_event_page_shows_what_was_invoiced_and_paid(app, client, auth):
    with app.app_context():
        make_fee_settings()
        event = _course()
        _register(event, "Kari", "kari@example.no", make_member())
        event_id = event.id
    auth.login("treasurer")
    page = client.get(f"/events/{event_id}").get_data(as_text=True)
    assert "kr\u00a08\u00a0625,00" in page


def test_registering_again_after_cancelling_invoices_the_new_seat(app_ctx):
    # The cancelled registration's row is reused (one per address and event): its
    # credited invoice must not stand for the new seat.
    make_fee_settings()
    event = _course()
    registration = _register(event, "Kari", "kari@example.no", make_member())
    first_invoice = registration.invoice_id
    services.cancel(registration)
    db.session.commit()
    again = _register(event, "Kari", "kari@example.no")
    assert again.id == registration.id and again.status == "confirmed"
    assert again.invoice_id is not None and again.invoice_id != first_invoice
    invoice = db.session.get(Invoice, again.invoice_id)
    assert invoice.credited_ore == 0 and invoice.amount_ore == 1_237_500


def test_a_cancelled_seats_invoice_still_due_stays_in_the_event_income_after_registering_again(
    app_ctx,
):
    # Cancelled after the deadline: the cancellation fee stays due on the first invoice.
    # The same address registering again reuses the row and gets a new invoice for the
    # new seat; the event's income counts both.
    make_fee_settings()
    event = _course(cancellation_deadline=utcnow() - timedelta(hours=1))
    registration = _register(event, "Per Privat", "per@example.no")
    first = db.session.get(Invoice, registration.invoice_id)
    services.cancel(registration, by_staff=True)
    db.session.commit()
    assert first.amount_ore - first.credited_ore == 187_500
    again = _register(event, "Per Privat", "per@example.no")
    second = db.session.get(Invoice, again.invoice_id)
    assert again.id == registration.id and second.id != first.id
    assert first.event_id == second.event_id == event.id
    assert services.event_income(event) == {
        "invoiced": 187_500 + 1_237_500,
        "paid": 0,
        "count": 2,
    }


def _kari_cancelled_late_without_fee(**course) -> tuple:
    """(event, company, invoice id): Kari of a member company registered for a course and
    cancelled after its deadline; it has no cancellation fee, so nothing was credited."""
    make_fee_settings()
    event = _course(
        cancellation_deadline=utcnow() - timedelta(hours=1), cancellation_fee_ore=0, **course
    )
    company = make_member("Glåmdal Sag AS")
    kari = _register(event, "Kari", "kari@example.no", company)
    invoice_id = kari.invoice_id
    services.cancel(kari, by_staff=True)
    db.session.commit()
    return event, company, invoice_id


def test_registering_again_after_a_late_cancellation_without_fee_is_not_charged_twice(app_ctx):
    # Cancelled after the deadline with no fee: nothing was credited, the whole price is
    # still owed for this event. Registering again takes that seat back: its invoice,
    # not a second one.
    event, company, first = _kari_cancelled_late_without_fee()
    again = _register(event, "Kari", "kari@example.no", company)
    assert again.status == "confirmed" and again.invoice_id == first
    assert db.session.scalar(db.select(db.func.count(Invoice.id))) == 1
    assert services.event_income(event) == {"invoiced": 862_500, "paid": 0, "count": 1}
    # Registering for another buyer (as a person now) is a seat of its own to invoice.
    services.cancel(again, by_staff=True)
    db.session.commit()
    as_person = _register(event, "Kari", "kari@example.no")
    assert as_person.invoice_id not in (None, first)


def test_registering_again_onto_the_waitlist_after_a_late_cancellation_is_not_charged_twice(
    app_ctx,
):
    # The whole price of the late-cancelled seat is still owed: the registration keeps
    # that invoice while it waits, and the seat it gets later is that seat.
    event, company, first = _kari_cancelled_late_without_fee(capacity=1)
    ola = _register(event, "Ola", "ola@example.no", company)
    again = _register(event, "Kari", "kari@example.no", company)
    assert again.status == "waitlisted" and again.invoice_id == first
    services.cancel(ola, by_staff=True)
    db.session.commit()
    assert again.status == "offered"
    services.accept_offer(again)
    db.session.commit()
    assert again.status == "confirmed" and again.invoice_id == first
    assert db.session.get(Invoice, first).credited_ore == 0
    assert services.event_income(event)["count"] == 2  # Kari's and Ola's, once each


def test_a_credited_invoice_counts_nothing_and_a_handed_over_seat_counts_once(app_ctx):
    make_fee_settings()
    company = make_member("Glåmdal Sag AS")
    event = _course()
    kari = _register(event, "Kari", "kari@example.no", company)
    services.cancel(kari)  # before the deadline: credited in full
    db.session.commit()
    _register(event, "Kari", "kari@example.no", company)
    ola = _register(event, "Ola", "ola@example.no", company)
    services.transfer(ola, name="Nils", email="nils@example.no")
    db.session.commit()
    income = services.event_income(event)
    assert income["invoiced"] == 2 * 862_500 and income["count"] == 3
