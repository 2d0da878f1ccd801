"""No input gives a 500 on the event pages: hypothesis over every events form and route,
with real records behind the URLs (the app-wide garbage test only reaches id 1)."""

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crm.events import services
from crm.extensions import db
from tests.events_factories import make_event, old_form_token
from tests.factories import make_company, make_user
from tests.test_garbage_input import garbage_text

NAME = re.compile(r'name="([^"]+)"')


def _seed(app):
    with app.app_context():
        company = make_company("Søppel AS", membership_status="member")
        event = make_event("Søppelkurs", sessions=2, capacity=1, completion_percent=50)
        first = services.register(event.id, name="A", email="a@example.no", company=company)
        services.register(event.id, name="B", email="b@example.no")
        db.session.commit()
        registration = first.registration
        token_path = services.manage_url(registration).removeprefix("http://127.0.0.1:5000")
        admin = make_user("admin", email="events-garbage@example.no")
        return {
            "event": event.id,
            "session": event.sessions[0].id,
            "registration": registration.id,
            "token_path": token_path,
            "admin": admin,
        }


def _targets(ids) -> list[tuple[str, str]]:
    e, s, r, token = ids["event"], ids["session"], ids["registration"], ids["token_path"]
    return [
        ("POST", f"/arrangementer/{e}"),
        ("GET", f"/arrangementer/{e}"),
        ("GET", "/arrangementer"),
        ("GET", "/arrangementer.ics"),
        ("POST", token),
        ("POST", token + "/avmeld"),
        ("POST", token + "/ta-imot"),
        ("POST", token + "/overdra"),
        ("GET", "/sertifikat/x"),
        ("GET", "/events"),
        ("GET", "/events/month"),
        ("POST", "/events/new"),
        ("POST", f"/events/{e}/edit"),
        ("GET", f"/events/{e}"),
        ("GET", f"/events/{e}/checkin"),
        ("POST", f"/events/{e}/checkin/{r}/{s}"),
        ("POST", f"/events/{e}/certificates"),
        ("POST", f"/events/{e}/publish"),
        ("GET", f"/events/{e}/participants.csv"),
    ]


def _fields(client, ids) -> list[str]:
    names = set()
    for url in (
        f"/arrangementer/{ids['event']}",
        ids["token_path"],
        f"/events/{ids['event']}/edit",
    ):
        names |= set(NAME.findall(client.get(url).get_data(as_text=True)))
    return sorted(names - {"csrf_token"})


def _fuzz(app, client, ids, fields):
    @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data):
        for method, url in _targets(ids):
            values = data.draw(st.dictionaries(st.sampled_from(fields), garbage_text, max_size=10))
            if data.draw(st.booleans()):
                values["started"] = old_form_token(app)
            query = data.draw(
                st.dictionaries(
                    st.sampled_from(["q", "session", "year", "month", "show", "embed", "lang"]),
                    garbage_text,
                    max_size=3,
                )
            )
            response = client.open(url, method=method, data=values, query_string=query)
            assert response.status_code < 500, (
                f"{method} {url} {values!r} -> {response.status_code}"
            )

    run()


@pytest.mark.slow
def test_garbage_on_the_public_event_pages_never_causes_a_500(app, client, monkeypatch):
    from crm.extensions import limiter

    monkeypatch.setattr(limiter, "enabled", False)
    ids = _seed(app)
    _fuzz(app, client, ids, _fields(client, ids))


@pytest.mark.slow
def test_garbage_from_staff_on_the_event_pages_never_causes_a_500(app, client, auth, monkeypatch):
    from crm.extensions import limiter

    monkeypatch.setattr(limiter, "enabled", False)
    ids = _seed(app)
    auth.login(user=ids["admin"])
    _fuzz(app, client, ids, _fields(client, ids))
