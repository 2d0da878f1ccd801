"""SendGrid's group_resubscribe undoes the suppression its group_unsubscribe made."""

import time

import pytest

from crm.extensions import db
from crm.mail import services
from crm.mail.models import Suppression
from tests.test_mail_webhook import Signer, event, post


@pytest.fixture
def signer(app, monkeypatch):
    signer = Signer()
    monkeypatch.setitem(app.config, "SENDGRID_WEBHOOK_PUBLIC_KEY", signer.public_key)
    return signer


def suppressed(app, address="kari@example.no") -> str | None:
    with app.app_context():
        return db.session.scalar(select_reason(address))


def select_reason(address):
    return db.select(Suppression.reason).where(Suppression.email == address)


def test_a_group_resubscribe_lifts_the_group_unsubscribe_suppression(app, client, signer):
    now = int(time.time())
    post(client, signer, [event("group_unsubscribe", "u-1", asm_group_id=7, timestamp=now - 60)])
    assert suppressed(app) == "unsubscribe"
    post(client, signer, [event("group_resubscribe", "r-1", asm_group_id=7, timestamp=now)])
    assert suppressed(app) is None


def test_a_resubscribe_that_arrives_before_its_unsubscribe_still_wins_when_later(
    app, client, signer
):
    now = int(time.time())
    post(client, signer, [event("group_resubscribe", "r-2", asm_group_id=7, timestamp=now)])
    post(client, signer, [event("group_unsubscribe", "u-2", asm_group_id=7, timestamp=now - 60)])
    assert suppressed(app) is None


def test_a_resubscribe_lifts_nothing_else(app, client, signer):
    now = int(time.time())
    # An unsubscribe after the resubscribe stands.
    post(client, signer, [event("group_unsubscribe", "u-3", asm_group_id=7, timestamp=now)])
    post(client, signer, [event("group_resubscribe", "r-3", asm_group_id=7, timestamp=now - 60)])
    assert suppressed(app) == "unsubscribe"
    # Another group's resubscribe does not lift this group's unsubscribe.
    post(client, signer, [event("group_resubscribe", "r-4", asm_group_id=8, timestamp=now + 5)])
    assert suppressed(app) == "unsubscribe"
    # A bounce, a spam report or staff's own suppression is not the group's to lift.
    for n, kind in enumerate(("bounce", "spamreport")):
        address = f"other{n}@example.no"
        post(client, signer, [event(kind, f"k-{n}", email=address, timestamp=now - 60)])
        post(
            client,
            signer,
            [event("group_resubscribe", f"rr-{n}", email=address, asm_group_id=7, timestamp=now)],
        )
        assert suppressed(app, address) is not None
    with app.app_context():
        services.suppress("manual@example.no", "manual", "asked by phone")
        db.session.commit()
    post(
        client,
        signer,
        [event("group_resubscribe", "r-m", email="manual@example.no", timestamp=now)],
    )
    assert suppressed(app, "manual@example.no") == "manual"
