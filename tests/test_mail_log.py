"""Staff see every email, filter the log, read one message, resend failures."""

import pytest

from crm.extensions import db
from crm.mail import services
from crm.mail.models import EmailAttempt, EmailMessage, Suppression
from crm.timeutil import utcnow
from tests.browser import login
from tests.factories import PASSWORD, make_user


def make_message(to="kari@example.no", state="sent", category="subscription", **fields):
    with_error = fields.pop("error", "")
    message = services.queue_email(to, "mail/test", {"name": "Kari"}, category=category, **fields)
    message.state = state
    message.attempts = 1
    message.last_error = with_error
    db.session.add(
        EmailAttempt(
            message=message,
            number=1,
            outcome={"failed": "failed", "retrying": "retry"}.get(state, "sent"),
            status_code=400 if state == "failed" else None,
            error=with_error,
            backend="sendgrid",
        )
    )
    db.session.commit()
    return message


def test_staff_filter_the_log_by_state_category_and_address(app, client, auth):
    auth.login("staff")
    with app.test_request_context():
        make_message("kari@example.no", "delivered")
        make_message("ola@example.no", "failed", category="invoice", error="Invalid from")
        make_message("per@example.no", "retrying", category="invoice")

    page = client.get("/mail/messages").get_data(as_text=True)
    assert all(a in page for a in ("kari@example.no", "ola@example.no", "per@example.no"))
    failed = client.get("/mail/messages?state=failed").get_data(as_text=True)
    assert "ola@example.no" in failed and "kari@example.no" not in failed
    assert "Invalid from" in failed
    invoices = client.get("/mail/messages?category=invoice").get_data(as_text=True)
    assert "per@example.no" in invoices and "kari@example.no" not in invoices
    search = client.get("/mail/messages?q=KARI").get_data(as_text=True)
    assert "kari@example.no" in search and "ola@example.no" not in search
    odd = client.get("/mail/messages?q=%25_\\&state=nonsense&page=-3")
    assert odd.status_code == 200
    # Control characters typed into the URL are dropped (PostgreSQL refuses a NUL).
    nul = client.get("/mail/messages?q=ka%00ri&category=in%00voice").get_data(as_text=True)
    assert "kari@example.no" not in nul  # "kari" in no invoice's address
    assert client.get("/mail/messages?q=ka%00ri").status_code == 200
    assert "kari@example.no" in client.get("/mail/messages?q=ka%00ri").get_data(as_text=True)
    assert client.get("/mail/suppressions?q=%00").status_code == 200


def test_the_log_is_for_staff_and_admins_only(app, client, auth):
    assert client.get("/mail/messages").status_code == 302
    auth.login("treasurer")
    assert client.get("/mail/messages").status_code == 403


def test_message_page_shows_headers_attempts_and_a_sandboxed_preview(app, client, auth):
    auth.login("staff")
    with app.test_request_context():
        message = make_message(
            state="failed",
            error="The from address does not match a verified Sender Identity.",
            headers={"List-Unsubscribe": "<http://127.0.0.1:5000/unsubscribe/T>"},
        )
        message_id = message.id
    page = client.get(f"/mail/messages/{message_id}").get_data(as_text=True)
    assert "List-Unsubscribe" in page and "/unsubscribe/T" in page
    assert "verified Sender Identity" in page
    assert f"/mail/messages/{message_id}/resend" in page
    preview = client.get(f"/mail/messages/{message_id}/preview")
    assert preview.status_code == 200
    csp = preview.headers["Content-Security-Policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert client.get("/mail/messages/999999").status_code == 404


def test_resending_a_failed_message_queues_a_new_round(app, client, auth, run_worker):
    auth.login("staff")
    with app.test_request_context():
        message_id = make_message(state="failed", error="boom").id
        sent_id = make_message("ola@example.no", state="sent").id
    response = client.post(f"/mail/messages/{message_id}/resend", follow_redirects=True)
    assert response.status_code == 200
    run_worker()
    with app.app_context():
        message = db.session.get(EmailMessage, message_id)
        assert message.state == "sent" and message.attempts == 2
    # A sent message is not sent again.
    client.post(f"/mail/messages/{sent_id}/resend")
    with app.app_context():
        assert db.session.get(EmailMessage, sent_id).attempts == 1


def test_the_test_email_goes_out_through_the_pipeline(app, client, auth, run_worker):
    auth.login("admin")
    response = client.post("/mail/test", data={"address": "test@example.no"})
    assert response.status_code == 302
    run_worker()
    with app.app_context():
        message = db.session.scalar(db.select(EmailMessage))
        assert (message.to_email, message.category, message.state) == (
            "test@example.no",
            "test",
            "sent",
        )
    bad = client.post("/mail/test", data={"address": "x\r\nBcc: a@example.no"})
    assert bad.status_code == 302
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(EmailMessage.id))) == 1


def test_staff_can_allow_a_suppressed_address_again(app, client, auth):
    auth.login("staff")
    with app.app_context():
        services.suppress("Kari@Example.no", "bounce", "550 unknown user")
        db.session.commit()
        suppression_id = db.session.scalar(db.select(Suppression.id))
    page = client.get("/mail/suppressions").get_data(as_text=True)
    assert "kari@example.no" in page and "550 unknown user" in page
    client.post(f"/mail/suppressions/{suppression_id}/lift")
    with app.app_context():
        assert not services.is_suppressed("kari@example.no")


@pytest.mark.browser
def test_email_log_in_chromium(app, page, live_server, artifacts_dir):
    with app.test_request_context():
        make_user("staff", email="staff@example.no")
        for i, (state, category, error) in enumerate(
            [
                ("delivered", "subscription", ""),
                ("opened", "newsletter", ""),
                ("failed", "invoice", "The from address does not match a verified Sender."),
                ("retrying", "subscription", "SendGrid rate limit (429): too many requests"),
                ("bounced", "newsletter", "550 5.1.1 The email account does not exist."),
                ("sent", "subscription", ""),
                ("queued", "reminder", ""),
            ]
        ):
            message = make_message(
                f"person{i}@example.no",
                state,
                category,
                to_name=f"Person {i} Nordmann",
                error=error,
            )
            if state == "retrying":
                message.next_attempt_at = utcnow()
        services.suppress("person4@example.no", "bounce", "550 5.1.1 The account does not exist.")
        services.suppress("gone@example.no", "unsubscribe")
        db.session.commit()
    login(page, live_server, "staff@example.no", PASSWORD)
    page.goto(f"{live_server.url}/mail/messages")
    assert page.locator("h1").first.inner_text() == "E-postlogg"
    page.screenshot(path=str(artifacts_dir / "mail-log.png"), full_page=True)
    page.click("text=person2@example.no")
    preview = page.frame_locator("iframe.mail-preview")
    preview.locator("text=Dette er en test-e-post").wait_for()
    page.screenshot(path=str(artifacts_dir / "mail-message.png"), full_page=True)
    page.goto(f"{live_server.url}/mail/suppressions")
    page.screenshot(path=str(artifacts_dir / "mail-suppressions.png"), full_page=True)


def test_a_message_waiting_for_its_send_job_says_it_is_written_then(app, client, auth, run_worker):
    with app.test_request_context():
        message = services.queue_email(
            "ola@example.no", "mail/test", {"name": "Ola"}, render_in_worker=True
        )
        db.session.commit()
        message_id = message.id
    auth.login("staff")
    listing = client.get("/mail/messages").get_data(as_text=True)
    assert "Skrives når den sendes" in listing
    page = client.get(f"/mail/messages/{message_id}")
    assert page.status_code == 200
    assert "fra malen mail/test på mottakerens språk" in page.get_data(as_text=True)
    run_worker()
    listing = client.get("/mail/messages").get_data(as_text=True)
    assert "Skrives når den sendes" not in listing
    with app.app_context():
        subject = db.session.get(EmailMessage, message_id).subject
    assert subject and subject in listing
