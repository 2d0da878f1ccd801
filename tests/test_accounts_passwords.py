"""Passwords: change one's own, reset a forgotten one by email, invitations instead of
passwords on screen, and the first admin's printed password changed at first login."""

import re

import pytest

from crm.auth import tokens
from crm.auth.models import User
from crm.extensions import db
from crm.mail.models import EmailMessage
from tests.factories import PASSWORD, make_user

LINK = re.compile(r"http://127\.0\.0\.1:5000(/password/(?:reset|invite)/[A-Za-z0-9_.\-]+)")
NEW = "a brand new secret"


def _emails(app, template):
    with app.app_context():
        return db.session.scalars(
            db.select(EmailMessage).where(EmailMessage.template == template)
        ).all()


def _without_csrf(response) -> str:
    return re.sub(r'name="csrf_token" value="[^"]*"', "", response.get_data(as_text=True))


def _link_in(message) -> str:
    return LINK.search(message.text_body).group(1)


def _can_log_in(app, email, password, ip="192.0.2.50") -> bool:
    client = app.test_client()
    response = client.post(
        "/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip}
    )
    return response.status_code == 302


# --- change one's own password ---------------------------------------------------------


def test_a_user_changes_their_own_password(app, client, auth):
    user = auth.login("treasurer")
    page = client.get("/account/password")
    assert page.status_code == 200
    response = client.post(
        "/account/password",
        data={"current_password": PASSWORD, "password": NEW, "confirm": NEW},
    )
    assert response.status_code == 302
    assert _can_log_in(app, user.email, NEW)
    assert not _can_log_in(app, user.email, PASSWORD)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"current_password": "wrong one", "password": NEW, "confirm": NEW}, "current password"),
        ({"current_password": PASSWORD, "password": "short", "confirm": "short"}, "10"),
        ({"current_password": PASSWORD, "password": NEW, "confirm": NEW + "x"}, "differ"),
    ],
)
def test_a_password_change_is_refused_with_a_reason(app, client, auth, data, message):
    user = auth.login("staff")
    client.post("/language/en", data={"next": "/"})
    response = client.post("/account/password", data=data)
    assert response.status_code == 200
    assert message in response.get_data(as_text=True)
    assert _can_log_in(app, user.email, PASSWORD)


# --- forgotten password ----------------------------------------------------------------


def test_forgotten_password_is_reset_through_the_emailed_link(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    assert "/password/forgot" in client.get("/login").get_data(as_text=True)
    response = client.post("/password/forgot", data={"email": "ola@example.no"})
    assert response.status_code == 200
    [message] = _emails(app, "auth/password_reset")
    assert message.to_email == "ola@example.no"
    link = _link_in(message)
    assert client.get(link).status_code == 200
    response = client.post(link, data={"password": NEW, "confirm": NEW})
    assert response.status_code == 302 and response.headers["Location"] == "/login"
    assert _can_log_in(app, "ola@example.no", NEW)
    assert not _can_log_in(app, "ola@example.no", PASSWORD)


def test_the_answer_is_the_same_whether_or_not_the_address_has_an_account(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    known = client.post("/password/forgot", data={"email": "ola@example.no"})
    unknown = client.post("/password/forgot", data={"email": "nobody@example.no"})
    assert known.status_code == unknown.status_code == 200
    # The page's CSRF token (of the language button) is signed with the time: not part
    # of the answer, and it differs when the two requests fall in different seconds.
    assert _without_csrf(known) == _without_csrf(unknown)
    assert [m.to_email for m in _emails(app, "auth/password_reset")] == ["ola@example.no"]


def test_a_reset_link_works_only_once(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    client.post("/password/forgot", data={"email": "ola@example.no"})
    link = _link_in(_emails(app, "auth/password_reset")[0])
    assert client.post(link, data={"password": NEW, "confirm": NEW}).status_code == 302
    again = client.post(
        link, data={"password": "attacker's choice!", "confirm": "attacker's choice!"}
    )
    assert again.status_code == 404
    assert _can_log_in(app, "ola@example.no", NEW)


def test_a_reset_link_expires(app, client, monkeypatch):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    client.post("/password/forgot", data={"email": "ola@example.no"})
    link = _link_in(_emails(app, "auth/password_reset")[0])
    monkeypatch.setitem(tokens.MAX_AGES, "reset", -1)
    response = client.post(link, data={"password": NEW, "confirm": NEW})
    assert response.status_code == 410
    assert _can_log_in(app, "ola@example.no", PASSWORD)


def test_a_tampered_or_foreign_reset_link_is_refused(app, client):
    with app.app_context():
        user = make_user("staff", email="ola@example.no")
    with app.test_request_context():
        invite = tokens.make_password_token(db.session.get(User, user.id), "invite")
    assert client.get(f"/password/reset/{invite}").status_code == 404  # other purpose
    assert client.get(f"/password/reset/{invite[:-2]}xx").status_code == 404
    assert client.get("/password/reset/" + "a" * 500).status_code == 404


def test_reset_emails_are_throttled_per_address(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    for i, written in enumerate(["ola@example.no", "OLA@example.no", "ｏｌａ@example.no"] * 2):
        response = client.post(
            "/password/forgot",
            data={"email": written},
            environ_base={"REMOTE_ADDR": f"192.0.2.{i + 1}"},
        )
        assert response.status_code == 200
    assert len(_emails(app, "auth/password_reset")) == 3


def test_a_deactivated_user_gets_no_reset_email(app, client):
    with app.app_context():
        user = make_user("staff", email="gone@example.no")
        user.active = False
        db.session.commit()
    client.post("/password/forgot", data={"email": "gone@example.no"})
    assert _emails(app, "auth/password_reset") == []


# --- invitations -----------------------------------------------------------------------


def test_a_new_user_gets_an_invitation_instead_of_a_password_on_screen(app, client, auth):
    auth.login("admin")
    response = client.post(
        "/admin/users/new",
        data={"email": "ny@example.no", "name": "Nina Ny", "role": "staff"},
        follow_redirects=True,
    )
    page = response.get_data(as_text=True)
    assert "ny@example.no" in page
    assert "passord:" not in page.lower() and "password:" not in page.lower()
    assert "Invitert" in page
    [invitation] = _emails(app, "auth/invitation")
    assert invitation.to_email == "ny@example.no"
    assert "Nina Ny" in invitation.text_body
    link = _link_in(invitation)
    assert "/password/invite/" in link
    fresh = app.test_client()
    assert fresh.post(link, data={"password": NEW, "confirm": NEW}).status_code == 302
    assert _can_log_in(app, "ny@example.no", NEW)
    assert fresh.get(link).status_code == 404  # used


def test_an_admin_can_send_the_invitation_again(app, client, auth):
    auth.login("admin")
    client.post("/admin/users/new", data={"email": "ny@example.no", "role": "staff"})
    with app.app_context():
        user_id = db.session.scalar(db.select(User.id).where(User.email == "ny@example.no"))
    response = client.post(f"/admin/users/{user_id}/send-link")
    assert response.status_code == 302
    assert len(_emails(app, "auth/invitation")) == 2


def test_an_invited_user_cannot_log_in_before_choosing_a_password(app, client, auth):
    auth.login("admin")
    client.post("/admin/users/new", data={"email": "ny@example.no", "role": "staff"})
    with app.app_context():
        user = db.session.scalar(db.select(User).where(User.email == "ny@example.no"))
        assert not user.has_usable_password
        assert not user.check_password("")
        assert not user.check_password(user.password_hash)
        assert not user.check_password(user.password_hash[1:])


def test_the_cli_invites_a_user_created_without_a_password(app, runner):
    result = runner.invoke(args=["users", "create", "kasserer@example.no", "--role", "treasurer"])
    assert result.exit_code == 0, result.output
    assert "One-time password" not in result.output
    assert "kasserer@example.no" in result.output
    [invitation] = _emails(app, "auth/invitation")
    assert invitation.to_email == "kasserer@example.no"


def test_the_cli_still_takes_a_password(app, runner):
    result = runner.invoke(
        args=["users", "create", "ola@example.no", "--role", "staff", "--password", NEW]
    )
    assert result.exit_code == 0, result.output
    assert _can_log_in(app, "ola@example.no", NEW)
    assert _emails(app, "auth/invitation") == []


# --- the first admin -------------------------------------------------------------------


def test_the_first_admins_printed_password_must_be_changed_at_first_login(app, runner, monkeypatch):
    monkeypatch.delenv("CRM_ADMIN_PASSWORD", raising=False)
    monkeypatch.setenv("CRM_ADMIN_EMAIL", "boss@example.no")
    result = runner.invoke(args=["ensure-admin"])
    printed = re.search(r"One-time password: (\S+)", result.output).group(1)
    client = app.test_client()
    response = client.post("/login", data={"email": "boss@example.no", "password": printed})
    assert response.headers["Location"] == "/account/password"
    # Every other page leads back there until the password is changed.
    for path in ("/companies", "/admin/users", "/fees/"):
        assert client.get(path).headers.get("Location") == "/account/password", path
    response = client.post(
        "/account/password", data={"current_password": printed, "password": NEW, "confirm": NEW}
    )
    assert response.status_code == 302
    assert client.get("/companies").status_code == 200
    assert not _can_log_in(app, "boss@example.no", printed)


def test_a_first_admin_with_a_chosen_password_is_not_forced_to_change_it(app, runner, monkeypatch):
    monkeypatch.setenv("CRM_ADMIN_EMAIL", "boss@example.no")
    monkeypatch.setenv("CRM_ADMIN_PASSWORD", NEW)
    runner.invoke(args=["ensure-admin"])
    client = app.test_client()
    client.post("/login", data={"email": "boss@example.no", "password": NEW})
    assert client.get("/companies").status_code == 200
