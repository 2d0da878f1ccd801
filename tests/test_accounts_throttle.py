"""Login throttling slows guessing but cannot lock the real user out, and writing the
address differently does not give a fresh counter (crm/auth/throttle.py explains)."""

import pytest

from crm.auth import services, throttle
from crm.auth.models import User
from crm.extensions import db
from tests.factories import PASSWORD, make_user

VARIANTS = [
    "ola@example.no",
    "OLA@example.no",
    "ＯＬＡ@example.no",  # full-width letters
    "ola@example。no",  # ideographic full stop
    "ＯＬＡ＠ＥＸＡＭＰＬＥ．ＮＯ",
    " ola@EXAMPLE.no ",
]


def _post(client, email, password, ip):
    return client.post(
        "/login", data={"email": email, "password": password}, environ_base={"REMOTE_ADDR": ip}
    )


def _attack(app, email, times, ip_prefix="198.51.100."):
    attacker = app.test_client()
    # A new IP every time: the per-IP limit of the route does not come into it.
    return [
        _post(attacker, email, "guess", f"{ip_prefix}{i % 250}").status_code for i in range(times)
    ]


def test_wrong_passwords_from_elsewhere_do_not_lock_out_the_users_usual_browser(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    # The real user has logged in from this browser before (it holds the device cookie).
    assert _post(client, "ola@example.no", PASSWORD, "192.0.2.7").status_code == 302
    client.post("/logout")
    statuses = _attack(app, "ola@example.no", throttle.ADDRESS_LIMIT + 1)
    assert statuses[-1] == 429  # the attacker is stopped ...
    assert _post(client, "ola@example.no", PASSWORD, "192.0.2.7").status_code == 302  # ... not Ola


def test_one_ip_guessing_does_not_block_the_user_on_another_ip(app, client):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    attacker = app.test_client()
    statuses = [
        _post(attacker, "ola@example.no", "guess", "198.51.100.1").status_code
        for _ in range(throttle.SOURCE_LIMIT + 1)
    ]
    assert statuses[-1] == 429
    # A fresh browser on another network, no device cookie: still gets in.
    assert _post(client, "ola@example.no", PASSWORD, "192.0.2.7").status_code == 302


def test_a_source_that_guessed_too_often_is_refused_even_with_the_right_password(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    attacker = app.test_client()
    # Fewer than the route's per-IP limit of 10 a minute: the throttle, not that, says no.
    assert throttle.SOURCE_LIMIT < 10
    for i in range(throttle.SOURCE_LIMIT):
        assert _post(attacker, "ola@example.no", "guess", "198.51.100.1").status_code == 200, i
    assert _post(attacker, "ola@example.no", PASSWORD, "198.51.100.1").status_code == 429


def test_guessing_from_many_ips_is_bounded_per_address(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    statuses = _attack(app, "ola@example.no", throttle.ADDRESS_LIMIT + 1)
    assert statuses[: throttle.ADDRESS_LIMIT] == [200] * throttle.ADDRESS_LIMIT
    assert statuses[-1] == 429
    # A new browser must wait (or reset the password by email) ...
    assert _post(app.test_client(), "ola@example.no", PASSWORD, "192.0.2.99").status_code == 429


def test_a_password_reset_clears_the_address_counters(app, client):
    from crm.auth import tokens

    with app.app_context():
        user = make_user("staff", email="ola@example.no")
    _attack(app, "ola@example.no", throttle.ADDRESS_LIMIT)
    with app.test_request_context():
        token = tokens.make_password_token(db.session.get(User, user.id), "reset")
    new = "a brand new secret"
    client.post(f"/password/reset/{token}", data={"password": new, "confirm": new})
    assert _post(app.test_client(), "ola@example.no", new, "192.0.2.99").status_code == 302


def test_writing_the_address_differently_does_not_give_a_fresh_counter(app):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    attacker = app.test_client()
    for i in range(throttle.ADDRESS_LIMIT):
        email = VARIANTS[i % len(VARIANTS)]
        assert _post(attacker, email, "guess", f"198.51.100.{i}").status_code == 200
    for i, email in enumerate(VARIANTS):
        assert _post(attacker, email, PASSWORD, f"203.0.113.{i}").status_code == 429, email


@pytest.mark.parametrize("written", VARIANTS)
def test_every_way_of_writing_the_address_logs_in_to_the_same_account(app, written):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    assert _post(app.test_client(), written, PASSWORD, "192.0.2.7").status_code == 302


@pytest.mark.parametrize("written", VARIANTS[1:])
def test_a_second_user_with_the_same_address_written_differently_is_refused(app, written):
    with app.app_context():
        make_user("staff", email="ola@example.no")
        with pytest.raises(services.UserError):
            services.create_user(written, "staff", "long enough password")
        db.session.rollback()


def test_new_users_are_stored_with_the_normal_form_of_their_address(app):
    with app.app_context():
        user = services.create_user("ＫＡＲＩ@Example。no", "staff", "long enough password")
        assert user.email == "kari@example.no"
        db.session.rollback()
