"""Every staff page, for every role: who gets in and who gets 403 (server-side, not menus)."""

import pytest

from tests.routes import fill_url, is_public, staff_rules

# The business rule, stated here on its own (not read from crm/auth/permissions.py):
AREA_ROLES = {
    "home.view": {"admin", "staff"},
    "members.view": {"admin", "staff", "treasurer"},
    "members.edit": {"admin", "staff"},
    "newsletters.view": {"admin", "staff"},
    "newsletters.edit": {"admin", "staff"},
    "events.view": {"admin", "staff", "treasurer"},
    "events.edit": {"admin", "staff"},
    "fees.view": {"admin", "treasurer"},
    "fees.edit": {"admin", "treasurer"},
    "users.manage": {"admin"},
    "reports.view": {"admin", "staff", "treasurer"},
    "account.own": {"admin", "staff", "treasurer"},
}
# Which permissions a URL's area may use: a fee page guarded by members.view would be a leak.
AREA_OF_PREFIX = {
    "/companies": ("members.",),
    "/contacts": ("members.",),
    "/networks": ("members.",),
    "/followups": ("members.",),
    "/home": ("home.",),
    "/fees": ("fees.",),
    "/events": ("events.",),
    "/admin": ("users.",),
    "/account": ("account.",),
    "/newsletters": ("newsletters.",),
    "/mail": ("newsletters.",),
    "/reports": ("reports.",),
}
ROLES = ("admin", "staff", "treasurer")


def _permission(app, rule) -> str | None:
    return getattr(app.view_functions[rule.endpoint], "permission", None)


def test_every_non_public_endpoint_requires_a_permission(app):
    unguarded = [r.rule for r in staff_rules(app) if _permission(app, r) is None]
    assert not unguarded, f"endpoints without permission_required: {unguarded}"


def test_each_area_is_guarded_by_its_own_permissions(app):
    wrong = []
    for rule in staff_rules(app):
        permission = _permission(app, rule)
        for prefix, allowed in AREA_OF_PREFIX.items():
            if rule.rule.startswith(prefix) and not permission.startswith(allowed):
                wrong.append((rule.rule, permission))
    assert not wrong


def _request(client, rule, url):
    method = "GET" if "GET" in rule.methods else sorted(rule.methods - {"HEAD", "OPTIONS"})[0]
    return client.open(url, method=method, data={})


@pytest.mark.parametrize("role", ROLES)
def test_role_matrix(app, client, auth, role):
    auth.login(role)
    problems = []
    for rule in staff_rules(app):
        permission = _permission(app, rule)
        expected_allowed = role in AREA_ROLES[permission]
        response = _request(client, rule, fill_url(app, rule, 999999))
        denied = response.status_code == 403
        if expected_allowed and denied:
            problems.append(f"{role} refused {rule.rule} ({permission})")
        if not expected_allowed and not denied:
            problems.append(f"{role} reached {rule.rule} ({permission}): {response.status_code}")
        assert response.status_code < 500, rule.rule
    assert not problems, "\n".join(problems)


def test_anonymous_visitors_are_sent_to_login_from_every_staff_page(app, client):
    problems = []
    for rule in staff_rules(app):
        response = _request(client, rule, fill_url(app, rule, 1))
        if response.status_code != 302 or "/login" not in response.headers.get("Location", ""):
            problems.append(f"{rule.rule}: {response.status_code}")
    assert not problems


def test_public_endpoints_are_few_and_known(app):
    public = sorted({r.endpoint for r in app.url_map.iter_rules() if is_public(r.endpoint)})
    assert "main.healthz" in public and "auth.login" in public
