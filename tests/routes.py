"""Walking the app's routes: which are public, and how to fill in their URL arguments."""

from flask import Flask

# Endpoints anyone may reach without logging in. Every other endpoint must carry a
# permission (crm.auth.permissions.permission_required), which the role matrix checks.
PUBLIC_ENDPOINTS = {
    "static",
    "main.index",
    "main.healthz",
    "main.subscribe",
    "auth.login",
    "auth.login_code",
    "auth.logout",
    "auth.forgot_password",
    "auth.set_password",
    "i18n.set_language",
    "organisation.logo",
}
PUBLIC_PREFIXES = (
    "subscriptions.",
    "webhooks.",
    "archive.",
    "invitation_links.",
    "events_public.",
)


def is_public(endpoint: str) -> bool:
    return endpoint in PUBLIC_ENDPOINTS or endpoint.startswith(PUBLIC_PREFIXES)


def fill_url(app: Flask, rule, value: int | str = 1) -> str:
    """The rule's URL with every argument filled with `value` (ints) or a word (strings)."""
    args = {}
    for name in rule.arguments:
        converter = rule._converters[name]
        kind = type(converter).__name__
        if kind == "AnyConverter":
            args[name] = sorted(converter.items)[0]
        elif isinstance(value, int) and kind in ("IntegerConverter", "IdConverter"):
            args[name] = value
        else:
            args[name] = str(value)
    with app.test_request_context():
        from flask import url_for

        return url_for(rule.endpoint, **args)


def staff_rules(app: Flask):
    return [rule for rule in app.url_map.iter_rules() if not is_public(rule.endpoint)]
