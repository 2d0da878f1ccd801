"""Language choice and the display formats of dates, times and money."""

from datetime import date, datetime
from decimal import Decimal
from functools import cached_property, lru_cache
from pathlib import Path

import flask
from babel import Locale, support
from babel.numbers import format_decimal
from flask import Blueprint, has_request_context, redirect, request, session, url_for
from flask_babel import get_locale
from wtforms.i18n import messages_path

from crm.timeutil import OSLO

LANGUAGES = {"nb": "Norsk bokmål", "en": "English"}

bp = Blueprint("i18n", __name__)


def translation_domains(directory: Path) -> list[str]:
    """One catalog per area (core.po, members.po, …) so areas never edit the same file.

    Flask-Babel loads every domain listed and merges them into one catalog per locale,
    so the domain a string sits in never decides where it translates: any msgid works
    in every area. Each msgid lives in exactly one catalog (tests/test_translations.py
    checks): an area's own words in its catalog, words more than one area uses (and
    the words of crm/*.py, templates/base.html and templates/macros/) in core.po.
    """
    found = sorted(p.stem for p in (directory / "nb" / "LC_MESSAGES").glob("*.po"))
    return found or ["messages"]


def select_locale() -> str:
    if not has_request_context():  # CLI commands and RQ jobs: Norwegian unless forced
        return "nb"
    args = request.args
    # `in` first: werkzeug's `get` of an absent name raises and catches an error inside.
    chosen = (args["lang"] if "lang" in args else None) or session.get("lang")
    return chosen if chosen in LANGUAGES else "nb"


def babel_locale() -> Locale:
    """`select_locale()` for Flask-Babel, as a `Locale` it takes as it is: given the code,
    it parses it anew on every request (a look for the locale's data file on disk each
    time), which a parsed one per language and process avoids."""
    return _parsed_locale(select_locale())


@lru_cache(maxsize=len(LANGUAGES))
def _parsed_locale(code: str) -> Locale:
    return Locale.parse(code)


@bp.route("/language/<code>", methods=["POST"])
def set_language(code: str):
    if code in LANGUAGES:
        session["lang"] = code
    from crm.urls import safe_next

    return redirect(safe_next(request.form.get("next"), url_for("main.index")))


def format_date(value: date | datetime | None) -> str:
    """dd.mm.yyyy; datetimes are shown in Europe/Oslo."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        value = value.astimezone(OSLO).date()
    return value.strftime("%d.%m.%Y")


def format_datetime(value: datetime | None) -> str:
    if value is None:
        return ""
    return value.astimezone(OSLO).strftime("%d.%m.%Y %H:%M")


def format_money(value: int | Decimal | None, *, ore: bool = False) -> str:
    """`kr 12 500,00` (nb) / `NOK 12,500.00` (en). Integers are øre when `ore` is set."""
    if value is None:
        return ""
    amount = Decimal(value) / 100 if ore else Decimal(value)
    locale = str(get_locale() or "nb")
    number = format_decimal(amount, format="#,##0.00", locale=locale)
    return f"kr\u00a0{number}" if locale == "nb" else f"NOK\u00a0{number}"


def format_number(value: int | None) -> str:
    if value is None:
        return ""
    # Below a thousand no locale we offer groups or changes digits; babel takes 60 µs a
    # call, and a list page formats a column of 50.
    if isinstance(value, int) and 0 <= value < 1000:
        return str(value)
    return format_decimal(value, format="#,##0", locale=str(get_locale() or "nb"))


@lru_cache(maxsize=8)
def _wtforms_translations(locale: str) -> support.Translations:
    return support.Translations.load(messages_path(), [locale], domain="wtforms")


class Request(flask.Request):
    """The app's request: WTForms' catalog for the request's language, looked up when a
    form first asks for it."""

    @cached_property
    def wtforms_translations(self) -> support.Translations:
        # Flask-WTF reads WTForms' own catalog (its "This field is required." and others)
        # from disk again on every request that builds a form; it looks in this attribute
        # first, so one catalog per language is parsed once per process. Looked up here,
        # not before every request: most requests (a signup, a page without a form) never
        # ask.
        return _wtforms_translations(str(get_locale() or "nb"))


def init_app(app) -> None:
    app.register_blueprint(bp)
    app.request_class = Request
    app.jinja_env.filters.update(
        date=format_date,
        datetime=format_datetime,
        money=format_money,
        number=format_number,
    )
    app.jinja_env.globals.update(LANGUAGES=LANGUAGES, get_locale=get_locale)
