"""Who may do what: the one table of role rights, and the decorator that enforces it."""

from functools import wraps

from flask import abort
from flask_login import current_user, login_required

# permission -> roles that hold it
PERMISSIONS: dict[str, frozenset[str]] = {
    "home.view": frozenset({"admin", "staff"}),
    "members.view": frozenset({"admin", "staff", "treasurer"}),
    "members.edit": frozenset({"admin", "staff"}),
    "newsletters.view": frozenset({"admin", "staff"}),
    "newsletters.edit": frozenset({"admin", "staff"}),
    "events.view": frozenset({"admin", "staff", "treasurer"}),
    "events.edit": frozenset({"admin", "staff"}),
    "fees.view": frozenset({"admin", "treasurer"}),
    "fees.edit": frozenset({"admin", "treasurer"}),
    "users.manage": frozenset({"admin"}),
    "reports.view": frozenset({"admin", "staff", "treasurer"}),
    # One's own account: password, second factor.
    "account.own": frozenset({"admin", "staff", "treasurer"}),
}


def can(permission: str, user=None) -> bool:
    user = user or current_user
    if not user or not user.is_authenticated:
        return False
    return user.role in PERMISSIONS[permission]


def permission_required(permission: str):
    """Login required; then 403 unless the user's role holds `permission`."""
    if permission not in PERMISSIONS:
        raise KeyError(permission)

    def decorator(view):
        @wraps(view)
        @login_required
        def wrapped(*args, **kwargs):
            if not can(permission):
                abort(403)
            return view(*args, **kwargs)

        wrapped.permission = permission  # read by the role-matrix test
        return wrapped

    return decorator
