"""The rules of events: registration, capacity and waitlist, offers, cancellation,
hand-over, changes that reach registrants, duplication and publishing.

Functions here change the session but never commit: the request or job that calls
them decides. Everything that counts seats first takes the event's lock
(`lock_event`), so two registrations can never both take the last seat, on
PostgreSQL (SELECT … FOR UPDATE on the event row) and on SQLite (the database's
write lock, taken before the counting starts).
"""

import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from flask import current_app
from flask_babel import force_locale, ngettext
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, select, update
from sqlalchemy.orm import selectinload

from crm.events import ics
from crm.events.models import (
    PARTICIPANT_TYPES,
    SEAT_STATUSES,
    Attendance,
    Certificate,
    Event,
    EventSession,
    Registration,
)
from crm.events.tokens import make_registration_token, read_registration_token
from crm.extensions import db
from crm.mail.services import queue_email
from crm.members.models import Company, Contact
from crm.members.normalize import normalize_email, normalize_phone
from crm.subscriptions.subscribers import header_safe, split_name
from crm.subscriptions.tokens import TokenInvalid

if TYPE_CHECKING:
    from crm.fees.models import Invoice
from crm.timeutil import utcnow


class EventError(ValueError):
    """A request that breaks a rule of events; the message is fit to show the person."""


FORM_ALREADY_USED = _l(
    "This form has already been sent. To register someone else, check the details and "
    "send the form again."
)


class ParticipationRecorded(EventError):
    """Staff cancelling a registration that has attendance or a certificate: nothing was
    changed; cancelling it anyway (`cancel(..., clear_attendance=True)`) clears the
    attendance and revokes the certificate."""

    def __init__(self, registration: "Registration", marks: int, certified: bool) -> None:
        self.marks, self.certified = marks, certified
        if certified:
            message = ngettext(
                "%(name)s was checked in at %(num)s session and has a course certificate. "
                "Cancelling the registration clears the attendance and revokes the certificate.",
                "%(name)s was checked in at %(num)s sessions and has a course certificate. "
                "Cancelling the registration clears the attendance and revokes the certificate.",
                marks,
                name=registration.name,
            )
        else:
            message = ngettext(
                "%(name)s was checked in at %(num)s session. Cancelling the registration "
                "clears the attendance.",
                "%(name)s was checked in at %(num)s sessions. Cancelling the registration "
                "clears the attendance.",
                marks,
                name=registration.name,
            )
        super().__init__(message)


class FormAlreadyUsed(EventError):
    """The registration form was sent before (its token made a registration): nothing
    was stored."""

    def __init__(self) -> None:
        super().__init__(str(FORM_ALREADY_USED))


@dataclass(frozen=True)
class RegistrationResult:
    registration: Registration
    created: bool  # False: the address was already registered, nothing changed


# -- locking and counting ---------------------------------------------------------------


def lock_event(event_id: int) -> Event | None:
    """The event, locked until the transaction ends.

    PostgreSQL: SELECT … FOR UPDATE on its row. SQLite has no row locks: an UPDATE of
    the row as the transaction's first write takes the database's write lock at once
    (waiting up to busy_timeout), like BEGIN IMMEDIATE, so whoever counts seats next
    sees every registration committed before.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        return db.session.scalar(
            select(Event)
            .where(Event.id == event_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    locked = db.session.execute(
        update(Event).where(Event.id == event_id).values(id=Event.id)
    ).rowcount
    if not locked:
        return None
    event = db.session.get(Event, event_id, populate_existing=True)
    return event


def seat_counts(event_id: int) -> dict[str, int]:
    """Registrations per status."""
    rows = db.session.execute(
        select(Registration.status, func.count())
        .where(Registration.event_id == event_id)
        .group_by(Registration.status)
    ).all()
    counts = {"confirmed": 0, "waitlisted": 0, "offered": 0, "cancelled": 0}
    counts.update({status: count for status, count in rows})
    return counts


def seat_counts_for(event_ids: list[int]) -> dict[int, dict[str, int]]:
    """Registrations per status for many events in one query (list pages)."""
    counts = {
        event_id: {"confirmed": 0, "waitlisted": 0, "offered": 0, "cancelled": 0}
        for event_id in event_ids
    }
    if event_ids:
        rows = db.session.execute(
            select(Registration.event_id, Registration.status, func.count())
            .where(Registration.event_id.in_(event_ids))
            .group_by(Registration.event_id, Registration.status)
        )
        for event_id, status, count in rows:
            counts[event_id][status] = count
    return counts


def seats_held(event_id: int, company_id: int | None = None) -> int:
    """Seats taken: confirmed registrations and open offers (of one company, if given)."""
    stmt = select(func.count()).where(
        Registration.event_id == event_id, Registration.status.in_(SEAT_STATUSES)
    )
    if company_id is not None:
        stmt = stmt.where(Registration.company_id == company_id)
    return db.session.scalar(stmt) or 0


def free_seats(event: Event) -> int | None:
    """Seats left, or None when the event has no limit."""
    if event.capacity is None:
        return None
    return max(event.capacity - seats_held(event.id), 0)


def over_capacity_warning(event: Event) -> str | None:
    """What staff must know when more hold a seat than the capacity allows (it was
    lowered below them), or None. Nobody loses a seat over it, and `free_seats` stays 0,
    so nothing is offered to the waitlist until enough seats are freed."""
    if event.capacity is None:
        return None
    held = seats_held(event.id)
    if held <= event.capacity:
        return None
    return _(
        "%(held)s hold a seat (confirmed or offered), and the capacity is %(capacity)s. "
        "Nobody is removed; no seat is offered to the waitlist until fewer than "
        "%(capacity)s hold one.",
        held=held,
        capacity=event.capacity,
    )


def _quota_allows(event: Event, company_id: int | None) -> bool:
    if event.company_quota is None or company_id is None:
        return True
    return seats_held(event.id, company_id) < event.company_quota


def _seat_available(event: Event, company_id: int | None) -> bool:
    free = free_seats(event)
    return (free is None or free > 0) and _quota_allows(event, company_id)


def waitlist_place(registration: Registration) -> int | None:
    """1 for the first on the waitlist, 2 for the next, …; None when not waiting."""
    if registration.status != "waitlisted" or registration.waitlist_position is None:
        return None
    return (
        db.session.scalar(
            select(func.count()).where(
                Registration.event_id == registration.event_id,
                Registration.status == "waitlisted",
                Registration.waitlist_position <= registration.waitlist_position,
            )
        )
        or 0
    )


# -- what the public may do -------------------------------------------------------------


def is_member_company(company: Company | None) -> bool:
    return (
        company is not None
        and company.membership_status == "member"
        and company.archived_at is None
    )


def member_companies() -> list[Company]:
    """Member companies people can pick on the public form."""
    return list(
        db.session.scalars(
            select(Company)
            .where(Company.membership_status == "member", Company.archived_at.is_(None))
            .order_by(Company.name, Company.id)
        )
    )


def upcoming_events(now: datetime | None = None, *, published_only: bool = True) -> list[Event]:
    """Events with a session still to come, soonest first."""
    now = now or utcnow()
    last_end = (
        select(EventSession.event_id, func.max(EventSession.ends_at).label("last_end"))
        .group_by(EventSession.event_id)
        .subquery()
    )
    first_start = (
        select(EventSession.event_id, func.min(EventSession.starts_at).label("first_start"))
        .group_by(EventSession.event_id)
        .subquery()
    )
    stmt = (
        select(Event)
        .join(last_end, last_end.c.event_id == Event.id)
        .join(first_start, first_start.c.event_id == Event.id)
        .where(last_end.c.last_end > now)
        .order_by(first_start.c.first_start, Event.id)
        .options(selectinload(Event.sessions))
    )
    if published_only:
        stmt = stmt.where(Event.published.is_(True))
    return list(db.session.scalars(stmt))


def registration_closed_reason(event: Event, now: datetime | None = None) -> str | None:
    """Why nobody can register now, or None when registration is open."""
    now = now or utcnow()
    if not event.published:
        return _("This event is not open for registration.")
    if event.ends_at is None or event.ends_at <= now:
        return _("This event is over.")
    if event.registration_deadline is not None and event.registration_deadline <= now:
        return _("The registration deadline has passed.")
    if event.starts_at is not None and event.starts_at <= now:
        return _("This event has already started.")
    return None


def cancellation_closed_reason(
    registration: Registration, now: datetime | None = None
) -> str | None:
    """Why the person can no longer cancel or hand over the seat, or None."""
    now = now or utcnow()
    event = registration.event
    if registration.status == "cancelled":
        return _("This registration is already cancelled.")
    if registration.status == "confirmed" and any(recorded_participation(registration)):
        return _("You have been checked in at this event. Contact us if that is wrong.")
    if event.cancellation_deadline is not None and event.cancellation_deadline <= now:
        if event.cancellation_fee_ore:
            return _(
                "The cancellation deadline has passed. Contact us: a cancellation fee applies."
            )
        return _("The cancellation deadline has passed. Contact us if you cannot come.")
    if event.starts_at is not None and event.starts_at <= now:
        return _("The event has already started.")
    return None


def price_for(event: Event, company: Company | None) -> int:
    """Øre without VAT: the member price for member companies, else the other price."""
    return event.member_price_ore if is_member_company(company) else event.price_ore


# -- registering ------------------------------------------------------------------------


def find_or_create_contact(email: str, name: str, phone: str, company: Company | None) -> Contact:
    """The current contact with this address, or a new one made from the registration."""
    contact = db.session.scalar(
        select(Contact)
        .where(
            Contact.email == email,
            Contact.archived_at.is_(None),
            Contact.merged_into_id.is_(None),
        )
        .order_by(Contact.id)
        .limit(1)
    )
    if contact is not None:
        return contact
    first, last = split_name(name)
    try:
        phone_e164 = normalize_phone(phone) if phone else None
    except ValueError:
        phone_e164 = None
    contact = Contact(
        first_name=first,
        last_name=last,
        email=email,
        phone=phone_e164,
        company_id=company.id if is_member_company(company) else None,
        notes="",
    )
    db.session.add(contact)
    db.session.flush()
    return contact


def register(
    event_id: int,
    *,
    name: str,
    email: str,
    phone: str = "",
    company: Company | None = None,
    company_name: str = "",
    participant_type: str = "other",
    note: str = "",
    locale: str = "nb",
    invited: bool = False,
    now: datetime | None = None,
    form_token: str | None = None,
) -> RegistrationResult:
    """Register a person: a seat if one is free (and the company's quota allows),
    else a place on the waitlist. Queues the confirmation email.

    The same address again returns the first registration unchanged (created=False)
    and sends nothing. Raises EventError when registration is closed or the person
    may not register. `form_token` (a digest, see `tokens.form_token_digest`) makes one
    registration only, as the signup form's starts one signup: the same form sent
    again returns that registration (created=False) for its address while it stands,
    and raises FormAlreadyUsed for any other address or once it was cancelled.
    """
    now = now or utcnow()
    email = normalize_email(email)
    if participant_type not in PARTICIPANT_TYPES:
        raise EventError(_("Choose what describes you best."))
    if company is not None and not is_member_company(company):
        company_name, company = company.name, None
    event = lock_event(event_id)
    if event is None:
        raise EventError(_("This event does not exist."))
    if form_token is not None:
        # Checked under the event's lock; the unique index holds across events too.
        made = db.session.scalar(select(Registration).where(Registration.form_token == form_token))
        if made is not None:
            if made.event_id == event.id and made.email == email and made.status != "cancelled":
                return RegistrationResult(made, created=False)
            raise FormAlreadyUsed
    existing = db.session.scalar(
        select(Registration).where(Registration.event_id == event.id, Registration.email == email)
    )
    if existing is not None and existing.status != "cancelled":
        return RegistrationResult(existing, created=False)
    reason = registration_closed_reason(event, now)
    if reason:
        raise EventError(reason)
    if event.audience == "members" and company is None:
        raise EventError(_("This event is for member companies only: choose your company."))
    if event.audience == "members_and_guests" and company is None and not invited:
        raise EventError(
            _("This event is for member companies and invited guests: use your invitation link.")
        )
    registration = existing or Registration(event_id=event.id, email=email)
    registration.name = header_safe(name, 200)
    registration.phone = header_safe(phone, 30)
    registration.company_id = company.id if company is not None else None
    registration.company_name = "" if company is not None else header_safe(company_name, 200)
    registration.participant_type = participant_type
    registration.note = (note or "").strip()[:2000]
    registration.locale = locale if locale in ("nb", "en") else "nb"
    registration.cancelled_at = None
    registration.offered_at = registration.offer_expires_at = None
    registration.form_token = form_token
    if existing is not None:
        registration.token_version += 1  # links to the cancelled registration stay dead
        # A registration cancelled before cancelling cleared them may still hold marks.
        clear_participation(registration)
        # The cancelled seat's invoice stays the event's (`Invoice.event_id`), settled as
        # the cancellation left it: credited before the deadline, the fee (or all)
        # still due after it. Where nothing of it was credited (cancelled late, no fee),
        # the whole price is still owed for this event: the new seat is that seat, not
        # a second one to pay for. Otherwise the new seat is invoiced anew.
        if not _whole_price_still_owed(existing, company):
            registration.invoice_id = None
    registration.contact_id = find_or_create_contact(
        email, registration.name, registration.phone, company
    ).id
    if _seat_available(event, registration.company_id):
        registration.status = "confirmed"
        registration.waitlist_position = None
    else:
        registration.status = "waitlisted"
        registration.waitlist_position = event.next_waitlist_position
        event.next_waitlist_position += 1
    if existing is None:
        # Taken under the lock: the order of created_at is the order seats were handed out.
        registration.created_at = utcnow()
        db.session.add(registration)
    db.session.flush()
    notify(registration, registration.status, now=now)
    invoice_registration(registration)
    return RegistrationResult(registration, created=True)


# -- billing (through the fees area: same numbering, KID, PDF, email, OCR) ---------------


def _invoice_line(event: Event, price_ore: int):
    from crm.fees.lines import LineSpec
    from crm.i18n import format_date

    dates = ", ".join(format_date(s.starts_at) for s in event.sessions)
    rate = event.vat_percent or 0
    return LineSpec(
        f"{event.title} ({dates})"[:300],
        price_ore,
        vat_category="S" if rate > 0 else "E",
        vat_rate=rate,
    )


def _whole_price_still_owed(registration: Registration, company: Company | None) -> bool:
    """Whether a cancelled registration's invoice was credited nothing and is to the
    buyer the new registration would be invoiced to (its member company, or the person)."""
    from crm.fees.models import Invoice

    if registration.invoice_id is None:
        return False
    invoice = db.session.get(Invoice, registration.invoice_id)
    if invoice is None or invoice.credited_ore > 0:
        return False
    buyer = company.id if is_member_company(company) else None
    return invoice.company_id == buyer


def issue_invoice(registration: Registration) -> "Invoice | None":
    """`invoice_registration` without the email: the seat's invoice, or None (a free
    seat, invoiced already, or the fees area could not issue it: logged)."""
    from crm.fees.errors import FeeError
    from crm.fees.services import Customer, create_invoice

    event = registration.event
    if registration.invoice_id is not None or registration.status != "confirmed":
        return None
    company = registration.company if is_member_company(registration.company) else None
    price = price_for(event, company)
    if price <= 0:
        return None
    customer = company or Customer(name=registration.name, email=registration.email)
    savepoint = db.session.begin_nested()
    try:
        invoice = create_invoice(
            customer,
            [_invoice_line(event, price)],
            kind="event",
            pricing_note=f"{registration.name} <{registration.email}>"[:400],
        )
        invoice.event_id = event.id
        registration.invoice_id = invoice.id
        db.session.flush()
        savepoint.commit()
    except FeeError as exc:
        savepoint.rollback()
        current_app.logger.warning("registration %s not invoiced: %s", registration.id, exc)
        return None
    return invoice


def invoice_registration(registration: Registration) -> None:
    """Invoice a confirmed seat of a paid event, once: member companies at the member
    price to the company, everyone else at the other price to the person; then email it.

    When the fees area cannot issue it (settings incomplete, no invoice contact), the
    seat stays confirmed without an invoice and the reason is logged: staff invoice it
    later; a registration is never lost over billing.
    """
    from crm.fees.errors import FeeError
    from crm.fees.services import queue_invoice_email

    invoice = issue_invoice(registration)
    if invoice is None:
        return
    try:
        with db.session.begin_nested():
            queue_invoice_email(invoice)
    except FeeError as exc:
        current_app.logger.warning("invoice %s not emailed: %s", invoice.id, exc)


def settle_cancellation(registration: Registration, *, before_deadline: bool) -> None:
    """Credit the invoice of a cancelled seat: in full before the cancellation deadline;
    after it, all but the cancellation fee (with its VAT), or nothing without a fee
    (the whole price is then due)."""
    from crm.fees.models import Invoice
    from crm.fees.services import credit_invoice

    if registration.invoice_id is None:
        return
    invoice = db.session.get(Invoice, registration.invoice_id)
    if invoice is None:
        return
    # Less what is written off: the fee rule's own figure (crm.fees.models.creditable).
    creditable = invoice.creditable_ore
    event = registration.event
    if before_deadline:
        amount = creditable
    elif event.cancellation_fee_ore:
        fee_gross = event.cancellation_fee_ore * (100 + (event.vat_percent or 0)) // 100
        amount = creditable - fee_gross
    else:
        amount = 0
    if amount > 0:
        reason = _("Cancelled registration: %(title)s", title=event.title)
        credit_invoice(invoice, reason, amount_ore=min(amount, creditable))


# -- links and emails -------------------------------------------------------------------


def registration_token(registration: Registration) -> str:
    return make_registration_token(registration.id, registration.token_version)


def manage_url(registration: Registration) -> str:
    base = current_app.config["PUBLIC_BASE_URL"]
    return f"{base}/arrangementer/pamelding/{registration_token(registration)}"


def registration_for_token(token: str) -> Registration | None:
    """The registration a personal link names, if the link is still valid."""
    try:
        claim = read_registration_token(token)
    except TokenInvalid:
        return None
    registration = db.session.get(Registration, claim.registration_id)
    if registration is None or registration.token_version != claim.version:
        return None
    return registration


def _notice_message(kind: str, event: Event, registration: Registration, **extra) -> str:
    """The paragraph of a notice that says what happened (in the current locale)."""
    from crm.i18n import format_datetime

    title = event.title
    if kind == "confirmed":
        return _("You are registered for %(title)s. The calendar file is attached.", title=title)
    if kind == "accepted":
        return _(
            "You took the offered seat: you are registered for %(title)s. "
            "The calendar file is attached.",
            title=title,
        )
    if kind == "waitlisted":
        return _(
            "%(title)s is full. You are number %(place)s on the waitlist; if a seat frees up "
            "we offer it to you by email.",
            title=title,
            place=waitlist_place(registration),
        )
    if kind == "offered":
        return _(
            "A seat at %(title)s is free, and it is yours if you accept it before %(when)s. "
            "After that it goes to the next person on the waitlist.",
            title=title,
            when=format_datetime(registration.offer_expires_at),
        )
    if kind == "offer_expired":
        return _(
            "The seat we offered you at %(title)s was not accepted in time and has gone to "
            "the next person on the waitlist.",
            title=title,
        )
    if kind == "cancelled":
        return _("Your registration for %(title)s is cancelled.", title=title)
    if kind == "changed":
        return _(
            "The date, time or venue of %(title)s has changed. The updated calendar file is "
            "attached: open it to update your calendar.",
            title=title,
        )
    if kind == "transferred_from":
        return _(
            "You handed your seat at %(title)s to %(name)s.", title=title, name=extra["colleague"]
        )
    if kind == "transferred_to":
        return _(
            "%(name)s handed you their seat at %(title)s: you are registered. "
            "The calendar file is attached.",
            title=title,
            name=extra["colleague"],
        )
    raise ValueError(f"unknown notice {kind!r}")


# Which emails carry the calendar, and which cancel it in the calendar.
_WITH_CALENDAR = {"confirmed", "accepted", "changed", "transferred_to"}
_CANCELLING_CALENDAR = {"cancelled", "transferred_from"}


def notify(registration: Registration, kind: str, *, now: datetime | None = None, **extra):
    """Queue the email of `kind` to the registrant (confirmed, waitlisted, offered,
    accepted, offer_expired, cancelled, changed, transferred_from, transferred_to).

    The key makes each notice go out once: a repeated call (a retried request) finds
    the message already queued.
    """
    now = now or utcnow()
    event = registration.event
    attachments = []
    if kind in _WITH_CALENDAR:
        attachments.append(ics.event_attachment(event))
    elif kind in _CANCELLING_CALENDAR and registration.status != "waitlisted":
        attachments.append(ics.event_attachment(event, cancelled=True))
    # Each kind reaches a registration once per link version (a new registration after
    # a cancellation bumps it); a change notice once per calendar SEQUENCE.
    key_suffix = f":{event.sequence}" if kind == "changed" else ""
    with force_locale(registration.locale):
        message = _notice_message(kind, event, registration, **extra)
    context = {
        "kind": kind,
        "message": message,
        "name": registration.name,
        "event": event,
        "sessions": list(event.sessions),
        "manage_url": manage_url(registration),
        "event_url": ics.event_url(event),
        "place": waitlist_place(registration),
        "offer_expires_at": registration.offer_expires_at,
        **extra,
    }
    return queue_email(
        to=registration.email,
        to_name=header_safe(registration.name, 200),
        template="events/notice",
        context=context,
        category="event",
        key=f"event:{kind}:{registration.id}:{registration.token_version}{key_suffix}",
        contact_id=registration.contact_id,
        attachments=attachments,
        locale=registration.locale,
    )


# -- offers and the waitlist ------------------------------------------------------------


def offer_hours() -> float:
    return float(current_app.config["EVENT_OFFER_HOURS"])


def fill_freed_seats(event: Event, now: datetime | None = None) -> list[Registration]:
    """Offer free seats to the waitlist in order (skipping people whose company quota
    is full). Call with the event locked. Returns the registrations offered a seat."""
    now = now or utcnow()
    if event.starts_at is None or event.starts_at <= now:
        return []  # nothing to offer once the event has begun
    offered = []
    waiting = db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status == "waitlisted")
        .order_by(Registration.waitlist_position)
    ).all()
    for registration in waiting:
        free = free_seats(event)
        if free is not None and free <= 0:
            break
        if not _quota_allows(event, registration.company_id):
            continue
        registration.status = "offered"
        registration.offered_at = now
        registration.offer_expires_at = now + timedelta(hours=offer_hours())
        db.session.flush()
        notify(registration, "offered", now=now)
        offered.append(registration)
    return offered


def accept_offer(registration: Registration, now: datetime | None = None) -> None:
    """Take the offered seat. Refused once the offer has expired (the seat then passes
    to the next person at once)."""
    now = now or utcnow()
    event = lock_event(registration.event_id)
    db.session.refresh(registration)
    if registration.status == "confirmed":
        return
    if registration.status != "offered":
        raise EventError(_("There is no open offer of a seat on this registration."))
    if registration.offer_expires_at is not None and registration.offer_expires_at <= now:
        _expire_offer(registration, event, now)
        raise EventError(_("The offer has expired and the seat was passed on."))
    registration.status = "confirmed"
    registration.offer_expires_at = None
    db.session.flush()
    notify(registration, "accepted", now=now)
    invoice_registration(registration)


def _expire_offer(registration: Registration, event: Event, now: datetime) -> None:
    registration.status = "cancelled"
    registration.cancelled_at = now
    db.session.flush()
    notify(registration, "offer_expired", now=now)
    fill_freed_seats(event, now)


def offers_due(now: datetime | None = None) -> bool:
    """Whether any offer is waiting to be expired."""
    now = now or utcnow()
    return (
        db.session.scalar(
            select(Registration.id)
            .where(Registration.status == "offered", Registration.offer_expires_at <= now)
            .limit(1)
        )
        is not None
    )


def expire_offers(now: datetime | None = None) -> int:
    """Expire every unanswered offer whose time is up and pass its seat on."""
    now = now or utcnow()
    due = db.session.execute(
        select(Registration.id, Registration.event_id)
        .where(Registration.status == "offered", Registration.offer_expires_at <= now)
        .order_by(Registration.event_id, Registration.offer_expires_at)
    ).all()
    expired = 0
    for registration_id, event_id in due:
        event = lock_event(event_id)
        registration = db.session.get(Registration, registration_id, populate_existing=True)
        if event is None or registration is None or registration.status != "offered":
            continue
        if registration.offer_expires_at > now:
            continue
        _expire_offer(registration, event, now)
        expired += 1
    return expired


# -- changing, cancelling, handing over -------------------------------------------------


def recorded_participation(registration: Registration) -> tuple[int, bool]:
    """(sessions the registration is marked present at, whether it has a certificate)."""
    marks = db.session.scalar(
        select(func.count()).where(Attendance.registration_id == registration.id)
    )
    certified = db.session.scalar(
        select(Certificate.id).where(Certificate.registration_id == registration.id)
    )
    return marks or 0, certified is not None


def clear_participation(registration: Registration) -> tuple[int, bool]:
    """Delete the registration's attendance marks and revoke (delete) its certificate;
    the audit log keeps what they were and who removed them. Returns what was there."""
    marks = db.session.scalars(
        select(Attendance).where(Attendance.registration_id == registration.id)
    ).all()
    certificate = db.session.scalar(
        select(Certificate).where(Certificate.registration_id == registration.id)
    )
    for mark in marks:
        db.session.delete(mark)
    if certificate is not None:
        db.session.delete(certificate)
    db.session.flush()
    return len(marks), certificate is not None


def cancel(
    registration: Registration,
    *,
    by_staff: bool = False,
    clear_attendance: bool = False,
    now: datetime | None = None,
) -> tuple[int, bool]:
    """Cancel a registration (or decline an offered seat, or leave the waitlist) and
    offer its seat to the waitlist.

    The person may cancel a confirmed seat only before the cancellation deadline and
    while not checked in (EventError with the reason); an offer can be declined, and
    the waitlist left, as long as they stand. Staff may always, but a registration
    with attendance or a certificate only with `clear_attendance` (else
    ParticipationRecorded, nothing changed): the marks are then deleted and the
    certificate revoked, so no count or certificate stands for a cancelled seat.
    Returns the (marks, certificate) cleared.
    """
    now = now or utcnow()
    event = lock_event(registration.event_id)
    db.session.refresh(registration)
    if registration.status == "cancelled":
        raise EventError(_("This registration is already cancelled."))
    if not by_staff and registration.status == "confirmed":
        reason = cancellation_closed_reason(registration, now)
        if reason:
            raise EventError(reason)
    marks, certified = recorded_participation(registration)
    if marks or certified:
        if not by_staff:
            raise EventError(
                _("You have been checked in at this event. Contact us if that is wrong.")
            )
        if not clear_attendance:
            raise ParticipationRecorded(registration, marks, certified)
        clear_participation(registration)
    held_seat = registration.status in SEAT_STATUSES
    before_deadline = event.cancellation_deadline is None or now < event.cancellation_deadline
    settle_cancellation(registration, before_deadline=before_deadline)
    registration.status = "cancelled"
    registration.cancelled_at = now
    registration.offer_expires_at = None
    db.session.flush()
    notify(registration, "cancelled", now=now)
    if held_seat:
        fill_freed_seats(event, now)
    return marks, certified


def update_details(registration: Registration, *, phone: str, note: str, participant_type: str):
    """The person's own changes: phone, dietary needs / note, participant type."""
    if participant_type not in PARTICIPANT_TYPES:
        raise EventError(_("Choose what describes you best."))
    registration.phone = header_safe(phone, 30)
    registration.note = (note or "").strip()[:2000]
    registration.participant_type = participant_type


def transfer(
    registration: Registration, *, name: str, email: str, phone: str = "", now=None
) -> Registration:
    """Hand the seat to a colleague of the same member company, before the
    cancellation deadline. The colleague gets a registration of their own (and the
    confirmation); the old one is cancelled without freeing the seat."""
    now = now or utcnow()
    event = lock_event(registration.event_id)
    db.session.refresh(registration)
    if registration.status != "confirmed":
        raise EventError(_("Only a confirmed seat can be handed over."))
    reason = cancellation_closed_reason(registration, now)
    if reason:
        raise EventError(reason)
    if registration.company_id is None:
        raise EventError(_("A seat can only be handed to a colleague of a member company."))
    email = normalize_email(email)
    taken = db.session.scalar(
        select(Registration).where(Registration.event_id == event.id, Registration.email == email)
    )
    if taken is not None and taken.status != "cancelled":
        raise EventError(_("That person is already registered for this event."))
    colleague = taken or Registration(event_id=event.id, email=email)
    if taken is not None:
        colleague.token_version += 1
        clear_participation(colleague)  # the old registration's, if any: not this seat's
    colleague.name = header_safe(name, 200)
    colleague.phone = header_safe(phone, 30)
    colleague.company_id = registration.company_id
    colleague.company_name = ""
    colleague.participant_type = registration.participant_type
    colleague.note = ""
    colleague.locale = registration.locale
    colleague.status = "confirmed"
    colleague.waitlist_position = None
    colleague.cancelled_at = None
    colleague.invoice_id = registration.invoice_id
    colleague.contact_id = find_or_create_contact(
        email, colleague.name, colleague.phone, registration.company
    ).id
    if taken is None:
        db.session.add(colleague)
    registration.status = "cancelled"
    registration.cancelled_at = now
    registration.invoice_id = None
    db.session.flush()
    notify(registration, "transferred_from", now=now, colleague=colleague.name)
    notify(colleague, "transferred_to", now=now, colleague=registration.name)
    return colleague


# -- staff: editing, publishing, duplicating --------------------------------------------


def schedule_signature(event: Event) -> tuple:
    """What registrants must hear about when it changes: the venue and every session's time."""
    return (event.venue, tuple((s.uid, s.starts_at, s.ends_at) for s in event.sessions))


def announce_change(event: Event, before: tuple, now: datetime | None = None) -> int:
    """After an edit: if the date or venue of a published event changed, bump the
    iCalendar SEQUENCE and email every registrant (seat, offer or waitlist) the
    updated calendar. Returns how many were told."""
    if not event.published or before == schedule_signature(event):
        return 0
    event.sequence += 1
    db.session.flush()
    told = 0
    for registration in db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status != "cancelled")
        .order_by(Registration.id)
    ):
        notify(registration, "changed", now=now)
        told += 1
    return told


def publish(event: Event, now: datetime | None = None) -> None:
    if not event.sessions:
        raise EventError(_("Add at least one session before publishing."))
    event.published = True
    event.published_at = event.published_at or now or utcnow()


def unpublish(event: Event) -> None:
    event.published = False


def duplicate(event: Event, user=None) -> Event:
    """An unpublished copy with the same sessions (new calendar UIDs), no registrations."""
    copy = Event(
        title=event.title,
        kind=event.kind,
        description=event.description,
        venue=event.venue,
        audience=event.audience,
        capacity=event.capacity,
        company_quota=event.company_quota,
        registration_deadline=event.registration_deadline,
        cancellation_deadline=event.cancellation_deadline,
        cancellation_fee_ore=event.cancellation_fee_ore,
        member_price_ore=event.member_price_ore,
        price_ore=event.price_ore,
        vat_percent=event.vat_percent,
        completion_percent=event.completion_percent,
        published=False,
        duplicated_from_id=event.id,
        created_by_id=user.id if user is not None else None,
        networks=list(event.networks),
        sessions=[
            EventSession(title=s.title, starts_at=s.starts_at, ends_at=s.ends_at, hours=s.hours)
            for s in event.sessions
        ],
    )
    db.session.add(copy)
    db.session.flush()
    return copy


# -- attendance ---------------------------------------------------------------------------


def attended_sessions(registration_ids: list[int]) -> dict[int, int]:
    """Sessions attended per registration id."""
    if not registration_ids:
        return {}
    # Only a confirmed seat's marks count (a registration cancelled before cancelling
    # cleared them may still have some).
    rows = db.session.execute(
        select(Attendance.registration_id, func.count())
        .join(Registration, Registration.id == Attendance.registration_id)
        .where(Attendance.registration_id.in_(registration_ids), Registration.status == "confirmed")
        .group_by(Attendance.registration_id)
    ).all()
    return dict(rows)


CERTIFICATE_CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def new_code() -> str:
    return secrets.token_urlsafe(12)


def toggle_attendance(registration: Registration, session: EventSession, user) -> bool:
    """Mark the participant present at the session, or take the mark back (undo).
    Returns True when now marked present."""
    if session.event_id != registration.event_id:
        raise EventError(_("That session belongs to another event."))
    if registration.status != "confirmed":
        raise EventError(_("Only confirmed participants can be checked in."))
    mark = db.session.scalar(
        select(Attendance).where(
            Attendance.registration_id == registration.id, Attendance.session_id == session.id
        )
    )
    if mark is not None:
        db.session.delete(mark)
        db.session.flush()
        return False
    db.session.add(
        Attendance(
            registration_id=registration.id,
            session_id=session.id,
            marked_by_id=user.id if user is not None else None,
        )
    )
    db.session.flush()
    return True


def present_ids(session_id: int) -> set[int]:
    """Registration ids marked present at one session."""
    return set(
        db.session.scalars(
            select(Attendance.registration_id).where(Attendance.session_id == session_id)
        )
    )


def attendance_per_session(event: Event) -> list[tuple[EventSession, int]]:
    counts = dict(
        db.session.execute(
            select(Attendance.session_id, func.count())
            .join(EventSession, EventSession.id == Attendance.session_id)
            .join(Registration, Registration.id == Attendance.registration_id)
            .where(EventSession.event_id == event.id, Registration.status == "confirmed")
            .group_by(Attendance.session_id)
        ).all()
    )
    return [(session, counts.get(session.id, 0)) for session in event.sessions]


def no_shows(event: Event, now: datetime | None = None) -> list[Registration]:
    """Confirmed participants not marked present at any session that has begun."""
    now = now or utcnow()
    begun = [s.id for s in event.sessions if s.starts_at <= now]
    if not begun:
        return []
    attended = select(Attendance.registration_id).where(Attendance.session_id.in_(begun))
    return list(
        db.session.scalars(
            select(Registration)
            .options(selectinload(Registration.company))  # company_label per row
            .where(
                Registration.event_id == event.id,
                Registration.status == "confirmed",
                Registration.id.not_in(attended),
            )
            .order_by(Registration.name)
        )
    )


# -- course certificates -----------------------------------------------------------------


def completion_reached(event: Event, attended: int) -> bool:
    """Whether `attended` sessions reach the course's completion threshold."""
    if not event.completion_percent or not event.sessions:
        return False
    return attended * 100 >= event.completion_percent * len(event.sessions)


def issue_certificates(event: Event, user=None) -> list[Certificate]:
    """A certificate (PDF by email) for every confirmed participant who reached the
    completion threshold and has none yet. Returns the new certificates."""
    if not event.completion_percent:
        raise EventError(_("This event has no completion threshold for certificates."))
    registrations = db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status == "confirmed")
        .order_by(Registration.id)
    ).all()
    attended = attended_sessions([r.id for r in registrations])
    issued = set(
        db.session.scalars(
            select(Certificate.registration_id).where(
                Certificate.registration_id.in_([r.id for r in registrations] or [0])
            )
        )
    )
    created = []
    for registration in registrations:
        count = attended.get(registration.id, 0)
        if registration.id in issued or not completion_reached(event, count):
            continue
        present = db.session.scalars(
            select(EventSession)
            .join(Attendance, Attendance.session_id == EventSession.id)
            .where(Attendance.registration_id == registration.id)
        ).all()
        certificate = Certificate(
            registration_id=registration.id,
            code=new_code(),
            sessions_attended=count,
            hours=sum((s.credited_hours for s in present), Decimal(0)),
            issued_by_id=user.id if user is not None else None,
        )
        db.session.add(certificate)
        db.session.flush()
        _send_certificate(certificate)
        created.append(certificate)
    return created


def certificate_url(certificate: Certificate) -> str:
    return f"{current_app.config['PUBLIC_BASE_URL']}/sertifikat/{certificate.code}"


def certificate_by_code(code: str) -> Certificate | None:
    """The certificate with this code, while its registration stands (a cancelled
    registration's certificate is no longer valid)."""
    # Codes are `new_code()`'s URL-safe letters: anything else (a NUL from the address
    # bar, which PostgreSQL refuses in a query) names no certificate.
    if not CERTIFICATE_CODE.fullmatch(code or ""):
        return None
    return db.session.scalar(
        select(Certificate)
        .join(Registration, Registration.id == Certificate.registration_id)
        .where(Certificate.code == code, Registration.status == "confirmed")
    )


def _send_certificate(certificate: Certificate) -> None:
    from crm.events.certificate import certificate_filename, certificate_pdf

    registration = certificate.registration
    queue_email(
        to=registration.email,
        to_name=header_safe(registration.name, 200),
        template="events/certificate",
        context={
            "name": registration.name,
            "event": registration.event,
            "verify_url": certificate_url(certificate),
        },
        category="event",
        key=f"event:certificate:{certificate.id}",
        contact_id=registration.contact_id,
        attachments=[
            (certificate_filename(certificate), "application/pdf", certificate_pdf(certificate))
        ],
        locale=registration.locale,
    )


def participation(contact_id: int | None = None, company_id: int | None = None) -> list:
    """(registration, certificate or None) of a contact or a company, newest event first
    (a cancelled registration shows no certificate)."""
    stmt = select(Registration, Certificate).outerjoin(
        Certificate,
        (Certificate.registration_id == Registration.id) & (Registration.status == "confirmed"),
    )
    if contact_id is not None:
        stmt = stmt.where(Registration.contact_id == contact_id)
    elif company_id is not None:
        stmt = stmt.where(Registration.company_id == company_id)
    else:
        return []
    rows = db.session.execute(stmt.order_by(Registration.id.desc()).limit(200)).all()
    return sorted(
        rows,
        key=lambda row: row[0].event.starts_at or row[0].created_at,
        reverse=True,
    )


def merge_registrations(target: Contact, other: Contact) -> None:
    """MERGE_HOOKS: the duplicate contact's registrations now belong to the kept one."""
    for registration in db.session.scalars(
        select(Registration).where(Registration.contact_id == other.id)
    ):
        registration.contact_id = target.id


def event_income(event: Event) -> dict[str, int]:
    """Øre invoiced (less credit notes) and paid for the event: every invoice of it,
    whichever registration it came from and whatever became of that registration (a
    cancelled seat's invoice counts with what was not credited)."""
    from crm.fees.models import Invoice

    invoiced, credited, paid, count = db.session.execute(
        select(
            func.coalesce(func.sum(Invoice.amount_ore), 0),
            func.coalesce(func.sum(Invoice.credited_ore), 0),
            func.coalesce(func.sum(Invoice.paid_ore), 0),
            func.count(Invoice.id),
        ).where(Invoice.event_id == event.id)
    ).one()
    return {"invoiced": invoiced - credited, "paid": paid, "count": count}
