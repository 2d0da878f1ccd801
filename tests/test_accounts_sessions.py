"""Logging out, a new password or deactivation ends that user's sessions everywhere.

A session is `id:version:nonce` (crm/auth/sessions.py): the version is checked on every
request, so raising it ends every session and "remember me" cookie of the user.
"""

from crm.auth.models import User
from crm.extensions import db
from tests.factories import PASSWORD, make_user

REMEMBER = "remember_token"


def _login(client, email="ola@example.no", remember=False, ip="192.0.2.10", **kwargs):
    data = {"email": email, "password": PASSWORD}
    if remember:
        data["remember"] = "y"
    response = client.post("/login", data=data, environ_base={"REMOTE_ADDR": ip}, **kwargs)
    assert response.status_code == 302, response.get_data(as_text=True)[:300]
    return response


def _cookie(client, name):
    cookie = client.get_cookie(name)
    return cookie.value if cookie else None


def _fresh_client_with(app, **cookies):
    other = app.test_client()
    for name, value in cookies.items():
        other.set_cookie(name, value)
    return other


def _logged_in(client) -> bool:
    return client.get("/companies").status_code == 200


def test_a_copied_session_cookie_stops_working_after_logout(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    _login(client)
    copied = _cookie(client, "session")
    assert _logged_in(_fresh_client_with(app, session=copied))
    client.post("/logout")
    assert not _logged_in(_fresh_client_with(app, session=copied))


def test_logout_ends_the_remember_me_cookies_of_other_devices(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    laptop, phone = app.test_client(), app.test_client()
    _login(laptop, remember=True)
    _login(phone, remember=True)
    phone_cookie = _cookie(phone, REMEMBER)
    assert _logged_in(_fresh_client_with(app, **{REMEMBER: phone_cookie}))
    laptop.post("/logout")
    assert not _logged_in(_fresh_client_with(app, **{REMEMBER: phone_cookie}))
    assert not _logged_in(phone)


def test_the_remember_cookie_differs_on_every_login(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    first, second = app.test_client(), app.test_client()
    _login(first, remember=True)
    _login(second, remember=True)
    assert _cookie(first, REMEMBER) and _cookie(second, REMEMBER)
    assert _cookie(first, REMEMBER) != _cookie(second, REMEMBER)


def test_a_password_reset_kills_the_remember_cookie(app, client):
    from crm.auth import tokens

    with app.app_context():
        user = make_user("staff", email="ola@example.no")
    _login(client, remember=True)
    stolen = _cookie(client, REMEMBER)
    with app.test_request_context():
        token = tokens.make_password_token(db.session.get(User, user.id), "reset")
    other = app.test_client()
    response = other.post(
        f"/password/reset/{token}",
        data={"password": "a brand new secret", "confirm": "a brand new secret"},
    )
    assert response.status_code == 302
    assert not _logged_in(_fresh_client_with(app, **{REMEMBER: stolen}))
    assert not _logged_in(client)


def test_changing_the_password_keeps_this_session_and_ends_the_others(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    here, elsewhere = app.test_client(), app.test_client()
    _login(here)
    _login(elsewhere, remember=True)
    response = here.post(
        "/account/password",
        data={
            "current_password": PASSWORD,
            "password": "another long password",
            "confirm": "another long password",
        },
    )
    assert response.status_code == 302
    assert _logged_in(here)
    assert not _logged_in(elsewhere)
    assert not _logged_in(_fresh_client_with(app, **{REMEMBER: _cookie(elsewhere, REMEMBER)}))


def test_deactivating_a_user_ends_their_sessions_at_once(app, client, auth):
    with app.app_context():
        user = make_user("staff", email="ola@example.no")
    victim = app.test_client()
    _login(victim, remember=True)
    remembered = _cookie(victim, REMEMBER)
    auth.login("admin")
    response = client.post(
        f"/admin/users/{user.id}/edit", data={"name": "Ola", "role": "staff", "active": ""}
    )
    assert response.status_code == 302
    assert not _logged_in(victim)
    assert not _logged_in(_fresh_client_with(app, **{REMEMBER: remembered}))
    with app.app_context():
        assert db.session.get(User, user.id).active is False


def test_the_remember_cookie_is_secure_over_https(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = _login(client, remember=True, base_url="https://localhost")
    cookies = response.headers.getlist("Set-Cookie")
    [remember] = [c for c in cookies if c.startswith(REMEMBER + "=")]
    assert "Secure" in remember and "HttpOnly" in remember


def test_the_remember_cookie_lasts_weeks_not_a_year(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = _login(client, remember=True)
    [remember] = [c for c in response.headers.getlist("Set-Cookie") if c.startswith(REMEMBER)]
    from email.utils import parsedate_to_datetime

    from crm.timeutil import utcnow

    expires = parsedate_to_datetime(remember.split("Expires=")[1].split(";")[0])
    assert (expires - utcnow()).days <= 31


def test_an_old_style_session_naming_only_the_user_id_is_not_accepted(app, client):
    with app.app_context():
        user = make_user("staff", email="ola@example.no")
    with client.session_transaction() as session:
        session["_user_id"] = str(user.id)
        session["_fresh"] = True
    assert not _logged_in(client)
