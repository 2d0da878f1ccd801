"""Small factories that make tests short: users, companies, contacts, and a logged-in client."""

import itertools
import json
import random

from crm.auth.models import User
from crm.extensions import db
from crm.members.models import Company, Contact, Network
from crm.members.normalize import make_orgnr

_counter = itertools.count(1)
PASSWORD = "correct horse battery staple"


def make_user(role: str = "staff", email: str | None = None, password: str = PASSWORD) -> User:
    user = User(email=email or f"{role}{next(_counter)}@example.no", role=role, name=role.title())
    user.set_password(password)
    db.session.add(user)
    db.session.commit()
    db.session.refresh(user)  # loaded, so tests can read it after the app context ends
    return user


def unique_orgnr(rng: random.Random | None = None) -> str:
    rng = rng or random.Random()
    while True:
        orgnr = make_orgnr(str(rng.randint(80_000_000, 99_999_999)))
        if orgnr and not db.session.scalar(db.select(Company.id).where(Company.orgnr == orgnr)):
            return orgnr


def make_company(name: str = "Testbedrift AS", **fields) -> Company:
    fields.setdefault("orgnr", unique_orgnr())
    fields.setdefault("municipality_number", "3401")
    fields.setdefault("municipality_name", "Kongsvinger")
    company = Company(name=name, **fields)
    db.session.add(company)
    db.session.commit()
    db.session.refresh(company)
    return company


def make_contact(first_name: str = "Kari", last_name: str = "Nordmann", **fields) -> Contact:
    # Networks first: a query while the new contact hangs off its company would flush.
    networks = [
        n if isinstance(n, Network) else db.session.scalar(db.select(Network).filter_by(name=n))
        for n in fields.pop("networks", [])
    ]
    contact = Contact(first_name=first_name, last_name=last_name, networks=networks, **fields)
    db.session.add(contact)
    db.session.commit()
    db.session.refresh(contact)
    return contact


class Auth:
    """Logs a test client in and out, like a person at the login form."""

    def __init__(self, app, client):
        self.app = app
        self.client = client

    def login(self, role: str = "staff", user: User | None = None):
        with self.app.app_context():
            if user is None:
                user = make_user(role)
            email = user.email
        response = self.client.post("/login", data={"email": email, "password": PASSWORD})
        assert response.status_code == 302, response.get_data(as_text=True)[:500]
        return user

    def logout(self):
        return self.client.post("/logout")


def make_subscriber(
    email: str = "kari@example.no", topics: tuple[str, ...] = ("generelt",), **fields
) -> Contact:
    """A contact with confirmed web-form consent for `topics`, as after double opt-in."""
    from crm.subscriptions import ledger
    from crm.subscriptions import topics as topic_rules

    topic_rules.sync_topics()
    wording = topic_rules.current_wording()
    contact = make_contact(email=email, **fields)
    for slug in topics:
        topic = topic_rules.topic_by_slug(slug)
        ledger.record_event(contact, topic, "granted", "web_form", ip="192.0.2.1", wording=wording)
        ledger.record_event(contact, topic, "confirmed", "email_link", ip="192.0.2.1")
    db.session.commit()
    return contact


# --- membership fees ---------------------------------------------------------------

FEE_TIERS = ((1, 9, 250_000), (10, 49, 750_000), (50, 199, 1_250_000), (200, None, 2_500_000))


def make_fee_settings(**fields):
    """The cluster's fee settings and its organisation (the sender on invoices), filled in
    so invoice runs can start. Sender fields (`cluster_name` is the organisation's name)
    go to the organisation, the rest to the fee settings."""
    from crm.fees.services import get_settings
    from crm.organisation import services as organisation

    settings = get_settings()
    seller = organisation.for_update()
    values = {
        "cluster_name": "Kongsvingerregionen Industriklynge",
        "orgnr": "974760673",
        "bank_account": "86011117947",
        "street_address": "Gågata 1",
        "postal_code": "2211",
        "postal_place": "Kongsvinger",
        "email": "kasserer@example.no",
    }
    values.update(fields)
    sender_fields = {"orgnr", "street_address", "postal_code", "postal_place", "email"}
    for name, value in values.items():
        if name == "cluster_name":
            seller.name = value
        elif name in sender_fields:
            setattr(seller, name, value)
        else:
            setattr(settings, name, value)
    db.session.commit()
    return settings


def make_fee_schedule(year: int = 2026, tiers=FEE_TIERS):
    from crm.fees.services import save_schedule

    schedule = save_schedule(year, tiers)
    db.session.commit()
    return schedule


def make_member(name: str = "Medlem AS", employees: int | None = 5, email: str | None = None):
    """A member company with an invoice contact who has an email address."""
    company = make_company(
        name,
        membership_status="member",
        employees=employees,
        street_address="Storgata 10",
        postal_code="2212",
        postal_place="Kongsvinger",
    )
    make_contact(
        "Frida",
        "Faktura",
        email=email or f"faktura{next(_counter)}@example.no",
        company_id=company.id,
        is_invoice_contact=True,
    )
    return company


def make_invoiced_members(count: int, year: int = 2026, employees=(5, 20, 80, 300)):
    """`count` members with invoices for `year` (settings and schedule made as needed)."""
    from crm.fees.services import run_annual_invoicing

    make_fee_settings()
    make_fee_schedule(year)
    for i in range(count):
        make_member(f"Medlem {i:04d} AS", employees=employees[i % len(employees)])
    run = run_annual_invoicing(year)
    db.session.commit()
    return run.created


def build_ocr(assignments, number: str = "0000001", nets_date=None, transmitter="00008080") -> str:
    """An OCR giro file written by netsgiro itself.

    `assignments` is a list of assignments, each a list of (kid or None, amount in øre)
    payments, or (kid, øre, transaction type) to choose the type (20/21 carry text), or
    (kid, øre, type, archive reference) to choose the bank's reference too.
    """
    import datetime
    from decimal import Decimal

    import netsgiro

    nets_date = nets_date or datetime.date(2026, 3, 2)
    transmission = netsgiro.Transmission(
        number=number, data_transmitter=transmitter, data_recipient="00000000", date=nets_date
    )
    for index, payments in enumerate(assignments, start=1):
        assignment = transmission.add_assignment(
            service_code=netsgiro.ServiceCode.OCR_GIRO,
            assignment_type=netsgiro.AssignmentType.TRANSACTIONS,
            agreement_id="001008566",
            number=f"{index:07d}",
            account="86011117947",
            date=nets_date,
        )
        for n, payment in enumerate(payments, start=1):
            kid, ore = payment[:2]
            kind = payment[2] if len(payment) > 2 else 10
            reference = payment[3] if len(payment) > 3 else f"{n:09d}"
            assignment.transactions.append(
                netsgiro.Transaction(
                    service_code=netsgiro.ServiceCode.OCR_GIRO,
                    type=kind,
                    number=n,
                    date=nets_date,
                    amount=Decimal(ore) / 100,
                    kid=kid if kid is not None else _NO_KID,
                    reference=reference,
                    text="Medlemskontingent" if kind in (20, 21) else None,
                    centre_id="01",
                    day_code=2,
                    partial_settlement_number=1,
                    partial_settlement_serial_number="01464",
                    sign="0",
                    form_number="9636827194",
                    bank_date=nets_date - datetime.timedelta(days=1),
                    debit_account="12345678903",
                    filler=None,
                )
            )
    # netsgiro cannot write a transaction without a KID; blank the placeholder instead.
    lines = [
        line[:49] + " " * 25 + line[74:] if line[6:8] == "30" and line[49:74] == _NO_KID else line
        for line in transmission.to_ocr().split("\n")
    ]
    return "\n".join(lines) + "\n"


_NO_KID = "0" * 25


# --- Brønnøysund (Enhetsregisteret) files for the company import -------------------------


def brreg_unit(orgnr: str, name: str, **fields) -> dict:
    """One unit as Enhetsregisteret publishes it (other fields are ignored by the import)."""
    unit = {
        "organisasjonsnummer": orgnr,
        "navn": name,
        "organisasjonsform": {"kode": "AS", "beskrivelse": "Aksjeselskap"},
        "naeringskode1": {
            "kode": "16.100",
            "beskrivelse": "Saging, høvling og impregnering av tre",
        },
        "antallAnsatte": 42,
        "forretningsadresse": {
            "land": "Norge",
            "landkode": "NO",
            "postnummer": "2212",
            "poststed": "KONGSVINGER",
            "adresse": ["Industrivegen 4"],
            "kommune": "KONGSVINGER",
            "kommunenummer": "3401",
        },
        "registreringsdatoEnhetsregisteret": "1999-05-01",
        "konkurs": False,
        "underAvvikling": False,
        "underTvangsavviklingEllerTvangsopplosning": False,
        "_links": {"self": {"href": f"https://data.brreg.no/enhetsregisteret/api/enheter/{orgnr}"}},
    }
    unit.update(fields)
    return unit


def bulk_file(*units) -> bytes:
    """The bulk download: a JSON array, pretty-printed the way the register serves it."""
    return json.dumps(list(units), indent=2, ensure_ascii=False).encode()


def api_page(*units) -> bytes:
    page = {
        "_embedded": {"enheter": list(units)},
        "_links": {"self": {"href": "https://data.brreg.no/enhetsregisteret/api/enheter"}},
        "page": {"size": 20, "totalElements": len(units), "totalPages": 1, "number": 0},
    }
    return json.dumps(page, indent=2, ensure_ascii=False).encode()


# -- newsletters ------------------------------------------------------------------------


def bulk_subscribers(
    count: int, topics: tuple[str, ...] = ("generelt",), prefix: str = "sub", **contact_fields
) -> list[int]:
    """`count` contacts with active consent for `topics`, inserted in bulk; their ids.

    Addresses are `{prefix}{n}@example.no`, first names `Person{n}`. For sending tests
    with thousands of recipients (the ORM path of `make_subscriber` is too slow there).
    """
    from sqlalchemy import insert

    from crm.members.models import Contact
    from crm.subscriptions import topics as topic_rules
    from crm.subscriptions.models import ConsentChange, ConsentEvent, ConsentState
    from crm.timeutil import utcnow

    topic_rules.sync_topics()
    wording = topic_rules.current_wording()
    now = utcnow()
    contact_ids = db.session.scalars(
        insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
        [
            {
                "first_name": f"Person{n}",
                "last_name": "Test",
                "email": f"{prefix}{n}@example.no",
                **contact_fields,
            }
            for n in range(count)
        ],
    ).all()
    for slug in topics:
        topic = topic_rules.topic_by_slug(slug)
        event_ids = db.session.scalars(
            insert(ConsentEvent).returning(ConsentEvent.id, sort_by_parameter_order=True),
            [
                {
                    "contact_id": cid,
                    "topic_id": topic.id,
                    "kind": "granted",
                    "source": "import",
                    "at": now,
                    "wording_id": wording.id,
                    "note": "",
                }
                for cid in contact_ids
            ],
        ).all()
        db.session.execute(
            insert(ConsentState),
            [
                {
                    "contact_id": cid,
                    "topic_id": topic.id,
                    "status": "active",
                    "changed_at": now,
                    "event_id": eid,
                }
                for cid, eid in zip(contact_ids, event_ids, strict=True)
            ],
        )
        db.session.execute(
            insert(ConsentChange),
            [{"event_id": eid, "topic_id": topic.id, "at": now, "change": 1} for eid in event_ids],
        )
    db.session.commit()
    return list(contact_ids)


def make_newsletter(subject: str = "Nytt fra klyngen", body: str | None = None, **fields):
    """A draft newsletter (topics default to the general newsletter)."""
    from crm.newsletters import services
    from crm.subscriptions.topics import sync_topics

    sync_topics()
    content = services.Content(
        subject=subject,
        body=body or "## Høstens seminar\n\nVelkommen til **seminar** i Kongsvinger.",
        **fields,
    )
    newsletter = services.create_newsletter(content)
    db.session.commit()
    db.session.refresh(newsletter)
    return newsletter


def start_newsletter(newsletter) -> int:
    """Start sending a newsletter (its ledger, batches and jobs) and commit: the number of
    recipients. No worker runs: its batches wait in the queue."""
    from crm.newsletters import services

    total = services.start_sending(newsletter)
    db.session.commit()
    return total


def bulk_network_members(
    count: int, network, company=None, prefix: str = "member", **contact_fields
) -> list[int]:
    """`count` contacts of a member company in `network` (no newsletter consent),
    inserted in bulk; their ids. Addresses are `{prefix}{n}@example.no`."""
    from sqlalchemy import insert

    from crm.members.models import contact_network

    if company is None:
        company = make_company(f"{prefix.title()} AS", membership_status="member")
    contact_ids = db.session.scalars(
        insert(Contact).returning(Contact.id, sort_by_parameter_order=True),
        [
            {
                "first_name": f"Person{n}",
                "last_name": "Medlem",
                "email": f"{prefix}{n}@example.no",
                "company_id": company.id,
                **contact_fields,
            }
            for n in range(count)
        ],
    ).all()
    db.session.execute(
        insert(contact_network),
        [{"contact_id": cid, "network_id": network.id} for cid in contact_ids],
    )
    db.session.commit()
    return list(contact_ids)


def run_signup_job(app) -> int:
    """Store the confirmation emails of waiting signups, as the worker's job does (the
    request stores the signup only). Returns how many it stored."""
    from crm.subscriptions import tasks

    with app.app_context():
        return tasks.send_confirmations()
