"""Klynge: membership CRM and newsletter backend for an industry cluster."""

import gc
import os
from pathlib import Path

from flask import Flask

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def create_app(test_config: dict | None = None) -> Flask:
    app = Flask(
        __name__,
        instance_relative_config=True,
        # CRM_INSTANCE_PATH moves secrets, SQLite, outbox and embedded Redis elsewhere.
        instance_path=os.environ.get("CRM_INSTANCE_PATH") or None,
        template_folder=str(PROJECT_ROOT / "templates"),
        static_folder=str(PROJECT_ROOT / "static"),
    )
    from crm.config import load_settings

    app.config.update(load_settings(Path(app.instance_path)))
    if test_config:
        app.config.update(test_config)
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)
    trust_proxies(app)

    from crm import urls

    urls.init_app(app)  # before any blueprint adds rules
    register_extensions(app)
    register_blueprints(app)
    register_errorhandlers(app)
    register_commands(app)
    if not app.testing:
        settle_garbage_collector()
    return app


def settle_garbage_collector() -> None:
    """Leave the objects of the built app (some 200,000: modules, mappers, routes,
    templates) out of every later garbage collection.

    They live as long as the process does, yet Python's oldest generation walks them
    all every few thousand requests: 70-80 ms each time, a request caught behind it,
    some 0.02-0.03 ms per request on average. Garbage of the build is collected first,
    so nothing collectable is kept. Not in tests, which build many apps in one process:
    the earlier apps must stay collectable.
    """
    gc.collect()
    gc.freeze()


def trust_proxies(app: Flask) -> None:
    """Take the client's address and scheme from the TRUSTED_PROXIES nearest proxies.

    Rate limits and the consent ledger's IP read `request.remote_addr`; behind a proxy
    that is the proxy's address unless ProxyFix reads X-Forwarded-For. With 0 proxies
    the headers are left alone: anyone could send them.
    """
    hops = int(app.config.get("TRUSTED_PROXIES") or 0)
    if hops > 0:
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)


def _limiter_storage(redis_url: str) -> str:
    if redis_url.startswith("unix://"):
        return "redis+unix://" + redis_url.removeprefix("unix://")
    return redis_url


def register_extensions(app: Flask) -> None:
    from flask_babel import lazy_gettext as _l

    from crm import i18n, security, ui
    from crm.extensions import babel, csrf, db, limiter, login_manager, migrate
    from crm.queue import redis_url

    db.init_app(app)
    migrate.init_app(app, db, directory=str(PROJECT_ROOT / "migrations"))
    csrf.init_app(app)
    app.config.setdefault("RATELIMIT_STORAGE_URI", _limiter_storage(redis_url(app)))
    limiter.init_app(app)
    domains = i18n.translation_domains(PROJECT_ROOT / "translations")
    babel.init_app(
        app,
        locale_selector=i18n.babel_locale,
        default_domain=";".join(domains),
        default_translation_directories=";".join(
            [str(PROJECT_ROOT / "translations")] * len(domains)
        ),
    )
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message_category = "info"
    login_manager.login_message = _l("Please log in to see this page.")
    i18n.init_app(app)
    security.init_app(app)
    ui.init_app(app)

    from crm import database

    database.init_app(app)


def register_blueprints(app: Flask) -> None:
    from crm import main
    from crm.auth import routes as auth_routes
    from crm.events import invitation_routes
    from crm.events import routes as events_routes
    from crm.fees import routes as fees_routes
    from crm.followups import routes as followups_routes
    from crm.home import routes as home_routes
    from crm.mail import routes as mail_routes
    from crm.members import import_routes
    from crm.members import routes as members_routes
    from crm.newsletters import routes as newsletters_routes
    from crm.organisation import routes as organisation_routes
    from crm.reports import routes as reports_routes
    from crm.subscriptions import routes as subscriptions_routes

    app.register_blueprint(main.bp)
    app.register_blueprint(auth_routes.bp)
    app.register_blueprint(auth_routes.admin_bp)
    members_routes.init_app(app)
    fees_routes.init_app(app)
    followups_routes.init_app(app)
    home_routes.init_app(app)
    import_routes.init_app(app)
    subscriptions_routes.init_app(app)
    mail_routes.init_app(app)
    newsletters_routes.init_app(app)
    reports_routes.init_app(app)
    organisation_routes.init_app(app)
    invitation_routes.init_app(app)
    events_routes.init_app(app)


def register_errorhandlers(app: Flask) -> None:
    from crm import errors

    errors.init_app(app)


def register_commands(app: Flask) -> None:
    from crm import cli

    cli.init_app(app)
