"""Error pages: every failure gets a page in the site's layout, never a stack trace."""

from flask import current_app, jsonify, render_template, request
from flask_babel import gettext as _
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from crm.extensions import db


def _wants_json() -> bool:
    return (
        request.path.startswith("/webhooks/") or request.accept_mimetypes.best == "application/json"
    )


def _render(status: int, title: str, message: str):
    if _wants_json():
        return jsonify(error=message), status
    return render_template("errors/error.html", status=status, title=title, message=message), status


def handle_http_error(error: HTTPException):
    pages = {
        400: (
            _("Bad request"),
            _("The request could not be understood. Please check what you entered."),
        ),
        403: (_("No access"), _("You do not have access to this page.")),
        404: (_("Not found"), _("The page does not exist.")),
        405: (_("Not allowed"), _("That action is not allowed here.")),
        413: (_("Too large"), _("The file is too large.")),
        429: (_("Slow down"), _("Too many attempts. Please wait a moment and try again.")),
    }
    status = error.code or 500
    title, message = pages.get(status, (error.name, error.description or error.name))
    return _render(status, title, message)


def handle_csrf_error(error: CSRFError):
    return _render(
        400,
        _("Form expired"),
        _("The form had expired. Please go back, reload the page and try again."),
    )


def handle_unexpected(error: Exception):
    db.session.rollback()
    if not isinstance(error, HTTPException):
        current_app.logger.exception("unexpected error on %s %s", request.method, request.path)
    if isinstance(error, HTTPException):
        return handle_http_error(error)
    return _render(500, _("Error"), _("Something went wrong on our side. Nothing was saved."))


def init_app(app) -> None:
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_error)
    # Tests want the traceback, not a polite page.
    if not (app.config.get("PROPAGATE_EXCEPTIONS") or app.testing):
        app.register_error_handler(Exception, handle_unexpected)
