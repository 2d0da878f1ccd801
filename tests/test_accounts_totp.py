"""An optional second factor (TOTP) that an admin can require for admins and treasurers."""

import re

import pyotp

from crm.auth.models import User
from crm.extensions import db
from tests.factories import PASSWORD, make_user


def _secret_from_setup_page(html: str) -> str:
    return re.search(r'class="totp-secret">([A-Z2-7 ]+)<', html).group(1).replace(" ", "")


def _turn_on(client) -> str:
    page = client.get("/account/two-factor")
    assert page.status_code == 200
    secret = _secret_from_setup_page(page.get_data(as_text=True))
    response = client.post("/account/two-factor", data={"code": pyotp.TOTP(secret).now()})
    assert response.status_code == 302
    return secret


def _password_step(client, email):
    return client.post("/login", data={"email": email, "password": PASSWORD})


def test_a_user_turns_on_a_second_factor_and_then_needs_a_code_to_log_in(app, client, auth):
    user = auth.login("staff")
    secret = _turn_on(client)
    with app.app_context():
        assert db.session.get(User, user.id).totp_secret == secret
    client.post("/logout")

    response = _password_step(client, user.email)
    assert response.headers["Location"] == "/login/code"
    assert client.get("/companies").status_code == 302  # not logged in yet
    wrong = client.post("/login/code", data={"code": "000000"})
    assert wrong.status_code == 200 and client.get("/companies").status_code == 302
    right = client.post("/login/code", data={"code": pyotp.TOTP(secret).now()})
    assert right.status_code == 302
    assert client.get("/companies").status_code == 200


def test_a_wrong_setup_code_turns_nothing_on(app, client, auth):
    user = auth.login("staff")
    client.get("/account/two-factor")
    response = client.post("/account/two-factor", data={"code": "123456"})
    assert response.status_code == 200
    with app.app_context():
        assert db.session.get(User, user.id).totp_secret is None


def test_the_code_step_cannot_be_skipped_or_guessed_for_long(app, client, auth):
    user = auth.login("staff")
    _turn_on(client)
    client.post("/logout")
    _password_step(client, user.email)
    for _ in range(5):
        client.post("/login/code", data={"code": "000000"})
    # After five wrong codes the half-done login is gone: back to the password.
    assert client.get("/login/code").headers["Location"] == "/login"
    assert client.get("/companies").status_code == 302


def test_the_code_page_without_a_password_step_leads_to_the_login(client):
    assert client.get("/login/code").headers["Location"] == "/login"


def test_an_admin_can_require_a_second_factor_for_admins_and_treasurers(app, client, auth):
    with app.app_context():
        make_user("treasurer", email="kasse@example.no")
        make_user("staff", email="ola@example.no")
    auth.login("admin")
    response = client.post("/admin/security", data={"require_totp_for_privileged": "y"})
    assert response.status_code == 302
    # The admin too is sent to set it up before anything else.
    assert client.get("/companies").headers["Location"] == "/account/two-factor"

    for email, must in (("kasse@example.no", True), ("ola@example.no", False)):
        other = app.test_client()
        _password_step(other, email)
        location = other.get("/companies").headers.get("Location")
        assert (location == "/account/two-factor") is must, email

    other = app.test_client()
    _password_step(other, "kasse@example.no")
    _turn_on(other)
    assert other.get("/fees/").status_code == 200


def test_a_required_second_factor_cannot_be_turned_off(app, client, auth):
    auth.login("treasurer")
    secret = _turn_on(client)
    with app.app_context():
        from crm.auth.services import security_settings

        security_settings().require_totp_for_privileged = True
        db.session.commit()
    client.post("/account/two-factor", data={"code": pyotp.TOTP(secret).now()})
    with app.app_context():
        assert db.session.scalar(db.select(User.totp_secret).where(User.role == "treasurer"))


def test_an_admin_removes_the_second_factor_of_a_user_who_lost_their_phone(app, client, auth):
    with app.app_context():
        user_id = make_user("staff", email="ola@example.no").id
        db.session.get(User, user_id).totp_secret = pyotp.random_base32()
        db.session.commit()
    auth.login("admin")
    client.post(
        f"/admin/users/{user_id}/edit",
        data={"name": "Ola", "role": "staff", "active": "y", "remove_totp": "y"},
    )
    with app.app_context():
        assert db.session.get(User, user_id).totp_secret is None
