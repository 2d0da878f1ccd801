"""A visitor signs up through the public form, confirms by email and leaves in one click.

The end-to-end test uses only HTTP (the Flask test client, CSRF on) and a real RQ
worker writing to the outbox, like `scripts/subscribe_smoke.py` does against `make run`.
"""

import re
import urllib.parse

import pytest
from werkzeug.datastructures import MultiDict

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import render_stored
from crm.members.models import Contact
from crm.subscriptions import ledger, links, subscribers, tokens, topics
from crm.subscriptions.models import ConsentEvent, PendingSignup
from scripts.subscribe_smoke import (
    CONFIRM_LINK,
    fill_signup,
    parse_forms,
    read_outbox,
    signup_form,
    text_of,
)
from tests.factories import make_contact, make_subscriber, run_signup_job


@pytest.fixture
def quick_forms(app, monkeypatch):
    """Tests fill the form in at machine speed; the minimum fill time has its own test."""
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)


def subscribe(
    client,
    name="Kari Nordmann",
    email="kari@example.no",
    ip="198.51.100.7",
    headers=None,
    **extra,
):
    page = client.get("/subscribe")
    form = signup_form(page.get_data(as_text=True))
    fields = fill_signup(form, name, email)
    fields = [(k, v) for k, v in fields if k not in extra] + list(extra.items())
    return client.post(
        form["action"],
        data=MultiDict(fields),
        environ_base={"REMOTE_ADDR": ip},
        follow_redirects=True,
        headers=headers or {},
    )


def confirmation_path(app) -> str:
    run_signup_job(app)
    with app.app_context():
        message = db.session.scalar(
            db.select(EmailMessage).where(EmailMessage.template == "subscriptions/confirm")
        )
        render_stored(message)  # written by the send job, as the worker would (not saved)
        return urllib.parse.urlsplit(CONFIRM_LINK.search(message.text_body).group(0)).path


def test_visitor_subscribes_confirms_and_unsubscribes_over_http_with_a_real_worker(
    app, client, run_worker, outbox, quick_forms
):
    app.config["WTF_CSRF_ENABLED"] = True  # as in production

    page = client.get("/subscribe")
    assert page.status_code == 200
    form = signup_form(page.get_data(as_text=True))
    response = client.post(
        form["action"],
        data=MultiDict(fill_signup(form, "Kari Nordmann", "kari@example.no")),
        follow_redirects=True,
    )
    assert response.status_code == 200
    assert "Sjekk innboksen" in response.get_data(as_text=True)

    run_worker()
    [confirmation] = read_outbox(outbox, "kari@example.no", since=0)
    assert confirmation["Subject"] == "Bekreft påmeldingen til nyhetsbrevet"
    link = CONFIRM_LINK.search(text_of(confirmation)).group(0)
    assert link.startswith("http://127.0.0.1:5000/subscribe/confirm/")
    path = urllib.parse.urlsplit(link).path

    # Opening the link (what a mail scanner does) shows a button and confirms nothing.
    page = client.get(path)
    assert page.status_code == 200
    [button_form] = [f for f in parse_forms(page.get_data(as_text=True)) if f["method"] == "post"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ConsentEvent.id))) == 0
    response = client.post(button_form["action"], data=MultiDict(button_form["fields"]))
    assert response.status_code == 200
    assert "Du er påmeldt" in response.get_data(as_text=True)

    run_worker()
    welcome = next(
        m
        for m in read_outbox(outbox, "kari@example.no", 0)
        if m is not confirmation and "Velkommen" in m["Subject"]
    )
    assert welcome["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = re.fullmatch(
        r"<(http://127\.0\.0\.1:5000/unsubscribe/\S+)>", welcome["List-Unsubscribe"].strip()
    ).group(1)
    assert unsubscribe_url in text_of(welcome)  # the visible link too

    # RFC 8058 one-click: a fresh client (no cookie, no CSRF token), one POST.
    response = app.test_client().post(
        urllib.parse.urlsplit(unsubscribe_url).path,
        data=b"List-Unsubscribe=One-Click",
        content_type="application/x-www-form-urlencoded",
    )
    assert response.status_code == 200
    with app.app_context():
        contact = db.session.scalar(db.select(Contact).filter_by(email="kari@example.no"))
        assert (contact.first_name, contact.last_name) == ("Kari", "Nordmann")
        events = db.session.scalars(db.select(ConsentEvent).order_by(ConsentEvent.id)).all()
        assert [(e.kind, e.source) for e in events] == [
            ("granted", "web_form"),
            ("confirmed", "email_link"),
            ("withdrawn", "email_link"),
        ]
        assert events[0].wording.version == 1 and events[0].ip == "127.0.0.1"
        assert ledger.subscribed_topics(contact) == []


def test_known_and_unknown_addresses_get_identical_answers(app, client, quick_forms):
    with app.app_context():
        make_subscriber("known@example.no")
    known = subscribe(client, email="known@example.no")
    unknown = subscribe(client, email="nobody@example.no")
    assert known.status_code == unknown.status_code == 200
    assert known.get_data() == unknown.get_data()

    # Only the date and the per-IP rate-limit counters (and their seconds to reset, which
    # tick over between the two requests) may differ.
    def same(headers):
        varying = ("Date", "Retry-After")
        return {k: v for k, v in headers if k not in varying and not k.startswith("X-RateLimit")}

    assert same(known.headers) == same(unknown.headers)


def test_signup_for_a_known_address_adds_no_duplicate_contact(app, client, quick_forms):
    with app.app_context():
        existing = make_contact("Ola", "Medlem", email="ola@example.no")
    subscribe(client, name="Someone Else", email="OLA@example.no", topics="logistikk")
    client.post(confirmation_path(app))
    with app.app_context():
        contacts = db.session.scalars(db.select(Contact)).all()
        assert [c.id for c in contacts] == [existing.id]
        assert contacts[0].first_name == "Ola"  # a form never renames a known person
        assert [t.slug for t in ledger.subscribed_topics(contacts[0])] == ["logistikk"]


def test_nothing_enters_the_register_before_confirmation(app, client, quick_forms):
    subscribe(client, email="maybe@example.no")
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Contact.id))) == 0
        assert db.session.scalar(db.select(db.func.count(ConsentEvent.id))) == 0
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 1


def test_confirming_twice_changes_nothing_and_sends_one_welcome(app, client, quick_forms):
    subscribe(client)
    path = confirmation_path(app)
    assert client.post(path).status_code == 200
    assert client.post(path).status_code == 200
    assert client.get(path).status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(ConsentEvent.id))) == 2
        welcomes = db.session.scalars(
            db.select(EmailMessage).where(EmailMessage.template == "subscriptions/welcome")
        ).all()
        assert len(welcomes) == 1
        assert welcomes[0].headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_tampered_and_expired_links_get_a_friendly_page(app, client, quick_forms):
    subscribe(client)
    path = confirmation_path(app)
    token = path.rsplit("/", 1)[1]
    tampered = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
    for url in (tampered, "/subscribe/confirm/nonsense", "/unsubscribe/x.y", "/preferences/zz"):
        response = client.get(url)
        assert response.status_code == 404
        assert "Lenken virker ikke lenger" in response.get_data(as_text=True)
        assert client.post(url).status_code == 404
    with app.test_request_context():
        claim = tokens.read_confirm_token(token)
        assert claim.pending_id
        with pytest.raises(tokens.TokenExpired):
            tokens.read_confirm_token(token, max_age=-1)
    # An unsubscribe token is no confirmation token, and the other way round.
    with app.app_context():
        contact = make_subscriber("ola@example.no")
        link = links.link_token(contact)
    assert client.get(f"/subscribe/confirm/{link}").status_code == 404
    assert client.get(f"/unsubscribe/{token}").status_code == 404


def test_expired_confirmation_link_says_so(app, client, quick_forms, monkeypatch):
    subscribe(client)
    path = confirmation_path(app)
    monkeypatch.setattr(tokens, "CONFIRM_MAX_AGE", -1)
    response = client.get(path)
    assert response.status_code == 410
    assert "utløpt" in response.get_data(as_text=True)


def test_honeypot_and_too_fast_submissions_look_accepted_but_send_nothing(app, client):
    # The minimum fill time is on (default 2 s): a submission right after loading is a bot.
    fast = subscribe(client, email="fast@example.no")
    app.config["SUBSCRIBE_MIN_FILL_SECONDS"] = 0
    try:
        honeypot = subscribe(client, email="bot@example.no", website="http://spam.example")
        forged = subscribe(client, email="forged@example.no", started="subscribe.AAAA.BBBB")
        real = subscribe(client, email="real@example.no")
    finally:
        app.config["SUBSCRIBE_MIN_FILL_SECONDS"] = 2.0
    assert fast.get_data() == honeypot.get_data() == forged.get_data() == real.get_data()
    with app.app_context():
        addresses = db.session.scalars(db.select(PendingSignup.email)).all()
        assert addresses == ["real@example.no"]


def test_form_errors_are_shown_and_nothing_is_sent(app, client, quick_forms):
    response = subscribe(client, email="not-an-address", consent="")
    body = response.get_data(as_text=True)
    assert response.status_code == 200
    assert "Skriv inn en gyldig e-postadresse." in body
    assert "Kryss av for å bekrefte samtykket." in body
    response = subscribe(client, topics="")
    assert "Velg minst ett tema." in response.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 0


def test_each_signup_in_a_row_is_checked_and_shown_on_its_own(app, client, quick_forms):
    # One after another, as one server thread takes them: nothing of the signup before
    # (its values, its errors, its acceptance) shows in the next one's answer or row.
    assert "Sjekk innboksen din" in subscribe(client, "Kari Nordmann", "kari@example.no").get_data(
        as_text=True
    )
    body = subscribe(client, "Ola Hansen", "ola@example.no", consent="").get_data(as_text=True)
    assert "Kryss av for å bekrefte samtykket." in body
    assert 'value="Ola Hansen"' in body and "Kari" not in body
    body = subscribe(client, "", "per@example.no").get_data(as_text=True)
    assert "Skriv inn navnet ditt." in body and "Kryss av" not in body
    assert "Sjekk innboksen din" in subscribe(client, "Per Olsen", "per@example.no").get_data(
        as_text=True
    )
    with app.app_context():
        rows = db.session.execute(db.select(PendingSignup.email, PendingSignup.first_name))
        assert sorted(rows) == [("kari@example.no", "Kari"), ("per@example.no", "Per")]


def test_the_wording_shown_is_the_wording_stored(app, client, quick_forms):
    with app.app_context():
        topics.current_wording()
        old = topics.wording_by_version(1)
        page = client.get("/subscribe")
        assert old.text_nb in page.get_data(as_text=True)
        topics.add_wording("Ny tekst v2.", "New text v2.")
        db.session.commit()
    # The form was shown with version 1 and is posted after version 2 appeared.
    form = signup_form(page.get_data(as_text=True))
    client.post(form["action"], data=MultiDict(fill_signup(form, "Kari N", "kari@example.no")))
    client.post(confirmation_path(app))
    with app.app_context():
        granted = db.session.scalar(db.select(ConsentEvent).filter_by(kind="granted"))
        assert granted.wording.version == 1
    assert "Ny tekst v2." in client.get("/subscribe").get_data(as_text=True)


def test_signup_is_rate_limited_per_ip_and_silently_per_address(app, client, quick_forms):
    statuses = [
        subscribe(client, email=f"p{i}@example.no", ip="203.0.113.9").status_code for i in range(12)
    ]
    assert statuses[0] == 200 and statuses[-1] == 429
    answers = [
        subscribe(client, email="target@example.no", ip=f"203.0.113.{20 + i}") for i in range(6)
    ]
    assert {a.status_code for a in answers} == {200}
    assert len({a.get_data() for a in answers}) == 1
    run_signup_job(app)
    with app.app_context():
        sent = db.session.scalar(
            db.select(db.func.count(EmailMessage.id)).where(
                EmailMessage.to_email == "target@example.no"
            )
        )
        assert sent == 3


def test_role_addresses_are_flagged_as_company_addresses(app, client, quick_forms):
    subscribe(client, name="Firmapost", email="post@bedrift.example.no")
    client.post(confirmation_path(app))
    with app.app_context():
        contact = db.session.scalar(db.select(Contact))
        assert subscribers.is_company_address(contact)
        person = make_contact(email="kari@bedrift.example.no")
        assert not subscribers.is_company_address(person)


def test_only_the_embedded_form_may_be_framed(client):
    embedded = client.get("/subscribe?embed=1")
    assert "frame-ancestors *" in embedded.headers["Content-Security-Policy"]
    assert "X-Frame-Options" not in embedded.headers
    body = embedded.get_data(as_text=True)
    assert 'class="public embed"' in body and "public-top" not in body
    assert 'action="/subscribe?embed=1"' in body
    normal = client.get("/subscribe")
    assert "frame-ancestors 'none'" in normal.headers["Content-Security-Policy"]
    assert client.get("/unsubscribe/x?embed=1").headers["X-Frame-Options"] == "DENY"


def test_public_pages_have_no_staff_menu_and_switch_to_english(client):
    page = client.get("/subscribe").get_data(as_text=True)
    assert "mainnav" not in page and 'class="public"' in page
    assert "Vi holder deg oppdatert" in page
    english = client.get("/subscribe?lang=en").get_data(as_text=True)
    assert "Stay updated" in english and 'action="/subscribe?lang=en"' in english
    assert "General news" in english


def test_expired_signups_are_purged_by_a_background_job(app, client, run_worker, quick_forms):
    from datetime import timedelta

    from crm.timeutil import utcnow

    with app.app_context():
        topics.current_wording()
        db.session.add(
            PendingSignup(
                nonce="old",
                email="old@example.no",
                wording_id=topics.current_wording().id,
                created_at=utcnow() - timedelta(days=5),
            )
        )
        db.session.commit()
    subscribe(client, email="new@example.no")
    run_worker()
    with app.app_context():
        assert db.session.scalars(db.select(PendingSignup.email)).all() == ["new@example.no"]


def test_a_signup_form_token_starts_one_signup_only(app, client, quick_forms):
    with app.test_request_context():
        started = tokens.make_form_token()
    first = subscribe(client, email="first@example.no", started=started)
    replayed = subscribe(client, email="second@example.no", started=started)
    assert first.get_data() == replayed.get_data()  # the same friendly answer
    with app.app_context():
        addresses = db.session.scalars(db.select(PendingSignup.email)).all()
    assert addresses == ["first@example.no"]


def test_a_signup_form_token_stays_used_when_redis_forgets(app, client, quick_forms):
    # Redis here keeps nothing on disk: a restart must not let an old form start again.
    from crm.queue import get_redis

    with app.test_request_context():
        started = tokens.make_form_token()
    subscribe(client, email="first@example.no", started=started)
    get_redis(app).flushdb()
    subscribe(client, email="second@example.no", started=started)
    run_signup_job(app)
    with app.app_context():
        addresses = db.session.scalars(db.select(PendingSignup.email)).all()
        confirmations = db.session.scalars(db.select(EmailMessage.to_email)).all()
    assert addresses == ["first@example.no"]
    assert confirmations == ["first@example.no"]


def test_an_old_signup_form_token_has_expired(app, client, quick_forms, monkeypatch):
    with app.test_request_context():
        started = tokens.make_form_token()
    monkeypatch.setattr(tokens, "FORM_MAX_AGE", -1)
    subscribe(client, email="late@example.no", started=started)
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 0


def test_a_form_signed_before_the_secret_key_changed_starts_nothing(
    app, client, quick_forms, monkeypatch
):
    # The form tokens' signer is kept per process: it must follow the key it signs with.
    with app.test_request_context():
        started = tokens.make_form_token()
    monkeypatch.setitem(app.config, "SECRET_KEY", "a-new-secret-key")
    with app.test_request_context():
        fresh = tokens.make_form_token()
    old_form = subscribe(client, email="old@example.no", started=started)
    new_form = subscribe(client, email="new@example.no", started=fresh)
    assert old_form.get_data() == new_form.get_data()  # the same friendly answer
    with app.app_context():
        addresses = db.session.scalars(db.select(PendingSignup.email)).all()
    assert addresses == ["new@example.no"]


def _queued_jobs(app, name: str) -> list[str]:
    from crm.queue import get_queue
    from crm.subscriptions.tasks import wait_for_wakes

    assert wait_for_wakes()  # the wake-up is sent from a thread, after the answer
    with app.app_context():
        return [j.func_name for j in get_queue("mail").jobs if j.func_name.endswith(name)]


def test_a_signup_stores_its_row_and_the_job_writes_exactly_one_confirmation(
    app, client, quick_forms
):
    assert subscribe(client, email="once@example.no").status_code == 200
    with app.app_context():
        [pending] = db.session.scalars(db.select(PendingSignup)).all()
        assert pending.confirmation_queued_at is None  # the visitor waited for this row only
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 0
    assert len(_queued_jobs(app, "send_confirmations")) == 1

    assert run_signup_job(app) == 1
    assert run_signup_job(app) == 0  # a second run (or a second worker) finds it done
    with app.app_context():
        [message] = db.session.scalars(db.select(EmailMessage)).all()
        pending = db.session.scalar(db.select(PendingSignup))
        assert pending.confirmation_queued_at is not None
        assert message.key == f"confirm:{pending.id}:{pending.nonce}"
        assert (message.to_email, message.to_name) == ("once@example.no", "Kari Nordmann")
        render_stored(message)
        link = CONFIRM_LINK.search(message.text_body).group(0)
        claim = tokens.read_confirm_token(link.rsplit("/", 1)[1])
        assert (claim.pending_id, claim.nonce) == (pending.id, pending.nonce)
    # Its send job was queued by the commit, as for any email.
    assert len(_queued_jobs(app, "send_message")) == 1


def test_one_queued_run_covers_every_signup_until_it_starts(app, client, quick_forms):
    for n in range(3):
        subscribe(client, email=f"burst{n}@example.no", ip=f"198.51.100.{n + 1}")
    assert len(_queued_jobs(app, "send_confirmations")) == 1  # not one per signup
    assert run_signup_job(app) == 3
    subscribe(client, email="later@example.no", ip="198.51.100.9")
    assert len(_queued_jobs(app, "send_confirmations")) == 2  # the run cleared the key
    assert run_signup_job(app) == 1
    with app.app_context():
        sent = db.session.scalars(db.select(EmailMessage.to_email)).all()
    assert sorted(sent) == ["burst0@example.no", "burst1@example.no", "burst2@example.no"] + [
        "later@example.no"
    ]


def test_signups_close_together_share_one_wake_up_sent_at_once_for_whoever_waits(
    app, client, quick_forms, monkeypatch
):
    import time

    import redis

    from crm.subscriptions import tasks

    commands = []
    real_set = redis.Redis.set

    def counting_set(self, name, *args, **kwargs):
        commands.append(name)
        return real_set(self, name, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "set", counting_set)
    monkeypatch.setattr(tasks, "WAKE_LINGER_SECONDS", 30.0)
    for n in range(3):
        subscribe(client, email=f"close{n}@example.no", ip=f"198.51.100.{n + 1}")
    started = time.monotonic()
    assert tasks.wait_for_wakes()
    assert time.monotonic() - started < 5  # not the 30 s linger
    assert commands == [tasks.CONFIRMATIONS_DUE]  # one command for the three
    assert len(_queued_jobs(app, "send_confirmations")) == 1


def test_a_signup_whose_wake_up_was_lost_still_gets_its_email(
    app, client, run_worker, outbox, quick_forms
):
    from datetime import timedelta

    from crm.queue import get_redis
    from crm.timeutil import utcnow

    subscribe(client, email="stray@example.no")
    assert _queued_jobs(app, "send_confirmations")
    get_redis(app).flushdb()  # Redis restarted: the queued run is gone
    run_worker()
    assert read_outbox(outbox, "stray@example.no", since=0) == []  # too recent to be stray
    with app.app_context():
        pending = db.session.scalar(db.select(PendingSignup))
        pending.created_at = utcnow() - timedelta(minutes=2)
        db.session.commit()
    run_worker()  # the workers' hook finds it
    [confirmation] = read_outbox(outbox, "stray@example.no", since=0)
    assert confirmation["Subject"] == "Bekreft påmeldingen til nyhetsbrevet"
    run_worker()
    assert len(read_outbox(outbox, "stray@example.no", since=0)) == 1


def test_a_signup_stands_when_redis_is_away_and_the_hook_wakes_the_job_later(
    app, client, quick_forms, monkeypatch
):
    from datetime import timedelta

    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    from crm.subscriptions import tasks

    # No retries: redis-py's default (10, with backoff) spends a random 0–5 s on each
    # command, and then the wake-up outlasts `wait_for_wakes` now and then.
    away = redis.Redis(
        host="127.0.0.1",
        port=1,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    monkeypatch.setattr(tasks, "get_redis", lambda: away)
    warnings = []
    monkeypatch.setattr(tasks.log, "warning", lambda message, **_: warnings.append(message))
    response = subscribe(client, email="patient@example.no")
    assert response.status_code == 200 and "Sjekk innboksen" in response.get_data(as_text=True)
    assert tasks.wait_for_wakes()
    assert warnings == ["could not wake the confirmation emails' job"]
    assert _queued_jobs(app, "send_confirmations") == []
    with app.app_context():
        assert db.session.scalar(db.select(PendingSignup.email)) == "patient@example.no"

    monkeypatch.undo()  # Redis is back; a worker's hook finds the stray signup
    monkeypatch.setattr(tasks, "STRAY_SIGNUP_AGE", timedelta(0))
    tasks.confirmations_tick(app)
    assert len(_queued_jobs(app, "send_confirmations")) == 1
    assert run_signup_job(app) == 1
