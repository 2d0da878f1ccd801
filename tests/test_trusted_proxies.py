"""Behind one reverse proxy each visitor keeps their own address; a forged header is ignored."""

import pytest

from crm import trust_proxies
from crm.config import load_settings
from crm.extensions import db
from crm.subscriptions.models import PendingSignup
from tests.test_subscriptions_signup import subscribe

PROXY = "10.0.0.1"


@pytest.fixture
def behind_proxies(app, monkeypatch, quick_forms):
    """The app as `TRUSTED_PROXIES=n` builds it."""

    def configure(hops: int):
        monkeypatch.setitem(app.config, "TRUSTED_PROXIES", hops)
        monkeypatch.setattr(app, "wsgi_app", app.wsgi_app)
        trust_proxies(app)

    return configure


@pytest.fixture
def quick_forms(app, monkeypatch):
    monkeypatch.setitem(app.config, "SUBSCRIBE_MIN_FILL_SECONDS", 0)


def _signup_via_proxy(client, i: int, forwarded_for: str):
    return subscribe(
        client,
        email=f"person{i}@example.no",
        ip=PROXY,
        headers={"X-Forwarded-For": forwarded_for, "X-Forwarded-Proto": "https"},
    )


def test_trusted_proxies_setting_is_read_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("TRUSTED_PROXIES", "1")
    assert load_settings(tmp_path)["TRUSTED_PROXIES"] == 1
    monkeypatch.delenv("TRUSTED_PROXIES")
    assert load_settings(tmp_path)["TRUSTED_PROXIES"] == 0


def test_signup_rate_limit_counts_each_visitor_behind_one_proxy(app, client, behind_proxies):
    behind_proxies(1)
    statuses = [_signup_via_proxy(client, i, f"203.0.113.{i}").status_code for i in range(1, 13)]
    assert 429 not in statuses, statuses


def test_consent_ledger_stores_the_visitors_address_behind_one_proxy(app, client, behind_proxies):
    behind_proxies(1)
    assert _signup_via_proxy(client, 1, "203.0.113.9").status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(PendingSignup.ip)) == "203.0.113.9"


def test_forged_forwarded_for_is_ignored_without_trusted_proxies(app, client, behind_proxies):
    behind_proxies(0)
    assert _signup_via_proxy(client, 1, "203.0.113.9").status_code == 200
    with app.app_context():
        assert db.session.scalar(db.select(PendingSignup.ip)) == PROXY
    statuses = [_signup_via_proxy(client, i, f"203.0.113.{i}").status_code for i in range(2, 13)]
    assert statuses[-1] == 429


def test_only_the_nearest_hop_is_trusted_with_one_proxy(app, client, behind_proxies):
    behind_proxies(1)
    # The visitor forges a first hop; the proxy appends the address it really saw.
    _signup_via_proxy(client, 1, "198.51.100.66, 203.0.113.5")
    with app.app_context():
        assert db.session.scalar(db.select(PendingSignup.ip)) == "203.0.113.5"
