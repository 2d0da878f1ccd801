"""Composing, previewing and following a newsletter in the browser (test client), the
statistics page and the public archive."""

import email
import email.policy
import re
from datetime import timedelta

import pytest

from crm.audit import AuditEntry
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import record_event
from crm.members.models import Network
from crm.newsletters import compose, ledger, sending, services
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.subscriptions import links
from crm.timeutil import OSLO, utcnow
from tests.factories import make_company, make_newsletter, make_subscriber

BODY = """# Høstseminar

Hei %first_name%, velkommen til **seminar** om [logistikk](/seminar)!
<script>alert("x")</script><a href="javascript:alert(1)" onclick="steal()">klikk</a>

![Kart](https://maps.example.org/kart.png)

- Kongsvinger
- Grue
"""


def test_markdown_is_sanitised_and_gets_a_text_part():
    from crm import create_app

    with create_app().app_context():
        html = compose.body_html(BODY)
        assert "<script" not in html and "javascript:" not in html and "onclick" not in html
        assert '<a href="http://127.0.0.1:5000/seminar"' in html  # absolute in an email
        assert '<img alt="Kart" src="https://maps.example.org/kart.png">' in html
        email = compose.render_email("Emne", "Kort fortalt", BODY)
        assert 'style="' in email.html and "<style" not in email.html  # CSS inlined
        assert "%greeting_html%" in email.html and "%unsubscribe_url%" in email.html
        assert "Kort fortalt" in email.html  # the preheader
        text = email.text
        assert "logistikk (http://127.0.0.1:5000/seminar)" in text
        assert "- Kongsvinger\n- Grue" in text and "[Kart]" in text
        assert "%unsubscribe_url%" in text
        page = compose.page_html(BODY)
        assert "maps.example.org/kart.png" not in page.split("title=")[0]  # not loaded
        assert 'class="remote-image"' in page


def test_compose_saves_a_draft_and_shows_the_recipient_count(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
        make_subscriber("ola@example.no", topics=("logistikk",))
    page = client.get("/newsletters/new")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert 'name="topics"' in html and "data-recipient-count" in html
    assert "<script>" not in html  # only static scripts
    assert client.get("/newsletters/audience?topics=generelt").json["recipients"] == 1
    assert (
        client.get("/newsletters/audience?topics=generelt&topics=logistikk").json["recipients"] == 2
    )
    assert client.get("/newsletters/audience?topics=nope&networks=x").json == {
        "recipients": 0,
        "by_basis": [],
    }

    response = client.post(
        "/newsletters/new",
        data={"subject": "Høstnytt", "preheader": "Kort", "body": BODY, "topics": ["generelt"]},
    )
    assert response.status_code == 302
    with app.app_context():
        newsletter = db.session.scalar(db.select(Newsletter))
        assert (newsletter.subject, newsletter.state, newsletter.topics) == (
            "Høstnytt",
            "draft",
            ["generelt"],
        )
        detail = client.get(response.headers["Location"]).get_data(as_text=True)
        assert "Høstnytt" in detail and "1 mottaker" in detail


def test_bad_input_gets_a_message_and_saves_nothing(app, client, auth):
    auth.login("staff")
    response = client.post("/newsletters/new", data={"subject": "", "body": "", "topics": ["x"]})
    assert response.status_code == 200
    response = client.post("/newsletters/new", data={"subject": "Uten emne", "body": "Tekst"})
    assert "Velg minst ett tema" in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Newsletter.id))) == 0


def test_the_preview_is_the_email_in_a_sandbox(app, client, auth):
    auth.login("staff")
    response = client.post(
        "/newsletters/preview", data={"subject": "Emne", "preheader": "", "body": BODY}
    )
    assert response.status_code == 200
    csp = response.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "frame-ancestors 'self'" in csp and "script-src" not in csp
    html = response.get_data(as_text=True)
    assert "Høstseminar" in html and "<script" not in html
    assert "Hei Staff," in html  # the greeting, with the previewing user's first name
    assert 'class="remote-image"' in html


def test_treasurers_have_no_access(app, client, auth):
    auth.login("treasurer")
    assert client.get("/newsletters").status_code == 403
    assert client.get("/newsletters/new").status_code == 403


def test_send_test_schedule_duplicate_from_the_detail_page(app, client, auth):
    user = auth.login("staff")
    with app.app_context():
        make_subscriber("kari@example.no")
        newsletter_id = make_newsletter(body=BODY).id
    url = f"/newsletters/{newsletter_id}"
    assert client.post(f"{url}/test").status_code == 302
    with app.app_context():
        test_copy = db.session.scalar(db.select(EmailMessage))
        assert test_copy.to_email == user.email and test_copy.subject.startswith("[Testkopi]")
        assert "Hei Staff," in test_copy.text_body and "%" not in test_copy.subject

    tomorrow = (utcnow() + timedelta(days=1)).astimezone(OSLO)
    client.post(f"{url}/schedule", data={"date": tomorrow.strftime("%Y-%m-%d"), "time": "09:00"})
    with app.app_context():
        newsletter = db.session.get(Newsletter, newsletter_id)
        assert newsletter.state == "scheduled"
        assert newsletter.scheduled_at.astimezone(OSLO).hour == 9
    client.post(f"{url}/schedule", data={"date": "2001-01-01", "time": "09:00"})
    client.post(f"{url}/duplicate")
    with app.app_context():
        copies = db.session.scalars(
            db.select(Newsletter).where(Newsletter.duplicated_from_id == newsletter_id)
        ).all()
        assert len(copies) == 1 and copies[0].state == "draft" and copies[0].body == BODY

    assert client.post(f"{url}/send").status_code == 302
    progress = client.get(f"{url}/progress").json
    assert progress["state"] == "sending" and progress["total"] == 1 and progress["pending"] == 1
    assert client.get(f"{url}/edit").status_code == 302  # sent: no more editing


def _event(kind: str, row: NewsletterRecipient, n: int, **extra) -> dict:
    return {
        "event": kind,
        "email": f"x{row.id}@example.no",
        "timestamp": 1700000000 + n,
        "sg_event_id": f"{kind}-{row.id}-{n}",
        "klynge_newsletter": str(row.newsletter_id),
        "klynge_recipient": str(row.id),
        **extra,
    }


def test_statistics_per_network_and_municipality(app, client, auth):
    auth.login("staff")
    with app.app_context():
        logistics = db.session.scalar(db.select(Network).filter_by(name="Logistikk"))
        grue = make_company("Grue Sag AS", municipality_number="3417")
        a = make_subscriber("a@example.no", company_id=grue.id, networks=[logistics])
        b = make_subscriber("b@example.no", company_id=grue.id)
        c = make_subscriber("c@example.no")
        newsletter = make_newsletter()
        services.start_sending(newsletter)
        db.session.commit()
        ledger.mark_sent(
            NewsletterRecipient.newsletter_id == newsletter.id,
            sent_at=utcnow() - timedelta(hours=1),
        )
        db.session.commit()
        by_contact = {r.contact_id: r for r in db.session.scalars(db.select(NewsletterRecipient))}
        n = 0
        for contact, kinds in (
            (a, ["delivered", "open", "click"]),
            (b, ["delivered", "open"]),
            (c, ["bounce"]),
        ):
            for kind in kinds:
                n += 1
                record_event(_event(kind, by_contact[contact.id], n))
        record_event(_event("spamreport", by_contact[b.id], 99))
        db.session.commit()
        links.unsubscribe(db.session.merge(a), ip="192.0.2.9")  # the link in the email
        db.session.commit()
        newsletter_id = newsletter.id

    page = client.get(f"/newsletters/{newsletter_id}/statistics")
    assert page.status_code == 200
    with app.app_context():
        from crm.newsletters import statistics

        totals = statistics.totals(newsletter_id)
        assert (totals.sent, totals.delivered, totals.opened, totals.clicked) == (3, 2, 2, 1)
        assert (totals.bounced, totals.unsubscribed, totals.spam) == (1, 1, 1)
        networks = {
            f.label: (f.sent, f.opened, f.unsubscribed)
            for f in statistics.by_network(newsletter_id)
        }
        assert networks == {"Logistikk": (1, 1, 1)}
        places = {f.label: (f.sent, f.delivered) for f in statistics.by_municipality(newsletter_id)}
        assert places == {"Grue (3417)": (2, 2), "": (1, 0)}


def test_the_public_archive_shows_only_published_newsletters(app, client, auth):
    with app.app_context():
        make_subscriber("kari@example.no")
        published = make_newsletter("Publisert", body=BODY, in_archive=True)
        services.start_sending(published)
        private = make_newsletter("Internt", body=BODY)
        services.start_sending(private)
        draft = make_newsletter("Utkast", in_archive=True)
        db.session.commit()
        ids = (published.id, private.id, draft.id)
    listing = client.get("/nyhetsbrev").get_data(as_text=True)
    assert "Publisert" in listing and "Internt" not in listing and "Utkast" not in listing
    page = client.get(f"/nyhetsbrev/{ids[0]}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Høstseminar" in html and "%first_name%" not in html and "<script>alert" not in html
    assert client.get(f"/nyhetsbrev/{ids[1]}").status_code == 404
    assert client.get(f"/nyhetsbrev/{ids[2]}").status_code == 404


def _sent_newsletter(subject: str = "Publisert", **fields) -> int:
    """A newsletter that has started sending to one subscriber."""
    make_subscriber("kari@example.no")
    newsletter = make_newsletter(subject, **fields)
    services.start_sending(newsletter)
    db.session.commit()
    return newsletter.id


def test_a_first_name_is_escaped_in_the_html_title_and_body_and_raw_in_the_text(
    app, app_ctx, outbox
):
    make_subscriber("kari@example.no", first_name='<b>&"')
    newsletter = make_newsletter(
        "%first_name%, høstnytt", body="Hei igjen %first_name%!", preheader="For %first_name%"
    )
    services.start_sending(newsletter)
    db.session.commit()
    for batch in db.session.scalars(db.select(NewsletterBatch)).all():
        sending.run_batch(batch.id, reschedule=lambda *a: None)

    (path,) = outbox.glob("*.eml")
    message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    html = message.get_body(preferencelist=("html",)).get_content()
    text = message.get_body(preferencelist=("plain",)).get_content()
    # Quotes too: the same value also stands in attributes (title, alt) where a bare
    # quote would end the attribute (tests/test_newsletters_injection.py).
    escaped = "&lt;b&gt;&amp;&quot;"
    assert f"<title>{escaped}, høstnytt</title>" in html
    assert f"Hei igjen {escaped}!" in html and f"Hei {escaped}," in html
    assert f"For {escaped}" in html  # the preheader
    assert "<b>&" not in html and "%first_name" not in html
    assert message["Subject"] == '<b>&", høstnytt'
    assert 'Hei igjen <b>&"!' in text and 'Hei <b>&",' in text


def test_the_detail_page_shows_the_audience_in_words(app, client, auth):
    auth.login("staff")
    with app.app_context():
        make_company("Grue Sag AS", municipality_number="3417")
        newsletter_id = make_newsletter(
            municipalities=("3401", "3417"), roles=("primary", "board"), membership="member"
        ).id
    url = f"/newsletters/{newsletter_id}"

    def facts(html: str) -> dict[str, str]:
        return dict(re.findall(r"<dt>([^<]+)</dt><dd>([^<]*)</dd>", html))

    norwegian = facts(client.get(url).get_data(as_text=True))
    assert norwegian["Kommuner"] == "Kongsvinger (3401), Grue (3417)"
    assert norwegian["Kontaktroller"] == "Hovedkontakter, Styrerepresentanter"
    assert norwegian["Bedrifter"] == "Bare medlemsbedrifter"
    client.post("/language/en", data={"next": url})
    english = facts(client.get(url).get_data(as_text=True))
    assert english["Municipalities"] == "Kongsvinger (3401), Grue (3417)"
    assert english["Contact roles"] == "Primary contacts, Board representatives"


@pytest.mark.parametrize(
    ("seconds", "norwegian", "english"),
    [(42, "42 s", "42 s"), (185, "3 min 5 s", "3 min 5 s"), (7830, "2 t 10 min", "2 h 10 min")],
)
def test_the_time_left_is_worded_alike_on_the_page_and_in_the_json(
    app, client, auth, monkeypatch, seconds, norwegian, english
):
    auth.login("staff")
    with app.app_context():
        newsletter_id = _sent_newsletter()
    progress = services.progress
    monkeypatch.setattr(
        services, "progress", lambda n: {**progress(n), "rate": 1.0, "eta_seconds": seconds}
    )
    url = f"/newsletters/{newsletter_id}"
    eta = re.compile(r'data-progress="eta"[^>]*>([^<]*)<')
    for words in (norwegian, english):
        assert eta.search(client.get(url).get_data(as_text=True)).group(1) == words
        assert client.get(f"{url}/progress").json["time_left"] == words
        client.post("/language/en", data={"next": url})


def test_the_archive_reads_well_without_a_name(app, client):
    body = "Hei %first_name%,\n\nVi ses, %first_name%!\n\n%first_name%, husk påmeldingen."
    with app.app_context():
        newsletter_id = _sent_newsletter("%first_name%, dette skjer", body=body, in_archive=True)
    listing = client.get("/nyhetsbrev").get_data(as_text=True)
    assert ">dette skjer</a>" in listing
    html = client.get(f"/nyhetsbrev/{newsletter_id}").get_data(as_text=True)
    assert "<p>Hei,</p>" in html and "<p>Vi ses!</p>" in html
    assert "<p>husk påmeldingen.</p>" in html and "<h1>dette skjer</h1>" in html
    assert "%first_name%" not in html and " ," not in html


def test_without_name_leaves_no_stray_comma_or_space(app_ctx):
    cases = {
        "Hei %first_name%,": "Hei,",
        "Hei %first_name%!": "Hei!",
        "Takk, %first_name%.": "Takk.",
        "Vi inviterer deg, %first_name%, til seminar": "Vi inviterer deg, til seminar",
        "%first_name%, velkommen": "velkommen",
        "<p>%first_name%: nytt</p>": "<p>nytt</p>",
        "%greeting%": "Hei,",
    }
    assert {text: compose.without_name(text) for text in cases} == cases


def test_a_sent_newsletter_is_published_and_withdrawn_from_the_archive(app, client, auth):
    user = auth.login("staff")
    with app.app_context():
        newsletter_id = _sent_newsletter("Vårnytt")
    url = f"/newsletters/{newsletter_id}"
    assert "Vårnytt" not in client.get("/nyhetsbrev").get_data(as_text=True)
    assert "Publiser i arkivet" in client.get(url).get_data(as_text=True)

    page = client.post(f"{url}/publish", follow_redirects=True).get_data(as_text=True)
    assert "Nyhetsbrevet er publisert i det offentlige arkivet." in page
    assert "Trekk tilbake fra arkivet" in page
    assert "Vårnytt" in client.get("/nyhetsbrev").get_data(as_text=True)
    assert client.get(f"/nyhetsbrev/{newsletter_id}").status_code == 200

    page = client.post(f"{url}/withdraw", follow_redirects=True).get_data(as_text=True)
    assert "Nyhetsbrevet er trukket tilbake fra det offentlige arkivet." in page
    assert "Vårnytt" not in client.get("/nyhetsbrev").get_data(as_text=True)
    assert client.get(f"/nyhetsbrev/{newsletter_id}").status_code == 404
    with app.app_context():
        changes = db.session.scalars(
            db.select(AuditEntry.changes)
            .where(AuditEntry.record_type == "newsletter", AuditEntry.record_id == newsletter_id)
            .where(AuditEntry.user_id == user.id)
            .order_by(AuditEntry.id)
        ).all()
        assert [c["in_archive"] for c in changes if "in_archive" in c] == [
            [False, True],
            [True, False],
        ]


def test_publishing_needs_staff_a_sent_newsletter_and_a_csrf_token(app, client, auth):
    with app.app_context():
        sent_id = _sent_newsletter()
        draft_id = make_newsletter("Utkast").id
    auth.login("treasurer")
    assert client.post(f"/newsletters/{sent_id}/publish").status_code == 403
    assert client.post(f"/newsletters/{sent_id}/withdraw").status_code == 403
    auth.logout()
    auth.login("staff")
    page = client.post(f"/newsletters/{draft_id}/publish", follow_redirects=True)
    assert "Rediger nyhetsbrevet for å velge om det skal publiseres." in page.get_data(as_text=True)
    app.config["WTF_CSRF_ENABLED"] = True  # the `clean` fixture turns it off again
    assert client.post(f"/newsletters/{sent_id}/publish").status_code == 400
    with app.app_context():
        assert not any(db.session.scalars(db.select(Newsletter.in_archive)))
