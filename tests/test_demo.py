"""`crm demo`: a realistic cluster to look at, and the generator benchmarks seed with."""

import random
from datetime import date

import phonenumbers
from stdnum.no import orgnr as stdnum_orgnr

from crm.audit import AuditEntry
from crm.extensions import db
from crm.members import demo
from crm.members.models import Activity, Company, Contact, Network
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.members.search import matching_ids
from crm.timeutil import today_oslo
from tests.factories import make_company


def _count(model) -> int:
    return db.session.scalar(db.select(db.func.count(model.id)))


def test_demo_creates_a_realistic_cluster_across_the_seven_municipalities(app, runner):
    result = runner.invoke(args=["demo"])
    assert result.exit_code == 0, result.output
    assert "Created 150 companies in 7 municipalities" in result.stdout
    with app.app_context():
        companies = db.session.scalars(db.select(Company)).all()
        assert len(companies) == 150
        assert {c.municipality_number for c in companies} == set(CLUSTER_MUNICIPALITIES)
        assert all(stdnum_orgnr.is_valid(c.orgnr) for c in companies)
        assert len({c.name for c in companies}) == 150
        assert {c.org_form_code for c in companies} <= {"AS", "ASA", "ENK", "SA"}
        assert all(c.nace_code and c.nace_text and c.postal_code and c.website for c in companies)
        members = [c for c in companies if c.membership_status == "member"]
        assert len(members) > 100
        assert all(c.member_since for c in members)

        # Newsletter subscribers (a later area's demo hook) are contacts without a company.
        contacts = db.session.scalars(
            db.select(Contact).where(Contact.company_id.is_not(None))
        ).all()
        assert 2 * 150 <= len(contacts) <= 5 * 150
        for company in companies:
            people = company.contacts
            assert 2 <= len(people) <= 5
            assert sum(p.is_primary_contact for p in people) == 1
            if company.membership_status == "member":
                assert sum(p.is_invoice_contact for p in people) == 1
            domain = company.website.removeprefix("https://www.")
            assert all(p.email.endswith("@" + domain) for p in people)
        for contact in contacts:
            if contact.phone:
                number = phonenumbers.parse(contact.phone)
                assert phonenumbers.is_valid_number(number)
                assert phonenumbers.number_type(number) == phonenumbers.PhoneNumberType.MOBILE
        assert any(c.is_board_representative for c in contacts)

        per_network = {n.name: len(n.contacts) for n in db.session.scalars(db.select(Network))}
        assert set(per_network) == {"Logistikk", "Produksjon", "HR", "Marked/salg", "Bærekraft"}
        assert all(count > 0 for count in per_network.values())
        assert _count(Activity) > 50

        # Demo data goes through the audit log and the search index like any edit.
        assert db.session.scalar(
            db.select(db.func.count(AuditEntry.id)).filter_by(actor="demo")
        ) >= 150 + len(contacts)
        some = companies[0]
        assert some.id in set(db.session.scalars(matching_ids("company", some.orgnr)))

        # The results report counts the demo's subscribers and network companies as the
        # states and memberships say (both kept beside them, migrations 0039 and 0040).
        from crm.reports.services import _network_counts, _subscriber_counts
        from crm.subscriptions.models import ConsentState, Topic

        today = today_oslo()
        active = db.select(db.func.count()).select_from(ConsentState).join(Topic).where(
            Topic.slug == "generelt", ConsentState.status == "active"
        )  # fmt: skip
        assert _subscriber_counts(today, today) == [db.session.scalar(active)] != [0]
        hr = db.session.scalar(db.select(Network).filter_by(name="HR"))
        members_in_hr = {
            p.company_id
            for p in hr.contacts
            if p.company and p.archived_at is None and p.company.membership_status == "member"
        }
        assert dict(_network_counts(today, today))["HR"] == len(members_in_hr) > 0


def test_demo_refuses_a_second_run_unless_appending(app, runner):
    assert runner.invoke(args=["demo", "--companies", "5"]).exit_code == 0
    again = runner.invoke(args=["demo", "--companies", "5"])
    assert again.exit_code != 0
    assert "already has 5 companies" in again.output
    with app.app_context():
        assert _count(Company) == 5
    appended = runner.invoke(args=["demo", "--companies", "5", "--append"])
    assert appended.exit_code == 0, appended.output
    with app.app_context():
        assert _count(Company) == 10
        assert len(set(db.session.scalars(db.select(Company.orgnr)))) == 10


def test_demo_refuses_when_real_companies_exist(app, runner):
    with app.app_context():
        make_company("Ekte Bedrift AS")
    result = runner.invoke(args=["demo"])
    assert result.exit_code != 0
    with app.app_context():
        assert _count(Company) == 1


def test_the_same_seed_gives_the_same_data(app):
    def names_and_people(seed):
        with app.app_context():
            result = demo.generate(
                db.session, companies=20, rng=random.Random(seed), today=date(2026, 6, 1)
            )
            snapshot = [(c.orgnr, c.name, c.employees) for c in result.companies] + [
                (p.email, p.phone, p.job_title) for p in result.contacts
            ]
            db.session.rollback()
            return snapshot

    assert names_and_people(7) == names_and_people(7)
    assert names_and_people(7) != names_and_people(8)


def test_demo_hooks_get_the_new_records_and_the_options(app, runner, monkeypatch):
    calls = []

    def hook(rng, companies, contacts, options):
        calls.append((len(companies), len(contacts), options["subscribers"], options["seed"]))
        return "Hooked in."

    monkeypatch.setattr(demo, "DEMO_HOOKS", [hook])
    result = runner.invoke(args=["demo", "--companies", "3", "--subscribers", "40", "--seed", "5"])
    assert result.exit_code == 0, result.output
    assert "Hooked in." in result.stdout
    [(companies, contacts, subscribers, seed)] = calls
    assert (companies, subscribers, seed) == (3, 40, 5)
    assert contacts >= 6


def test_bulk_generation_for_benchmarks_fills_the_search_index(app):
    with app.app_context():
        result = demo.generate(
            db.session,
            companies=40,
            contacts=200,
            rng=random.Random(1),
            today=date(2026, 6, 1),
            bulk=True,
        )
        db.session.commit()
        assert (_count(Company), _count(Contact)) == (40, 200)
        assert len(result.contacts) == 200
        contact = db.session.get(Contact, result.contacts[17])
        assert contact.id in set(db.session.scalars(matching_ids("contact", contact.email)))
        assert contact.id in set(db.session.scalars(matching_ids("contact", contact.last_name)))
        company = db.session.get(Company, result.companies[3])
        assert company.id in set(db.session.scalars(matching_ids("company", company.orgnr)))
        assert company.created_at is not None
