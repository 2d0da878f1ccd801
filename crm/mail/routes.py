"""Staff email log (messages, suppressions) and SendGrid's event webhook."""

import json
import logging

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import func, or_, select

from crm.auth.permissions import permission_required
from crm.bulk import chunks, paused_gc
from crm.extensions import csrf, db, limiter
from crm.mail import services
from crm.mail.forms import LiftSuppressionForm, ResendForm, TestEmailForm
from crm.mail.models import STATES, EmailMessage, Suppression
from crm.pagination import requested_page
from crm.urls import clean_query

log = logging.getLogger(__name__)

bp = Blueprint("mail", __name__)
# Public endpoints called by providers (no login; each authenticates its own requests).
webhooks_bp = Blueprint("webhooks", __name__)

# Badge colour of each state in the log.
STATE_BADGES = {
    "queued": "neutral",
    "retrying": "warning",
    "sending": "info",
    "sent": "info",
    "delivered": "success",
    "opened": "success",
    "clicked": "success",
    "failed": "danger",
    "bounced": "danger",
    "dropped": "danger",
    "complained": "danger",
}
STATE_LABELS = {
    "queued": _l("Queued"),
    "retrying": _l("Waiting to retry"),
    "sending": _l("Sending"),
    "sent": _l("Sent"),
    "delivered": _l("Delivered"),
    "opened": _l("Opened"),
    "clicked": _l("Clicked"),
    "failed": _l("Failed"),
    "bounced": _l("Bounced"),
    "dropped": _l("Dropped"),
    "complained": _l("Marked as spam"),
}
OUTCOME_LABELS = {"sent": _l("Accepted"), "retry": _l("Will retry"), "failed": _l("Failed")}
REASON_LABELS = {
    "bounce": _l("Bounced"),
    "dropped": _l("Dropped"),
    "spamreport": _l("Marked as spam"),
    "unsubscribe": _l("Unsubscribed"),
    "manual": _l("Added by staff"),
}
# What each category of email is, in words (queue_email's `category`).
CATEGORY_LABELS = {
    "subscription": _l("Newsletter signup"),
    "fee": _l("Membership fees"),
    "newsletter-test": _l("Newsletter test copy"),
    "test": _l("Test email"),
}


def category_label(category: str) -> str:
    """A category in words; one without a label yet reads as its name, spaced out."""
    label = CATEGORY_LABELS.get(category)
    if label is not None:
        return str(label)
    return category.replace("-", " ").replace("_", " ").capitalize() if category else "—"


# (label, states counted, css class when non-zero) of the figures above the log.
STAT_GROUPS = (
    (_l("Waiting"), ("queued", "retrying", "sending"), "is-warn"),
    (_l("Sent"), ("sent", "delivered", "opened", "clicked"), ""),
    (_l("Delivered"), ("delivered", "opened", "clicked"), ""),
    (_l("Failed"), ("failed",), "is-bad"),
    (_l("Bounced or spam"), ("bounced", "dropped", "complained"), "is-bad"),
)
# Sandboxed preview of a message's HTML: its inline styles may apply, nothing may run
# or load, and only our own pages may frame it.
PREVIEW_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"
)


def _like(term: str) -> str:
    escaped = term.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


@bp.route("/mail/messages")
@permission_required("newsletters.view")
def message_list():
    state = request.args.get("state", "")
    category = clean_query(request.args.get("category"), 50)
    q = clean_query(request.args.get("q"), 254)
    statement = select(EmailMessage)
    if state in STATES:
        statement = statement.where(EmailMessage.state == state)
    if category:
        statement = statement.where(EmailMessage.category == category)
    if q:
        pattern = _like(q)
        statement = statement.where(
            or_(
                func.lower(EmailMessage.to_email).like(pattern, escape="\\"),
                func.lower(EmailMessage.to_name).like(pattern, escape="\\"),
            )
        )
    page = db.paginate(
        statement.order_by(EmailMessage.created_at.desc(), EmailMessage.id.desc()),
        page=requested_page(),
        per_page=current_app.config["PAGE_SIZE"],
        error_out=False,
        max_per_page=200,
    )
    counts = dict(
        db.session.execute(
            select(EmailMessage.state, func.count()).group_by(EmailMessage.state)
        ).all()
    )
    stats = []
    for label, group, kind in STAT_GROUPS:
        value = sum(counts.get(s, 0) for s in group)
        stats.append({"label": label, "value": value, "kind": kind if value else ""})
    categories = db.session.scalars(
        select(EmailMessage.category)
        .where(EmailMessage.category != "")
        .distinct()
        .order_by(EmailMessage.category)
    ).all()
    return render_template(
        "mail/message_list.html",
        page=page,
        stats=stats,
        categories=categories,
        states=STATES,
        filters={"state": state, "category": category, "q": q},
        test_form=TestEmailForm(),
        **_labels(),
    )


def _labels() -> dict:
    return {
        "state_badges": STATE_BADGES,
        "state_labels": STATE_LABELS,
        "outcome_labels": OUTCOME_LABELS,
        "reason_labels": REASON_LABELS,
        "category_label": category_label,
    }


@bp.route("/mail/test", methods=["POST"])
@permission_required("newsletters.edit")
def send_test():
    """Queue the test email to an address, to check the mail settings end to end."""
    form = TestEmailForm()
    if form.validate_on_submit():
        try:
            message = services.queue_email(
                form.address.data,
                "mail/test",
                {"name": current_user.name},
                category="test",
            )
        except services.InvalidAddress:
            flash(_("That email address cannot receive email."), "error")
        else:
            db.session.commit()
            flash(_("Test email queued to %(email)s.", email=message.to_email), "success")
            return redirect(url_for("mail.message_detail", message_id=message.id))
    else:
        flash(_("Please enter a valid email address."), "error")
    return redirect(url_for("mail.message_list"))


def _message_or_404(message_id: int) -> EmailMessage:
    message = db.session.get(EmailMessage, message_id)
    if message is None:
        abort(404)
    return message


@bp.route("/mail/messages/<int:message_id>")
@permission_required("newsletters.view")
def message_detail(message_id: int):
    message = _message_or_404(message_id)
    contact_url = None
    if message.contact_id and "members.contact_detail" in current_app.view_functions:
        contact_url = url_for("members.contact_detail", contact_id=message.contact_id)
    return render_template(
        "mail/message_detail.html",
        message=message,
        resend_form=ResendForm(),
        suppressed=services.is_suppressed(message.to_email),
        contact_url=contact_url,
        **_labels(),
    )


@bp.route("/mail/messages/<int:message_id>/preview")
@permission_required("newsletters.view")
def message_preview(message_id: int):
    """The message's HTML as the recipient sees it, for the sandboxed frame on the detail page."""
    message = _message_or_404(message_id)
    if message.html_body is None:
        abort(404)
    response = current_app.response_class(message.html_body, mimetype="text/html")
    response.headers["Content-Security-Policy"] = PREVIEW_CSP
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.frame_ancestors = "'self'"
    return response


@bp.route("/mail/messages/<int:message_id>/resend", methods=["POST"])
@permission_required("newsletters.edit")
def message_resend(message_id: int):
    message = _message_or_404(message_id)
    form = ResendForm()
    if not form.validate_on_submit():
        abort(400)
    if not message.can_resend:
        flash(_("Only failed messages can be sent again."), "warning")
    else:
        services.resend_message(message)
        db.session.commit()
        flash(_("The message is queued to be sent again."), "success")
    return redirect(url_for("mail.message_detail", message_id=message.id))


@bp.route("/mail/suppressions")
@permission_required("newsletters.view")
def suppression_list():
    q = clean_query(request.args.get("q"), 254)
    statement = select(Suppression)
    if q:
        statement = statement.where(Suppression.email.like(_like(q), escape="\\"))
    page = db.paginate(
        statement.order_by(Suppression.updated_at.desc(), Suppression.id.desc()),
        page=requested_page(),
        per_page=current_app.config["PAGE_SIZE"],
        error_out=False,
        max_per_page=200,
    )
    return render_template(
        "mail/suppression_list.html",
        page=page,
        q=q,
        lift_form=LiftSuppressionForm(),
        **_labels(),
    )


@bp.route("/mail/suppressions/<int:suppression_id>/lift", methods=["POST"])
@permission_required("newsletters.edit")
def suppression_lift(suppression_id: int):
    suppression = db.session.get(Suppression, suppression_id)
    if suppression is None:
        abort(404)
    if not LiftSuppressionForm().validate_on_submit():
        abort(400)
    services.lift_suppression(suppression.email)
    db.session.commit()
    flash(_("%(email)s may receive email again.", email=suppression.email), "success")
    return redirect(url_for("mail.suppression_list"))


def _refuse_constant(name: str):
    # NaN and Infinity are not JSON (and PostgreSQL's json type refuses them).
    raise ValueError(f"{name} is not JSON")


@webhooks_bp.route("/webhooks/sendgrid", methods=["POST"])
@csrf.exempt
@limiter.exempt
def sendgrid():
    """SendGrid's signed event webhook: a JSON array of events.

    403 unless signed with SENDGRID_WEBHOOK_PUBLIC_KEY's key pair and fresh; 400 for a
    signed body that is not an array of objects. New events are stored and applied
    a thousand at a time (crm.bulk.CHUNK), each chunk in one transaction (a delivery can carry
    thousands); should a chunk fail, its events are applied again one by one, each in
    its own transaction. 503 when an event could not be applied, so SendGrid sends the
    batch again (events already stored are skipped as replays).
    """
    raw_body = request.get_data(cache=True)
    authentic = services.webhook_request_is_authentic(
        current_app.config.get("SENDGRID_WEBHOOK_PUBLIC_KEY", ""),
        raw_body,
        request.headers.get("X-Twilio-Email-Event-Webhook-Signature", ""),
        request.headers.get("X-Twilio-Email-Event-Webhook-Timestamp", ""),
    )
    if not authentic:
        return jsonify(error="invalid or missing signature"), 403
    try:
        events = json.loads(raw_body, parse_constant=_refuse_constant)
    except (ValueError, RecursionError):
        return jsonify(error="body is not JSON"), 400
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        return jsonify(error="expected a JSON array of event objects"), 400
    new = duplicates = failed = 0
    for chunk in chunks(events):
        try:
            with paused_gc():  # thousands of small dicts, no cycles
                added, repeated = services.record_events(chunk)
            db.session.commit()
        except Exception:  # noqa: BLE001 - find the bad event: apply them one by one
            db.session.rollback()
            log.warning("applying %d SendGrid events one by one", len(chunk), exc_info=True)
            added, repeated, not_applied = _record_one_by_one(chunk)
            failed += not_applied
        new += added
        duplicates += repeated
    status = 503 if failed else 200
    return jsonify(received=len(events), new=new, duplicates=duplicates, failed=failed), status


def _record_one_by_one(events: list[dict]) -> tuple[int, int, int]:
    """Each event in its own transaction: (new, duplicates, failed)."""
    new = duplicates = failed = 0
    for event in events:
        try:
            if services.record_event(event) is None:
                duplicates += 1
            else:
                new += 1
            db.session.commit()
        except Exception:  # noqa: BLE001 - one bad event must not lose the others
            db.session.rollback()
            failed += 1
            log.exception("could not apply SendGrid event %r", event.get("sg_event_id"))
    return new, duplicates, failed


def init_app(app) -> None:
    from crm import worker
    from crm.mail import cli, tasks

    app.register_blueprint(bp)
    app.register_blueprint(webhooks_bp)
    cli.init_app(app)
    # Every worker periodically re-enqueues messages whose job was lost.
    if tasks.requeue_stalled_messages not in worker.WORKER_HOOKS:
        worker.WORKER_HOOKS.append(tasks.requeue_stalled_messages)
