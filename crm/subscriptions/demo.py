"""Demo newsletter subscribers for `crm demo --subscribers N` (a members DEMO_HOOKS entry).

Public subscribers without a company record, each with the ledger a real double
opt-in leaves behind: granted through the web form (wording version 1, an IP from the
documentation ranges) and confirmed by email link a little later. Written in batches
through the ORM, so the audit log and the search index see them; the current state is
derived with `ledger.next_status`, the one rule.
"""

import random
from datetime import datetime, time, timedelta

from sqlalchemy import select

from crm.extensions import db
from crm.members.models import Contact
from crm.subscriptions import ledger
from crm.subscriptions.models import GENERAL_TOPIC, ConsentEvent, ConsentState, Subscriber
from crm.subscriptions.topics import current_wording, sync_topics
from crm.timeutil import OSLO

BATCH = 500
DOMAINS = ("example.no", "example.com", "example.org", "epost.example.no", "post.example.no")
# Documentation address ranges (RFC 5737): realistic-looking, never anyone's.
IP_PREFIXES = ("192.0.2.", "198.51.100.", "203.0.113.")
COMPANY_WORDS = ("Sag", "Mek", "Bygg", "Transport", "Regnskap", "Rør", "Elektro", "Trelast")


def create_demo_subscribers(rng: random.Random, companies, contacts, options: dict) -> str | None:
    """DEMO_HOOKS entry: `options["subscribers"]` confirmed public subscribers."""
    count = int(options.get("subscribers") or 0)
    if count <= 0:
        return None
    from crm.members.demo import FIRST_NAMES, SURNAMES, ascii_slug

    topics = sync_topics()
    wording = current_wording()
    general = next(t for t in topics if t.slug == GENERAL_TOPIC)
    others = [t for t in topics if t.slug != GENERAL_TOPIC]
    taken = set(db.session.scalars(select(Contact.email).where(Contact.email.is_not(None))))
    today = options.get("today")
    end = datetime.combine(today, time(12), OSLO) if today else datetime.now(OSLO)

    def address(first: str, last: str) -> str:
        base = f"{ascii_slug(first, '.')}.{ascii_slug(last, '.')}"
        domain = rng.choice(DOMAINS)
        candidate, n = f"{base}@{domain}", 1
        while candidate in taken:
            n += 1
            candidate = f"{base}{n}@{domain}"
        taken.add(candidate)
        return candidate

    made = 0
    while made < count:
        batch = []
        while len(batch) < min(BATCH, count - made):
            first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
            company = ""
            if rng.random() < 0.03:  # now and then a shared company mailbox
                company = f"{rng.choice(SURNAMES)} {rng.choice(COMPANY_WORDS)} AS"
                email = f"post@{ascii_slug(company)}.example.no"
                if email in taken:
                    continue
                taken.add(email)
                first, last = company, ""
            else:
                email = address(first, last)
                if rng.random() < 0.35:
                    company = f"{rng.choice(SURNAMES)} {rng.choice(COMPANY_WORDS)} AS"
            chosen = [general] if rng.random() < 0.85 else []
            chosen += rng.sample(others, rng.choice((0, 1, 1, 2, 3)))
            chosen = chosen or [rng.choice(others)]
            signed_up = end - timedelta(minutes=rng.randint(60, 2 * 365 * 24 * 60))
            confirmed = signed_up + timedelta(minutes=rng.randint(1, 180))
            batch.append(
                (
                    Contact(first_name=first, last_name=last, email=email),
                    company,
                    chosen,
                    signed_up,
                    confirmed,
                )
            )
        db.session.add_all([row[0] for row in batch])
        db.session.flush()
        events = []
        for contact, company, chosen, signed_up, confirmed in batch:
            db.session.add(Subscriber(contact_id=contact.id, company_name=company, locale="nb"))
            ip = rng.choice(IP_PREFIXES) + str(rng.randint(1, 254))
            for topic in chosen:
                events.append(
                    ConsentEvent(
                        contact_id=contact.id,
                        topic_id=topic.id,
                        kind="granted",
                        source="web_form",
                        at=signed_up,
                        ip=ip,
                        wording_id=wording.id,
                    )
                )
                events.append(
                    ConsentEvent(
                        contact_id=contact.id,
                        topic_id=topic.id,
                        kind="confirmed",
                        source="email_link",
                        at=confirmed,
                        ip=ip,
                        wording_id=wording.id,
                    )
                )
        db.session.add_all(events)
        db.session.flush()
        states: dict[tuple[int, int], ConsentState] = {}
        for event in events:
            key = (event.contact_id, event.topic_id)
            state = states.get(key)
            status = ledger.next_status(state.status if state else None, event.kind, event.source)
            before = state.status if state else None
            ledger.note_change(event.id, event.topic_id, event.at, before, status)
            if state is None:
                states[key] = ConsentState(
                    contact_id=key[0],
                    topic_id=key[1],
                    status=status,
                    changed_at=event.at,
                    event_id=event.id,
                )
            else:
                if status != state.status:
                    state.changed_at = event.at
                state.status, state.event_id = status, event.id
        db.session.add_all(states.values())
        db.session.flush()
        made += len(batch)
    return f"Created {made} newsletter subscribers with confirmed consent."
