"""Public signup, confirmation, unsubscribe and preferences; the staff consent panel."""

import hashlib
import json
import re

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import get_locale
from flask_babel import gettext as _
from flask_login import current_user
from limits import parse as parse_limit
from werkzeug.routing import BuildError

from crm.auth.permissions import permission_required
from crm.extensions import csrf, db, limiter
from crm.members.models import Contact
from crm.public_pages import public_args, render_public
from crm.subscriptions import (
    gdpr,
    ledger,
    links,
    models,
    network_mail,
    services,
    signup,
    staff_consent,
    subscribers,
    tasks,
    tokens,
)
from crm.subscriptions import topics as topic_rules
from crm.subscriptions.forms import (
    ConfirmForm,
    EraseForm,
    LinkCompanyForm,
    PreferencesForm,
    StaffConsentForm,
    StaffWithdrawForm,
    SubscribeForm,
    submitted_signup,
    topic_choices,
)
from crm.urls import MAX_ID

bp = Blueprint("subscriptions", __name__)
# Staff pages live apart: everything in `subscriptions` is public, everything here
# needs a members permission.
staff_bp = Blueprint("consent", __name__)

# Requests to the public form are small; anything bigger is not a person typing.
MAX_SIGNUP_BYTES = 64 * 1024
# Per address, silently: an inbox cannot be flooded with confirmation emails, and
# the answer never differs (so it reveals nothing either).
ADDRESS_LIMIT = parse_limit("3 per hour")


def _locale() -> str:
    return str(get_locale() or "nb")


def _client_ip() -> str | None:
    return request.remote_addr


def _render_public(template: str, status: int = 200, **context) -> Response:
    # Only the signup form may be framed by the cluster's website.
    return render_public(template, status, frameable=("subscriptions.subscribe",), **context)


def _invalid_link(expired: bool = False) -> Response:
    return _render_public(
        "subscriptions/link_invalid.html", status=410 if expired else 404, expired=expired
    )


# -- public signup --------------------------------------------------------------------


def _address_allowed(email: str) -> bool:
    """Count a signup for the address; False once it has had its share this hour."""
    if not limiter.enabled or not current_app.config.get("RATELIMIT_ENABLED", True):
        return True
    digest = hashlib.sha256(email.strip().lower().encode("utf-8", "replace")).hexdigest()
    return limiter.limiter.hit(ADDRESS_LIMIT, "subscribe-address", digest)


def _signup_looks_automated(form: SubscribeForm) -> bool:
    """Honeypot filled in, form token missing, forged or expired, or the form filled in
    inhumanly fast. (A token used before is refused when the signup is stored.)"""
    if form.website.data:
        return True
    age = tokens.fresh_form_age(form.started.data)
    return age is None or age < current_app.config["SUBSCRIBE_MIN_FILL_SECONDS"]


def _chosen_topics(form, topics) -> list:
    wanted = set(form.topics.data or [])
    return [t for t in topics if t.slug in wanted]


# The answer page's address for each way in (script root, embedded or not, language):
# a handful, each worked out once per process instead of for every signup.
_answer_pages: dict[tuple, str] = {}


def _answer_page() -> str:
    """The signup's answer page ("check your inbox"), embedded and in a language as the
    form was."""
    args = public_args()
    key = (request.script_root, *args.items())
    page = _answer_pages.get(key)
    if page is None:
        page = _answer_pages[key] = url_for("subscriptions.subscribe", sent="1", **args)
    return page


@bp.route("/subscribe", methods=["GET", "POST"])
@csrf.exempt  # embedded in an iframe: see SubscribeForm for what stands in for the token
@limiter.limit("10 per minute;60 per hour", methods=["POST"])
def subscribe():
    request.max_content_length = MAX_SIGNUP_BYTES
    topics, wording = topic_rules.public_reference_data()
    if request.method == "POST":
        form = submitted_signup()
        # The version the form showed is what the person agreed to (if it exists).
        shown = form.wording.data or ""
        if re.fullmatch(r"[0-9]{1,8}", shown) and int(shown) != wording.version:
            wording = topic_rules.wording_by_version(int(shown)) or wording
        chosen = _chosen_topics(form, topics)
        if form.validate() and chosen:
            # Bots get the same friendly answer as people, and nothing happens.
            if not _signup_looks_automated(form) and _address_allowed(form.email.data):
                try:
                    signup.start_signup(
                        name=form.name.data,
                        email=form.email.data,
                        company=form.company.data or "",
                        topics=chosen,
                        wording=wording,
                        ip=_client_ip(),
                        locale=_locale(),
                        form_token=tokens.form_token_digest(form.started.data),
                    )
                except signup.FormAlreadyUsed:
                    pass  # a replayed form: its signup was started before
                else:
                    # The confirmation email is written and sent by a worker job.
                    tasks.wake_confirmations()
            # Post/redirect/get: reloading the answer page must not sign up (and mail) again.
            return redirect(_answer_page(), 303)
        # Shown again with its errors: a form of its own (see `submitted_signup`).
        form = SubscribeForm()
        if form.validate():  # all but the topics
            form.topics.errors = [_("Choose at least one topic.")]
    elif request.args.get("sent") == "1":
        return _render_public("subscriptions/check_inbox.html")
    else:
        form = SubscribeForm()
        form.started.data = tokens.make_form_token()
        form.topics.data = [models.GENERAL_TOPIC]
    form.wording.data = str(wording.version)
    # Only a form shown needs its choices (validate_choice is off: the view checks them).
    form.topics.choices = topic_choices(topics, _locale())
    return _render_public(
        "subscriptions/subscribe.html", form=form, wording=wording, locale=_locale()
    )


@bp.route("/subscribe/confirm/<token>", methods=["GET", "POST"])
@limiter.limit("30 per minute", methods=["POST"])
def confirm(token: str):
    try:
        claim = tokens.read_confirm_token(token)
    except tokens.TokenExpired:
        return _invalid_link(expired=True)
    except tokens.TokenInvalid:
        return _invalid_link()
    pending = signup.pending_for_claim(claim.pending_id, claim.nonce)
    if pending is None:
        return _invalid_link()
    topics = signup.pending_topics(pending)
    form = ConfirmForm()
    if pending.confirmed_at is None and not form.validate_on_submit():
        return _render_public(
            "subscriptions/confirm.html", form=form, topics=topics, pending=pending
        )
    result = signup.confirm_signup(pending, ip=_client_ip())
    db.session.commit()
    return _render_public(
        "subscriptions/confirmed.html",
        first_time=result.first_time,
        topics=ledger.subscribed_topics(result.contact),
        preferences_url=url_for(
            "subscriptions.preferences", token=links.link_token(result.contact)
        ),
    )


# -- leaving and changing topics (the token is the authority) --------------------------


@bp.route("/unsubscribe/<token>", methods=["GET", "POST"])
@csrf.exempt  # RFC 8058 one-click: mail providers POST without any token of ours
@limiter.limit("60 per minute", methods=["POST"])
def unsubscribe(token: str):
    holder = links.link_holder(token)
    if holder is None:
        return _invalid_link()
    contact = holder.contact
    if holder.network is not None:
        return _object_to_network_mail(token, contact, holder.network)
    if request.method == "POST":
        # Any body will do, RFC 8058's "List-Unsubscribe=One-Click" included.
        links.unsubscribe(contact, ip=_client_ip())
        db.session.commit()
        return _render_public("subscriptions/unsubscribed.html", token=token)
    return _render_public(
        "subscriptions/unsubscribe.html",
        token=token,
        topics=ledger.subscribed_topics(contact),
    )


def _object_to_network_mail(token: str, contact: Contact, network) -> Response:
    """A network mail's link: one click (RFC 8058 POST) objects to that network's mail."""
    if request.method == "POST":
        network_mail.object_to_network_mail(
            contact, network, source="email_link", ip=_client_ip(), note="unsubscribe link"
        )
        db.session.commit()
        return _render_public(
            "subscriptions/network_unsubscribed.html", token=token, network=network
        )
    return _render_public(
        "subscriptions/network_unsubscribe.html",
        token=token,
        network=network,
        objected=network.id in network_mail.objected_network_ids(contact),
    )


@bp.route("/preferences/<token>", methods=["GET", "POST"])
@limiter.limit("30 per minute", methods=["POST"])
def preferences(token: str):
    contact = links.contact_for_link(token)
    if contact is None:
        return _invalid_link()
    topics, wording = topic_rules.public_reference_data()
    form = PreferencesForm()
    form.topics.choices = topic_choices(topics, _locale())
    if form.validate_on_submit():
        if "unsubscribe_all" in request.form:
            links.unsubscribe(contact, ip=_client_ip())
            db.session.commit()
            return _render_public("subscriptions/unsubscribed.html", token=token)
        links.update_preferences(
            contact, _chosen_topics(form, topics), ip=_client_ip(), wording=wording
        )
        db.session.commit()
        flash(_("Your choices are saved."), "success")
        return redirect(url_for("subscriptions.preferences", token=token, **public_args()))
    if request.method == "GET":
        form.topics.data = [t.slug for t in ledger.subscribed_topics(contact)]
    return _render_public(
        "subscriptions/preferences.html",
        form=form,
        token=token,
        contact=contact,
        wording=wording,
        locale=_locale(),
    )


# -- staff ------------------------------------------------------------------------------


def _contact_or_404(contact_id: int) -> Contact:
    if contact_id > MAX_ID:
        abort(404)
    return db.get_or_404(Contact, contact_id)


def _contact_page(contact: Contact) -> str:
    try:
        return url_for("members.contact_detail", contact_id=contact.id) + "#consent"
    except BuildError:
        return url_for("consent.contact_consent", contact_id=contact.id)


def _topics_from(form) -> list:
    wanted = set(form.topics.data or [])
    return [t for t in topic_rules.sync_topics() if t.slug in wanted]


@staff_bp.route("/contacts/<int:contact_id>/consent")
@permission_required("members.view")
def contact_consent(contact_id: int):
    contact = _contact_or_404(contact_id)
    response = render_template("subscriptions/contact_consent.html", contact=contact)
    db.session.commit()  # topics created on first use
    return response


@staff_bp.route("/contacts/<int:contact_id>/consent/grant", methods=["POST"])
@permission_required("members.edit")
def record_consent(contact_id: int):
    contact = _contact_or_404(contact_id)
    form = StaffConsentForm()
    if not form.validate():
        flash(" ".join(str(e) for errors in form.errors.values() for e in errors), "error")
        return redirect(_contact_page(contact))
    try:
        events = staff_consent.record_staff_consent(
            contact,
            _topics_from(form),
            user=current_user,
            channel=form.channel.data,
            note=form.note.data,
        )
    except ledger.ConsentError as exc:
        db.session.rollback()
        flash(str(exc), "error")
        return redirect(_contact_page(contact))
    db.session.commit()
    if events:
        flash(_("Consent recorded."), "success")
    else:
        flash(_("The contact already had consent for those topics."), "info")
    return redirect(_contact_page(contact))


@staff_bp.route("/contacts/<int:contact_id>/company-from-signup", methods=["POST"])
@permission_required("members.edit")
def link_suggested_company(contact_id: int):
    """Staff accept the suggested company: the one the person named at signup."""
    contact = _contact_or_404(contact_id)
    form = LinkCompanyForm()
    company = subscribers.suggested_company(contact)
    if not form.validate() or company is None or form.company_id.data != str(company.id):
        flash(_("The suggestion has changed; look at the contact again."), "error")
        return redirect(_contact_page(contact))
    contact.company = company
    db.session.commit()
    flash(_("The contact is linked to %(company)s.", company=company.name), "success")
    return redirect(_contact_page(contact))


@staff_bp.route("/contacts/<int:contact_id>/consent/withdraw", methods=["POST"])
@permission_required("members.edit")
def withdraw_consent(contact_id: int):
    contact = _contact_or_404(contact_id)
    form = StaffWithdrawForm()
    if not form.validate():
        flash(" ".join(str(e) for errors in form.errors.values() for e in errors), "error")
        return redirect(_contact_page(contact))
    topics = _topics_from(form)
    if not topics:
        flash(_("Choose at least one topic."), "error")
        return redirect(_contact_page(contact))
    events = staff_consent.staff_withdraw(contact, topics, user=current_user, note=form.note.data)
    db.session.commit()
    flash(_("Consent withdrawn.") if events else _("Nothing to withdraw."), "success")
    return redirect(_contact_page(contact))


@staff_bp.route("/contacts/<int:contact_id>/personal-data.json")
@permission_required("members.view")
def export_personal_data(contact_id: int):
    contact = _contact_or_404(contact_id)
    data = gdpr.export_person(contact)
    body = json.dumps(data, ensure_ascii=False, indent=2, sort_keys=True)
    response = Response(body, mimetype="application/json")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="contact-{contact.id}-personal-data.json"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@staff_bp.route("/contacts/<int:contact_id>/erase", methods=["GET", "POST"])
@permission_required("members.edit")
def erase_contact(contact_id: int):
    contact = _contact_or_404(contact_id)
    form = EraseForm()
    if form.validate_on_submit():
        try:
            gdpr.erase_person(contact, user=current_user)
        except ledger.ConsentError as exc:
            db.session.rollback()
            flash(str(exc), "error")
            return redirect(_contact_page(contact))
        db.session.commit()
        flash(_("The person's data is erased."), "success")
        return redirect(_contact_page(contact))
    return render_template("subscriptions/erase.html", contact=contact, form=form)


# -- wiring -----------------------------------------------------------------------------


def consent_panel(contact: Contact) -> dict:
    """What the consent panel on a contact page shows (a template global)."""
    topics = topic_rules.sync_topics()
    states = ledger.consent_states(contact)
    active_slugs = [t.slug for t in topics if getattr(states.get(t.id), "status", "") == "active"]
    grant_form = StaffConsentForm(formdata=None)
    grant_form.topics.choices = topic_choices(
        [t for t in topics if t.slug not in active_slugs], _locale()
    )
    withdraw_form = StaffWithdrawForm(formdata=None)
    withdraw_form.topics.choices = topic_choices(
        [t for t in topics if t.slug in active_slugs], _locale()
    )
    withdraw_form.topics.data = active_slugs
    all_topics = {t.id: t for t in db.session.scalars(db.select(models.Topic))}
    suggested = subscribers.suggested_company(contact)
    return {
        "topics": topics,
        "all_topics": all_topics,
        "states": states,
        "history": ledger.consent_history(contact),
        "company_address": subscribers.is_company_address(contact),
        "profile": subscribers.subscriber_profile(contact),
        "wording": topic_rules.current_wording(),
        "grant_form": grant_form,
        "withdraw_form": withdraw_form,
        "status_labels": ledger.STATUS_LABELS,
        "kind_labels": ledger.KIND_LABELS,
        "source_labels": ledger.SOURCE_LABELS,
        "note_label": ledger.note_label,
        "state_rows": [
            (topic, states[topic.id])
            for topic in models.in_display_order(all_topics[topic_id] for topic_id in states)
        ],
        "suggested_company": suggested,
        "link_company_form": LinkCompanyForm(formdata=None, company_id=suggested and suggested.id),
    }


def init_app(app) -> None:
    from crm.members import panels

    app.register_blueprint(bp)
    app.register_blueprint(staff_bp)
    app.jinja_env.globals["consent_panel"] = consent_panel
    panel = "subscriptions/_contact_consent_panel.html"
    if panel not in panels.CONTACT_PANELS:
        panels.CONTACT_PANELS.append(panel)
    services.register_hooks()
    from crm import worker

    # A signup whose wake-up was lost still gets its confirmation email.
    if tasks.confirmations_tick not in worker.WORKER_HOOKS:
        worker.WORKER_HOOKS.append(tasks.confirmations_tick)
