"""Staff pages for events (/events): lists, month view, the event form, the event page."""

import calendar
from datetime import date, datetime, time, timedelta

from babel.dates import format_date, get_day_names
from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import get_locale, ngettext
from flask_babel import gettext as _
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload
from wtforms.validators import ValidationError

from crm.auth.permissions import permission_required
from crm.events import services
from crm.events.forms import MAX_SESSIONS, ButtonForm, EventForm
from crm.events.models import Certificate, Event, EventSession, Registration
from crm.extensions import db
from crm.members.models import Network
from crm.newsletters.compose import page_html
from crm.numbers import is_digits
from crm.spreadsheet import export_response
from crm.timeutil import OSLO, utcnow
from crm.urls import MAX_ID, clean_query

bp = Blueprint("events", __name__, url_prefix="/events")

LIST_VIEWS = ("upcoming", "past", "drafts")
STATUS_BADGES = {
    "confirmed": "success",
    "offered": "info",
    "waitlisted": "warning",
    "cancelled": "neutral",
}


def _event_or_404(event_id: int) -> Event:
    if event_id > MAX_ID:
        abort(404)
    return db.get_or_404(Event, event_id)


def _first_starts():
    return (
        select(EventSession.event_id, func.min(EventSession.starts_at).label("starts"))
        .group_by(EventSession.event_id)
        .subquery()
    )


def _events_for(view: str) -> list[Event]:
    now = utcnow()
    if view == "upcoming":
        return services.upcoming_events(now, published_only=True)
    if view == "drafts":
        starts = _first_starts()
        return list(
            db.session.scalars(
                select(Event)
                .outerjoin(starts, starts.c.event_id == Event.id)
                .where(Event.published.is_(False))
                .order_by(starts.c.starts.desc(), Event.id.desc())
                .options(selectinload(Event.sessions))
            )
        )
    upcoming_ids = {e.id for e in services.upcoming_events(now, published_only=False)}
    starts = _first_starts()
    return [
        event
        for event in db.session.scalars(
            select(Event)
            .join(starts, starts.c.event_id == Event.id)
            .where(Event.published.is_(True))
            .order_by(starts.c.starts.desc(), Event.id.desc())
            .options(selectinload(Event.sessions))
        )
        if event.id not in upcoming_ids
    ]


def _counts(events: list[Event]) -> dict[int, dict[str, int]]:
    return services.seat_counts_for([event.id for event in events])


@bp.route("")
@permission_required("events.view")
def event_list():
    view = request.args.get("show", "upcoming")
    if view not in LIST_VIEWS:
        view = "upcoming"
    events = _events_for(view)
    return render_template(
        "events/list.html", events=events, view=view, counts=_counts(events), views=LIST_VIEWS
    )


@bp.route("/month")
@permission_required("events.view")
def month():
    today = datetime.now(OSLO).date()
    year_arg, month_arg = request.args.get("year", ""), request.args.get("month", "")
    year = int(year_arg) if is_digits(year_arg) and len(year_arg) == 4 else today.year
    number = int(month_arg) if is_digits(month_arg) and len(month_arg) <= 2 else today.month
    if not 1 <= number <= 12 or not 2000 <= year <= 2100:
        year, number = today.year, today.month
    first = date(year, number, 1)
    last = date(year, number, calendar.monthrange(year, number)[1])
    start = datetime.combine(first, time(0, 0), OSLO)
    end = datetime.combine(last + timedelta(days=1), time(0, 0), OSLO)
    sessions = db.session.scalars(
        select(EventSession)
        .where(EventSession.starts_at >= start, EventSession.starts_at < end)
        .order_by(EventSession.starts_at)
    ).all()
    by_day: dict[date, list[EventSession]] = {}
    for session in sessions:
        by_day.setdefault(session.starts_at.astimezone(OSLO).date(), []).append(session)
    weeks = calendar.Calendar(firstweekday=0).monthdatescalendar(year, number)
    previous = first - timedelta(days=1)
    following = last + timedelta(days=1)
    return render_template(
        "events/month.html",
        weeks=weeks,
        by_day=by_day,
        first=first,
        today=today,
        previous=previous,
        following=following,
    )


def _network_choices(form: EventForm) -> None:
    networks = db.session.scalars(select(Network).order_by(Network.name)).all()
    form.networks.choices = [(n.id, n.name) for n in networks]


def _fill_form(form: EventForm, event: Event) -> None:
    form.title.data = event.title
    form.kind.data = event.kind
    form.description.data = event.description
    form.venue.data = event.venue
    form.audience.data = event.audience
    form.capacity.data = event.capacity
    form.company_quota.data = event.company_quota
    for which in ("registration", "cancellation"):
        value = getattr(event, f"{which}_deadline")
        if value is not None:
            local = value.astimezone(OSLO)
            getattr(form, f"{which}_deadline_date").data = local.date()
            getattr(form, f"{which}_deadline_time").data = local.time().replace(second=0)
    form.cancellation_fee.data = event.cancellation_fee_ore or None
    form.member_price.data = event.member_price_ore or None
    form.price.data = event.price_ore or None
    form.vat_percent.data = event.vat_percent
    form.completion_percent.data = event.completion_percent
    form.networks.data = [n.id for n in event.networks]
    while len(form.sessions.entries):
        form.sessions.pop_entry()
    for session in event.sessions:
        local_start = session.starts_at.astimezone(OSLO)
        form.sessions.append_entry(
            {
                "title": session.title,
                "date": local_start.date(),
                "start": local_start.time(),
                "end": session.ends_at.astimezone(OSLO).time(),
                "uid": session.uid,
            }
        )


def _blank_rows(form: EventForm, extra: int = 2) -> None:
    """Empty session rows to fill in: the repeatable part of the form, without script."""
    for _row in range(extra):
        if len(form.sessions.entries) < MAX_SESSIONS:
            form.sessions.append_entry()


def _apply_form(form: EventForm, event: Event) -> None:
    event.title = form.title.data.strip()
    event.kind = form.kind.data
    event.description = form.description.data or ""
    event.venue = (form.venue.data or "").strip()
    event.audience = form.audience.data
    event.capacity = form.capacity.data
    event.company_quota = form.company_quota.data
    event.registration_deadline = form.deadline("registration")
    event.cancellation_deadline = form.deadline("cancellation")
    event.cancellation_fee_ore = form.cancellation_fee.data or 0
    event.member_price_ore = form.member_price.data or 0
    event.price_ore = form.price.data or 0
    event.vat_percent = 25 if form.vat_percent.data is None else form.vat_percent.data
    event.completion_percent = form.completion_percent.data
    wanted = set(form.networks.data or [])
    event.networks = list(db.session.scalars(select(Network).where(Network.id.in_(wanted))))
    existing = {s.uid: s for s in event.sessions}
    kept = []
    for uid, title, starts, ends in form.session_values():
        session = existing.get(uid) if uid else None
        if session is None:
            session = EventSession()
        session.title = title.strip()
        session.starts_at, session.ends_at = starts, ends
        kept.append(session)
    event.sessions = kept


def _save(form: EventForm, event: Event, is_new: bool):
    if not is_new:
        # Seats are counted below (a new capacity or quota): under the lock registering takes.
        services.lock_event(event.id)
    before = None if is_new else services.schedule_signature(event)
    try:
        if not form.validate():
            raise ValidationError("")
        _apply_form(form, event)
    except ValidationError:
        db.session.rollback()
        return None
    if is_new:
        event.created_by_id = current_user.id
        db.session.add(event)
    db.session.flush()
    told = 0 if is_new else services.announce_change(event, before)
    if not is_new:
        # Seats added by a higher capacity or quota go to the waitlist first, in order.
        services.fill_freed_seats(event)
    over_capacity = services.over_capacity_warning(event)
    db.session.commit()
    if over_capacity:
        flash(over_capacity, "warning")
    if told:
        flash(
            _("Saved. %(count)s registrants were sent the new date or venue.", count=told),
            "success",
        )
    else:
        flash(_("Saved."), "success")
    return redirect(url_for("events.event_detail", event_id=event.id))


@bp.route("/new", methods=["GET", "POST"])
@permission_required("events.edit")
def event_new():
    form = EventForm()
    _network_choices(form)
    if request.method == "POST":
        response = _save(form, Event(), is_new=True)
        if response is not None:
            return response
    _blank_rows(form, extra=2 if request.method == "GET" else 1)
    return render_template("events/form.html", form=form, event=None)


@bp.route("/<int:event_id>/edit", methods=["GET", "POST"])
@permission_required("events.edit")
def event_edit(event_id: int):
    event = _event_or_404(event_id)
    form = EventForm()
    _network_choices(form)
    if request.method == "POST":
        response = _save(form, event, is_new=False)
        if response is not None:
            return response
        event = _event_or_404(event_id)
    else:
        _fill_form(form, event)
    _blank_rows(form, extra=1)
    return render_template("events/form.html", form=form, event=event)


@bp.route("/<int:event_id>")
@permission_required("events.view")
def event_detail(event_id: int):
    event = _event_or_404(event_id)
    registrations = db.session.scalars(
        select(Registration)
        .options(selectinload(Registration.company))  # company_label per row
        .where(Registration.event_id == event.id)
        .order_by(Registration.created_at, Registration.id)
    ).all()
    waitlist = sorted(
        (r for r in registrations if r.status == "waitlisted"),
        key=lambda r: r.waitlist_position or 0,
    )
    attended = services.attended_sessions([r.id for r in registrations])
    return render_template(
        "events/detail.html",
        event=event,
        registrations=[r for r in registrations if r.status != "waitlisted"],
        waitlist=waitlist,
        counts=services.seat_counts(event.id),
        free=services.free_seats(event),
        over_capacity=services.over_capacity_warning(event),
        attended=attended,
        description=page_html(event.description),
        button_form=ButtonForm(),
        badges=STATUS_BADGES,
        income=services.event_income(event),
        per_session=services.attendance_per_session(event),
        no_shows=services.no_shows(event),
        certificates=dict(
            db.session.execute(
                select(Certificate.registration_id, Certificate.id).where(
                    Certificate.registration_id.in_(
                        [r.id for r in registrations if r.status == "confirmed"] or [0]
                    )
                )
            ).all()
        ),
    )


def _post_action(event_id: int, action, success: str):
    event = _event_or_404(event_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        result = action(event)
    except services.EventError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(url_for("events.event_detail", event_id=event.id))
    db.session.commit()
    flash(success, "success")
    target = result.id if isinstance(result, Event) else event.id
    return redirect(url_for("events.event_detail", event_id=target))


@bp.route("/<int:event_id>/publish", methods=["POST"])
@permission_required("events.edit")
def publish(event_id: int):
    return _post_action(event_id, services.publish, _("The event is published."))


@bp.route("/<int:event_id>/unpublish", methods=["POST"])
@permission_required("events.edit")
def unpublish(event_id: int):
    return _post_action(event_id, services.unpublish, _("The event is no longer public."))


@bp.route("/<int:event_id>/duplicate", methods=["POST"])
@permission_required("events.edit")
def duplicate(event_id: int):
    return _post_action(
        event_id,
        lambda event: services.duplicate(event, current_user),
        _("This is a copy. Change the dates and publish it when it is ready."),
    )


@bp.route("/registrations/<int:registration_id>/cancel", methods=["POST"])
@permission_required("events.edit")
def cancel_registration(registration_id: int):
    if registration_id > MAX_ID:
        abort(404)
    registration = db.get_or_404(Registration, registration_id)
    event_id = registration.event_id
    if not ButtonForm().validate_on_submit():
        abort(400)
    # Attendance and a certificate are cleared only when staff confirmed it on the page
    # that said so (ParticipationRecorded below).
    clear_attendance = request.form.get("clear_attendance") == "1"
    try:
        marks, certified = services.cancel(
            registration, by_staff=True, clear_attendance=clear_attendance
        )
    except services.ParticipationRecorded as exc:
        db.session.rollback()
        registration = db.session.get(Registration, registration_id)
        return render_template(
            "events/cancel_confirm.html",
            registration=registration,
            event=registration.event,
            message=str(exc),
            button_form=ButtonForm(),
        )
    except services.EventError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        if certified:
            flash(
                ngettext(
                    "The registration is cancelled; its attendance at %(num)s session is "
                    "cleared and its certificate revoked.",
                    "The registration is cancelled; its attendance at %(num)s sessions is "
                    "cleared and its certificate revoked.",
                    marks,
                ),
                "success",
            )
        elif marks:
            flash(
                ngettext(
                    "The registration is cancelled; its attendance at %(num)s session is cleared.",
                    "The registration is cancelled; its attendance at %(num)s sessions is cleared.",
                    marks,
                ),
                "success",
            )
        else:
            flash(_("The registration is cancelled."), "success")
    return redirect(url_for("events.event_detail", event_id=event_id))


# -- check-in (a phone at the door) -------------------------------------------------------


def _session_of(event: Event, session_arg: str) -> EventSession | None:
    if not event.sessions:
        return None
    if is_digits(session_arg) and len(session_arg) < 10:
        for session in event.sessions:
            if session.id == int(session_arg):
                return session
    # Default: the session of today, else the next one, else the last.
    now = utcnow()
    upcoming = [s for s in event.sessions if s.ends_at >= now]
    return upcoming[0] if upcoming else event.sessions[-1]


@bp.route("/<int:event_id>/checkin")
@permission_required("events.edit")
def checkin(event_id: int):
    event = _event_or_404(event_id)
    session = _session_of(event, request.args.get("session", ""))
    if session is None:
        flash(_("Add a session first."), "error")
        return redirect(url_for("events.event_detail", event_id=event.id))
    q = clean_query(request.args.get("q", ""), 100)
    confirmed = db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status == "confirmed")
        .order_by(Registration.name, Registration.id)
    ).all()
    needle = q.casefold()
    shown = [
        r for r in confirmed if not needle or needle in f"{r.name} {r.company_label}".casefold()
    ]
    return render_template(
        "events/checkin.html",
        event=event,
        session=session,
        registrations=shown,
        present=services.present_ids(session.id),
        total=len(confirmed),
        q=q,
        button_form=ButtonForm(),
    )


@bp.route("/<int:event_id>/checkin/<int:registration_id>/<int:session_id>", methods=["POST"])
@permission_required("events.edit")
def toggle_attendance(event_id: int, registration_id: int, session_id: int):
    event = _event_or_404(event_id)
    registration = db.session.get(Registration, registration_id)
    session = db.session.get(EventSession, session_id)
    if registration is None or session is None or registration.event_id != event.id:
        abort(404)
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        services.toggle_attendance(registration, session, current_user)
    except services.EventError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
    q = clean_query(request.args.get("q", ""), 100)
    target = url_for("events.checkin", event_id=event_id, session=session_id, q=q or None)
    return redirect(f"{target}#r{registration_id}" if not q else target)


# -- certificates -----------------------------------------------------------------------


@bp.route("/<int:event_id>/certificates", methods=["POST"])
@permission_required("events.edit")
def issue_certificates(event_id: int):
    event = _event_or_404(event_id)
    if not ButtonForm().validate_on_submit():
        abort(400)
    try:
        created = services.issue_certificates(event, current_user)
    except services.EventError as exc:
        db.session.rollback()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(_("%(count)s certificates issued and emailed.", count=len(created)), "success")
    return redirect(url_for("events.event_detail", event_id=event_id))


@bp.route("/certificates/<int:certificate_id>.pdf")
@permission_required("events.view")
def certificate_pdf(certificate_id: int):
    from crm.events.certificate import certificate_filename
    from crm.events.certificate import certificate_pdf as render_pdf

    certificate = db.get_or_404(Certificate, certificate_id)
    if certificate.registration.status != "confirmed":
        # Left from before cancelling cleared certificates: no longer valid.
        flash(_("The registration is cancelled: its certificate is no longer valid."), "error")
        return redirect(url_for("events.event_detail", event_id=certificate.registration.event_id))
    response = Response(render_pdf(certificate), mimetype="application/pdf")
    response.headers["Content-Disposition"] = (
        f'inline; filename="{certificate_filename(certificate)}"'
    )
    return response


# -- participants: export and name badges ------------------------------------------------


def participant_table(event: Event) -> tuple[list[str], list[list]]:
    """Every registration that is not cancelled: seats first, then the waitlist."""
    registrations = db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status != "cancelled")
        .order_by(Registration.status, Registration.waitlist_position, Registration.name)
    ).all()
    attended = services.attended_sessions([r.id for r in registrations])
    headers = [
        _("Name"),
        _("Email"),
        _("Phone"),
        _("Company"),
        _("Organisation number"),
        _("Type"),
        _("Status"),
        _("Waitlist"),
        _("Note"),
        _("Sessions attended"),
        _("Registered"),
    ]
    rows = [
        [
            r.name,
            r.email,
            r.phone,
            r.company_label,
            r.company.orgnr if r.company else "",
            r.participant_type_label,
            r.status_label,
            services.waitlist_place(r) or "",
            r.note,
            attended.get(r.id, 0),
            r.created_at,
        ]
        for r in registrations
    ]
    return headers, rows


@bp.route("/<int:event_id>/participants.<any(csv, xlsx):fmt>")
@permission_required("events.view")
def participants_export(event_id: int, fmt: str):
    event = _event_or_404(event_id)
    headers, rows = participant_table(event)
    return export_response(fmt, f"deltakere-{event.id}", headers, rows, _("Participants"))


@bp.route("/<int:event_id>/badges.pdf")
@permission_required("events.view")
def badges(event_id: int):
    from crm.events.certificate import badges_pdf

    event = _event_or_404(event_id)
    confirmed = db.session.scalars(
        select(Registration)
        .where(Registration.event_id == event.id, Registration.status == "confirmed")
        .order_by(Registration.name, Registration.id)
    ).all()
    response = Response(badges_pdf(event, confirmed), mimetype="application/pdf")
    response.headers["Content-Disposition"] = f'inline; filename="navnelapper-{event.id}.pdf"'
    return response


# -- panels on contact and company pages -----------------------------------------------


def participation_summary(rows) -> str:
    """ "Took part in 7 events in 2026; 3 in the Produksjon network" (confirmed seats)."""
    year = datetime.now(OSLO).year
    this_year = [
        r
        for r, _certificate in rows
        if r.status == "confirmed" and r.event.starts_at and r.event.starts_at.year == year
    ]
    text = _("Took part in %(count)s events in %(year)s", count=len(this_year), year=year)
    by_network: dict[str, int] = {}
    for registration in this_year:
        for network in registration.event.networks:
            by_network[network.name] = by_network.get(network.name, 0) + 1
    parts = [
        _("%(count)s in the %(network)s network", count=count, network=name)
        for name, count in sorted(by_network.items(), key=lambda item: (-item[1], item[0]))
    ]
    return "; ".join([text, *parts]) + "."


def _oslo_time(value: datetime | None) -> str:
    return value.astimezone(OSLO).strftime("%H:%M") if value else ""


def _month_name(value: date) -> str:
    return format_date(value, "LLLL", locale=str(get_locale() or "nb")).capitalize()


def _hours(value) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".").replace(".", ",")


def _weekday_names() -> list[str]:
    names = get_day_names("abbreviated", locale=str(get_locale() or "nb"))
    return [names[i].capitalize() for i in range(7)]  # babel: 0 is Monday


def init_app(app) -> None:
    from crm.events import cli, demo, public, tasks
    from crm.members import demo as members_demo
    from crm.worker import WORKER_HOOKS

    app.register_blueprint(bp)
    public.init_app(app)
    cli.init_app(app)
    if tasks.expire_offers_tick not in WORKER_HOOKS:
        WORKER_HOOKS.append(tasks.expire_offers_tick)
    if demo.demo_events not in members_demo.DEMO_HOOKS:
        members_demo.DEMO_HOOKS.append(demo.demo_events)
    app.jinja_env.filters.update(oslo_time=_oslo_time, month_name=_month_name, hours=_hours)
    app.jinja_env.globals.update(
        weekday_names=_weekday_names,
        event_participation=services.participation,
        participation_summary=participation_summary,
    )
    from crm.members import panels
    from crm.members.services import MERGE_HOOKS

    if services.merge_registrations not in MERGE_HOOKS:
        MERGE_HOOKS.append(services.merge_registrations)

    for listing, panel in (
        (panels.CONTACT_PANELS, "events/_contact_panel.html"),
        (panels.COMPANY_PANELS, "events/_company_panel.html"),
    ):
        if panel not in listing:
            listing.append(panel)
