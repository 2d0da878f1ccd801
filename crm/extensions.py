"""Extension objects, created unattached and bound to the app in `create_app`."""

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Stable constraint names keep Alembic migrations identical on SQLite and PostgreSQL.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()


class _LoginManager(LoginManager):
    """Marks the remember cookie Secure whenever the request came over HTTPS, like the
    session cookie (crm/security.py), not only when PUBLIC_BASE_URL says https."""

    def _session_protection_failed(self):
        # An empty session (a visitor who never logged in) has nothing to protect:
        # Flask-Login says so too, but only after hashing the visitor's address and
        # browser, on every public request.
        from flask import session

        if not session:
            return False
        return super()._session_protection_failed()

    def _set_cookie(self, response):
        super()._set_cookie(response)
        from flask import current_app, request

        name = current_app.config.get("REMEMBER_COOKIE_NAME", "remember_token")
        if not request.is_secure:
            return
        cookies = response.headers.getlist("Set-Cookie")
        response.headers.remove("Set-Cookie")
        for cookie in cookies:
            if cookie.startswith(name + "=") and "; Secure" not in cookie:
                cookie += "; Secure"
            response.headers.add("Set-Cookie", cookie)


login_manager = _LoginManager()
csrf = CSRFProtect()
babel = Babel()
limiter = Limiter(key_func=get_remote_address, default_limits=[])
