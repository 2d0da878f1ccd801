"""No input a browser or script can send gives a 500: garbage posted to every form.

For every route, the test reads the field names from the page's own form (GET), then
posts values drawn by hypothesis (control characters, CR/LF, 10 kB strings, numbers,
unicode) as an admin (who may use every form) and anonymously. Query strings get the
same treatment. With TESTING on, exceptions propagate, so a crash fails the test.
"""

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import make_company, make_contact, make_user
from tests.routes import fill_url

NAME = re.compile(r'name="([^"]+)"')
garbage_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
    st.sampled_from(
        [
            "",
            "0",
            "-1",
            "99999999999999999999",
            "1e309",
            "NaN",
            "null",
            "[]",
            "\r\nBcc: x@example.no",
            "=cmd|' /C calc'!A0",
            "<script>alert(1)</script>",
            "../../etc/passwd",
            "%00",
            "31.02.2026",
            "2026-13-45",
            "😀" * 50,
        ]
    ),
    st.builds(
        lambda c, n: c * n, st.sampled_from(["a", "\n", "9", "ø"]), st.integers(1000, 10_000)
    ),
)
SKIP_ENDPOINTS = {"static", "auth.logout"}


def _form_fields(client, url: str) -> list[str]:
    response = client.get(url)
    if response.status_code != 200 or not response.mimetype.startswith("text/html"):
        return []
    return sorted(set(NAME.findall(response.get_data(as_text=True))) - {"csrf_token"})


def _targets(app, client):
    """(method, url, field names) for every route, using real record ids where possible."""
    targets = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint in SKIP_ENDPOINTS:
            continue
        url = fill_url(app, rule, 1)
        fields = _form_fields(client, url) if "GET" in rule.methods else []
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            targets.append((method, url, fields))
    return targets


def _seed(app):
    with app.app_context():
        company = make_company("Søppel Test AS")
        make_contact("Ola", "Garbage", email="ola@example.no", company_id=company.id)
        return make_user("admin", email="garbage-admin@example.no")


def _check(client, method, url, fields, values, query):
    data = {name: values.get(name, "") for name in fields} | values
    response = client.open(url, method=method, data=data, query_string=query)
    assert response.status_code < 500, f"{method} {url} -> {response.status_code}"


@settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def _fuzz_all(app, client, targets, data):
    for method, url, fields in targets:
        names = fields + ["id", "page", "sort", "q", "next", "token"]
        values = data.draw(st.dictionaries(st.sampled_from(names), garbage_text, max_size=8))
        query = data.draw(
            st.dictionaries(
                st.sampled_from(
                    [
                        "q",
                        "page",
                        "sort",
                        "status",
                        "lang",
                        "partial",
                        "year",
                        "_scheme",
                        "_external",
                        "_anchor",
                        "_method",
                        "endpoint",
                        "values",
                    ]
                ),
                garbage_text,
                max_size=4,
            )
        )
        _check(client, method, url, fields, values, query)


def test_garbage_from_a_logged_in_admin_never_causes_a_500(app, client, auth):
    admin = _seed(app)
    auth.login(user=admin)
    _fuzz_all(app, client, _targets(app, client))


def test_garbage_from_anonymous_visitors_never_causes_a_500(app, client):
    _seed(app)
    _fuzz_all(app, client, _targets(app, client))


def test_hostile_path_segments_never_cause_a_500(app, client, auth):
    auth.login("admin")
    for rule in app.url_map.iter_rules():
        if not rule.arguments or rule.endpoint in SKIP_ENDPOINTS:
            continue
        for value in ("0", "-1", "99999999999999999999", "abc", "%F0%9F%98%80", "a" * 2000):
            url = re.sub(r"<[^>]+>", value, rule.rule)
            response = client.get(url)
            assert response.status_code < 500, url


def test_url_building_options_in_the_query_string_never_cause_a_500(app, client, auth):
    auth.login("admin")
    for path in ("/companies", "/contacts", "/mail/messages", "/newsletters", "/fees/invoices"):
        for key in ("_scheme", "_external", "_anchor", "_method", "endpoint", "values"):
            response = client.get(path, query_string={key: "javascript", "sort": "name"})
            assert response.status_code < 500, (path, key)
