"""The public signup takes the organisation's settings, the topics and the consent wording
from its process's copy (crm/cache.py): a change made by another process shows to staff
at their next request and to visitors within a second, one made by this process at once,
and an unchanged copy costs the signup no query."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import event
from werkzeug.datastructures import MultiDict

from crm import cache
from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import render_stored
from crm.members.models import Network
from crm.organisation import services as organisation
from crm.subscriptions.models import PendingSignup
from scripts.subscribe_smoke import fill_signup, signup_form
from tests.factories import run_signup_job


@pytest.fixture
def quick_forms(app, monkeypatch):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)


def _signup(client, email="kari@example.no", topics=("generelt",)):
    form = signup_form(client.get("/subscribe").get_data(as_text=True))
    fields = [(k, v) for k, v in fill_signup(form, "Kari Nordmann", email) if k != "topics"]
    return client.post(form["action"], data=MultiDict(fields + [("topics", t) for t in topics]))


@pytest.fixture
def clock(monkeypatch):
    """The cache's clock, standing still until a test moves it on (`clock[0] += s`)."""
    now = [1000.0]
    monkeypatch.setattr(cache, "_clock", lambda: now[0])
    return now


def _in_another_process(code: str) -> None:
    """Run `code` with a request context of its own app, as another gunicorn worker or
    an RQ worker would."""
    script = (
        "from crm import create_app\n"
        "from crm.extensions import db\n"
        "from crm.members.models import Network\n"
        "from crm.organisation import services as organisation\n"
        "with create_app().test_request_context():\n"
        + "".join(f"    {line}\n" for line in code.strip().splitlines())
        + "    db.session.commit()\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, env=dict(os.environ))


def test_a_network_renamed_by_another_process_shows_on_the_signup_form_within_a_second(
    app, client, clock
):
    assert "Bærekraft" in client.get("/subscribe").get_data(as_text=True)  # copy taken
    _in_another_process(
        "db.session.scalar(db.select(Network).where(Network.slug == 'baerekraft'))"
        ".name = 'Grønn omstilling'"
    )
    clock[0] += cache.STAMP_WINDOW_SECONDS
    page = client.get("/subscribe").get_data(as_text=True)
    assert "Grønn omstilling" in page and "Bærekraft" not in page


def test_settings_saved_by_another_process_show_to_staff_at_once_and_to_visitors_soon(
    app, client, auth, clock
):
    visitor = app.test_client()
    assert "· Klynge</title>" in visitor.get("/subscribe").get_data(as_text=True)
    auth.login()
    assert "· Klynge</title>" in client.get("/home").get_data(as_text=True)
    _in_another_process("organisation.for_update().name = 'Glåmdal Industriklynge'")
    # Staff look at what they changed on the next page, whichever process serves it.
    assert "· Glåmdal Industriklynge</title>" in client.get("/home").get_data(as_text=True)
    clock[0] += cache.STAMP_WINDOW_SECONDS
    assert "· Glåmdal Industriklynge</title>" in visitor.get("/subscribe").get_data(as_text=True)


def test_a_closed_network_can_no_longer_be_chosen(app, client, quick_forms):
    assert "Logistikk" in client.get("/subscribe").get_data(as_text=True)
    with app.app_context():
        db.session.scalar(db.select(Network).where(Network.slug == "logistikk")).active = False
        db.session.commit()
    response = _signup(client, topics=("logistikk",))
    assert response.status_code == 200  # the form again, not "check your inbox"
    page = response.get_data(as_text=True)
    assert "Velg minst ett tema." in page and "Logistikk" not in page
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(PendingSignup.id))) == 0


def test_saved_organisation_settings_show_on_the_next_signup_page_and_email(
    app, client, quick_forms
):
    _signup(client, email="first@example.no")
    with app.test_request_context():
        organisation.for_update().name = "Glåmdal Industriklynge"
        db.session.commit()
    assert "Glåmdal Industriklynge" in client.get("/subscribe").get_data(as_text=True)
    _signup(client, email="second@example.no")
    run_signup_job(app)
    with app.app_context():
        message = db.session.scalar(
            db.select(EmailMessage).where(EmailMessage.to_email == "second@example.no")
        )
        render_stored(message)  # as the send job does, in this process
        assert "Glåmdal Industriklynge" in message.text_body


def test_a_rolled_back_change_leaves_the_copy_as_it_was(app, client):
    client.get("/subscribe")
    with app.test_request_context():
        organisation.for_update().name = "Aldri lagret AS"
        db.session.flush()
        db.session.rollback()
    with app.test_request_context():
        assert organisation.get().name == "Klynge"
    assert "Aldri lagret AS" not in client.get("/subscribe").get_data(as_text=True)


def test_a_signup_reads_no_settings_topics_or_wording_while_they_are_unchanged(
    app, client, quick_forms, clock
):
    _signup(client, email="first@example.no")  # the copy is taken
    form = signup_form(client.get("/subscribe").get_data(as_text=True))
    statements = []

    def record(conn, cursor, statement, *args):
        statements.append(statement.lower())

    with app.app_context():
        engine = db.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        response = client.post(
            form["action"], data=MultiDict(fill_signup(form, "Ola Nordmann", "ola@example.no"))
        )
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert response.status_code == 303
    tables = ("organisation", "topic", "network", "consent_wording", "cache_stamp")
    assert not [s for s in statements for t in tables if f"from {t}" in s], statements
    with app.app_context():
        pending = db.session.scalar(
            db.select(PendingSignup).where(PendingSignup.email == "ola@example.no")
        )
        assert pending.topic_ids and pending.wording_id
