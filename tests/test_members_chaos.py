"""Randomized interleavings of the member register, seeded and reproducible.

The example-based tests (test_members_*.py, test_import_*.py, test_search*.py,
test_audit.py) check each way of changing a company or contact alone. Here each seed
sets up three or four companies and five or six contacts (names with æ/ø/å, some
emails differing only in case), picks two networks, and takes 30-45 random steps
through the real entry points: the company and contact forms (create, edit, rename,
change company, roles, networks), archive and restore, activities, staff consent,
adding a network member by email typed in another case and removing one, merging two
contacts, and importing a small company or contact spreadsheet (then the same file
again). After every step:

1. search (the lists' `q`, folded: ø/o/oe, å/a/aa, æ/ae) finds every current company
   and contact by its name typed in a random spelling, and a contact by its company's
   name too; it finds no archived or merged-away one (a few records after each step,
   all of them after every fourth and the last: searching is the slow part);
2. a merged-away contact points at a record that exists, and keeps no activities,
   network memberships or consent states (merge_contacts and its MERGE_HOOKS move them);
3. the list pages' counts and the home page's "members without a primary contact"
   equal the rows;
4. each staff change left an audit entry on the record it changed;
5. importing the same file twice changes nothing the second time.

The register promises neither one contact per email (the form warns and lets staff
save anyway) nor one primary contact per company (the import and the form both allow
more), so those are not checked. There is no company merge and no erasure in the
members area. A failure prints the seed and the step log.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from datetime import date

import pytest
from flask import g
from sqlalchemy import func, select

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members import listing, services
from crm.members.importing import apply_plan, plan_bytes
from crm.members.importing.contacts import apply_contact_plan, plan_contact_import
from crm.members.models import Activity, Company, Contact, Network, company_network, contact_network
from crm.subscriptions import staff_consent
from crm.subscriptions import topics as topic_rules
from crm.subscriptions.models import ConsentState
from tests.chaos import SeededScenario
from tests.factories import make_company, make_contact, unique_orgnr

SEEDS = range(8)
FIRST = ["Åse", "Øystein", "Kari", "Ærlig", "Bjørn", "Pål", "Siv", "Tor"]
LAST = ["Ødegård", "Strøm", "Aasen", "Bækken", "Nordmann", "Håland", "Løvås"]
COMPANIES = [
    "Solør Bruk AS",
    "Glåmdal Sag AS",
    "Bærum Bygg AS",
    "Ødegården Mek AS",
    "Åsnes Tre AS",
    "Kongsvinger Støp AS",
    "Grue Sæter AS",
    "Eidskog Stål AS",
]
STATUSES = ("prospect", "member", "resigned")


def spell(rng: random.Random, word: str) -> str:
    """`word` as someone might type it: without a Norwegian keyboard, in any case."""
    out = []
    for ch in word:
        low = ch.lower()
        if low == "ø":
            out.append(rng.choice(["ø", "o", "oe"]))
        elif low == "å":
            out.append(rng.choice(["å", "a", "aa"]))
        elif low == "æ":
            out.append(rng.choice(["æ", "ae"]))
        else:
            out.append(low)
    text = "".join(out)
    return rng.choice([text, text.upper(), text.title()])


class Scenario(SeededScenario):
    def __init__(self, seed: int, app, client):
        self.seed = seed
        self.rng = random.Random(seed)
        self.app = app
        self.client = client
        self.log: list[str] = []
        self.stats: Counter[str] = Counter()
        self.files = 0

    # -- setup ---------------------------------------------------------------------------

    def start(self) -> None:
        rng = self.rng
        networks = db.session.scalars(select(Network).order_by(Network.name)).all()
        self.networks = [n.id for n in rng.sample(networks, 2)]
        self.names = {n.id: n.name for n in networks}
        for name in rng.sample(COMPANIES, rng.randint(3, 4)):
            make_company(
                name,
                orgnr=unique_orgnr(rng),
                membership_status=rng.choice(STATUSES),
                member_since=date(2020, 1, 1),
            )
        companies = db.session.scalars(select(Company)).all()
        for n in range(rng.randint(5, 6)):
            make_contact(
                rng.choice(FIRST),
                rng.choice(LAST),
                email=f"person{n}.s{self.seed}@example.no",
                company=rng.choice([*companies, None]),
                is_primary_contact=rng.random() < 0.3,
            )
        self.topic = topic_rules.sync_topics()[0]
        db.session.commit()
        self.topic_id = self.topic.id
        self.note(f"{len(companies)} companies, networks {self.networks}")

    # -- helpers -------------------------------------------------------------------------

    def refresh(self) -> None:
        db.session.expire_all()

    def forget(self) -> None:
        # The client's requests share this session (the test's app context is theirs):
        # forget what they loaded, and how (the home page loads companies load_only).
        user = g.get("_login_user")
        db.session.expunge_all()
        if user is not None:
            db.session.add(user)  # flask-login keeps the logged-in user in `g`

    def companies(self, current: bool = True) -> list[Company]:
        stmt = select(Company).order_by(Company.id)
        if current:
            stmt = stmt.where(Company.archived_at.is_(None))
        return list(db.session.scalars(stmt))

    def contacts(self, current: bool = True) -> list[Contact]:
        stmt = select(Contact).order_by(Contact.id)
        if current:
            stmt = stmt.where(Contact.archived_at.is_(None))
        return list(db.session.scalars(stmt))

    def pick(self, items):
        return self.rng.choice(items) if items else None

    def audit_count(self, record_type: str, record_id: int) -> int:
        return db.session.scalar(
            select(func.count(AuditEntry.id)).where(
                AuditEntry.record_type == record_type, AuditEntry.record_id == record_id
            )
        )

    def post(self, url: str, data: dict | None = None):
        response = self.client.post(url, data=data or {})
        self.refresh()
        return response

    def expect_audited(self, record_type: str, record_id: int, before: int, what: str) -> None:
        self.expect(
            self.audit_count(record_type, record_id) > before,
            f"{what}: no audit entry on {record_type} #{record_id}",
        )

    def company_form(self, company: Company | None, **fields) -> dict:
        data = {
            "orgnr": company.orgnr if company else unique_orgnr(self.rng),
            "name": company.name if company else self.rng.choice(COMPANIES),
            "org_form_code": "AS",
            "membership_status": company.membership_status if company else "prospect",
            "municipality_number": "3401",
        }
        if company is not None and company.member_since:
            data["member_since"] = company.member_since.isoformat()
        if company is not None and company.resigned_on:
            data["resigned_on"] = company.resigned_on.isoformat()
        data.update(fields)
        return data

    def contact_form(self, contact: Contact | None) -> dict:
        rng = self.rng
        data = {
            "first_name": rng.choice(FIRST),
            "last_name": rng.choice(LAST),
            "email": contact.email if contact and rng.random() < 0.5 else self.new_email(),
            "networks": rng.sample(self.networks, rng.randint(0, 2)),
        }
        company = self.pick([*self.companies(), None])
        if company is not None:
            # By name only where the name is unique: else the form (rightly) asks for orgnr.
            same = [c for c in self.companies() if c.name.lower() == company.name.lower()]
            data["company"] = rng.choice([company.orgnr, company.name if len(same) == 1 else ""])
            data["company"] = data["company"] or company.orgnr
        for role in ("is_primary_contact", "is_invoice_contact", "is_board_representative"):
            if rng.random() < 0.3:
                data[role] = "y"
        if rng.random() < 0.1:
            data["left_company"] = "y"
        return data

    def new_email(self) -> str:
        """A fresh address, or one in use typed in another case."""
        used = [c.email for c in self.contacts(current=False) if c.email]
        if used and self.rng.random() < 0.3:
            return self.rng.choice(used).upper()
        self.stats["email"] += 1
        return f"ny{self.stats['email']}.s{self.seed}@Example.no"

    # -- actions -------------------------------------------------------------------------

    def create_company(self) -> None:
        data = self.company_form(None, membership_status=self.rng.choice(STATUSES))
        response = self.post("/companies/new", data)
        self.note(f"create company {data['name']!r} {data['orgnr']}: {response.status_code}")
        self.expect(response.status_code == 302, f"company form answered {response.status_code}")
        company = db.session.scalar(select(Company).where(Company.orgnr == data["orgnr"]))
        self.expect_audited("company", company.id, 0, "create company")

    def edit_company(self) -> None:
        company = self.pick(self.companies())
        if company is None:
            return
        fields = {"membership_status": self.rng.choice(STATUSES)}
        if self.rng.random() < 0.6:
            fields["name"] = self.rng.choice(COMPANIES)
        if fields["membership_status"] != company.membership_status:
            fields["member_since"] = fields["resigned_on"] = ""
        before = self.audit_count("company", company.id)
        old = (company.name, company.membership_status)
        data = self.company_form(company, **fields)
        response = self.post(f"/companies/{company.id}/edit", data)
        self.note(f"edit company #{company.id} {old} -> {fields}: {response.status_code}")
        self.expect(response.status_code == 302, f"company edit answered {response.status_code}")
        company = db.session.get(Company, company.id)
        if (company.name, company.membership_status) != old:
            self.expect_audited("company", company.id, before, "edit company")

    def archive_company(self) -> None:
        self.toggle_archived("company", "companies", self.pick(self.companies(current=False)))

    def toggle_archived(self, record_type: str, path: str, record) -> None:
        """Archive a current record or restore an archived one through its page."""
        if record is None:
            return
        verb = "unarchive" if record.archived_at else "archive"
        before = self.audit_count(record_type, record.id)
        response = self.post(f"/{path}/{record.id}/{verb}")
        self.note(f"{verb} {record_type} #{record.id}: {response.status_code}")
        self.expect(response.status_code == 302, f"{verb} answered {response.status_code}")
        self.expect_audited(record_type, record.id, before, f"{verb} {record_type}")

    def save_contact(self) -> None:
        contact = self.pick(self.contacts()) if self.rng.random() < 0.6 else None
        data = self.contact_form(contact)
        url = f"/contacts/{contact.id}/edit" if contact else "/contacts/new"
        before = self.audit_count("contact", contact.id) if contact else 0
        ids = set(db.session.scalars(select(Contact.id)))
        response = self.post(url, data)
        if response.status_code == 200 and "confirm_duplicate" in response.get_data(as_text=True):
            data["confirm_duplicate"] = "y"  # the form warned of the address: save anyway
            response = self.post(url, data)
        what = f"edit contact #{contact.id}" if contact else "create contact"
        self.note(f"{what} {data}: {response.status_code}")
        if response.status_code != 302:
            errors = re.findall(
                r'class="[^"]*error[^"]*"[^>]*>([^<]+)', response.get_data(as_text=True)
            )
            self.fail(f"{what} answered {response.status_code}: {errors}")
        if contact is None:
            (new_id,) = set(db.session.scalars(select(Contact.id))) - ids
            contact = db.session.get(Contact, new_id)
        contact = db.session.get(Contact, contact.id)
        self.expect(
            contact.email == data["email"].lower(), f"{contact.email!r} saved for {data['email']}"
        )
        self.expect(
            sorted(n.id for n in contact.networks) == sorted(data["networks"]),
            f"networks {[n.id for n in contact.networks]} after choosing {data['networks']}",
        )
        self.expect_audited("contact", contact.id, before, what)

    def archive_contact(self) -> None:
        self.toggle_archived("contact", "contacts", self.pick(self.contacts(current=False)))

    def add_activity(self) -> None:
        contact = self.pick(self.contacts())
        if contact is None:
            return
        data = {"kind": "call", "occurred_on": "2026-03-01", "summary": "Ringte"}
        response = self.post(f"/contacts/{contact.id}/activities", data)
        self.note(f"activity on #{contact.id}: {response.status_code}")
        self.expect(response.status_code == 302, f"activity answered {response.status_code}")

    def grant_consent(self) -> None:
        contact = self.pick([c for c in self.contacts() if c.email])
        if contact is None:
            return
        staff_consent.record_staff_consent(
            contact,
            [db.session.get(type(self.topic), self.topic_id)],
            user=db.session.get(type(self.user), self.user_id),
            channel="phone",
            note="chaos",
        )
        db.session.commit()
        self.note(f"staff consent #{contact.id}")

    def network_member(self) -> None:
        network_id = self.rng.choice(self.networks)
        members = db.session.scalars(
            select(contact_network.c.contact_id).where(contact_network.c.network_id == network_id)
        ).all()
        if members and self.rng.random() < 0.4:
            contact_id = self.rng.choice(members)
            before = self.audit_count("contact", contact_id)
            url = f"/networks/{network_id}/members/{contact_id}/remove"
            response = self.post(url)
            self.note(f"remove #{contact_id} from network {network_id}: {response.status_code}")
            self.expect(response.status_code == 302, f"remove answered {response.status_code}")
            self.expect_audited("contact", contact_id, before, "remove from network")
            return
        contact = self.pick([c for c in self.contacts() if c.email])
        if contact is None:
            return
        # The address typed in another case still means that contact.
        typed = self.rng.choice([contact.email.upper(), contact.email.title()])
        owners = services.contacts_with_email(contact.email)
        was = {c.id: network_id in [n.id for n in c.networks] for c in owners}
        before = {c.id: self.audit_count("contact", c.id) for c in owners}
        response = self.post(f"/networks/{network_id}/members", {"who": typed})
        self.note(f"add {typed!r} to network {network_id}: {response.status_code}")
        if len(owners) > 1:
            return  # an address two contacts share is refused or adds both: either is fine
        self.expect(response.status_code == 302, f"adding answered {response.status_code}")
        contact = db.session.get(Contact, contact.id)
        self.expect(
            network_id in [n.id for n in contact.networks], f"{typed} not added to the network"
        )
        if not was[contact.id]:
            self.expect_audited("contact", contact.id, before[contact.id], "add to network")

    def merge(self) -> None:
        current = self.contacts()
        if len(current) < 3:
            return
        target, other = self.rng.sample(current, 2)
        before = self.audit_count("contact", other.id)
        response = self.post(f"/contacts/{target.id}/merge", {"other_id": other.id})
        self.note(f"merge #{other.id} into #{target.id}: {response.status_code}")
        self.expect(response.status_code == 302, f"merge answered {response.status_code}")
        other = db.session.get(Contact, other.id)
        self.expect(other.merged_into_id == target.id, "the other contact is not merged")
        self.expect_audited("contact", other.id, before, "merge")

    def import_companies(self) -> None:
        rng = self.rng
        lines = ["orgnr;name;membership_status"]
        for company in rng.sample(self.companies(False), min(2, len(self.companies(False)))):
            lines.append(f"{company.orgnr};{rng.choice(COMPANIES)};{rng.choice(STATUSES)}")
        lines.append(f"{unique_orgnr(rng)};{rng.choice(COMPANIES)};member")
        self.import_twice("companies", "\n".join(lines) + "\n")

    def import_contacts(self) -> None:
        rng = self.rng
        lines = ["first_name;last_name;email;orgnr;networks"]
        # Not merged-away ones: the import (deliberately) matches no merged-away contact,
        # so their address would make a new contact, rightly. One row per address.
        by_email = {c.email: c for c in self.contacts(False) if c.email and not c.merged_into_id}
        people = list(by_email.values())
        for contact in rng.sample(people, min(2, len(people))):
            if contact.email:
                company = self.pick(self.companies())
                network = self.names[rng.choice(self.networks)]
                lines.append(
                    f"{contact.first_name};{rng.choice(LAST)};{contact.email.upper()};"
                    f"{company.orgnr if company else ''};{network}"
                )
        self.stats["email"] += 1
        lines.append(f"Ny;Løvås;import{self.stats['email']}.s{self.seed}@example.no;;")
        self.import_twice("contacts", "\n".join(lines) + "\n")

    def import_twice(self, what: str, text: str) -> None:
        self.files += 1
        name = f"{what}-{self.files}.csv"
        for attempt in (1, 2):
            if what == "companies":
                plan = plan_bytes(text.encode(), name)
                apply = apply_plan
            else:
                plan = plan_contact_import(text.encode(), name)
                apply = apply_contact_plan
            self.expect(plan.ok, f"{name} refused: {plan.errors}")
            counts = plan.counts()
            audit_before = db.session.scalar(select(func.count(AuditEntry.id)))
            apply(plan)
            db.session.commit()
            self.refresh()
            self.note(f"import {name} ({attempt}): {counts} {text!r}")
            if attempt == 2:
                changed = {k: v for k, v in counts.items() if k in ("created", "updated") and v}
                self.expect(not changed, f"importing {name} again changed {changed}")
                self.expect(
                    db.session.scalar(select(func.count(AuditEntry.id))) == audit_before,
                    f"importing {name} again wrote audit entries",
                )

    # -- invariants ----------------------------------------------------------------------

    def found(self, record_type: str, query: str) -> set[int]:
        if record_type == "contact":
            stmt = listing.contact_select(listing.ContactFilters(q=query))
            return {c.id for c in db.session.scalars(stmt)}
        stmt = listing.company_select(listing.CompanyFilters(q=query))
        return {c.id for c in db.session.scalars(stmt)}

    def check(self, full: bool = True) -> None:
        rng = self.rng
        self.refresh()
        companies, contacts = self.companies(current=False), self.contacts(current=False)
        if not full:  # searching for every record after every step is the slow part
            companies = rng.sample(companies, min(2, len(companies)))
            contacts = rng.sample(contacts, min(3, len(contacts)))
        for company in companies:
            word = company.name.split()[0]
            query = spell(rng, word)
            hit = company.id in self.found("company", query)
            if company.archived_at is None:
                self.expect(hit, f"company #{company.id} {company.name!r} not found by {query!r}")
            else:
                self.expect(not hit, f"archived company #{company.id} found by {query!r}")
        for contact in contacts:
            query = f"{spell(rng, contact.first_name)} {spell(rng, contact.last_name)}"
            hit = contact.id in self.found("contact", query)
            if contact.archived_at is None:
                self.expect(hit, f"contact #{contact.id} {contact.name!r} not found by {query!r}")
                if contact.company is not None:
                    # A contact is found by its (current) company's name too.
                    by_company = f"{spell(rng, contact.company.name.split()[0])} {query}"
                    self.expect(
                        contact.id in self.found("contact", by_company),
                        f"contact #{contact.id} at {contact.company.name!r} not found by"
                        f" {by_company!r}",
                    )
            else:
                self.expect(not hit, f"archived contact #{contact.id} found by {query!r}")
        for contact in self.contacts(current=False):
            if contact.merged_into_id is not None:
                self.check_merged(contact)
        self.check_counts()

    def check_merged(self, contact: Contact) -> None:
        target = db.session.get(Contact, contact.merged_into_id)
        self.expect(target is not None, f"#{contact.id} merged into a missing contact")
        self.expect(contact.archived_at is not None, f"merged-away #{contact.id} is current")
        left = {
            "activities": db.session.scalar(
                select(func.count(Activity.id)).where(Activity.contact_id == contact.id)
            ),
            "networks": db.session.scalar(
                select(func.count())
                .select_from(contact_network)
                .where(contact_network.c.contact_id == contact.id)
            ),
            "consent states": db.session.scalar(
                select(func.count())
                .select_from(ConsentState)
                .where(ConsentState.contact_id == contact.id)
            ),
        }
        kept = {k: v for k, v in left.items() if v}
        self.expect(not kept, f"merged-away #{contact.id} still has {kept}")

    def check_company_networks(self) -> None:
        """The networks kept per company (database triggers) are those of its current
        contacts, whatever form, merge or import changed them."""
        expected = {
            (contact.company_id, network.id)
            for contact in self.contacts()
            if contact.company_id is not None
            for network in contact.networks
        }
        kept = set(db.session.execute(select(company_network)).tuples())
        self.expect(kept == expected, f"company_network extra {kept - expected}, "
                    f"missing {expected - kept}")  # fmt: skip
        flagged = {c.id for c in self.companies(current=False) if c.in_network}
        self.expect(
            flagged == {company for company, _network in expected},
            f"in_network set for {sorted(flagged)}, pairs say {sorted(expected)}",
        )

    def check_counts(self) -> None:
        self.check_company_networks()
        for path, rows in (
            ("/contacts", len(self.contacts())),
            ("/companies", len(self.companies())),
        ):
            body = self.client.get(path + "?partial=1").get_data(as_text=True)
            found = re.search(r'class="result-count">(\d+)', body)
            self.expect(
                found and int(found.group(1)) == rows,
                f"{path} counts {found and found[1]}, rows {rows}: {body[:300]}",
            )
        expected = {
            c.id
            for c in self.companies()
            if c.membership_status == "member"
            and not any(p.is_primary_contact and p.active and not p.archived_at for p in c.contacts)
        }
        home = self.client.get("/home").get_data(as_text=True)
        self.forget()
        if "no-primary-count" not in home:
            self.fail(home[:3000])
        shown = re.search(
            r'data-box="no-primary-count">.*?class="value[^"]*">([\d\s\xa0]+)<', home, re.S
        )
        total = int(re.sub(r"\D", "", shown.group(1)))
        self.expect(
            total == len(expected),
            f"home page: {total} members without a primary contact, rows say {sorted(expected)}",
        )

    # -- run -----------------------------------------------------------------------------

    def run(self, user) -> None:
        self.user, self.user_id = user, user.id
        self.start()
        self.check()
        actions = [
            (self.create_company, 2),
            (self.edit_company, 3),
            (self.archive_company, 2),
            (self.save_contact, 5),
            (self.archive_contact, 2),
            (self.add_activity, 2),
            (self.grant_consent, 1),
            (self.network_member, 3),
            (self.merge, 2),
            (self.import_companies, 1),
            (self.import_contacts, 1),
        ]
        steps = self.rng.randint(30, 45)
        for n in range(steps):
            action = self.rng.choices([a for a, _w in actions], [w for _a, w in actions])[0]
            self.stats[action.__name__] += 1
            action()
            self.check(full=n % 4 == 3 or n == steps - 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_member_register_interleavings_keep_search_merges_counts_and_audit_true(
    seed, app, app_ctx, client, auth
):
    user = auth.login("staff")
    user = db.session.merge(user)
    Scenario(seed, app, client).run(user)
