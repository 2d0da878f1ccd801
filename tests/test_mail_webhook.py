"""SendGrid's signed event webhook: authenticity, freshness, replays, suppression."""

import base64
import json
import time
import unicodedata
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import event as sa_event
from sqlalchemy import func

from crm.extensions import db
from crm.mail import services
from crm.mail.models import EmailEvent, EmailMessage, Suppression
from crm.members.models import Contact
from crm.members.normalize import normalize_email
from tests.factories import make_contact, make_user
from tests.migrating import insert_row, migrated_to

URL = "/webhooks/sendgrid"


class Signer:
    """A key pair like the one SendGrid signs with; the public half as SendGrid shows it."""

    def __init__(self):
        self.private_key = ec.generate_private_key(ec.SECP256R1())
        der = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public_key = base64.b64encode(der).decode()

    def headers(self, body: bytes, timestamp: int | None = None) -> dict:
        timestamp = str(int(time.time()) if timestamp is None else timestamp)
        signature = self.private_key.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            "X-Twilio-Email-Event-Webhook-Signature": base64.b64encode(signature).decode(),
            "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
            "Content-Type": "application/json",
        }


@pytest.fixture
def signer(app, monkeypatch):
    signer = Signer()
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key)
    return signer


@pytest.fixture
def message(app):
    with app.test_request_context():
        message = services.queue_email("kari@example.no", "mail/test", {"name": "Kari"})
        message.state = "sent"
        message.provider_message_id = "abc123"
        db.session.commit()
        return {"id": message.id, "uuid": message.uuid}


def event(kind: str, sg_event_id: str, message=None, **fields) -> dict:
    data = {
        "email": "kari@example.no",
        "timestamp": int(time.time()),
        "event": kind,
        "sg_event_id": sg_event_id,
        "sg_message_id": "abc123.filterdrecv-1-2",
    }
    if message:
        data["klynge_message_id"] = message["uuid"]
    data.update(fields)
    return data


def post(client, signer, events, timestamp=None, body=None):
    body = json.dumps(events).encode() if body is None else body
    return client.post(URL, data=body, headers=signer.headers(body, timestamp))


def state_of(app, message) -> str:
    with app.app_context():
        return db.session.get(EmailMessage, message["id"]).state


def count(app, model) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count()).select_from(model))


def test_signed_delivery_event_is_accepted_and_moves_the_message(app, client, signer, message):
    response = post(client, signer, [event("delivered", "ev-1", message)])
    assert response.status_code == 200
    assert response.get_json() == {"received": 1, "new": 1, "duplicates": 0, "failed": 0}
    assert state_of(app, message) == "delivered"
    with app.app_context():
        stored = db.session.scalar(db.select(EmailEvent))
        assert stored.message_id == message["id"] and stored.raw["sg_event_id"] == "ev-1"
        assert db.session.get(EmailMessage, message["id"]).delivered_at is not None


def test_events_are_matched_by_sendgrid_message_id_without_custom_args(
    app, client, signer, message
):
    assert post(client, signer, [event("open", "ev-2")]).status_code == 200
    assert state_of(app, message) == "opened"


def test_tampered_unsigned_stale_or_future_requests_get_403(app, client, signer, message):
    body = json.dumps([event("bounce", "ev-3", message)]).encode()
    headers = signer.headers(body)
    tampered = body.replace(b"kari@", b"ola@")
    assert client.post(URL, data=tampered, headers=headers).status_code == 403
    assert client.post(URL, data=body).status_code == 403
    stale = signer.headers(body, timestamp=int(time.time()) - 301)
    assert client.post(URL, data=body, headers=stale).status_code == 403
    future = signer.headers(body, timestamp=int(time.time()) + 120)
    assert client.post(URL, data=body, headers=future).status_code == 403
    other_key = Signer().headers(body)
    assert client.post(URL, data=body, headers=other_key).status_code == 403
    garbage = dict(headers, **{"X-Twilio-Email-Event-Webhook-Signature": "not base64!"})
    assert client.post(URL, data=body, headers=garbage).status_code == 403
    assert count(app, EmailEvent) == 0 and count(app, Suppression) == 0
    assert state_of(app, message) == "sent"


def test_without_a_configured_key_every_request_is_refused(app, client, message, monkeypatch):
    signer = Signer()
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", "")
    assert post(client, signer, [event("delivered", "ev-4", message)]).status_code == 403
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", "not a key")
    assert post(client, signer, [event("delivered", "ev-4", message)]).status_code == 403
    assert count(app, EmailEvent) == 0


def test_a_replayed_event_changes_nothing(app, client, signer, message):
    calls = []
    handler = services.register_event_handler(lambda e, m: calls.append(e["sg_event_id"]))
    try:
        events = [event("bounce", "ev-5", message, reason="550 no such user")]
        assert post(client, signer, events).get_json()["new"] == 1
        with app.app_context():
            db.session.execute(db.delete(Suppression))  # staff lifted it in between
            db.session.commit()
        replay = post(client, signer, events)
    finally:
        services.unregister_event_handler(handler)
    assert replay.status_code == 200
    assert replay.get_json() == {"received": 1, "new": 0, "duplicates": 1, "failed": 0}
    assert calls == ["ev-5"]
    assert count(app, EmailEvent) == 1 and count(app, Suppression) == 0


def test_bounce_suppresses_the_address_and_calls_handlers(app, client, signer, message):
    seen = []

    def handler(event, message):
        seen.append((event["event"], message.id if message else None))

    services.register_event_handler(handler)
    try:
        response = post(
            client,
            signer,
            [event("bounce", "ev-6", message, reason="550 5.1.1 unknown user", type="bounce")],
        )
    finally:
        services.unregister_event_handler(handler)
    assert response.status_code == 200
    assert seen == [("bounce", message["id"])]
    with app.app_context():
        assert services.is_suppressed("Kari@Example.no")
        suppression = db.session.scalar(db.select(Suppression))
        assert (suppression.reason, suppression.detail) == ("bounce", "550 5.1.1 unknown user")
        msg = db.session.get(EmailMessage, message["id"])
        assert msg.state == "bounced" and msg.last_error == "550 5.1.1 unknown user"


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("dropped", "dropped"), ("spamreport", "spamreport"), ("unsubscribe", "unsubscribe")],
)
def test_drops_complaints_and_unsubscribes_suppress_the_address(
    app, client, signer, message, kind, reason
):
    assert post(client, signer, [event(kind, f"ev-{kind}", message)]).status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(Suppression.reason)) == reason


def test_a_soft_blocked_bounce_does_not_suppress(app, client, signer, message):
    post(client, signer, [event("bounce", "ev-7", message, type="blocked")])
    with app.app_context():
        assert not services.is_suppressed("kari@example.no")


def test_late_events_never_move_a_message_backwards(app, client, signer, message):
    post(client, signer, [event("bounce", "ev-8", message), event("delivered", "ev-9", message)])
    assert state_of(app, message) == "bounced"
    post(client, signer, [event("processed", "ev-10", message)])
    assert state_of(app, message) == "bounced"


def test_unknown_event_types_are_stored_not_fatal(app, client, signer, message):
    response = post(client, signer, [event("group_resubscribe", "ev-11"), {"event": 5}])
    assert response.status_code == 200 and response.get_json()["new"] == 2
    assert state_of(app, message) == "sent"


def test_signed_but_malformed_bodies_get_400(client, signer):
    assert post(client, signer, None, body=b"{not json").status_code == 400
    assert post(client, signer, {"event": "delivered"}).status_code == 400
    assert post(client, signer, [1, 2]).status_code == 400


def test_a_failing_handler_answers_503_so_sendgrid_retries(app, client, signer, message):
    def broken(event, message):
        raise RuntimeError("boom")

    services.register_event_handler(broken)
    try:
        first = post(client, signer, [event("delivered", "ev-12", message)])
    finally:
        services.unregister_event_handler(broken)
    assert first.status_code == 503
    assert count(app, EmailEvent) == 0 and state_of(app, message) == "sent"
    again = post(client, signer, [event("delivered", "ev-12", message)])
    assert again.status_code == 200 and state_of(app, message) == "delivered"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=20), children, max_size=4)
    ),
    max_leaves=12,
)
event_like = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["bounce", "delivered", "open", "dropped", "x"]) | st.text(),
        "email": st.text(max_size=300) | st.integers(),
        "timestamp": json_values,
        "sg_event_id": st.text(max_size=150) | st.integers(),
        "sg_message_id": json_values,
        "klynge_message_id": json_values,
        "reason": json_values,
        "type": st.text(max_size=10),
    },
)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.lists(event_like, max_size=4) | json_values)
def test_signed_garbage_never_gives_a_server_error(client, signer, body):
    response = post(client, signer, body)
    assert response.status_code in (200, 400), response.get_data(as_text=True)


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=st.binary(max_size=200))
def test_unsigned_garbage_is_refused(client, signer, body):
    assert client.post(URL, data=body).status_code == 403


def test_nul_bytes_lone_surrogates_and_nan_are_handled(app, client, signer):
    body = (
        b'[{"event": "bounce\\u0000", "email": "a\\ud800@example.no", "sg_event_id": "e\\u0000"}]'
    )
    assert post(client, signer, None, body=body).status_code == 200
    assert post(client, signer, None, body=b'[{"timestamp": NaN}]').status_code == 400
    assert count(app, EmailEvent) == 1


def _messages(app, n: int, start: int = 0) -> list[dict]:
    with app.test_request_context():
        made = []
        for i in range(start, start + n):
            message = services.queue_email(f"person{i}@example.no", "mail/test", {"name": "P"})
            message.state = "sent"
            message.provider_message_id = f"prov{i}"
            made.append(message)
        db.session.commit()
        return [{"id": m.id, "uuid": m.uuid, "i": i} for i, m in enumerate(made, start)]


def _mixed_events(messages: list[dict], tag: str) -> list[dict]:
    """Per message: delivered (by our id), open twice (by SendGrid's id), and for the
    first a bounce; plus an event that names no message and one repeated in the body."""
    events = []
    for m in messages:
        email = f"person{m['i']}@example.no"
        events.append(event("delivered", f"{tag}-d{m['i']}", m, email=email))
        for n in range(2):
            events.append(
                event("open", f"{tag}-o{m['i']}-{n}", email=email, sg_message_id=f"prov{m['i']}.x")
            )
    first = messages[0]
    events.append(event("bounce", f"{tag}-b", first, email=f"person{first['i']}@example.no"))
    events.append(event("delivered", f"{tag}-stray", email="nobody@example.no", sg_message_id=""))
    events.append(dict(events[0]))
    return events


def test_a_large_delivery_asks_no_more_queries_than_a_small_one(app, client, signer):
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        statements.append(statement)

    small, large = _messages(app, 3), _messages(app, 30, start=3)
    with app.app_context():
        engine = db.engine
    sa_event.listen(engine, "before_cursor_execute", count)
    try:
        first = post(client, signer, _mixed_events(small, "s"))
        few = len(statements)
        statements.clear()
        second = post(client, signer, _mixed_events(large, "l"))
        many = len(statements)
    finally:
        sa_event.remove(engine, "before_cursor_execute", count)
    assert first.get_json() == {"received": 12, "new": 11, "duplicates": 1, "failed": 0}
    assert second.get_json() == {"received": 93, "new": 92, "duplicates": 1, "failed": 0}
    assert many == few, f"{few} statements for 12 events, {many} for 93"
    with app.app_context():
        states = dict(db.session.execute(db.select(EmailMessage.id, EmailMessage.state)).all())
        assert [states[m["id"]] for m in small + large] == (
            ["bounced", "opened", "opened"] + ["bounced"] + ["opened"] * 29
        )
        assert db.session.scalar(db.select(func.count()).select_from(EmailEvent)) == 103
        assert {s.email for s in db.session.scalars(db.select(Suppression))} == {
            "person0@example.no",
            "person3@example.no",
        }


def test_one_event_that_cannot_be_applied_does_not_hold_up_the_others(app, client, signer, message):
    def broken(event, message):
        if event["sg_event_id"] == "ev-bad":
            raise RuntimeError("boom")

    events = [event("delivered", f"ev-{n}", message) for n in range(5)]
    events.insert(2, event("open", "ev-bad", message))
    services.register_event_handler(broken)
    try:
        response = post(client, signer, events)
    finally:
        services.unregister_event_handler(broken)
    assert response.status_code == 503
    assert response.get_json() == {"received": 6, "new": 5, "duplicates": 0, "failed": 1}
    assert count(app, EmailEvent) == 5 and state_of(app, message) == "delivered"
    again = post(client, signer, events)
    assert again.get_json() == {"received": 6, "new": 1, "duplicates": 5, "failed": 0}
    assert state_of(app, message) == "opened"


# "kari@skånes.no" as the register keeps it (NFC) and decomposed (å = a + U+030A), as a
# provider may report it.
COMPOSED = unicodedata.normalize("NFC", "kari@skånes.no")
DECOMPOSED = unicodedata.normalize("NFD", COMPOSED)


def test_a_bounce_in_another_unicode_spelling_suppresses_the_registers_address(app, client, signer):
    assert DECOMPOSED != COMPOSED
    with app.test_request_context():
        contact_email = normalize_email("Kari@Skånes.no")
    bounce = event("bounce", "ev-nfd", email=DECOMPOSED, reason="550 unknown", type="bounce")
    assert post(client, signer, [bounce]).status_code == 200
    with app.app_context():
        assert contact_email == COMPOSED
        assert services.is_suppressed(contact_email)
        assert db.session.scalar(db.select(EmailEvent.email)) == COMPOSED


def test_erasure_blanks_events_reported_in_another_unicode_spelling(app, client, signer):
    from crm.subscriptions.gdpr import ERASED, erase_person

    with app.test_request_context():
        contact = make_contact(email=COMPOSED)
        contact_id = contact.id
    post(client, signer, [event("delivered", "ev-nfd-2", email=DECOMPOSED)])
    with app.test_request_context():
        erase_person(db.session.get(Contact, contact_id), user=make_user("admin"))
        db.session.commit()
        assert db.session.scalar(db.select(EmailEvent.email)) == ERASED


def test_migration_0041_brings_kept_addresses_to_nfc(scratch_database):
    from flask_migrate import upgrade

    with migrated_to(scratch_database, "0040_consent_changes") as metadata:
        older, newer = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 6, 1, tzinfo=UTC)
        with db.engine.begin() as conn:
            insert_row(conn, metadata, "email_event", email=DECOMPOSED, sg_event_id="e1")
            insert_row(conn, metadata, "email_event", email="ola@example.no", sg_event_id="e2")
            # The same address twice, spelled two ways: the later-updated one is kept.
            insert_row(
                conn, metadata, "suppression", email=DECOMPOSED, reason="bounce",
                updated_at=newer, created_at=older,
            )  # fmt: skip
            insert_row(
                conn, metadata, "suppression", email=COMPOSED, reason="unsubscribe",
                updated_at=older, created_at=older,
            )  # fmt: skip
            decomposed_only = unicodedata.normalize("NFD", "per@åsen.no")
            insert_row(conn, metadata, "suppression", email=decomposed_only, reason="spamreport")
        upgrade(revision="heads")
        with db.engine.connect() as conn:
            events = conn.execute(sa.text("SELECT email FROM email_event ORDER BY id")).scalars()
            suppressions = conn.execute(
                sa.text("SELECT email, reason FROM suppression ORDER BY email")
            ).all()
    assert list(events) == [COMPOSED, "ola@example.no"]
    assert [tuple(row) for row in suppressions] == [
        (COMPOSED, "bounce"),
        (unicodedata.normalize("NFC", "per@åsen.no"), "spamreport"),
    ]
