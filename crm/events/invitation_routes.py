"""Invitation pages: the staff's invitations page of an event, and the invitee's
"can't come" link (public, the signed token is the authority)."""

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_login import current_user
from werkzeug.routing import BuildError

from crm.auth.permissions import permission_required
from crm.events import invitations
from crm.events.invitation_forms import ActionForm, RegistrantReminderForm
from crm.events.models import Event
from crm.extensions import csrf, db, limiter
from crm.newsletters import services as newsletters
from crm.newsletters.forms import EVENT_KIND_LABELS
from crm.newsletters.models import Newsletter
from crm.newsletters.routes import STATE_BADGES, STATE_LABELS
from crm.pagination import requested_page
from crm.urls import MAX_ID

bp = Blueprint("invitations", __name__)
links_bp = Blueprint("invitation_links", __name__)
PAGE_SIZE = 50


def _event_or_404(event_id: int) -> Event:
    if event_id > MAX_ID:
        abort(404)
    return db.get_or_404(Event, event_id)


def _event_page(event: Event) -> str | None:
    """The events area's own page of the event, where it has one."""
    for endpoint in ("events.event_detail", "events.detail"):
        try:
            return url_for(endpoint, event_id=event.id)
        except BuildError:
            continue
    return None


def _back(event: Event):
    return redirect(url_for(".event_invitations", event_id=event.id))


def _edit(newsletter: Newsletter):
    return redirect(url_for("newsletters.newsletter_edit", newsletter_id=newsletter.id))


@bp.route("/events/<int:event_id>/invitations")
@permission_required("events.view")
def event_invitations(event_id: int):
    event = _event_or_404(event_id)
    people = invitations.invitees(event)
    status = request.args.get("status", "")
    shown = [p for p in people if p.status == status] if status in invitations.STATUSES else people
    page = requested_page()
    pages = max(1, -(-len(shown) // PAGE_SIZE))
    page = min(page, pages)
    mailings = invitations.invitations_of(event)
    return render_template(
        "events/invitations.html",
        event=event,
        event_page=_event_page(event),
        counts=invitations.status_counts(people),
        statuses=invitations.STATUSES,
        badges=invitations.STATUS_BADGES,
        status=status if status in invitations.STATUSES else "",
        people=shown[(page - 1) * PAGE_SIZE : page * PAGE_SIZE],
        total=len(shown),
        page=page,
        pages=pages,
        mailings=mailings,
        progress={m.id: newsletters.progress(m) for m in mailings if not m.editable},
        reminders={m.id: invitations.reminder_of(m) for m in mailings},
        action_form=ActionForm(),
        reminder_form=RegistrantReminderForm(),
        state_labels=STATE_LABELS,
        state_badges=STATE_BADGES,
        kind_labels=EVENT_KIND_LABELS,
    )


def _make(event_id: int, make):
    event = _event_or_404(event_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        newsletter = make(event)
    except (invitations.InvitationError, newsletters.NewsletterError) as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _back(event)
    db.session.commit()
    flash(_("A draft is made: check the text and whom it goes to, then send it."), "success")
    return _edit(newsletter)


@bp.route("/events/<int:event_id>/invitations/new", methods=["POST"])
@permission_required("events.edit")
def new_invitation(event_id: int):
    return _make(event_id, lambda event: invitations.new_invitation(event, current_user))


@bp.route("/events/<int:event_id>/invitations/<int:newsletter_id>/reminder", methods=["POST"])
@permission_required("events.edit")
def new_reminder(event_id: int, newsletter_id: int):
    def make(event):
        invitation = db.session.get(Newsletter, newsletter_id) if newsletter_id <= MAX_ID else None
        if invitation is None or invitation.event_id != event.id:
            abort(404)
        return invitations.new_reminder(invitation, current_user)

    return _make(event_id, make)


@bp.route("/events/<int:event_id>/registrants/message", methods=["POST"])
@permission_required("events.edit")
def new_message(event_id: int):
    return _make(event_id, lambda event: invitations.new_message(event, current_user))


@bp.route("/events/<int:event_id>/registrants/reminder", methods=["POST"])
@permission_required("events.edit")
def schedule_reminder(event_id: int):
    event = _event_or_404(event_id)
    days = RegistrantReminderForm().number_of_days()
    if days is None:
        flash(_("Choose between 1 and %(max)s days.", max=invitations.MAX_REMINDER_DAYS), "error")
        return _back(event)
    try:
        reminder = invitations.schedule_registrant_reminder(event, days, current_user)
    except (invitations.InvitationError, newsletters.NewsletterError) as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return _back(event)
    db.session.commit()
    flash(_("The reminder to registrants is scheduled."), "success")
    return redirect(url_for("newsletters.newsletter_detail", newsletter_id=reminder.id))


# -- the invitee's "can't come" ----------------------------------------------------------------


@links_bp.route("/arrangementer/<int:event_id>/kan-ikke/<token>", methods=["GET", "POST"])
@csrf.exempt  # the signed token in the link is the authority, as for /unsubscribe
@limiter.limit("30 per minute", methods=["POST"])
def decline(event_id: int, token: str):
    event = db.session.get(Event, event_id) if event_id <= MAX_ID else None
    contact = invitations.read_invitation(event_id, token) if event is not None else None
    if contact is None:
        return _public("events/invitations_link_invalid.html", status=404)
    error = None
    declined = False
    if request.method == "POST":
        try:
            invitations.decline(event, contact, ip=request.remote_addr)
        except invitations.InvitationError as exc:
            db.session.rollback()
            error = str(exc)
        else:
            db.session.commit()
            declined = True
    return _public(
        "events/invitations_decline.html",
        event=event,
        token=token,
        declined=declined,
        error=error,
        # The registration form, filled in for them (SPEC: /arrangementer/<id>).
        register_url=f"/arrangementer/{event.id}?invitasjon={token}",
    )


def _public(template: str, status: int = 200, **context):
    return render_template(template, embed=False, public_args={}, **context), status


def init_app(app) -> None:
    app.register_blueprint(bp)
    app.register_blueprint(links_bp)
    invitations.register_hooks()
