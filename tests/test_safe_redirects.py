"""After login or a language change the browser only ever goes to a path on this site."""

from urllib.parse import urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.urls import safe_next
from tests.factories import PASSWORD, make_user

HOSTILE = [
    "/\t/evil.example",
    "/\n/evil.example",
    "/\r\n/x",
    "/\n",
    "/%09/evil.example",  # stays percent-encoded: a harmless path on this site
    "//evil.example",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "https://evil.example/",
    "javascript:alert(1)",
    "/\x00/evil.example",
    "/\u3000/evil.example",
    "/\u200b/evil.example",
    " /evil",
    "evil.example",
    "",
]


def _lands_on_this_site(location: str) -> bool:
    parts = urlsplit(location)
    # What a browser does with the header: drop tabs and line breaks, read \ as /.
    cleaned = "".join(ch for ch in location if ch not in "\t\r\n").replace("\\", "/")
    return not parts.scheme and not parts.netloc and not cleaned.startswith("//")


@pytest.mark.parametrize("target", HOSTILE)
def test_safe_next_keeps_every_hostile_target_on_this_site(target):
    result = safe_next(target, "/")
    assert _lands_on_this_site(result)
    assert all(ch.isprintable() and ch != " " for ch in result)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("/\\\t\n\r @:.%?#ae\u3000\u00a0\x00\u2028"), max_size=12))
def test_safe_next_never_sends_anyone_off_site(target):
    assert _lands_on_this_site(safe_next(target, "/"))


def test_safe_next_keeps_ordinary_paths():
    assert safe_next("/companies?q=ås&page=2", "/") == "/companies?q=ås&page=2"


@pytest.mark.parametrize("target", ["/%09/evil.example", "/\t/evil.example", "/\n/x", "/\n"])
def test_login_with_hostile_next_stays_on_site_and_never_fails(app, client, target):
    with app.app_context():
        make_user("staff", email="ola@example.no")
    response = client.post(
        "/login",
        query_string={"next": target},
        data={"email": "ola@example.no", "password": PASSWORD},
    )
    assert response.status_code == 302
    location = response.headers["Location"]
    assert _lands_on_this_site(location), location


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(target=st.sampled_from(HOSTILE) | st.text(max_size=30))
def test_language_switch_with_hostile_next_stays_on_site_and_never_fails(client, target):
    response = client.post("/language/en", data={"next": target})
    assert response.status_code == 302
    assert _lands_on_this_site(response.headers["Location"])
