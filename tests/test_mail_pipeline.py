"""The email pipeline end to end: queue in a transaction, a real RQ worker, a backend."""

import email
import email.policy
import time
from datetime import timedelta

import pytest

from crm.extensions import db
from crm.mail.models import EmailMessage
from crm.mail.services import enqueue_send, queue_email
from crm.timeutil import utcnow

pytest_plugins = ["tests.sendgrid_server"]

UNSUBSCRIBE = {
    "List-Unsubscribe": "<http://127.0.0.1:5000/unsubscribe/TOKEN>",
    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
}


def queue(app, to="kari@example.no", **fields) -> int:
    """Queue one test email in its own committed transaction; the message's id."""
    fields.setdefault("template", "mail/test")
    fields.setdefault("context", {"name": "Kari"})
    with app.test_request_context():
        message = queue_email(to, **fields)
        db.session.commit()
        return message.id


def load(app, message_id: int) -> EmailMessage:
    with app.app_context():
        message = db.session.get(EmailMessage, message_id)
        # Touch what tests read, while the session is open.
        message.attempt_log, message.events  # noqa: B018
        db.session.expunge_all()
        return message


def test_outbox_writes_a_valid_eml_with_both_rfc8058_headers(app, outbox, run_worker):
    message_id = queue(
        app,
        to_name="Kari Nordmann",
        category="subscription",
        headers=UNSUBSCRIBE,
        attachments=[("faktura-1001.pdf", "application/pdf", b"%PDF-1.4 test")],
    )
    run_worker()

    message = load(app, message_id)
    assert message.state == "sent"
    files = list(outbox.glob("*.eml"))
    assert len(files) == 1
    parsed = email.message_from_bytes(files[0].read_bytes(), policy=email.policy.default)
    assert parsed["To"] == "Kari Nordmann <kari@example.no>"
    assert parsed["From"] == "Klynge test <post@example.no>"
    assert parsed["Subject"] == message.subject
    assert parsed["Date"] and parsed["Message-ID"] == f"<{message.uuid}@example.no>"
    assert parsed["X-Klynge-Message-Id"] == message.uuid
    assert parsed["List-Unsubscribe"] == UNSUBSCRIBE["List-Unsubscribe"]
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    body = parsed.get_body(preferencelist=("plain",))
    html = parsed.get_body(preferencelist=("html",))
    assert "Kari" in body.get_content() and "<html" in html.get_content()
    attachments = list(parsed.iter_attachments())
    assert [a.get_filename() for a in attachments] == ["faktura-1001.pdf"]
    assert attachments[0].get_content() == b"%PDF-1.4 test"


def test_rolled_back_transaction_sends_nothing(app, outbox, run_worker):
    with app.test_request_context():
        queue_email("kari@example.no", "mail/test", {"name": "Kari"})
        db.session.rollback()
    run_worker()
    assert list(outbox.glob("*.eml")) == []
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 0


def test_same_key_queued_twice_is_sent_once(app, run_worker, sendgrid_server):
    first = queue(app, key="confirm:42:abc")
    second = queue(app, key="confirm:42:abc")
    assert first == second
    with app.app_context():
        uuid = db.session.get(EmailMessage, first).uuid
        assert enqueue_send(uuid) is False  # the job is already waiting
    run_worker(extra_env=sendgrid_server.worker_env())
    # A job for an already sent message does nothing.
    with app.app_context():
        enqueue_send(uuid, attempt=5)
    run_worker(extra_env=sendgrid_server.worker_env())

    assert sendgrid_server.recipients == ["kari@example.no"]
    message = load(app, first)
    assert message.state == "sent"
    assert message.provider_message_id == sendgrid_server.requests[0].message_id


def test_a_fresh_key_is_still_refused_a_second_time_and_sent_once(app, run_worker, outbox):
    # `fresh_key` skips the look-up before rendering, not the unique key.
    with app.test_request_context():
        first = queue_email(
            "kari@example.no", "mail/test", {"name": "Kari"}, key="k:1", fresh_key=True
        )
        second = queue_email(
            "kari@example.no", "mail/test", {"name": "Kari"}, key="k:1", fresh_key=True
        )
        assert first is second
        db.session.commit()
    run_worker()
    assert len(list(outbox.glob("*.eml"))) == 1
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 1


def test_new_emails_committed_together_each_wait_once_in_the_mail_queue(app, run_worker, outbox):
    from crm.mail.services import MAIL_QUEUE, job_id_for
    from crm.queue import get_queue

    with app.test_request_context():
        messages = [queue_email(f"p{i}@example.no", "mail/test", {"name": "P"}) for i in range(3)]
        db.session.commit()
        uuids = [m.uuid for m in messages]
        queue = get_queue(MAIL_QUEUE)
        assert sorted(queue.get_job_ids()) == sorted(job_id_for(u, 0) for u in uuids)
        assert all(enqueue_send(u) is False for u in uuids)  # already waiting
    run_worker()
    assert len(list(outbox.glob("*.eml"))) == 3
    with app.app_context():
        states = db.session.scalars(db.select(EmailMessage.state)).all()
        assert states == ["sent"] * 3


def test_a_key_queued_meanwhile_by_another_request_leaves_this_transaction_intact(app):
    from crm.mail.services import _insert_message
    from crm.members.models import Company

    first = queue(app, key="digest:2026-12-07:7")
    with app.test_request_context():
        db.session.add(Company(name="Skrives i samme transaksjon AS", orgnr="923609016"))
        db.session.flush()
        # The other request committed its message between this one's look-up by key
        # and its INSERT: the INSERT meets the unique key.
        values = {
            "uuid": "race-0001",
            "key": "digest:2026-12-07:7",
            "to_email": "kari@example.no",
            "from_header": "Klynge <post@example.no>",
            "subject": "Sammendrag",
            "template": "mail/test",
            "locale": "nb",
            "text_body": "Hei",
            "headers": {},
            "state": "queued",
        }
        assert _insert_message(values) is None
        db.session.commit()  # what this request wrote before still commits
    with app.app_context():
        assert db.session.scalar(db.select(Company.name)) == "Skrives i samme transaksjon AS"
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 1
        assert db.session.scalar(db.select(EmailMessage.id)) == first


def test_rate_limited_send_waits_for_the_reset_then_succeeds(app, run_worker, sendgrid_server):
    sendgrid_server.rate_limit_next(1, reset_in=2)
    message_id = queue(app)
    before = utcnow()
    run_worker(extra_env=sendgrid_server.worker_env())

    message = load(app, message_id)
    assert message.state == "retrying"
    assert "429" in message.last_error
    assert sendgrid_server.requests == []
    # It waits for X-RateLimit-Reset, not less.
    assert message.next_attempt_at >= before + timedelta(seconds=1)
    # A burst worker only moves due scheduled jobs: run it again once the time has come.
    time.sleep(max(0.0, (message.next_attempt_at - utcnow()).total_seconds()) + 0.2)
    run_worker(extra_env=sendgrid_server.worker_env())

    message = load(app, message_id)
    assert message.state == "sent"
    assert [a.outcome for a in message.attempt_log] == ["retry", "sent"]
    assert [a.status_code for a in message.attempt_log] == [429, None]
    assert sendgrid_server.recipients == ["kari@example.no"]


def test_server_errors_are_retried_with_backoff_then_sent(app, run_worker, sendgrid_server):
    sendgrid_server.fail_next(2, status=500)
    message_id = queue(app)
    run_worker(extra_env=sendgrid_server.worker_env(MAIL_RETRY_BASE_SECONDS="0"))

    message = load(app, message_id)
    assert message.state == "sent"
    assert message.attempts == 3
    assert [a.outcome for a in message.attempt_log] == ["retry", "retry", "sent"]
    assert len(sendgrid_server.requests) == 1


def test_bad_request_is_failed_with_sendgrid_error_text_and_not_retried(
    app, run_worker, sendgrid_server
):
    sendgrid_server.refuse_next(1, "The from object must be provided for every email send.", "from")
    message_id = queue(app)
    env = sendgrid_server.worker_env(MAIL_RETRY_BASE_SECONDS="0")
    run_worker(extra_env=env)
    run_worker(extra_env=env)

    message = load(app, message_id)
    assert message.state == "failed"
    assert message.attempts == 1
    assert message.last_error == (
        "The from object must be provided for every email send. (field: from)"
    )
    assert message.attempt_log[0].status_code == 400
    assert sendgrid_server.requests == []
    assert len(sendgrid_server.refused) == 1


def test_rejected_api_key_fails_with_a_configuration_message(app, run_worker, sendgrid_server):
    message_id = queue(app)
    run_worker(extra_env=sendgrid_server.worker_env(SENDGRID_API_KEY="wrong-key"))

    message = load(app, message_id)
    assert message.state == "failed"
    assert "401" in message.last_error and "SENDGRID_API_KEY" in message.last_error


def test_a_stalled_server_times_out_and_the_send_is_retried(app, run_worker, sendgrid_server):
    sendgrid_server.stall_next(1, seconds=3)
    message_id = queue(app)
    run_worker(
        extra_env=sendgrid_server.worker_env(
            SENDGRID_TIMEOUT_SECONDS="1", MAIL_RETRY_BASE_SECONDS="0"
        )
    )

    message = load(app, message_id)
    assert message.state == "sent"
    assert [a.outcome for a in message.attempt_log] == ["retry", "sent"]
    assert "SendGrid not reachable" in message.attempt_log[0].error
    assert sendgrid_server.stalled == 1 and len(sendgrid_server.requests) == 1


def test_unreachable_server_gives_up_after_max_attempts(app, run_worker):
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    message_id = queue(app)
    run_worker(
        extra_env={
            "MAIL_BACKEND": "sendgrid",
            "SENDGRID_API_KEY": "test-key",
            "SENDGRID_API_HOST": f"http://127.0.0.1:{port}",
            "MAIL_RETRY_BASE_SECONDS": "0",
            "MAIL_MAX_ATTEMPTS": "3",
        }
    )

    message = load(app, message_id)
    assert message.state == "failed"
    assert message.attempts == 3
    assert message.last_error.startswith("gave up after 3 attempts: SendGrid not reachable")
    assert "refused" in message.last_error.lower()


def test_email_is_rendered_in_the_requested_language(app):
    with app.app_context():
        norwegian = queue_email("kari@example.no", "mail/test", {"name": "Kari"}, locale="nb")
        english = queue_email("ola@example.no", "mail/test", {"name": "Ola"}, locale="en")
        assert norwegian.subject == "Test-e-post fra Klynge"
        assert norwegian.text_body.startswith("Hei Kari,")
        assert english.subject == "Test email from Klynge"
        # public_base_url is always there for links.
        assert "http://127.0.0.1:5000" in english.text_body
        db.session.rollback()


def test_a_message_queued_unrendered_is_written_by_its_send_job_in_its_language(
    app, outbox, run_worker
):
    with app.test_request_context():  # a Norwegian request queues an English email
        message = queue_email(
            "ola@example.no", "mail/test", {"name": "Ola"}, locale="en", render_in_worker=True
        )
        db.session.commit()
        message_id = message.id
    queued = load(app, message_id)
    assert (queued.subject, queued.text_body, queued.context) == ("", "", {"name": "Ola"})
    run_worker()
    message = load(app, message_id)
    assert message.state == "sent" and message.context is None
    assert message.subject == "Test email from Klynge"
    assert message.text_body.startswith("Hi Ola,") and "<html" in message.html_body
    [eml] = outbox.glob("*.eml")
    parsed = email.message_from_bytes(eml.read_bytes(), policy=email.policy.default)
    assert parsed["Subject"] == "Test email from Klynge"
    assert parsed.get_body(preferencelist=("plain",)).get_content().startswith("Hi Ola,")


def test_a_message_whose_template_cannot_be_rendered_fails_with_the_reason(app, run_worker):
    with app.test_request_context():
        message = queue_email("ola@example.no", "mail/missing", {}, render_in_worker=True)
        db.session.commit()
        message_id = message.id
    run_worker()
    message = load(app, message_id)
    assert message.state == "failed"
    assert "mail/missing" in message.last_error


def test_an_unusable_address_is_refused_and_nothing_is_queued(app):
    from crm.mail.services import InvalidAddress

    with app.test_request_context():
        for address in ("not-an-address", "kari@example.no\r\nBcc: x@example.no", "", "a b@x.no"):
            with pytest.raises(InvalidAddress):
                queue_email(address, "mail/test", {})
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 0


def test_emails_queued_by_a_job_are_sent_after_its_commit(app, outbox, run_worker):
    # Jobs run in an app context without a request: queueing works the same there.
    with app.app_context():
        queue_email("kari@example.no", "mail/test", {"name": "Kari"}, key="job:1")
        db.session.commit()
    run_worker()
    assert len(list(outbox.glob("*.eml"))) == 1


def test_requeue_recovers_a_message_whose_job_was_lost(app, runner, outbox, run_worker):
    from crm.queue import get_redis

    message_id = queue(app)
    get_redis(app).flushdb()  # the job is lost (Redis restarted empty)
    with app.app_context():
        db.session.execute(
            db.update(EmailMessage).values(updated_at=utcnow() - timedelta(minutes=30))
        )
        db.session.commit()
    result = runner.invoke(args=["mail", "requeue", "--older-than", "60"])
    assert result.exit_code == 0 and result.output.startswith("Requeued 0")
    result = runner.invoke(args=["mail", "requeue"])
    assert result.exit_code == 0 and result.output.startswith("Requeued 1")
    run_worker()
    assert load(app, message_id).state == "sent"


def test_a_worker_recovers_lost_jobs_by_itself(app, outbox, run_worker):
    from crm.queue import get_redis

    message_id = queue(app)
    get_redis(app).flushdb()
    with app.app_context():
        db.session.execute(
            db.update(EmailMessage).values(updated_at=utcnow() - timedelta(minutes=30))
        )
        db.session.commit()
    run_worker()  # its start-up hook finds the message and enqueues it, then sends it
    assert load(app, message_id).state == "sent"
