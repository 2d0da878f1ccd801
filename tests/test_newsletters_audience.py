"""Who gets a newsletter: one function decides, and it never lets the wrong people in."""

from crm.extensions import db
from crm.mail.services import suppress
from crm.members.models import Network
from crm.newsletters import audience
from crm.newsletters.audience import Audience
from crm.subscriptions import gdpr, ledger, topics
from tests.factories import make_company, make_contact, make_subscriber, make_user


def eligible(rule: Audience) -> set[str]:
    from crm.members.models import Contact

    ids = db.session.scalars(audience.recipient_contacts(rule)).all()
    return set(db.session.scalars(db.select(Contact.email).where(Contact.id.in_(ids))))


def test_without_active_consent_suppressed_or_erased_nobody_gets_it(app, app_ctx):
    make_subscriber("yes@example.no")
    make_subscriber("other-topic@example.no", topics=("logistikk",))
    make_contact("No", "Consent", email="noconsent@example.no")
    withdrawn = make_subscriber("withdrawn@example.no")
    ledger.withdraw_all(withdrawn, source="staff", user=make_user(), note="asked")
    make_subscriber("suppressed@example.no")
    suppress("SUPPRESSED@example.no", "spamreport")
    erased = make_subscriber("erased@example.no")
    gdpr.erase_person(erased, user=make_user("admin"))
    archived = make_subscriber("archived@example.no")
    archived.archived_at = archived.created_at
    db.session.commit()

    assert eligible(Audience(topics=("generelt",))) == {"yes@example.no"}
    assert eligible(Audience(topics=("generelt", "logistikk"))) == {
        "yes@example.no",
        "other-topic@example.no",
    }
    assert eligible(Audience(topics=())) == set()
    assert audience.count(Audience(topics=("generelt",))) == 1


def test_a_signup_awaiting_confirmation_is_not_consent(app, app_ctx):
    contact = make_contact(email="pending@example.no")
    topics.sync_topics()
    ledger.record_event(
        contact,
        topics.topic_by_slug("generelt"),
        "granted",
        "web_form",
        wording=topics.current_wording(),
    )
    db.session.commit()
    assert eligible(Audience()) == set()


def test_contact_filters_narrow_the_subscribers(app, app_ctx):
    member = make_company("Medlem AS", membership_status="member", municipality_number="3401")
    prospect = make_company("Kanskje AS", membership_status="prospect", municipality_number="3418")
    logistics = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
    make_subscriber("board@example.no", company_id=member.id, is_board_representative=True)
    make_subscriber("invoice@example.no", company_id=member.id, is_invoice_contact=True)
    make_subscriber("asnes@example.no", company_id=prospect.id, networks=[logistics])
    make_subscriber("public@example.no")

    assert eligible(Audience(municipalities=("3401",))) == {
        "board@example.no",
        "invoice@example.no",
    }
    assert eligible(Audience(membership="member")) == {"board@example.no", "invoice@example.no"}
    assert eligible(Audience(membership="non_member")) == {"asnes@example.no", "public@example.no"}
    assert eligible(Audience(roles=("board",))) == {"board@example.no"}
    assert eligible(Audience(roles=("board", "invoice"))) == {
        "board@example.no",
        "invoice@example.no",
    }
    assert eligible(Audience(network_ids=(logistics.id,))) == {"asnes@example.no"}
    assert eligible(Audience(municipalities=("3401", "3418"), roles=("board",))) == {
        "board@example.no"
    }


def test_two_contacts_sharing_an_address_get_one_copy(app, app_ctx):
    first = make_subscriber("shared@example.no")
    make_subscriber("Shared@example.no")
    ids = db.session.scalars(audience.recipient_contacts(Audience())).all()
    assert ids == [first.id]


def test_exclusion_reasons_say_why(app, app_ctx):
    withdrawn = make_subscriber("w@example.no")
    ledger.withdraw_all(withdrawn, source="staff", user=make_user(), note="asked")
    suppressed = make_subscriber("s@example.no")
    suppress("s@example.no", "bounce")
    db.session.commit()
    reasons = audience.exclusion_reasons(Audience(), [withdrawn.id, suppressed.id])
    assert reasons == {withdrawn.id: "no_consent", suppressed.id: "suppressed"}
