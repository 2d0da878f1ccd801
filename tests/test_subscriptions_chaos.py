"""Randomized interleavings of consent, seeded and reproducible.

The example-based tests (test_subscriptions_*.py, test_mail_webhook.py,
test_mail_resubscribe.py, test_newsletters_network_mail.py) check each way in and out
of a subscription alone. Here each seed sets up two or three topics (the general one
and one or two networks' topics), 5-12 people (some already contacts, some new, two
addresses differing only in case or Unicode form) and takes 30-80 random steps through
the real entry points: signups on the public form (again, while one is pending),
confirmation links (fresh, used, expired, of a signup erased since), the preferences
page (with the current link, one from before a token-version bump, another person's),
one-click unsubscribes, SendGrid webhook events for the address in another case,
staff granting and withdrawing, network-mail objections, GDPR erasure and contact
merges. After every step:

1. no ledger event vanished or changed what it says, each contact's consent state per
   topic is what its ledger events replay to, and every state points at its topic's
   last state-changing event;
2. every active consent rests on a confirmed web-form grant or a grant recorded by
   staff or through a link mailed to the address, given after the last ending;
3. a newsletter audience (each topic, all topics) holds exactly the unsuppressed,
   unerased, current contacts with active consent, one per address;
4. an erased person keeps no name, address, pending signup, IP or note on their
   consent events, and their old links answer 404;
5. a personal link is void after a token-version bump, and changes only its contact;
6. the staff figures: the general topic's subscriber count in the year report and the
   home page's new subscribers match the rows.

Each action also checks its own promise (an expired, purged or used confirmation link
changes nothing; a confirmation lands on the address's one current contact; a webhook
event suppresses the address and ends its owner's consent ...). A failure prints the
seed and the step log.
"""

from __future__ import annotations

import json
import random
import time
import unicodedata
import urllib.parse
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from werkzeug.datastructures import MultiDict

from crm.audit import AuditEntry
from crm.extensions import db, limiter
from crm.home.services import new_people
from crm.mail.models import Suppression
from crm.members.models import Contact
from crm.members.normalize import normalize_email
from crm.members.services import MembersError, merge_contacts
from crm.newsletters.audience import Audience, recipient_contacts
from crm.reports import services as reports
from crm.subscriptions import gdpr, ledger, links, staff_consent, tokens
from crm.subscriptions import topics as topic_rules
from crm.subscriptions.models import (
    GENERAL_TOPIC,
    ConsentChange,
    ConsentEvent,
    ConsentState,
    PendingSignup,
    Subscriber,
)
from crm.subscriptions.subscribers import follow_merges
from crm.timeutil import today_oslo, utcnow
from scripts.subscribe_smoke import signup_form
from tests.chaos import SeededScenario
from tests.factories import make_contact, make_user
from tests.test_mail_webhook import Signer

SEEDS = range(10)
ENDING = ("withdrawn", "bounced", "complained", "objected")
WEBHOOK_EVENTS = ("bounce", "spamreport", "unsubscribe", "group_unsubscribe", "dropped")


def _path(url: str) -> str:
    return urllib.parse.urlsplit(url).path


class Scenario(SeededScenario):
    def __init__(self, seed: int, app):
        self.seed = seed
        self.rng = random.Random(seed)
        self.app = app
        self.client = app.test_client()
        self.signer = Signer()
        app.config["SENDGRID_WEBHOOK_PUBLIC_KEY"] = self.signer.public_key
        self.log: list[str] = []
        self.stats: Counter[str] = Counter()
        self.confirm_links: list[tuple[int, str, str]] = []  # (pending id, nonce, token)
        self.old_links: list[tuple[int, int, str]] = []  # (contact id, version, token)
        self.erased: dict[int, str] = {}  # contact id -> the address it had
        self.events = 0
        self.written: dict[int, tuple] = {}  # ledger event id -> (topic, kind, source, wording)

    # -- setup -------------------------------------------------------------------------

    def start(self) -> None:
        rng = self.rng
        self.user = make_user("admin")
        topic_rules.sync_topics()
        db.session.commit()
        # The general topic and one or two networks' (the demo networks exist already).
        every = {t.slug: t for t in topic_rules.sync_topics()}
        networks = sorted(s for s, t in every.items() if t.network_id is not None)
        self.slugs = sorted([GENERAL_TOPIC, *rng.sample(networks, rng.randint(1, 2))])
        self.topics = {s: every[s].id for s in self.slugs}
        self.network_ids = [every[s].network_id for s in self.slugs if s != GENERAL_TOPIC]
        # People: each a list of ways to type their address (case / Unicode variants).
        self.people: list[list[str]] = []
        count = rng.randint(5, 12)
        for n in range(count):
            self.people.append([f"person{n}.s{self.seed}@example.no"])
        # Two addresses that are one: a case variant and a Unicode (NFC/NFD) variant.
        self.people[0] += [self.people[0][0].upper(), self.people[0][0].title()]
        # (The mailer refuses a non-ASCII local part: the domain has the å.)
        nfc = unicodedata.normalize("NFC", f"kari.s{self.seed}@ås.example.no")
        self.people[1] = [nfc, unicodedata.normalize("NFD", nfc), nfc.upper()]
        # Some are contacts already (as forms and imports store them: normalised).
        for addresses in self.people:
            if rng.random() < 0.4:
                contact = make_contact(
                    first_name="Eksisterende", last_name="Kontakt", email=self.key(addresses[0])
                )
                self.note(f"contact #{contact.id} exists for {self.key(addresses[0])}")
        self.since = utcnow() - timedelta(seconds=1)
        self.note(f"topics {self.slugs}; {count} people")

    @staticmethod
    def key(address: str) -> str:
        return normalize_email(address)

    def address(self) -> tuple[str, str]:
        """A way to type some person's address, and that address normalised."""
        typed = self.rng.choice(self.rng.choice(self.people))
        return typed, self.key(typed)

    def owner(self, key: str) -> Contact | None:
        from crm.subscriptions.subscribers import find_contact_by_email

        return find_contact_by_email(key)

    def current_contacts(self) -> list[Contact]:
        return list(
            db.session.scalars(
                select(Contact)
                .where(Contact.archived_at.is_(None), Contact.email.is_not(None))
                .order_by(Contact.id)
            )
        )

    def statuses(self, contact_id: int) -> dict[str, str]:
        rows = db.session.execute(
            select(ConsentState.topic_id, ConsentState.status).where(
                ConsentState.contact_id == contact_id
            )
        )
        by_id = {v: k for k, v in self.topics.items()}
        return {by_id.get(t, t): s for t, s in rows}

    def event_count(self) -> int:
        return db.session.scalar(select(func.count(ConsentEvent.id)))

    # -- actions -----------------------------------------------------------------------

    def signup(self) -> None:
        typed, key = self.address()
        chosen = self.rng.sample(self.slugs, self.rng.randint(1, len(self.slugs)))
        page = self.client.get("/subscribe")
        form = signup_form(page.get_data(as_text=True))
        typed_in = {"name": "Kari Nordmann", "email": typed, "company": "", "consent": "y"}
        fields = [(k, v) for k, v in form["fields"] if k != "topics" and k not in typed_in]
        fields += [("topics", s) for s in chosen] + list(typed_in.items())
        before = set(db.session.scalars(select(PendingSignup.id)))
        response = self.client.post(
            form["action"], data=MultiDict(fields), environ_base={"REMOTE_ADDR": "198.51.100.7"}
        )
        self.expect(response.status_code == 303, f"signup answered {response.status_code}")
        db.session.expire_all()
        new = db.session.scalars(
            select(PendingSignup).where(PendingSignup.id.not_in(before or [0]))
        ).all()
        self.expect(len(new) == 1, f"signup of {typed!r} stored {len(new)} pending signups")
        pending = new[0]
        self.expect(pending.email == key, f"pending address {pending.email!r}, not {key!r}")
        token = tokens.make_confirm_token(pending.id, pending.nonce)
        self.confirm_links.append((pending.id, pending.nonce, token))
        self.note(f"signup #{pending.id} {typed!r} for {sorted(chosen)}")

    def confirm(self) -> None:
        if not self.confirm_links:
            return self.signup()
        pending_id, nonce, token = self.rng.choice(self.confirm_links)
        expired = self.rng.random() < 0.15
        pending = db.session.get(PendingSignup, pending_id)
        if pending is not None and pending.nonce != nonce:
            pending = None  # purged, and its id taken by a later signup (SQLite)
        what = "used" if pending is not None and pending.confirmed_at else "fresh"
        before = self.event_count()
        saved = tokens.CONFIRM_MAX_AGE
        if expired:
            tokens.CONFIRM_MAX_AGE = -1  # every link is older than that
        try:
            response = self.client.post(f"/subscribe/confirm/{token}", data={})
        finally:
            tokens.CONFIRM_MAX_AGE = saved
        db.session.expire_all()
        self.note(
            f"confirm #{pending_id} {pending.email if pending else '(purged)'}"
            f" ({'expired' if expired else what}): {response.status_code}"
        )
        if expired:
            self.expect(response.status_code == 410, "an expired link was not refused")
            self.expect(self.event_count() == before, "an expired link changed consent")
            return
        if pending is None:
            self.expect(response.status_code == 404, "a purged signup's link worked")
            self.expect(self.event_count() == before, "a purged signup's link changed consent")
            return
        self.expect(response.status_code == 200, f"confirm answered {response.status_code}")
        pending = db.session.get(PendingSignup, pending_id)
        if what == "used":
            self.expect(self.event_count() == before, "confirming again changed consent")
            return
        contact = db.session.get(Contact, pending.contact_id)
        # Into the owner of the address: its contact, or the one that contact was merged
        # into (the address then lives on in the merged-away record).
        holders = db.session.scalars(
            select(Contact).where(Contact.email == pending.email, Contact.merged_into_id.is_(None))
        ).all()
        merged = [
            c
            for c in db.session.scalars(select(Contact).where(Contact.email == pending.email))
            if follow_merges(c) is contact
        ]
        self.expect(
            contact.archived_at is None and (contact in holders or merged),
            f"confirmed {pending.email} into contact #{contact.id} {contact.email}",
        )
        current = [c.id for c in holders if c.archived_at is None]
        self.expect(len(current) <= 1, f"{pending.email} has contacts {current}")
        by_id = {v: k for k, v in self.topics.items()}
        states = self.statuses(contact.id)
        for topic_id in pending.topic_ids:
            slug = by_id[topic_id]
            self.expect(states.get(slug) == "active", f"{slug} not active after confirming")

    def _link(self, contact: Contact, kind: str) -> str:
        token = links.link_token(contact)
        version = db.session.scalar(
            select(Subscriber.token_version).where(Subscriber.contact_id == contact.id)
        )
        self.old_links.append((contact.id, version or 1, token))
        return f"/{kind}/{token}"

    def _stale_link(self) -> tuple[int, str] | None:
        """A link of a contact made before its token version was bumped."""
        stale = []
        for contact_id, version, token in self.old_links:
            current = db.session.scalar(
                select(Subscriber.token_version).where(Subscriber.contact_id == contact_id)
            )
            if current is not None and current != version:
                stale.append((contact_id, token))
        return self.rng.choice(stale) if stale else None

    def _revoked_link_used(self, kind: str, data: dict) -> bool:
        """Now and then, POST `data` to a revoked link of this `kind` instead: 404 and
        nothing changed. Whether it did."""
        stale = self._stale_link() if self.rng.random() < 0.2 else None
        if not stale:
            return False
        before = self.event_count()
        response = self.client.post(f"/{kind}/{stale[1]}", data=data)
        self.note(f"{kind} with a revoked link of #{stale[0]}: {response.status_code}")
        self.expect(response.status_code == 404, f"a revoked {kind} link worked")
        self.expect(self.event_count() == before, "a revoked link changed consent")
        return True

    def preferences(self) -> None:
        if self._revoked_link_used("preferences", {"topics": self.slugs, "save": "1"}):
            return
        contacts = self.current_contacts()
        if not contacts:
            return
        contact = self.rng.choice(contacts)
        path = self._link(contact, "preferences")
        others = {c.id: self.statuses(c.id) for c in contacts if c.id != contact.id}
        if self.rng.random() < 0.2:
            response = self.client.post(path, data={"unsubscribe_all": "1"})
            self.note(f"preferences #{contact.id}: unsubscribe all: {response.status_code}")
            self.expect(response.status_code == 200, "unsubscribe all failed")
            live = [s for s, v in self.statuses(contact.id).items() if v in ("active", "pending")]
            self.expect(not live, f"still {live} after unsubscribing from all")
        else:
            chosen = self.rng.sample(self.slugs, self.rng.randint(0, len(self.slugs)))
            response = self.client.post(path, data={"topics": chosen, "save": "1"})
            self.note(f"preferences #{contact.id}: {sorted(chosen)}: {response.status_code}")
            self.expect(response.status_code == 302, "saving preferences failed")
            db.session.expire_all()
            states = self.statuses(contact.id)
            active = sorted(s for s, v in states.items() if v == "active")
            self.expect(active == sorted(chosen), f"active {active} after choosing {chosen}")
        db.session.expire_all()
        for other_id, before in others.items():
            self.expect(
                self.statuses(other_id) == before, f"#{contact.id}'s link changed #{other_id}"
            )

    def unsubscribe(self) -> None:
        if self._revoked_link_used("unsubscribe", {}):
            return
        contacts = self.current_contacts()
        if not contacts:
            return
        contact = self.rng.choice(contacts)
        path = self._link(contact, "unsubscribe")
        before = self.event_count()
        self.expect(self.client.get(path).status_code == 200, "unsubscribe page failed")
        self.expect(self.event_count() == before, "looking at the unsubscribe page changed consent")
        response = self.client.post(
            path,
            data=b"List-Unsubscribe=One-Click",
            content_type="application/x-www-form-urlencoded",
        )
        self.note(f"one-click unsubscribe #{contact.id}: {response.status_code}")
        self.expect(response.status_code == 200, "one-click unsubscribe failed")
        db.session.expire_all()
        live = [s for s, v in self.statuses(contact.id).items() if v in ("active", "pending")]
        self.expect(not live, f"still {live} after one-click unsubscribe")

    def webhook(self) -> None:
        typed, key = self.address()
        # SendGrid reports the address as it was sent (normalised), maybe in other case.
        typed = self.rng.choice([key, key.upper(), key.title()])
        kind = self.rng.choice(WEBHOOK_EVENTS)
        self.events += 1
        data = {
            "email": typed,
            "timestamp": int(time.time()),
            "event": kind,
            "sg_event_id": f"chaos-{self.seed}-{self.events}",
            "reason": "chaos",
        }
        if kind == "group_unsubscribe":
            data["asm_group_id"] = 7
        body = json.dumps([data]).encode()
        owner = self.owner(key)
        response = self.client.post(
            "/webhooks/sendgrid", data=body, headers=self.signer.headers(body)
        )
        self.note(f"webhook {kind} for {typed!r} (owner #{owner.id if owner else None})")
        self.expect(response.status_code == 200, f"webhook answered {response.status_code}")
        db.session.expire_all()
        self.expect(
            db.session.scalar(select(Suppression.id).where(Suppression.email == key.lower())),
            f"{key} not suppressed after {kind}",
        )
        if owner is not None:
            live = [s for s, v in self.statuses(owner.id).items() if v in ("active", "pending")]
            self.expect(not live, f"#{owner.id} still {live} after {kind}")

    def staff_grant(self) -> None:
        contacts = self.current_contacts()
        if not contacts:
            return
        contact = self.rng.choice(contacts)
        chosen = self.rng.sample(self.slugs, self.rng.randint(1, len(self.slugs)))
        staff_consent.record_staff_consent(
            contact,
            [topic_rules.topic_by_slug(s) for s in chosen],
            user=self.user,
            channel="phone",
            note="chaos",
        )
        db.session.commit()
        self.note(f"staff grant #{contact.id} {sorted(chosen)}")
        states = self.statuses(contact.id)
        self.expect(all(states[s] == "active" for s in chosen), f"staff grant left {states}")

    def staff_withdraw(self) -> None:
        contacts = self.current_contacts()
        if not contacts:
            return
        contact = self.rng.choice(contacts)
        chosen = self.rng.sample(self.slugs, self.rng.randint(1, len(self.slugs)))
        staff_consent.staff_withdraw(
            contact, [topic_rules.topic_by_slug(s) for s in chosen], user=self.user, note=""
        )
        db.session.commit()
        self.note(f"staff withdraw #{contact.id} {sorted(chosen)}")
        states = self.statuses(contact.id)
        live = [s for s in chosen if states.get(s) in ("active", "pending")]
        self.expect(not live, f"{live} still live after staff withdrew them")

    def objection(self) -> None:
        contacts = self.current_contacts()
        if not contacts:
            return
        contact = self.rng.choice(contacts)
        network_id = self.rng.choice(self.network_ids)
        url = links.unsubscribe_urls([contact.id], {contact.id: network_id})[contact.id]
        response = self.client.post(_path(url), data=b"List-Unsubscribe=One-Click")
        self.note(f"#{contact.id} objects to network {network_id}: {response.status_code}")
        self.expect(response.status_code == 200, "objection failed")
        db.session.expire_all()
        slug = next(s for s, t in self.topics.items() if t == self._network_topic(network_id))
        self.expect(self.statuses(contact.id).get(slug) == "objected", "objection not recorded")

    def survivor_of(self, contact: Contact) -> int:
        """The id of the contact a contact was merged into, through any chain of merges."""
        while contact.merged_into_id is not None:
            contact = db.session.get(Contact, contact.merged_into_id)
        return contact.id

    def _network_topic(self, network_id: int) -> int:
        from crm.subscriptions.models import Topic

        return db.session.scalar(select(Topic.id).where(Topic.network_id == network_id))

    def erase(self) -> None:
        contacts = self.current_contacts()
        if not contacts or self.rng.random() < 0.4:
            return
        contact = self.rng.choice(contacts)
        links_before = [self._link(contact, "preferences"), self._link(contact, "unsubscribe")]
        email = contact.email
        # The contacts merged into it are the same person: emptied with it.
        absorbed = {
            c.id: c.email
            for c in db.session.scalars(select(Contact).where(Contact.merged_into_id.is_not(None)))
            if self.survivor_of(c) == contact.id
        }
        gdpr.erase_person(contact, user=self.user)
        db.session.commit()
        self.erased[contact.id] = email
        self.erased.update(absorbed)
        self.note(f"erase #{contact.id} ({email}), merged into it {sorted(absorbed)}")
        addresses = [a for a in (email, *absorbed.values()) if a]
        pending = db.session.scalars(
            select(PendingSignup.id).where(PendingSignup.email.in_(addresses))
        ).all()
        self.expect(not pending, f"pending signups {pending} of the erased addresses stay")
        for path in links_before:
            self.expect(self.client.get(path).status_code == 404, f"{path} works after erasure")

    def merge(self) -> None:
        contacts = self.current_contacts()
        if len(contacts) < 2:
            return
        target, other = self.rng.sample(contacts, 2)
        try:
            merge_contacts(target, other)
        except MembersError as exc:
            db.session.rollback()
            self.note(f"merge #{other.id} into #{target.id} refused: {exc}")
            return
        db.session.commit()
        self.note(f"merge #{other.id} ({other.email}) into #{target.id} ({target.email})")

    # -- invariants --------------------------------------------------------------------

    def check(self) -> None:
        db.session.expire_all()
        events = db.session.execute(
            select(
                ConsentEvent.id,
                ConsentEvent.contact_id,
                ConsentEvent.topic_id,
                ConsentEvent.kind,
                ConsentEvent.source,
                ConsentEvent.wording_id,
            ).order_by(ConsentEvent.id)
        ).all()
        # Append-only: no event vanishes or changes what it says (a merge moves events
        # to another contact; an erase blanks IPs and notes, not checked here).
        written = {e[0]: (e[2], e[3], e[4], e[5]) for e in events}
        changed = [i for i, said in self.written.items() if written.get(i) != said]
        self.expect(not changed, f"ledger events {changed} were changed or deleted")
        self.written = written
        replayed: dict[tuple[int, int], tuple[str, int]] = {}
        # (contact, topic) -> (grant source, confirmed since) of the grant since the last end
        basis: dict[tuple[int, int], tuple[str, bool] | None] = {}
        changes: dict[int, tuple[int, int]] = {}  # event -> (topic, +1 or -1)
        for event_id, contact_id, topic_id, kind, source, wording_id in events:
            pair = (contact_id, topic_id)
            previous = replayed.get(pair)
            status = ledger.next_status(previous[0] if previous else None, kind, source)
            if status is not None:
                replayed[pair] = (status, event_id)
                change = ledger.active_change(previous[0] if previous else None, status)
                if change:
                    changes[event_id] = (topic_id, change)
            if kind == "granted":
                self.expect(wording_id is not None, f"grant #{event_id} without wording")
                basis[pair] = (source, False)
            elif kind == "confirmed" and basis.get(pair):
                basis[pair] = (basis[pair][0], True)
            elif kind in ENDING:
                basis[pair] = None
        states = {
            (c, t): (s, e)
            for c, t, s, e in db.session.execute(
                select(
                    ConsentState.contact_id,
                    ConsentState.topic_id,
                    ConsentState.status,
                    ConsentState.event_id,
                )
            )
        }
        self.expect_replayed("consent states", states, replayed)
        kept = {
            e: (t, c)
            for e, t, c in db.session.execute(
                select(ConsentChange.event_id, ConsentChange.topic_id, ConsentChange.change)
            )
        }
        self.expect_replayed("consent changes", kept, changes)
        active = {pair for pair, (status, _e) in states.items() if status == "active"}
        for pair in active:
            grant = basis.get(pair)
            self.expect(
                grant is not None and (grant[0] != "web_form" or grant[1]),
                f"active consent {pair} without a confirmed or staff-recorded grant: {grant}",
            )
        self.check_audience(active)
        self.check_erased()
        self.check_figures(active)

    def expect_replayed(self, what: str, stored: dict, replayed: dict) -> None:
        if stored != replayed:
            diff = {
                k: (stored.get(k), replayed.get(k))
                for k in set(stored) | set(replayed)
                if stored.get(k) != replayed.get(k)
            }
            self.fail(f"{what} (stored, replayed) differ from the ledger: {diff}")

    def check_audience(self, active: set[tuple[int, int]]) -> None:
        suppressed = set(db.session.scalars(select(Suppression.email)))
        erased = set(
            db.session.scalars(
                select(Subscriber.contact_id).where(Subscriber.erased_at.is_not(None))
            )
        )
        contacts = {c.id: c for c in db.session.scalars(select(Contact)) if c.archived_at is None}
        for chosen in [[s] for s in self.slugs] + [self.slugs]:
            ids = {self.topics[s] for s in chosen}
            expected: dict[str, int] = {}
            for contact_id, topic_id in sorted(active):
                contact = contacts.get(contact_id)
                if topic_id not in ids or contact is None or not contact.email:
                    continue
                if contact.email.lower() in suppressed or contact_id in erased:
                    continue
                key = contact.email.lower()
                expected[key] = min(expected.get(key, contact_id), contact_id)
            got = set(db.session.scalars(recipient_contacts(Audience(topics=tuple(chosen)))))
            if got != set(expected.values()):
                self.fail(
                    f"audience of {chosen}: {sorted(got)}, expected {sorted(expected.values())}"
                    f" (suppressed {sorted(suppressed)})"
                )

    def check_erased(self) -> None:
        for contact_id, email in self.erased.items():
            contact = db.session.get(Contact, contact_id)
            self.expect(
                (contact.first_name, contact.last_name, contact.email, contact.phone)
                == ("", "", None, None),
                f"erased #{contact_id} keeps personal data",
            )
            left = db.session.scalars(
                select(ConsentEvent).where(
                    ConsentEvent.contact_id == contact_id,
                    (ConsentEvent.ip.is_not(None))
                    | (ConsentEvent.note.not_in(["", "erased on request"])),
                )
            ).all()
            self.expect(
                not left, f"erased #{contact_id} keeps IPs or notes: {[e.id for e in left]}"
            )
            pending = db.session.scalars(
                select(PendingSignup.id).where(PendingSignup.contact_id == contact_id)
            ).all()
            self.expect(not pending, f"erased #{contact_id} keeps pending signups {pending}")
            for entry in db.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.record_type == "contact", AuditEntry.record_id == contact_id
                )
            ):
                self.expect(
                    not email or email not in json.dumps(entry.changes, ensure_ascii=False),
                    f"audit entry #{entry.id} keeps erased #{contact_id}'s address",
                )

    def check_figures(self, active: set[tuple[int, int]]) -> None:
        general = self.topics[GENERAL_TOPIC]
        expected = sum(1 for _c, t in active if t == general)
        today = today_oslo()
        [count] = reports._subscriber_counts(today.replace(day=1), today)
        if count != expected:
            self.fail(f"the report counts {count} general subscribers, the states {expected}")
        people = new_people(self.since)
        current = set(
            db.session.scalars(
                select(Subscriber.contact_id)
                .join(Contact, Contact.id == Subscriber.contact_id)
                .where(Subscriber.erased_at.is_(None), Contact.merged_into_id.is_(None))
            )
        )
        if people.subscribers != len(current):
            self.fail(
                f"the home page counts {people.subscribers} new subscribers, "
                f"{len(current)} current contacts have a subscriber record"
            )

    # -- the run -----------------------------------------------------------------------

    ACTIONS = {
        "signup": 14,
        "confirm": 14,
        "preferences": 8,
        "unsubscribe": 6,
        "webhook": 6,
        "staff_grant": 6,
        "staff_withdraw": 3,
        "objection": 3,
        "erase": 2,
        "merge": 3,
    }

    def run(self) -> None:
        self.start()
        self.check()
        self.run_steps(self.ACTIONS, self.check)
        print(f"seed {self.seed}: {dict(self.stats)}")


@pytest.mark.parametrize("seed", SEEDS)
def test_random_consent_interleavings_keep_the_ledger_audience_and_figures_true(
    seed, app, app_ctx, monkeypatch
):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)
    monkeypatch.setitem(app.config, "RATELIMIT_ENABLED", False)
    monkeypatch.setattr(limiter, "enabled", False)
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", "")
    Scenario(seed, app).run()
