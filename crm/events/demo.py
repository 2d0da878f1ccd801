"""Demo events for `crm demo` (a members DEMO_HOOKS entry): a free Styrketrening seminar,
a full paid LEAN course package of several sessions, and a network meeting, all
upcoming and published, with registrations from the demo members' contacts; the
course's seats are invoiced and most of them paid."""

import random
from datetime import date, datetime, time, timedelta

from sqlalchemy import select

from crm.events.models import Event, EventSession, Registration
from crm.extensions import db
from crm.members.models import Network
from crm.timeutil import OSLO, today_oslo, utcnow


def _at(day: date, hour: int, minute: int = 0) -> datetime:
    return datetime.combine(day, time(hour, minute), OSLO)


def _network(name: str) -> list[Network]:
    network = db.session.scalar(select(Network).where(Network.name == name))
    return [network] if network is not None else []


def _next_weekday(day: date, weekday: int) -> date:
    return day + timedelta(days=(weekday - day.weekday()) % 7)


def _register(event: Event, contacts: list, statuses: list[str]) -> None:
    position = 1
    for contact, status in zip(contacts, statuses, strict=False):
        waiting = status == "waitlisted"
        db.session.add(
            Registration(
                event_id=event.id,
                contact_id=contact.id,
                name=contact.name,
                email=contact.email,
                phone=contact.phone or "",
                company_id=contact.company_id,
                participant_type="member_employee",
                status=status,
                waitlist_position=position if waiting else None,
                created_at=utcnow(),
            )
        )
        if waiting:
            position += 1
    event.next_waitlist_position = position


def _invoice_course(course: Event, rng: random.Random) -> None:
    """The paid course's seats invoiced as registering would (no email), most paid: its
    page and the reports show what a course brings in. Needs the fee settings, which
    the fees area's demo hook (run before this one) fills in."""
    from crm.events import services
    from crm.fees.services import register_payment

    today = today_oslo()
    for registration in db.session.scalars(
        select(Registration).where(Registration.event_id == course.id).order_by(Registration.id)
    ):
        invoice = services.issue_invoice(registration)
        if invoice is not None and rng.random() < 0.7:
            paid_on = min(today, invoice.issue_date + timedelta(days=rng.randint(1, 10)))
            register_payment(invoice, invoice.amount_ore, paid_on, note="Demo")


def demo_events(rng: random.Random, companies, contacts, options: dict) -> str:
    today: date = options.get("today") or date.today()
    members = {c.id for c in companies if c.membership_status == "member"}
    people = [c for c in contacts if c.email and c.company_id in members]
    rng.shuffle(people)

    seminar_day = _next_weekday(today + timedelta(days=14), 3)  # a Thursday
    seminar = Event(
        title="Styrketrening: automasjon i små verksteder",
        kind="seminar",
        description=(
            "Frokostseminar for medlemsbedriftene og inviterte gjester.\n\n"
            "* Hva koster en robotcelle i 2027?\n* Erfaringer fra to medlemsbedrifter\n"
            "* Spørsmål og nettverking"
        ),
        venue="Kongsvinger kunnskapspark, Storgata 12",
        audience="open",
        capacity=20,
        registration_deadline=_at(seminar_day - timedelta(days=2), 12),
        cancellation_deadline=_at(seminar_day - timedelta(days=2), 12),
        published=True,
        published_at=utcnow(),
        networks=_network("Produksjon"),
        sessions=[EventSession(starts_at=_at(seminar_day, 8, 30), ends_at=_at(seminar_day, 11))],
    )
    course_day = _next_weekday(today + timedelta(days=28), 1)  # Tuesdays
    course = Event(
        title="LEAN grunnkurs – kurspakke vår",
        kind="course",
        description=(
            "Fire samlinger om LEAN i praksis: verdistrøm, 5S, standardisert arbeid og "
            "kontinuerlig forbedring. Kursbevis ved 75 % oppmøte."
        ),
        venue="Vinger hotell, Kongsvinger",
        audience="members_and_guests",
        capacity=16,
        company_quota=3,
        registration_deadline=_at(course_day - timedelta(days=7), 23, 59),
        cancellation_deadline=_at(course_day - timedelta(days=14), 23, 59),
        cancellation_fee_ore=150_000,
        member_price_ore=690_000,
        price_ore=990_000,
        vat_percent=25,
        completion_percent=75,
        published=True,
        published_at=utcnow(),
        networks=_network("Produksjon"),
        sessions=[
            EventSession(
                title=f"Samling {n + 1}",
                starts_at=_at(course_day + timedelta(weeks=n), 9),
                ends_at=_at(course_day + timedelta(weeks=n), 15),
            )
            for n in range(4)
        ],
    )
    meeting_day = _next_weekday(today + timedelta(days=21), 2)
    meeting = Event(
        title="Nettverksmøte Logistikk",
        kind="network_meeting",
        description="Faste møte i logistikknettverket. Tema: lagerstyring og felles transport.",
        venue="Eidskog næringspark",
        audience="members",
        published=True,
        published_at=utcnow(),
        networks=_network("Logistikk"),
        sessions=[EventSession(starts_at=_at(meeting_day, 13), ends_at=_at(meeting_day, 15))],
    )
    db.session.add_all([seminar, course, meeting])
    db.session.flush()
    _register(seminar, people[:12], ["confirmed"] * 12)
    _register(course, people[12:31], ["confirmed"] * 16 + ["waitlisted"] * 3)
    _register(meeting, people[31:39], ["confirmed"] * 8)
    db.session.flush()
    _invoice_course(course, rng)
    return (
        "Created 3 upcoming events: a free Styrketrening seminar (20 seats), "
        "a full LEAN course package (4 sessions, 16 seats, 3 waiting), a network meeting."
    )
