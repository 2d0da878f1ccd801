"""Network mail: contacts of member companies in a network get its mail on the basis
of membership; an objection through the one-click link stops it; newsletters still need
consent; suppressed and erased addresses never get anything."""

import email
import email.policy
import time
import urllib.parse

import pytest

from crm.extensions import db
from crm.mail.services import suppress
from crm.members.models import Contact, Network
from crm.newsletters import audience, sending, services
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.subscriptions import gdpr, links, network_mail, staff_consent, topics
from crm.subscriptions.models import ConsentEvent, ConsentState
from tests.factories import (
    bulk_network_members,
    bulk_subscribers,
    make_company,
    make_contact,
    make_newsletter,
    make_subscriber,
    make_user,
)


def network(name: str = "Logistikk") -> Network:
    return db.session.scalar(db.select(Network).filter_by(name=name))


def start(newsletter: Newsletter) -> int:
    total = services.start_sending(db.session.get(Newsletter, newsletter.id))
    db.session.commit()
    return total


def ledger_rows(newsletter_id: int) -> dict[str, NewsletterRecipient]:
    db.session.expire_all()
    rows = db.session.scalars(
        db.select(NewsletterRecipient).where(NewsletterRecipient.newsletter_id == newsletter_id)
    ).all()
    return {db.session.get(Contact, r.contact_id).email: r for r in rows}


def send_all(newsletter_id: int) -> None:
    db.session.expire_all()
    for batch in db.session.scalars(
        db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter_id)
    ).all():
        sending.run_batch(batch.id, reschedule=lambda *a: None)


def read_outbox(outbox) -> dict[str, email.message.EmailMessage]:
    messages = {}
    for path in outbox.glob("*.eml"):
        parsed = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        messages[parsed["To"].addresses[0].addr_spec] = parsed
    return messages


@pytest.fixture
def logistikk_people(app_ctx):
    """Logistikk with two member-company contacts, one at a prospect, one elsewhere."""
    logistikk = network()
    member = make_company("Medlem AS", membership_status="member")
    prospect = make_company("Kanskje AS", membership_status="prospect")
    make_contact(
        "Mia", "Medlem", email="mia@example.no", company_id=member.id, networks=[logistikk]
    )
    make_contact(
        "Mons", "Medlem", email="mons@example.no", company_id=member.id, networks=[logistikk]
    )
    make_contact(
        "Per", "Prospekt", email="per@example.no", company_id=prospect.id, networks=[logistikk]
    )
    make_contact("Hanne", "HR", email="hanne@example.no", company_id=member.id, networks=["HR"])
    make_subscriber("abonnent@example.no")  # consent for the general newsletter only
    return logistikk


def test_network_mail_reaches_exactly_the_networks_member_company_contacts(
    app_ctx, logistikk_people
):
    # Today's audience: a newsletter filtered to Logistikk reaches nobody without consent.
    newsletter = make_newsletter(network_ids=(logistikk_people.id,))
    assert services.recipient_count(newsletter) == 0

    mail = make_newsletter(
        "Møtereferat", kind="network_mail", topics=(), network_ids=(logistikk_people.id,)
    )
    assert services.recipients_by_basis(mail) == {logistikk_people.id: 2}
    assert start(mail) == 2
    rows = ledger_rows(mail.id)
    assert set(rows) == {"mia@example.no", "mons@example.no"}
    assert {(r.basis, r.basis_network_id) for r in rows.values()} == {
        ("membership", logistikk_people.id)
    }


def test_a_marketing_newsletter_still_needs_consent(app_ctx, logistikk_people):
    topic = topics.topic_by_slug("logistikk")
    mons = db.session.scalar(db.select(Contact).filter_by(email="mons@example.no"))
    staff_consent.record_staff_consent(
        mons, [topic], user=make_user(), channel="phone", note="Ringte 1.12."
    )
    db.session.commit()
    newsletter = make_newsletter(topics=("logistikk", "generelt"))
    assert start(newsletter) == 2
    rows = ledger_rows(newsletter.id)
    assert set(rows) == {"mons@example.no", "abonnent@example.no"}
    assert {r.basis for r in rows.values()} == {"consent"}
    assert {r.basis_network_id for r in rows.values()} == {None}


def test_network_mail_also_reaches_topic_subscribers_on_the_basis_of_consent(
    app_ctx, logistikk_people
):
    mail = make_newsletter(
        kind="network_mail", topics=("generelt",), network_ids=(logistikk_people.id,)
    )
    assert services.recipients_by_basis(mail) == {logistikk_people.id: 2, None: 1}
    start(mail)
    rows = ledger_rows(mail.id)
    assert rows["abonnent@example.no"].basis == "consent"
    assert rows["mia@example.no"].basis == "membership"


def test_suppressed_erased_and_archived_members_are_never_mailed(app_ctx, logistikk_people):
    member = make_company("Annen AS", membership_status="member")
    for name in ("supp", "erased", "archived"):
        make_contact(
            name, "X", email=f"{name}@example.no", company_id=member.id, networks=["Logistikk"]
        )
    suppress("SUPP@example.no", "bounce")
    erased = db.session.scalar(db.select(Contact).filter_by(email="erased@example.no"))
    gdpr.erase_person(erased, user=make_user("admin"))
    archived = db.session.scalar(db.select(Contact).filter_by(email="archived@example.no"))
    archived.archived_at = archived.created_at
    db.session.commit()
    mail = make_newsletter(kind="network_mail", topics=(), network_ids=(logistikk_people.id,))
    assert start(mail) == 2
    assert set(ledger_rows(mail.id)) == {"mia@example.no", "mons@example.no"}


def test_network_mail_carries_the_one_click_objection_and_a_post_stops_the_next_send(
    app, app_ctx, client, outbox, logistikk_people
):
    mail = make_newsletter(
        "Møtereferat fra Logistikk",
        kind="network_mail",
        topics=(),
        network_ids=(logistikk_people.id,),
    )
    start(mail)
    send_all(mail.id)
    messages = read_outbox(outbox)
    assert set(messages) == {"mia@example.no", "mons@example.no"}
    mia = messages["mia@example.no"]
    assert mia["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    link = str(mia["List-Unsubscribe"]).strip().strip("<>")
    text = mia.get_body(preferencelist=("plain",)).get_content()
    assert link in text
    assert "Logistikk" in text  # the notice says why it came
    holder = links.link_holder(link.rsplit("/", 1)[1])
    assert holder.network.id == logistikk_people.id
    assert holder.contact.email == "mia@example.no"

    # The mailbox provider's one-click POST (RFC 8058): no login, no CSRF token.
    app.config["WTF_CSRF_ENABLED"] = True
    answer = client.post(
        urllib.parse.urlsplit(link).path,
        data={"List-Unsubscribe": "One-Click"},
        environ_base={"REMOTE_ADDR": "192.0.2.7"},
    )
    assert answer.status_code == 200
    assert "Logistikk" in answer.get_data(as_text=True)

    db.session.expire_all()
    contact = holder.contact
    event = db.session.scalar(
        db.select(ConsentEvent).where(
            ConsentEvent.contact_id == contact.id, ConsentEvent.kind == "objected"
        )
    )
    assert event.topic.network_id == logistikk_people.id
    assert event.source == "email_link"
    assert event.ip == "192.0.2.7"
    assert event.at is not None
    assert f"notice v{network_mail.NETWORK_NOTICE_VERSION}" in event.note
    assert network_mail.objected_network_ids(contact) == {logistikk_people.id}

    # A second click records nothing new.
    client.post(urllib.parse.urlsplit(link).path, data={"List-Unsubscribe": "One-Click"})
    assert (
        db.session.scalar(
            db.select(db.func.count())
            .select_from(ConsentEvent)
            .where(ConsentEvent.contact_id == contact.id, ConsentEvent.kind == "objected")
        )
        == 1
    )

    following = make_newsletter(
        "Neste møte", kind="network_mail", topics=("generelt",), network_ids=(logistikk_people.id,)
    )
    assert start(following) == 2
    assert set(ledger_rows(following.id)) == {"mons@example.no", "abonnent@example.no"}


def test_an_objection_made_during_a_send_skips_the_person_with_the_reason(
    app_ctx, logistikk_people
):
    mail = make_newsletter(kind="network_mail", topics=(), network_ids=(logistikk_people.id,))
    start(mail)
    mia = db.session.scalar(db.select(Contact).filter_by(email="mia@example.no"))
    network_mail.object_to_network_mail(mia, logistikk_people, source="staff", user=make_user())
    db.session.commit()
    send_all(mail.id)
    rows = ledger_rows(mail.id)
    assert (rows["mia@example.no"].state, rows["mia@example.no"].skip_reason) == (
        "skipped",
        "objected",
    )
    assert rows["mons@example.no"].state == "sent"


def test_an_objection_to_one_network_leaves_another_networks_mail(app_ctx, logistikk_people):
    mia = db.session.scalar(db.select(Contact).filter_by(email="mia@example.no"))
    hr = network("HR")
    mia.networks.append(hr)
    db.session.commit()
    network_mail.object_to_network_mail(mia, logistikk_people, source="staff", user=make_user())
    db.session.commit()
    both = audience.Audience(
        kind="network_mail", topics=(), network_ids=(logistikk_people.id, hr.id)
    )
    assert audience.count_by_basis(both) == {logistikk_people.id: 1, hr.id: 2}
    only = audience.Audience(kind="network_mail", topics=(), network_ids=(logistikk_people.id,))
    assert audience.count_by_basis(only) == {logistikk_people.id: 1}


def test_choosing_the_networks_topic_again_lifts_the_objection(app_ctx, logistikk_people):
    mia = db.session.scalar(db.select(Contact).filter_by(email="mia@example.no"))
    network_mail.object_to_network_mail(mia, logistikk_people, source="staff", user=make_user())
    db.session.commit()
    topic = topics.topic_by_slug("logistikk")
    assert db.session.get(ConsentState, (mia.id, topic.id)).status == "objected"
    links.update_preferences(mia, [topic], ip="192.0.2.1", wording=topics.current_wording())
    db.session.commit()
    assert network_mail.objected_network_ids(mia) == set()


def test_the_network_link_page_explains_and_a_forged_network_is_refused(
    app, client, logistikk_people
):
    mia = db.session.scalar(db.select(Contact).filter_by(email="mia@example.no"))
    url = links.unsubscribe_urls([mia.id], {mia.id: logistikk_people.id})[mia.id]
    page = client.get(urllib.parse.urlsplit(url).path)
    assert page.status_code == 200
    assert "Logistikk" in page.get_data(as_text=True)
    assert network_mail.objected_network_ids(mia) == set()  # a GET changes nothing
    gone = links.unsubscribe_urls([mia.id], {mia.id: 999_999})[mia.id]
    assert client.get(urllib.parse.urlsplit(gone).path).status_code == 404
    assert client.post(urllib.parse.urlsplit(gone).path).status_code == 404


def test_compose_page_shows_counts_per_basis(app, client, auth, logistikk_people):
    auth.login("staff")
    with app.app_context():
        logistikk_id = logistikk_people.id
    answer = client.get(
        "/newsletters/audience",
        query_string={"kind": "network_mail", "networks": str(logistikk_id), "topics": "generelt"},
    ).get_json()
    assert answer["recipients"] == 3
    assert answer["by_basis"] == [
        {"label": "Samtykke til et tema", "recipients": 1},
        {"label": "Medlemskap i Logistikk", "recipients": 2},
    ]
    plain = client.get(
        "/newsletters/audience", query_string={"networks": str(logistikk_id), "topics": "generelt"}
    ).get_json()
    assert plain["recipients"] == 0 and plain["by_basis"] == []

    page = client.post(
        "/newsletters/new",
        data={
            "subject": "Møtereferat",
            "body": "Referat fra møtet.",
            "kind": "network_mail",
            "networks": str(logistikk_id),
            "membership": "",
        },
    )
    assert page.status_code == 302, page.get_data(as_text=True)[:2000]
    detail = client.get(page.headers["Location"]).get_data(as_text=True)
    assert "Medlemskap i Logistikk: 2" in detail
    assert client.get("/newsletters/new").status_code == 200


def test_network_mail_without_a_network_is_refused(app_ctx):
    with pytest.raises(services.NewsletterError):
        make_newsletter(kind="network_mail", topics=())
    with pytest.raises(services.NewsletterError):
        make_newsletter(kind="spam", topics=("generelt",))


def test_cli_creates_network_mail(app, app_ctx, runner, tmp_path, logistikk_people):
    body = tmp_path / "body.md"
    body.write_text("Referat", encoding="utf-8")
    result = runner.invoke(
        args=[
            "newsletters",
            "create",
            "--subject",
            "Referat",
            "--body",
            str(body),
            "--network",
            "Logistikk",
            "--network-mail",
        ]
    )
    assert result.exit_code == 0, result.output
    assert '"recipients": 2' in result.output


def test_the_batch_recheck_stays_fast_on_thousands_of_network_contacts(app_ctx):
    """The per-batch eligibility query (a correlated membership check) on 2,500 contacts:
    the PostgreSQL planner trap of an earlier audience change took minutes here."""
    logistikk = network()
    bulk_network_members(2500, logistikk)
    bulk_subscribers(500)
    mail = make_newsletter(kind="network_mail", topics=("generelt",), network_ids=(logistikk.id,))
    began = time.monotonic()
    assert start(mail) == 3000
    created = time.monotonic() - began
    batch = db.session.scalars(
        db.select(NewsletterBatch).where(NewsletterBatch.newsletter_id == mail.id)
    ).first()
    began = time.monotonic()
    newsletter = db.session.get(Newsletter, mail.id)
    kept = sending.skip_ineligible(newsletter, batch, sending.pending_rows(batch, newsletter))
    recheck = time.monotonic() - began
    assert len(kept) == 1000
    print(f"ledger of 3,000: {created:.2f} s, recheck of a 1,000 batch: {recheck:.3f} s")
    assert created < 20 and recheck < 5, (created, recheck)


@pytest.mark.browser
def test_compose_network_mail_in_the_browser_shows_counts_per_basis(
    app, page, live_server, artifacts_dir
):
    from tests.browser import login
    from tests.factories import PASSWORD

    with app.app_context():
        logistikk = network()
        member = make_company("Glåmdal Transport AS", membership_status="member")
        for n in range(3):
            make_contact(
                f"Mia{n}",
                "Medlem",
                email=f"mia{n}@example.no",
                company_id=member.id,
                networks=[logistikk],
            )
        make_subscriber("abonnent@example.no")
        make_user("staff", email="redaktor@example.no")
        mia = db.session.scalar(db.select(Contact).filter_by(email="mia0@example.no"))
        objection_url = links.unsubscribe_urls([mia.id], {mia.id: logistikk.id})[mia.id]
    login(page, live_server, "redaktor@example.no", PASSWORD)
    page.set_viewport_size({"width": 1440, "height": 1300})
    page.goto(f"{live_server.url}/newsletters/new")
    page.fill("input[name=subject]", "Møtereferat fra Logistikk-nettverket")
    page.fill("textarea[name=body]", "Takk for et godt møte! Referatet følger her.")
    page.select_option("select[name=kind]", "network_mail")
    page.locator("ul#networks li:has-text('Logistikk') input").check()
    from playwright.sync_api import expect

    expect(page.locator("[data-recipient-count]")).to_have_text("4")
    expect(page.locator("[data-basis-counts]")).to_contain_text("Medlemskap i Logistikk: 3")
    expect(page.locator("[data-basis-counts]")).to_contain_text("Samtykke til et tema: 1")
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts_dir / "network-mail-compose.png"), full_page=True)

    path = urllib.parse.urlsplit(objection_url).path
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}{path}")
    page.screenshot(path=str(artifacts_dir / "network-mail-objection.png"), full_page=True)
    page.click("button[type=submit]")
    expect(page.locator("h1")).to_have_text("Du får ikke mer post fra nettverket")
    page.screenshot(path=str(artifacts_dir / "network-mail-objected.png"), full_page=True)
