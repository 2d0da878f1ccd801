"""Sessions and "remember me" cookies that can be ended.

Flask-Login keeps `User.get_id()` in the session and, signed, in the remember cookie.
Ours is `id:session_version:nonce`:

- the version must equal the user's current `session_version` on every request, so
  raising it (logout, password change or reset, deactivation) ends every session and
  remember cookie of that user at once, on every device;
- the nonce is new at each login, so each login's remember cookie differs (a copied
  cookie is not the same as every future one).
"""

import secrets

from flask import current_app, request
from flask_login import login_user

from crm.auth.models import User
from crm.extensions import db
from crm.numbers import is_digits
from crm.urls import MAX_ID


def load_user(user_id: str) -> User | None:
    """The user a session or remember cookie names, if that login is still valid."""
    parts = str(user_id or "").split(":")
    if len(parts) != 3 or not is_digits(parts[0]) or not is_digits(parts[1]):
        return None
    if len(parts[0]) > 10 or len(parts[1]) > 10 or int(parts[0]) > MAX_ID:
        return None
    user = db.session.get(User, int(parts[0]))
    if user is None or user.session_version != int(parts[1]) or not user.active:
        return None
    user.__dict__["login_nonce"] = parts[2]
    return user


def start_session(user: User, remember: bool = False) -> None:
    """Log `user` in in this browser with a fresh nonce (and remember cookie if asked)."""
    user.__dict__["login_nonce"] = secrets.token_urlsafe(12)
    login_user(user, remember=remember)


def keep_this_session(user: User) -> None:
    """After `user.end_sessions()`: log this browser in again under the new version.

    The remember cookie is renewed only if this browser had one.
    """
    cookie = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
    start_session(user, remember=cookie in request.cookies)
