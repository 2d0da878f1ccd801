"""Staff pages for newsletters (/newsletters) and the public archive (/nyhetsbrev)."""

from dataclasses import dataclass, replace
from datetime import datetime

from babel.numbers import format_decimal
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
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select

from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.mail.backends import substitute
from crm.members.models import CONTACT_ROLES, Network
from crm.newsletters import audience, compose, ledger, services, statistics
from crm.newsletters.forms import (
    EVENT_KIND_LABELS,
    KIND_LABELS,
    MEMBERSHIP_LABELS,
    ROLE_LABELS,
    ActionForm,
    NewsletterForm,
    ScheduleForm,
    TestSendForm,
    municipality_labels,
)
from crm.newsletters.models import (
    MEMBERSHIP_FILTERS,
    NEWSLETTER_KINDS,
    NEWSLETTER_STATES,
    Newsletter,
)
from crm.numbers import is_digits
from crm.pagination import requested_page
from crm.subscriptions.models import Topic, in_display_order
from crm.subscriptions.topics import sync_topics

bp = Blueprint("newsletters", __name__, url_prefix="/newsletters")
archive_bp = Blueprint("archive", __name__)

STATE_BADGES = {
    "draft": "neutral",
    "scheduled": "info",
    "sending": "warning",
    "paused": "warning",
    "finished": "success",
    "cancelled": "danger",
}
STATE_LABELS = {
    "draft": _l("Draft"),
    "scheduled": _l("Scheduled"),
    "sending": _l("Sending"),
    "paused": _l("Paused"),
    "finished": _l("Sent"),
    "cancelled": _l("Cancelled"),
}
SKIP_LABELS = {
    "no_consent": _l("No consent"),
    "suppressed": _l("Suppressed address"),
    "erased": _l("Erased"),
    "no_email": _l("No email address"),
    "filter": _l("No longer in the audience"),
    "objected": _l("Objected to the network's mail"),
    "duplicate": _l("Same address twice"),
    "merged": _l("Contacts merged: one copy is enough"),
    "cancelled": _l("Cancelled"),
}


def _preview_csp() -> str:
    # The email is shown in a sandboxed frame: its inline styles apply, nothing runs,
    # images load only from our own site (others are shown as placeholders).
    return (
        "default-src 'none'; style-src 'unsafe-inline'; "
        f"img-src 'self' data: {current_app.config['PUBLIC_BASE_URL']}; "
        "sandbox; frame-ancestors 'self'"
    )


def _sandboxed(html: str):
    response = current_app.response_class(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = _preview_csp()
    response.headers["X-Frame-Options"] = "SAMEORIGIN"
    response.frame_ancestors = "'self'"
    return response


def _newsletter_or_404(newsletter_id: int) -> Newsletter:
    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is None:
        abort(404)
    return newsletter


@bp.app_template_filter("one_decimal")
def _one_decimal(value) -> str:
    """12.5 -> "12,5" (nb) / "12.5" (en)."""
    if value is None:
        return ""
    return format_decimal(value, format="#,##0.0", locale=str(get_locale() or "nb"))


@bp.app_template_filter("time_left")
def time_left(seconds: int | None) -> str:
    """Seconds to go, in the page's language: "42 s", "3 min 5 s", "2 h 10 min" (en)."""
    if not seconds:
        return ""
    minutes, seconds = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return _("%(hours)s h %(minutes)s min", hours=hours, minutes=minutes)
    if minutes:
        return _("%(minutes)s min %(seconds)s s", minutes=minutes, seconds=seconds)
    return _("%(seconds)s s", seconds=seconds)


@bp.context_processor
def _labels():
    return {
        "state_badges": STATE_BADGES,
        "state_labels": STATE_LABELS,
        "skip_labels": SKIP_LABELS,
    }


def _content(form: NewsletterForm) -> services.Content:
    return services.Content(
        subject=form.subject.data or "",
        preheader=form.preheader.data or "",
        body=form.body.data or "",
        topics=tuple(form.topics.data or ()),
        network_ids=tuple(form.networks.data or ()),
        municipalities=tuple(form.municipalities.data or ()),
        membership=form.membership.data or "",
        roles=tuple(form.roles.data or ()),
        in_archive=bool(form.in_archive.data),
        kind=form.kind.data or "newsletter",
    )


# -- list and compose -----------------------------------------------------------------


@bp.route("")
@permission_required("newsletters.view")
def newsletter_list():
    state = request.args.get("state", "")
    statement = select(Newsletter)
    if state in NEWSLETTER_STATES:
        statement = statement.where(Newsletter.state == state)
    page = db.paginate(
        statement.order_by(Newsletter.created_at.desc(), Newsletter.id.desc()),
        page=requested_page(),
        per_page=current_app.config["PAGE_SIZE"],
        error_out=False,
        max_per_page=200,
    )
    counts = ledger.counts_of([n.id for n in page.items if not n.editable])
    return render_template(
        "newsletters/list.html", page=page, state=state, states=NEWSLETTER_STATES, counts=counts
    )


def _render_form(form: NewsletterForm, newsletter: Newsletter | None = None):
    return render_template(
        "newsletters/form.html",
        form=form,
        newsletter=newsletter,
        merge_fields=(compose.merge_field_tag(str(get_locale())),),
        event_kinds=EVENT_KIND_LABELS,
        event=_event_of(newsletter),
        recipients_now=services.recipient_count(newsletter) if newsletter else None,
        picked=services.picked_count(newsletter) if newsletter else 0,
    )


def _event_of(newsletter: Newsletter | None):
    """The event an event's mail belongs to (for its pages' links), or None."""
    if newsletter is None or newsletter.event_id is None:
        return None
    from crm.events.models import Event

    return db.session.get(Event, newsletter.event_id)


def _prefill_network(form: NewsletterForm, value) -> None:
    """ "Write to the network" (the network page): that network's members, who have
    consent for the general newsletter or the network's own topic."""
    from crm.members.listing import parse_id
    from crm.subscriptions.models import Topic

    network_id = parse_id(value)
    if network_id is None or network_id not in {c.value for c in form.networks.choices}:
        return
    form.networks.data = [network_id]
    topic = db.session.scalar(select(Topic).where(Topic.network_id == network_id))
    if topic is not None and topic.slug in {c.value for c in form.topics.choices}:
        form.topics.data = [*form.topics.data, topic.slug]


@bp.route("/new", methods=["GET", "POST"])
@permission_required("newsletters.edit")
def newsletter_new():
    sync_topics()
    form = NewsletterForm()
    if request.method == "GET":
        form.topics.data = [choice.value for choice in form.topics.choices[:1]]
        _prefill_network(form, request.args.get("network"))
        db.session.commit()  # topics created on first use
    if form.validate_on_submit():
        try:
            newsletter = services.create_newsletter(_content(form), current_user)
        except services.NewsletterError as exc:
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(_("The newsletter is saved as a draft."), "success")
            return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    return _render_form(form)


@bp.route("/<int:newsletter_id>/edit", methods=["GET", "POST"])
@permission_required("newsletters.edit")
def newsletter_edit(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    if not newsletter.editable:
        flash(_("A newsletter that has been sent cannot be changed."), "warning")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    form = NewsletterForm(obj=newsletter if request.method == "GET" else None)
    if newsletter.kind in EVENT_KIND_LABELS:
        form.kind.choices = [(newsletter.kind, EVENT_KIND_LABELS[newsletter.kind])]
    if request.method == "GET":
        form.networks.data = list(newsletter.network_ids or [])
    if form.validate_on_submit():
        try:
            services.update_newsletter(newsletter, _content(form))
        except services.NewsletterError as exc:
            flash(str(exc), "error")
        else:
            db.session.commit()
            flash(_("The newsletter is saved."), "success")
            return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    return _render_form(form, newsletter)


@bp.route("/preview", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_preview_draft():
    """The email as the form stands (the compose page's live preview frame)."""
    form = NewsletterForm()
    form.validate()  # CSRF; the preview shows whatever has been written so far
    html = _preview_html(
        form.subject.data or "", form.preheader.data or "", form.body.data or "", ""
    )
    return _sandboxed(html)


@bp.route("/<int:newsletter_id>/preview")
@permission_required("newsletters.view")
def newsletter_preview(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    html = _preview_html(
        newsletter.subject,
        newsletter.preheader,
        newsletter.body,
        ledger.archive_url(newsletter),
        actions=compose.mail_actions(newsletter),
    )
    return _sandboxed(html)


def _preview_html(
    subject: str, preheader: str, body: str, archive_url: str, actions: tuple = ()
) -> str:
    rendered = compose.render_email(
        subject, preheader, body, archive_url, remote_images=False, actions=actions
    )
    first_name = services.sample_first_name(current_user)
    example = compose.Personalizer().substitutions(first_name, "#", "#")
    example |= {tag: "#" for _label, tag in actions if tag.startswith("%")}
    return substitute(rendered.html, example)


@bp.route("/audience")
@permission_required("newsletters.view")
def audience_count():
    """How many would receive a newsletter with these choices (JSON, for the compose page)."""
    args = request.args
    known_topics = set(db.session.scalars(select(Topic.slug)))
    networks = []
    for value in args.getlist("networks")[:100]:
        if is_digits(value) and len(value) < 10:
            networks.append(int(value))
    rule = audience.Audience(
        topics=tuple(t for t in args.getlist("topics")[:100] if t in known_topics),
        network_ids=tuple(networks),
        municipalities=tuple(
            m for m in args.getlist("municipalities")[:100] if is_digits(m) and len(m) == 4
        ),
        membership=args.get("membership", "")
        if args.get("membership", "") in MEMBERSHIP_FILTERS
        else "",
        roles=tuple(r for r in args.getlist("roles") if r in CONTACT_ROLES),
        kind=args.get("kind") if args.get("kind") in NEWSLETTER_KINDS else "newsletter",
    )
    event = args.get("event", "")
    if args.get("kind") == "event_invitation" and is_digits(event) and len(event) < 10:
        # An invitation leaves out those already invited to, or answering, the event.
        rule = replace(rule, kind="event_invitation", event_id=int(event))
    by_basis = audience.count_by_basis(rule)
    return jsonify(
        recipients=sum(by_basis.values()),
        by_basis=[
            {"label": label, "recipients": number} for label, number in basis_lines(by_basis)
        ],
    )


def basis_lines(by_basis: dict[int | str | None, int]) -> list[tuple[str, int]]:
    """Counts per basis in words: "Consent for a topic", "Membership of Logistikk"."""
    network_ids = [n for n in by_basis if isinstance(n, int)]
    names = dict(
        db.session.execute(
            select(Network.id, Network.name).where(Network.id.in_(network_ids))
        ).all()
    )
    lines = [(_("Consent for a topic"), by_basis[None])] if by_basis.get(None) else []
    if by_basis.get("registration"):
        lines.append((_("Registered for the event"), by_basis["registration"]))
    networks = sorted(network_ids, key=lambda n: names.get(n, ""))
    for network_id in networks:
        lines.append(
            (
                _("Membership of %(network)s", network=names.get(network_id, f"#{network_id}")),
                by_basis[network_id],
            )
        )
    return lines


# -- one newsletter -------------------------------------------------------------------------


def _audience_summary(newsletter: Newsletter) -> dict:
    """The audience in the words of the compose form."""
    topics = in_display_order(
        db.session.scalars(select(Topic).where(Topic.slug.in_(newsletter.topics or [])))
    )
    networks = db.session.scalars(
        select(Network.name).where(Network.id.in_(newsletter.network_ids or []))
    ).all()
    places = municipality_labels() if newsletter.municipalities else {}
    return {
        "topics": topics,
        "networks": networks,
        "municipalities": [places.get(n, n) for n in newsletter.municipalities or ()],
        "membership": MEMBERSHIP_LABELS.get(newsletter.membership or "", ""),
        "roles": [ROLE_LABELS.get(r, r) for r in newsletter.roles or ()],
        "kind": {**KIND_LABELS, **EVENT_KIND_LABELS}.get(newsletter.kind or "newsletter", ""),
        "network_mail": newsletter.kind != "newsletter",
    }


@bp.route("/<int:newsletter_id>")
@permission_required("newsletters.view")
def newsletter_detail(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    return render_template(
        "newsletters/detail.html",
        newsletter=newsletter,
        recipients=services.recipient_count(newsletter),
        by_basis=basis_lines(services.recipients_by_basis(newsletter)),
        progress=services.progress(newsletter) if not newsletter.editable else None,
        summary=_audience_summary(newsletter),
        event=_event_of(newsletter),
        action_form=ActionForm(),
        schedule_form=ScheduleForm(),
        test_form=TestSendForm(email=current_user.email),
    )


@bp.route("/<int:newsletter_id>/progress")
@permission_required("newsletters.view")
def newsletter_progress(newsletter_id: int):
    """Live progress as JSON (polled by static/js/newsletters.js).

    `time_left` is the ETA in words of the page's language, as the page itself shows it.
    """
    progress = services.progress(_newsletter_or_404(newsletter_id))
    return jsonify({**progress, "time_left": time_left(progress["eta_seconds"])})


@bp.route("/<int:newsletter_id>/statistics")
@permission_required("newsletters.view")
def newsletter_statistics(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    return render_template(
        "newsletters/statistics.html",
        newsletter=newsletter,
        counts=ledger.counts(newsletter.id),
        totals=statistics.totals(newsletter.id),
        networks=statistics.by_network(newsletter.id),
        municipalities=statistics.by_municipality(newsletter.id),
    )


def _act(newsletter_id: int, action, success: str):
    newsletter = _newsletter_or_404(newsletter_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        result = action(newsletter)
    except services.NewsletterError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter_id))
    db.session.commit()
    if success:
        flash(success, "success")
    target = result if isinstance(result, Newsletter) else newsletter
    return redirect(url_for(".newsletter_detail", newsletter_id=target.id))


@bp.route("/<int:newsletter_id>/test", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_test(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    form = TestSendForm()
    if "email" not in request.form:
        form.email.data = current_user.email  # a bare button: to oneself
    if not form.validate_on_submit():
        message = next(iter(form.email.errors), None) or _("The form has expired; try again.")
        flash(message, "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    try:
        to = services.test_send(newsletter, current_user, form.email.data)
    except services.NewsletterError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    db.session.commit()
    flash(_("A test copy is on its way to %(email)s.", email=to), "success")
    return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))


@bp.route("/<int:newsletter_id>/send", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_send(newsletter_id: int):
    return _act(newsletter_id, services.start_sending, _("Sending has started."))


@bp.route("/<int:newsletter_id>/schedule", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_schedule(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    form = ScheduleForm()
    if not form.validate_on_submit():
        flash(_("Choose a date and a time."), "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    try:
        services.schedule(newsletter, form.moment())
    except services.NewsletterError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    db.session.commit()
    flash(_("The newsletter is scheduled."), "success")
    return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))


@bp.route("/<int:newsletter_id>/unschedule", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_unschedule(newsletter_id: int):
    return _act(newsletter_id, services.unschedule, _("The newsletter is a draft again."))


@bp.route("/<int:newsletter_id>/pause", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_pause(newsletter_id: int):
    return _act(newsletter_id, services.pause, _("Sending is paused."))


@bp.route("/<int:newsletter_id>/resume", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_resume(newsletter_id: int):
    return _act(newsletter_id, services.resume, _("Sending goes on."))


@bp.route("/<int:newsletter_id>/cancel", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_cancel(newsletter_id: int):
    return _act(newsletter_id, services.cancel, _("The newsletter is cancelled."))


@bp.route("/<int:newsletter_id>/publish", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_publish(newsletter_id: int):
    return _act(
        newsletter_id,
        lambda n: services.set_in_archive(n, True),
        _("The newsletter is published in the public archive."),
    )


@bp.route("/<int:newsletter_id>/withdraw", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_withdraw(newsletter_id: int):
    return _act(
        newsletter_id,
        lambda n: services.set_in_archive(n, False),
        _("The newsletter is withdrawn from the public archive."),
    )


@bp.route("/<int:newsletter_id>/duplicate", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_duplicate(newsletter_id: int):
    return _act(
        newsletter_id,
        lambda n: services.duplicate(n, current_user),
        _("A copy is saved as a new draft."),
    )


@bp.route("/<int:newsletter_id>/delete", methods=["POST"])
@permission_required("newsletters.edit")
def newsletter_delete(newsletter_id: int):
    newsletter = _newsletter_or_404(newsletter_id)
    if not ActionForm().validate_on_submit():
        abort(400)
    try:
        services.delete_draft(newsletter)
    except services.NewsletterError as exc:
        flash(str(exc), "error")
        return redirect(url_for(".newsletter_detail", newsletter_id=newsletter.id))
    db.session.commit()
    flash(_("The draft is deleted."), "success")
    return redirect(url_for(".newsletter_list"))


# -- the public archive ---------------------------------------------------------------------


def _archived():
    return select(Newsletter).where(
        Newsletter.in_archive.is_(True), Newsletter.state.in_(("sending", "finished"))
    )


@dataclass(frozen=True)
class ArchivedNewsletter:
    """A newsletter as the public reads it: merge fields without a reader's name."""

    id: int
    subject: str
    preheader: str
    started_at: datetime | None

    @classmethod
    def of(cls, newsletter: Newsletter) -> "ArchivedNewsletter":
        return cls(
            id=newsletter.id,
            subject=compose.without_name(newsletter.subject),
            preheader=compose.without_name(newsletter.preheader or ""),
            started_at=newsletter.started_at,
        )


@archive_bp.route("/nyhetsbrev")
def archive_list():
    newsletters = db.session.scalars(
        _archived().order_by(Newsletter.started_at.desc(), Newsletter.id.desc()).limit(200)
    ).all()
    return render_template(
        "archive/list.html", newsletters=[ArchivedNewsletter.of(n) for n in newsletters]
    )


@archive_bp.route("/nyhetsbrev/<int:newsletter_id>")
def archive_detail(newsletter_id: int):
    newsletter = db.session.scalar(_archived().where(Newsletter.id == newsletter_id))
    if newsletter is None:
        abort(404)
    return render_template(
        "archive/detail.html",
        newsletter=ArchivedNewsletter.of(newsletter),
        content=compose.without_name(compose.page_html(newsletter.body), html=True),
    )


def init_app(app) -> None:
    from crm.mail.services import register_event_handler
    from crm.members.services import MERGE_HOOKS
    from crm.newsletters import tasks
    from crm.worker import HEARTBEAT_HOOKS, WORKER_HOOKS

    app.register_blueprint(bp)
    app.register_blueprint(archive_bp)
    register_event_handler(statistics.record_mail_event, batch=statistics.record_mail_events)
    if services.merge_recipients not in MERGE_HOOKS:
        MERGE_HOOKS.append(services.merge_recipients)
    if tasks.reconcile_tick not in WORKER_HOOKS:
        WORKER_HOOKS.append(tasks.reconcile_tick)
    if tasks.dead_sender_tick not in HEARTBEAT_HOOKS:
        HEARTBEAT_HOOKS.append(tasks.dead_sender_tick)
