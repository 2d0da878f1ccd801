"""Public event pages (no login): the list, one event with its registration form, the
calendar feed, and the personal registration page reached by the link in every email."""

import hashlib

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from limits import parse as parse_limit
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from crm.events import ics, invitations, services
from crm.events.forms import ButtonForm, DetailsForm, RegistrationForm, TransferForm
from crm.events.models import Event
from crm.extensions import csrf, db, limiter
from crm.members.models import Company
from crm.members.normalize import normalize_orgnr
from crm.newsletters.compose import page_html
from crm.public_pages import public_args, render_public
from crm.subscriptions import tokens as form_tokens
from crm.urls import MAX_ID

bp = Blueprint("events_public", __name__)

MAX_REGISTRATION_BYTES = 64 * 1024
# Per address and event, silently: a registration form cannot be used to flood an inbox.
ADDRESS_LIMIT = parse_limit("5 per hour")


def _locale() -> str:
    return str(get_locale() or "nb")


# Only the list and the registration form may be framed by the cluster's website.
FRAMEABLE = ("events_public.event_list", "events_public.event_detail")


def _render(template: str, status: int = 200, **context) -> Response:
    return render_public(template, status, frameable=FRAMEABLE, **context)


def _published_or_404(event_id: int) -> Event:
    if event_id > MAX_ID:
        abort(404)
    event = db.session.get(Event, event_id)
    if event is None or not event.published:
        abort(404)
    return event


def _looks_automated(form: RegistrationForm) -> bool:
    """Honeypot filled in, form token missing or forged, or filled in inhumanly fast."""
    if form.website.data:
        return True
    age = form_tokens.form_age_seconds(form.started.data)
    return age is None or age < current_app.config["SUBSCRIBE_MIN_FILL_SECONDS"]


def _address_allowed(event_id: int, email: str) -> bool:
    if not limiter.enabled or not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    digest = hashlib.sha256(f"{event_id}:{email.strip().lower()}".encode("utf-8", "replace"))
    return limiter.limiter.hit(ADDRESS_LIMIT, "event-registration-address", digest.hexdigest())


def _company_from(text: str) -> Company | None:
    """A member company named by its orgnr, by "Name (orgnr)" as the list offers it, or
    by its exact name; None when the text names no member (it is then kept as typed)."""
    text = (text or "").strip()
    if not text:
        return None
    digits = "".join(ch for ch in text if ch.isascii() and ch.isdigit())
    candidates = []
    if len(digits) == 9:
        candidates.append(select(Company).where(Company.orgnr == normalize_orgnr(digits)))
    candidates.append(select(Company).where(Company.name == text.split(" (")[0].strip()))
    for stmt in candidates:
        for company in db.session.scalars(stmt.limit(2)):
            if services.is_member_company(company):
                return company
    return None


@bp.route("/arrangementer")
def event_list():
    events = services.upcoming_events()
    counts = {event.id: services.free_seats(event) for event in events}
    return _render("events/public_list.html", events=events, free=counts)


@bp.route("/arrangementer.ics")
def calendar_feed():
    body = ics.calendar_bytes(services.upcoming_events(), name="Klynge")
    response = Response(body, mimetype="text/calendar")
    response.headers["Content-Disposition"] = 'inline; filename="arrangementer.ics"'
    response.headers["Cache-Control"] = "public, max-age=300"
    return response


@bp.route("/arrangementer/<int:event_id>", methods=["GET", "POST"])
@csrf.exempt  # embedded in an iframe: see RegistrationForm for what stands in for the token
@limiter.limit("20 per minute;200 per hour", methods=["POST"])
def event_detail(event_id: int):
    request.max_content_length = MAX_REGISTRATION_BYTES
    event = _published_or_404(event_id)
    form = RegistrationForm()
    closed = services.registration_closed_reason(event)
    # An invitation link (crm/events/invitations.py) pre-fills the form and lets an
    # invited guest register for a "members and invited guests" event.
    invitation = request.values.get("invitasjon", "")[:400]
    invited = bool(invitation) and invitations.read_invitation(event.id, invitation) is not None
    if request.method == "POST" and closed is None and form.validate():
        if _looks_automated(form) or not _address_allowed(event.id, form.email.data):
            # Bots (and floods) get a friendly answer and nothing happens.
            return _render("events/registered.html", event=event, registration=None)
        try:
            result = services.register(
                event.id,
                name=form.name.data,
                email=form.email.data,
                phone=form.phone.data or "",
                company=_company_from(form.company.data),
                company_name=form.company.data or "",
                participant_type=form.participant_type.data,
                note=form.note.data or "",
                locale=_locale(),
                invited=invited,
                form_token=form_tokens.form_token_digest(form.started.data),
            )
        except (services.FormAlreadyUsed, IntegrityError) as exc:
            db.session.rollback()
            if isinstance(exc, IntegrityError) and "form_token" not in str(exc.orig):
                raise
            # A replayed form (or the same one sent twice at once to two events): it
            # registers nobody; the page gives a fresh one to send again.
            form.form_errors.append(str(services.FORM_ALREADY_USED))
            form.started.data = form_tokens.make_form_token()
        except services.EventError as exc:
            db.session.rollback()
            form.form_errors.append(str(exc))
        else:
            registration = result.registration
            place = services.waitlist_place(registration)
            status = registration.status
            db.session.commit()
            return _render(
                "events/registered.html",
                event=db.session.get(Event, event_id),
                registration=registration,
                reg_status=status,
                place=place,
                again=not result.created,
            )
    if request.method == "GET":
        form.started.data = form_tokens.make_form_token()
        filled = invitations.prefill(event, invitation) if invitation else None
        if filled is not None:
            form.name.data, form.email.data, form.company.data = (
                filled.name,
                filled.email,
                filled.company,
            )
    elif not form.started.data:
        form.started.data = form_tokens.make_form_token()
    return _render(
        "events/public_detail.html",
        event=event,
        form=form,
        closed=closed,
        free=services.free_seats(event),
        description=page_html(event.description),
        companies=services.member_companies(),
        invitation=invitation if invited else "",
    )


# -- the personal registration page (the token is the authority) ------------------------


def _registration_or_invalid(token: str):
    registration = services.registration_for_token(token)
    if registration is None:
        return None, _render("events/link_invalid.html", status=404)
    return registration, None


def _manage_page(registration, token, details_form=None, transfer_form=None, status=200):
    if details_form is None:
        details_form = DetailsForm(formdata=None, obj=registration)
    return _render(
        "events/manage.html",
        status=status,
        registration=registration,
        event=registration.event,
        token=token,
        place=services.waitlist_place(registration),
        details_form=details_form,
        transfer_form=transfer_form or TransferForm(formdata=None),
        button_form=ButtonForm(),
        cancel_closed=services.cancellation_closed_reason(registration),
    )


@bp.route("/arrangementer/pamelding/<token>", methods=["GET", "POST"])
@limiter.limit("30 per minute", methods=["POST"])
def manage(token: str):
    registration, invalid = _registration_or_invalid(token)
    if invalid:
        return invalid
    form = DetailsForm()
    if request.method == "POST":
        if registration.status == "cancelled":
            flash(_("This registration is already cancelled."), "error")
            return redirect(url_for("events_public.manage", token=token, **public_args()))
        if form.validate():
            try:
                services.update_details(
                    registration,
                    phone=form.phone.data or "",
                    note=form.note.data or "",
                    participant_type=form.participant_type.data,
                )
            except services.EventError as exc:
                db.session.rollback()
                flash(str(exc), "error")
            else:
                db.session.commit()
                flash(_("Your changes are saved."), "success")
            return redirect(url_for("events_public.manage", token=token, **public_args()))
        return _manage_page(registration, token, details_form=form, status=400)
    return _manage_page(registration, token)


def _act(token: str, action, success: str):
    registration, invalid = _registration_or_invalid(token)
    if invalid:
        return invalid
    if not ButtonForm().validate_on_submit():
        flash(_("The form has expired. Please try again."), "error")
        return redirect(url_for("events_public.manage", token=token, **public_args()))
    try:
        action(registration)
    except services.EventError as exc:
        # An expired offer is passed on even though the acceptance is refused.
        db.session.commit()
        flash(str(exc), "error")
    else:
        db.session.commit()
        flash(success, "success")
    return redirect(url_for("events_public.manage", token=token, **public_args()))


@bp.route("/arrangementer/pamelding/<token>/avmeld", methods=["POST"])
@limiter.limit("30 per minute")
def cancel(token: str):
    # Declining an offered seat is a cancellation the deadline does not bind (it only
    # binds a confirmed seat): the seat goes to the next person on the waitlist.
    registration = services.registration_for_token(token)
    if registration is not None and registration.status == "offered":
        success = _("You declined the seat. It is offered to the next person on the waitlist.")
    else:
        success = _("Your registration is cancelled.")
    return _act(token, services.cancel, success)


@bp.route("/arrangementer/pamelding/<token>/ta-imot", methods=["POST"])
@limiter.limit("30 per minute")
def accept(token: str):
    return _act(token, services.accept_offer, _("The seat is yours. See you there!"))


@bp.route("/arrangementer/pamelding/<token>/overdra", methods=["POST"])
@limiter.limit("30 per minute")
def transfer(token: str):
    registration, invalid = _registration_or_invalid(token)
    if invalid:
        return invalid
    form = TransferForm()
    if not form.validate():
        return _manage_page(registration, token, transfer_form=form, status=400)
    try:
        colleague = services.transfer(
            registration, name=form.name.data, email=form.email.data, phone=form.phone.data or ""
        )
    except services.EventError as exc:
        db.session.rollback()
        form.form_errors.append(str(exc))
        return _manage_page(registration, token, transfer_form=form, status=400)
    name = colleague.name
    db.session.commit()
    return _render("events/transferred.html", event=registration.event, colleague=name)


@bp.route("/sertifikat/<code>")
def certificate_verify(code: str):
    """Public check that a certificate is genuine (the URL printed on it)."""
    certificate = services.certificate_by_code(code)
    return _render(
        "events/certificate_verify.html",
        status=200 if certificate else 404,
        certificate=certificate,
    )


def init_app(app) -> None:
    app.register_blueprint(bp)
