"""Staff pages for companies, contacts, networks and activities.

Views stay thin: they read forms and query strings, call crm/members/services.py and
commit. Lists answer `?partial=1` with only their results region (search as you type).
"""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_babel import gettext as _
from flask_babel import ngettext
from flask_login import current_user
from markupsafe import Markup, escape
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import ImmutableMultiDict
from wtforms import SelectChoice

from crm.audit import history_for
from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.i18n import format_date
from crm.members import bulk_actions, listing, network_pages, services
from crm.members.forms import (
    ORG_FORMS,
    ActivityForm,
    BulkForm,
    CompanyForm,
    ConfirmForm,
    ContactForm,
    MergeForm,
    NetworkForm,
    NetworkMemberForm,
)
from crm.members.models import (
    CONTACT_ROLES,
    MEMBERSHIP_STATUSES,
    ROLE_COLUMNS,
    Company,
    Contact,
    Network,
)
from crm.members.normalize import format_orgnr, format_phone
from crm.members.panels import COMPANY_PANELS, CONTACT_PANELS
from crm.spreadsheet import export_response
from crm.timeutil import today_oslo

bp = Blueprint("members", __name__)

# Below this many companies the contact form lists them all in a datalist (works
# without JavaScript); above it, static/js/members.js fetches suggestions as you type.
FULL_DATALIST_LIMIT = 500


@bp.before_request
def _tidy_query_string():
    # url_for(**request.args) in the sort and page links must never see `partial`
    # (links would load a bare fragment) nor url_for's own keywords (`_external`,
    # `_scheme`, `endpoint`), which a crafted query string would turn into a 500.
    g.partial = request.args.get("partial") == "1"
    request.args = ImmutableMultiDict(
        [
            (key, value)
            for key, value in request.args.items(multi=True)
            if key != "partial" and key != "endpoint" and not key.startswith("_")
        ]
    )


@bp.url_defaults
def _keep_view_args(endpoint: str, values: dict) -> None:
    # The shared pagination and sort macros build links from the query string only;
    # on a page like /networks/<id> they also need the id the page itself was given.
    if request and endpoint == request.endpoint and request.view_args:
        for key, value in request.view_args.items():
            values.setdefault(key, value)


@bp.app_template_filter("orgnr")
def _orgnr_filter(value):
    return format_orgnr(value)


@bp.app_template_filter("website_url")
def _website_url(value: str | None) -> str:
    """A safe link target: register data often lacks the scheme ("www.firma.no")."""
    value = (value or "").strip()
    if not value:
        return ""
    if "://" not in value:
        value = "https://" + value
    return value if value.lower().startswith(("http://", "https://")) else ""


@bp.app_template_filter("phone")
def _phone_filter(value):
    return format_phone(value)


# The company import page belongs to crm/members/import_routes.py; linked when present.
IMPORT_ENDPOINT = "imports.upload"


@bp.context_processor
def _labels():
    return {
        "import_endpoint": IMPORT_ENDPOINT
        if IMPORT_ENDPOINT in current_app.view_functions
        else None,
        "membership_labels": services.MEMBERSHIP_LABELS,
        "role_labels": services.ROLE_LABELS,
        "activity_labels": services.ACTIVITY_LABELS,
        "warning_labels": services.WARNING_LABELS,
        "bulk_action_choices": _bulk_action_choices,
    }


def _bulk_action_choices(record_type: str) -> list[tuple[str, str]]:
    actions = (
        bulk_actions.CONTACT_ACTIONS if record_type == "contact" else bulk_actions.COMPANY_ACTIONS
    )
    return [(a, bulk_actions.ACTION_LABELS[a]) for a in actions]


def _get_or_404(model, record_id: int):
    if record_id > listing.MAX_ID:
        abort(404)
    return db.get_or_404(model, record_id)


def _paginate(query: listing.ListQuery):
    page = listing.parse_page(request.args.get("page"))
    return listing.paginate(query, page, current_app.config["PAGE_SIZE"])


def _record_url(endpoint: str, id_arg: str):
    """`url_for(endpoint, <id_arg>=id)` for each row of a table, from one url_for call.

    A 50-row list would otherwise build up to 100 URLs through the URL map per page.
    """
    marker = str(listing.MAX_ID)
    prefix, _, suffix = url_for(endpoint, **{id_arg: listing.MAX_ID}).rpartition(marker)
    return lambda record_id: f"{prefix}{record_id}{suffix}"


def _today_stamp() -> str:
    return today_oslo().isoformat()


# -- companies ---------------------------------------------------------------------


@bp.route("/companies")
@permission_required("members.view")
def company_list():
    filters = listing.CompanyFilters.from_args(request.args)
    page = _paginate(listing.company_query(filters))
    context = {
        "filters": filters,
        "page": page,
        "company_url": _record_url("members.company_detail", "company_id"),
    }
    if g.partial:
        return render_template("members/_company_results.html", **context)
    return render_template(
        "members/company_list.html",
        municipalities=listing.municipality_choices(),
        networks=services.network_choices(),
        statuses=MEMBERSHIP_STATUSES,
        roles=CONTACT_ROLES,
        **context,
    )


@bp.route("/companies/export.<any(csv, xlsx):fmt>")
@permission_required("members.view")
def company_export(fmt: str):
    filters = listing.CompanyFilters.from_args(request.args)
    headers, rows = services.company_table(services.companies_for_export(filters))
    return export_response(fmt, f"companies-{_today_stamp()}", headers, rows, _("Companies"))


@bp.route("/companies/lookup")
@permission_required("members.view")
def company_lookup():
    """Suggestions for the company field of the contact form (JSON)."""
    companies = services.company_suggestions(request.args.get("q", ""))
    return jsonify([{"id": c.id, "label": services.company_choice_label(c)} for c in companies])


def _duplicate_company_message(existing: Company) -> Markup:
    link = Markup('<a href="{}">{}</a>').format(
        url_for("members.company_detail", company_id=existing.id), existing.name
    )
    return Markup(escape(_("This organisation number is already registered:"))) + " " + link


def _save_company(form: CompanyForm, company: Company) -> bool:
    """Copy a validated form onto `company`; False (with field errors) when a rule says no."""
    duplicate = services.company_by_orgnr(form.orgnr.data, exclude_id=company.id)
    if duplicate is not None:
        form.orgnr.errors.append(_duplicate_company_message(duplicate))
        return False
    try:
        services.apply_membership(
            company, form.membership_status.data, form.member_since.data, form.resigned_on.data
        )
    except services.MembersError as exc:
        form.resigned_on.errors.append(str(exc))
        return False
    company.orgnr = form.orgnr.data
    company.name = form.name.data
    if form.org_form_code.data != company.org_form_code or not company.org_form_name:
        company.org_form_name = ORG_FORMS.get(form.org_form_code.data, "")
    company.org_form_code = form.org_form_code.data or ""
    company.nace_code = form.nace_code.data or ""
    company.nace_text = form.nace_text.data or ""
    company.employees = form.employees.data
    services.set_municipality(
        company, form.municipality_number.data or "", form.municipality_name.data or ""
    )
    company.street_address = form.street_address.data or ""
    company.postal_code = form.postal_code.data or ""
    company.postal_place = form.postal_place.data or ""
    company.website = form.website.data or ""
    company.notes = form.notes.data or ""
    return True


def _commit_company(form: CompanyForm) -> bool:
    try:
        db.session.commit()
    except IntegrityError:
        # Two people saving the same orgnr at once: the unique index has the last word.
        db.session.rollback()
        form.orgnr.errors.append(_("This organisation number is already registered."))
        return False
    return True


@bp.route("/companies/new", methods=["GET", "POST"])
@permission_required("members.edit")
def company_create():
    form = CompanyForm()
    if form.validate_on_submit():
        company = Company()
        if _save_company(form, company):
            db.session.add(company)
            if _commit_company(form):
                flash(_("Company %(name)s created.", name=company.name), "success")
                return redirect(url_for("members.company_detail", company_id=company.id))
    return render_template(
        "members/company_form.html",
        form=form,
        company=None,
        municipalities=listing.municipality_choices(),
    )


@bp.route("/companies/<int:company_id>")
@permission_required("members.view")
def company_detail(company_id: int, activity_form: ActivityForm | None = None):
    company = _get_or_404(Company, company_id)
    contacts = [c for c in company.contacts if c.archived_at is None]
    activity_form = activity_form or _activity_form(contacts, formdata=None)
    return render_template(
        "members/company_detail.html",
        company=company,
        contacts=contacts,
        activity_form=activity_form,
        history=history_for(company),
        panels=COMPANY_PANELS,
    )


@bp.route("/companies/<int:company_id>/edit", methods=["GET", "POST"])
@permission_required("members.edit")
def company_edit(company_id: int):
    company = _get_or_404(Company, company_id)
    form = CompanyForm(obj=company)
    if form.validate_on_submit() and _save_company(form, company):
        if _commit_company(form):
            flash(_("Company %(name)s saved.", name=company.name), "success")
            return redirect(url_for("members.company_detail", company_id=company.id))
    db.session.rollback()  # nothing half-applied survives a refused form
    return render_template(
        "members/company_form.html",
        form=form,
        company=company,
        municipalities=listing.municipality_choices(),
    )


@bp.route("/companies/<int:company_id>/archive", methods=["POST"])
@permission_required("members.edit")
def company_archive(company_id: int):
    company = _get_or_404(Company, company_id)
    if ConfirmForm().validate_on_submit():
        services.archive(company)
        db.session.commit()
        flash(_("Company %(name)s archived.", name=company.name), "success")
    return redirect(url_for("members.company_detail", company_id=company.id))


@bp.route("/companies/<int:company_id>/unarchive", methods=["POST"])
@permission_required("members.edit")
def company_unarchive(company_id: int):
    company = _get_or_404(Company, company_id)
    if ConfirmForm().validate_on_submit():
        services.unarchive(company)
        db.session.commit()
        flash(_("Company %(name)s restored.", name=company.name), "success")
    return redirect(url_for("members.company_detail", company_id=company.id))


@bp.route("/companies/<int:company_id>/activities", methods=["POST"])
@permission_required("members.edit")
def company_add_activity(company_id: int):
    company = _get_or_404(Company, company_id)
    candidates = [c for c in company.contacts if c.archived_at is None]
    form = _activity_form(candidates)
    if not form.validate_on_submit():
        return company_detail(company_id, activity_form=form)
    activity = services.add_activity(
        kind=form.kind.data,
        occurred_on=form.occurred_on.data,
        summary=form.summary.data,
        details=form.details.data,
        company=company,
        user=current_user,
    )
    if not _participants_and_followup(activity, form, candidates):
        return company_detail(company_id, activity_form=form)
    db.session.commit()
    flash(_("Activity added."), "success")
    return redirect(url_for("members.company_detail", company_id=company.id) + "#activities")


def _activity_form(candidates, **kwargs) -> ActivityForm:
    kwargs.setdefault("data", {})
    kwargs["data"].setdefault("followup_assignee", current_user.id)
    return ActivityForm(participants=candidates, **kwargs)


def _activity_candidates(contact: Contact) -> list[Contact]:
    """Who can have taken part in a contact's activity: the contact and its colleagues."""
    if contact.company is None:
        return [contact]
    return [c for c in contact.company.contacts if c.archived_at is None] or [contact]


def _participants_and_followup(activity, form: ActivityForm, candidates) -> bool:
    """False (with the field error) when the follow-up is refused; nothing is kept."""
    from crm.followups.services import FollowUpError

    try:
        services.record_participants_and_followup(activity, form, candidates, current_user)
    except FollowUpError as exc:
        db.session.rollback()
        form.followup_what.errors.append(str(exc))
        return False
    return True


# -- contacts ----------------------------------------------------------------------


@bp.route("/contacts")
@permission_required("members.view")
def contact_list():
    filters = listing.ContactFilters.from_args(request.args)
    page = _paginate(listing.contact_query(filters))
    context = {
        "filters": filters,
        "page": page,
        "contact_url": _record_url("members.contact_detail", "contact_id"),
        "company_url": _record_url("members.company_detail", "company_id"),
        **_newsletter_columns(page.items),
    }
    if g.partial:
        return render_template("members/_contact_results.html", **context)
    from crm.subscriptions.topics import active_topics

    return render_template(
        "members/contact_list.html",
        municipalities=listing.municipality_choices(),
        networks=services.network_choices(),
        roles=CONTACT_ROLES,
        topics=active_topics(),
        **context,
    )


def _newsletter_columns(contacts) -> dict:
    """What the contact list shows of the newsletter side, for one page (two queries):
    the topics each person has active consent for, and the company a subscriber without
    a company record typed on the signup form."""
    from crm.subscriptions.ledger import subscribed_topic_names
    from crm.subscriptions.subscribers import stated_companies

    ids = [c.id for c in contacts]
    without_company = [c.id for c in contacts if c.company_id is None]
    return {
        "subscribed": subscribed_topic_names(ids),
        "stated_company": stated_companies(without_company),
    }


@bp.route("/contacts/export.<any(csv, xlsx):fmt>")
@permission_required("members.view")
def contact_export(fmt: str):
    filters = listing.ContactFilters.from_args(request.args)
    headers, rows = services.contact_table(services.contacts_for_export(filters))
    return export_response(fmt, f"contacts-{_today_stamp()}", headers, rows, _("Contacts"))


def _contact_initial(contact: Contact) -> dict:
    return {
        "first_name": contact.first_name,
        "last_name": contact.last_name,
        "email": contact.email,
        "phone": format_phone(contact.phone),
        "job_title": contact.job_title,
        "company": services.company_choice_label(contact.company) if contact.company else "",
        "networks": [n.id for n in contact.networks],
        "left_company": not contact.active,
        "notes": contact.notes,
        **{column: getattr(contact, column) for column in ROLE_COLUMNS.values()},
    }


def _company_datalist(form: ContactForm) -> list[str]:
    """Company names for the datalist: all of them in a small register, else a few matches."""
    total = db.session.scalar(select(func.count(Company.id)).where(Company.archived_at.is_(None)))
    if total <= FULL_DATALIST_LIMIT:
        companies = db.session.scalars(
            select(Company).where(Company.archived_at.is_(None)).order_by(func.lower(Company.name))
        )
    else:
        companies = services.company_suggestions(form.company.data or "")
    return [services.company_choice_label(c) for c in companies]


def _contact_form(contact: Contact | None):
    """Create (contact None) or edit a contact; shared by both views."""
    initial = _contact_initial(contact) if contact else {}
    if contact is None:
        preset = listing.parse_id(request.args.get("company"))
        company = db.session.get(Company, preset) if preset else None
        if company is not None:
            initial["company"] = services.company_choice_label(company)
    form = ContactForm(data=initial)
    form.networks.choices = [
        SelectChoice(n.id, n.name)
        for n in services.network_choices(contact.networks if contact else [])
    ]
    duplicates, suggestions = [], []
    if form.validate_on_submit():
        company, company_known = None, True
        try:
            company = services.resolve_company(form.company.data)
        except services.MembersError as exc:
            company_known = False
            form.company.errors.append(str(exc))
            suggestions = services.company_suggestions(form.company.data, limit=5)
        if contact is None or form.email.data != contact.email:
            duplicates = services.contacts_with_email(
                form.email.data, exclude_id=contact.id if contact else None
            )
        if company_known and (not duplicates or form.confirm_duplicate.data):
            created = contact is None
            contact = contact or Contact()
            _apply_contact_form(form, contact, company)
            db.session.add(contact)
            db.session.commit()
            name = contact.audit_label()
            if created:
                flash(_("Contact %(name)s created.", name=name), "success")
            else:
                flash(_("Contact %(name)s saved.", name=name), "success")
            return redirect(url_for("members.contact_detail", contact_id=contact.id))
    return render_template(
        "members/contact_form.html",
        form=form,
        contact=contact,
        duplicates=duplicates,
        suggestions=[services.company_choice_label(c) for c in suggestions],
        company_options=_company_datalist(form),
    )


def _apply_contact_form(form: ContactForm, contact: Contact, company: Company | None) -> None:
    chosen = set(form.networks.data or [])
    networks = [n for n in services.network_choices(contact.networks) if n.id in chosen]
    # One flush for the whole edit, so the audit log shows it as one change.
    with db.session.no_autoflush:
        _copy_contact_fields(form, contact, company, networks)


def _copy_contact_fields(form, contact: Contact, company: Company | None, networks) -> None:
    contact.first_name = form.first_name.data or ""
    contact.last_name = form.last_name.data or ""
    contact.email = form.email.data
    contact.phone = form.phone.data
    contact.job_title = form.job_title.data or ""
    contact.company = company
    services.set_roles(
        contact, {role for role, column in ROLE_COLUMNS.items() if getattr(form, column).data}
    )
    contact.networks = networks
    contact.active = not form.left_company.data
    contact.notes = form.notes.data or ""


@bp.route("/contacts/new", methods=["GET", "POST"])
@permission_required("members.edit")
def contact_create():
    return _contact_form(None)


@bp.route("/contacts/<int:contact_id>/edit", methods=["GET", "POST"])
@permission_required("members.edit")
def contact_edit(contact_id: int):
    return _contact_form(_get_or_404(Contact, contact_id))


@bp.route("/contacts/<int:contact_id>")
@permission_required("members.view")
def contact_detail(contact_id: int, activity_form: ActivityForm | None = None):
    contact = _get_or_404(Contact, contact_id)
    merged_into = (
        db.session.get(Contact, contact.merged_into_id) if contact.merged_into_id else None
    )
    return render_template(
        "members/contact_detail.html",
        contact=contact,
        merged_into=merged_into,
        duplicates=services.contacts_with_email(contact.email, exclude_id=contact.id)
        if contact.archived_at is None
        else [],
        activity_form=activity_form
        or _activity_form(
            _activity_candidates(contact), formdata=None, data={"participants": [contact.id]}
        ),
        history=history_for(contact),
        panels=CONTACT_PANELS,
    )


@bp.route("/contacts/<int:contact_id>/archive", methods=["POST"])
@permission_required("members.edit")
def contact_archive(contact_id: int):
    contact = _get_or_404(Contact, contact_id)
    if ConfirmForm().validate_on_submit():
        services.archive(contact)
        db.session.commit()
        flash(_("Contact %(name)s archived.", name=contact.audit_label()), "success")
    return redirect(url_for("members.contact_detail", contact_id=contact.id))


@bp.route("/contacts/<int:contact_id>/unarchive", methods=["POST"])
@permission_required("members.edit")
def contact_unarchive(contact_id: int):
    contact = _get_or_404(Contact, contact_id)
    if ConfirmForm().validate_on_submit():
        services.unarchive(contact)
        db.session.commit()
        flash(_("Contact %(name)s restored.", name=contact.audit_label()), "success")
    return redirect(url_for("members.contact_detail", contact_id=contact.id))


@bp.route("/contacts/<int:contact_id>/activities", methods=["POST"])
@permission_required("members.edit")
def contact_add_activity(contact_id: int):
    contact = _get_or_404(Contact, contact_id)
    candidates = _activity_candidates(contact)
    form = _activity_form(candidates)
    if not form.validate_on_submit():
        return contact_detail(contact_id, activity_form=form)
    activity = services.add_activity(
        kind=form.kind.data,
        occurred_on=form.occurred_on.data,
        summary=form.summary.data,
        details=form.details.data,
        contact=contact,
        user=current_user,
    )
    if not _participants_and_followup(activity, form, candidates):
        return contact_detail(contact_id, activity_form=form)
    db.session.commit()
    flash(_("Activity added."), "success")
    return redirect(url_for("members.contact_detail", contact_id=contact.id) + "#activities")


@bp.route("/contacts/<int:contact_id>/merge", methods=["GET", "POST"])
@permission_required("members.edit")
def contact_merge(contact_id: int):
    """Pick a duplicate of this contact, compare them, and fold it into this one."""
    target = _get_or_404(Contact, contact_id)
    if target.archived_at is not None:
        flash(_("Archived contacts cannot be merged. Restore them first."), "error")
        return redirect(url_for("members.contact_detail", contact_id=target.id))
    form = MergeForm()
    if request.method == "POST":
        if form.validate_on_submit():
            other = db.session.get(Contact, form.other_id.data)
            if other is None:
                abort(404)
            try:
                services.merge_contacts(target, other)
            except services.MembersError as exc:
                db.session.rollback()
                flash(str(exc), "error")
            else:
                db.session.commit()
                flash(
                    _(
                        "%(other)s was merged into %(target)s.",
                        other=other.audit_label(),
                        target=target.audit_label(),
                    ),
                    "success",
                )
                return redirect(url_for("members.contact_detail", contact_id=target.id))
        else:
            flash(_("Choose the contact to merge."), "error")
    query = listing.clean_query(request.args.get("q"))
    other_id = listing.parse_id(request.args.get("other"))
    other = db.session.get(Contact, other_id) if other_id else None
    if other is not None and (other.id == target.id or other.archived_at is not None):
        other = None
    return render_template(
        "members/contact_merge.html",
        target=target,
        other=other,
        query=query,
        candidates=[] if other else services.merge_candidates(target, query),
        preview=services.merge_preview(target, other) if other else [],
        form=form,
    )


# -- networks ----------------------------------------------------------------------


@bp.route("/networks")
@permission_required("members.view")
def network_list():
    return render_template("members/network_list.html", networks=services.network_overview())


@bp.route("/networks/<int:network_id>")
@permission_required("members.view")
def network_detail(network_id: int, add_form: NetworkMemberForm | None = None):
    network = _get_or_404(Network, network_id)
    q = listing.clean_query(request.args.get("q"))
    page = _paginate(network_pages.member_query(network, q))
    return render_template(
        "members/network_detail.html",
        network=network,
        page=page,
        q=q,
        companies=network_pages.member_companies(network),
        leaders=network.leaders,
        leader_ids={c.id for c in network.leaders},
        meetings=network_pages.meetings(network),
        mailings=network_pages.mailings(network),
        add_form=add_form or NetworkMemberForm(formdata=None),
        meeting_form=ActivityForm(formdata=None, data={"kind": "meeting"}),
        confirm_form=ConfirmForm(),
    )


@bp.route("/networks/<int:network_id>/members", methods=["POST"])
@permission_required("members.edit")
def network_add_members(network_id: int):
    """Add a contact (by email) or a company's current contacts (by name or orgnr)."""
    network = _get_or_404(Network, network_id)
    form = NetworkMemberForm()
    if not form.validate_on_submit():
        return network_detail(network_id, add_form=form)
    try:
        selection = network_pages.who_to_add(form.who.data)
        added = bulk_actions.apply_network(selection, network.id, adding=True)
    except (bulk_actions.BulkError, services.MembersError) as exc:
        db.session.rollback()
        form.who.errors.append(str(exc))
        return network_detail(network_id, add_form=form)
    db.session.commit()
    flash(ngettext("%(num)s member added.", "%(num)s members added.", added), "success")
    return redirect(url_for("members.network_detail", network_id=network.id))


@bp.route("/networks/<int:network_id>/members/<int:contact_id>/remove", methods=["POST"])
@permission_required("members.edit")
def network_remove_member(network_id: int, contact_id: int):
    network = _get_or_404(Network, network_id)
    contact = _get_or_404(Contact, contact_id)
    if ConfirmForm().validate_on_submit():
        selection = bulk_actions.Selection("contact", [contact.id], {contact.id: contact.name})
        network_pages.set_leader(network, contact, False)
        bulk_actions.apply_network(selection, network.id, adding=False)
        db.session.commit()
        flash(
            _(
                "%(name)s is no longer in %(network)s.",
                name=contact.audit_label(),
                network=network.name,
            ),
            "success",
        )
    return redirect(url_for("members.network_detail", network_id=network.id))


@bp.route("/networks/<int:network_id>/leaders/<int:contact_id>", methods=["POST"])
@permission_required("members.edit")
def network_toggle_leader(network_id: int, contact_id: int):
    network = _get_or_404(Network, network_id)
    contact = _get_or_404(Contact, contact_id)
    if ConfirmForm().validate_on_submit():
        leading = contact not in network.leaders
        try:
            network_pages.set_leader(network, contact, leading)
        except services.MembersError as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            db.session.commit()
            if leading:
                flash(
                    _(
                        "%(name)s now leads %(network)s.",
                        name=contact.audit_label(),
                        network=network.name,
                    ),
                    "success",
                )
            else:
                flash(
                    _(
                        "%(name)s no longer leads %(network)s.",
                        name=contact.audit_label(),
                        network=network.name,
                    ),
                    "success",
                )
    return redirect(url_for("members.network_detail", network_id=network.id))


@bp.route("/networks/<int:network_id>/meetings", methods=["POST"])
@permission_required("members.edit")
def network_add_meeting(network_id: int):
    network = _get_or_404(Network, network_id)
    form = ActivityForm()
    if form.validate_on_submit():
        activity = services.add_activity(
            kind=form.kind.data,
            occurred_on=form.occurred_on.data,
            summary=form.summary.data,
            details=form.details.data,
            user=current_user,
        )
        activity.network = network
        db.session.commit()
        flash(_("Meeting added."), "success")
    else:
        flash(_("A meeting needs a date and a summary."), "error")
    return redirect(url_for("members.network_detail", network_id=network.id) + "#meetings")


def _network_form(network: Network | None):
    form = NetworkForm(obj=network)
    if form.validate_on_submit():
        record = network or Network()
        try:
            services.save_network(
                record, form.name.data, form.description.data or "", form.active.data
            )
        except services.MembersError as exc:
            db.session.rollback()
            form.name.errors.append(str(exc))
        else:
            db.session.add(record)
            try:
                db.session.commit()
            except IntegrityError:  # saved by someone else at the same moment
                db.session.rollback()
                form.name.errors.append(_("A network with that name already exists."))
            else:
                flash(_("Network %(name)s saved.", name=record.name), "success")
                return redirect(url_for("members.network_detail", network_id=record.id))
    return render_template("members/network_form.html", form=form, network=network)


@bp.route("/networks/new", methods=["GET", "POST"])
@permission_required("members.edit")
def network_create():
    return _network_form(None)


@bp.route("/networks/<int:network_id>/edit", methods=["GET", "POST"])
@permission_required("members.edit")
def network_edit(network_id: int):
    return _network_form(_get_or_404(Network, network_id))


def init_app(app) -> None:
    app.register_blueprint(bp)
    from crm import ui

    # Codes in the audit history, in the same words as on the member pages.
    ui.VALUE_LABELS.update(
        {
            ("company", "membership_status"): lambda code: services.MEMBERSHIP_LABELS.get(
                code, code
            ),
            ("activity", "kind"): lambda code: services.ACTIVITY_LABELS.get(code, code),
        }
    )


# -- bulk actions --------------------------------------------------------------------


def _bulk_form(record_type: str) -> BulkForm:
    from crm.followups.forms import user_choices
    from crm.subscriptions.models import ConsentWording
    from crm.subscriptions.topics import active_topics

    form = BulkForm()
    actions = (
        bulk_actions.CONTACT_ACTIONS if record_type == "contact" else bulk_actions.COMPANY_ACTIONS
    )
    form.action.choices = [SelectChoice(a, bulk_actions.ACTION_LABELS[a]) for a in actions]
    form.target_network.choices = [SelectChoice("", "—")] + [
        SelectChoice(n.id, n.name) for n in services.network_choices()
    ]
    form.assignee.choices = user_choices()
    if record_type == "contact":
        form.topic.choices = [SelectChoice(t.id, t.name) for t in active_topics()]
        versions = db.session.scalars(
            select(ConsentWording.version).order_by(ConsentWording.version.desc())
        ).all()
        form.wording_version.choices = [SelectChoice(v, str(v)) for v in versions]
    form.event.choices = [SelectChoice("", "—")] + [
        SelectChoice(e.id, f"{e.title} ({format_date(e.starts_at)})") for e in _upcoming_events()
    ]
    return form


def _upcoming_events():
    """Events whose first session is still ahead, soonest first (the invitation choice)."""
    from crm.events.models import Event, EventSession
    from crm.timeutil import utcnow

    first = (
        select(EventSession.event_id, func.min(EventSession.starts_at).label("starts_at"))
        .group_by(EventSession.event_id)
        .subquery()
    )
    return db.session.scalars(
        select(Event)
        .join(first, first.c.event_id == Event.id)
        .where(first.c.starts_at > utcnow())
        .order_by(first.c.starts_at, Event.id)
        .options(selectinload(Event.sessions))
    ).all()


def _bulk_count(action: str, selection, form: BulkForm, record_type: str) -> int:
    """How many records the action would change (BulkError when it cannot apply)."""
    if action in ("network_add", "network_remove"):
        changing = bulk_actions.network_changes(
            selection, form.target_network.data, action == "network_add"
        )
        return len(changing)
    if action == "status":
        return len(bulk_actions.status_changes(selection, form.status.data, form.on.data))
    if action == "consent":
        return len(bulk_actions.consent_changes(selection, form.topic.data))
    if action == "invite":
        from crm.auth.permissions import can

        if not can("events.edit"):
            raise bulk_actions.BulkError(_("You may not invite people to events."))
        return len(bulk_actions.invite_changes(selection, form.event.data))
    if action == "followup":
        from crm.followups.services import FollowUpError, check_followup

        try:
            check_followup(form.what.data, form.due_on.data, _assignee(form))
        except FollowUpError as exc:
            raise bulk_actions.BulkError(str(exc)) from exc
    return len(selection)


def _assignee(form: BulkForm):
    from crm.auth.models import User

    return db.session.get(User, form.assignee.data) if form.assignee.data else None


def _bulk_apply(action: str, selection, form: BulkForm, record_type: str) -> int:
    if action in ("network_add", "network_remove"):
        return bulk_actions.apply_network(
            selection, form.target_network.data, action == "network_add"
        )
    if action == "status":
        return bulk_actions.apply_status(selection, form.status.data, form.on.data)
    if action == "consent":
        return bulk_actions.apply_consent(
            selection,
            form.topic.data,
            user=current_user,
            channel=form.channel.data,
            wording_version=form.wording_version.data,
            note=form.note.data,
        )
    from crm.followups.services import bulk_create

    return bulk_create(
        record_type,
        selection.ids,
        what=form.what.data,
        due_on=form.due_on.data,
        assignee=_assignee(form),
        user=current_user,
    )


def _bulk_export(record_type: str, selection, fmt: str):
    if record_type == "contact":
        stmt = select(Contact).options(
            selectinload(Contact.company), selectinload(Contact.networks)
        )
        records = [r[0] for r in bulk_actions.rows_for(stmt, Contact.id, selection.ids)]
        headers, rows = services.contact_table(records)
        title = _("Contacts")
    else:
        stmt = select(Company).options(selectinload(Company.contacts))
        records = [r[0] for r in bulk_actions.rows_for(stmt, Company.id, selection.ids)]
        headers, rows = services.company_table(records)
        title = _("Companies")
    fmt = fmt if fmt in ("csv", "xlsx") else "xlsx"
    name = "contacts" if record_type == "contact" else "companies"
    return export_response(fmt, f"{name}-{_today_stamp()}", headers, rows, title)


def _bulk_invite(selection, form: BulkForm):
    """Make the draft invitation and open it: staff check the text and send it there."""
    invitation = bulk_actions.apply_invite(selection, form.event.data, user=current_user)
    db.session.commit()
    flash(
        ngettext(
            "A draft invitation to %(num)s person is made: check the text, then send it.",
            "A draft invitation to %(num)s people is made: check the text, then send it.",
            _picked(invitation),
        ),
        "success",
    )
    return redirect(url_for("newsletters.newsletter_edit", newsletter_id=invitation.id))


def _picked(invitation) -> int:
    from crm.events.invitations import picked_count

    return picked_count(invitation)


def _bulk(record_type: str):
    """The bulk page: the list's bar posts here (step "choose"); the page previews how
    many records change ("preview") and applies the action in one transaction
    ("apply"). Any invalid row refuses the whole action with nothing changed."""
    contact = record_type == "contact"
    list_endpoint = "members.contact_list" if contact else "members.company_list"
    filters = (listing.ContactFilters if contact else listing.CompanyFilters).from_args(
        request.form
    )
    back = url_for(list_endpoint, **filters.as_args())
    form = _bulk_form(record_type)
    valid = form.validate_on_submit()
    csrf = getattr(form, "csrf_token", None)
    if (csrf is not None and csrf.errors) or request.method != "POST":
        flash(_("The form expired. Please try again."), "error")
        return redirect(back)
    all_matching = request.form.get("all_matching") == "1"
    try:
        ids = (
            bulk_actions.matching_ids(record_type, filters)
            if all_matching
            else bulk_actions.parse_ids(request.form.getlist("ids"))
        )
        selection = bulk_actions.select_records(record_type, ids)
    except bulk_actions.BulkError as exc:
        flash(str(exc), "error")
        return redirect(back)
    action = form.action.data
    if action not in bulk_actions.ACTION_LABELS or action not in {
        c.value for c in form.action.choices
    }:
        flash(_("Choose what to do with the selected rows."), "error")
        return redirect(back)
    step = request.form.get("step", "choose")
    count, error = None, None
    if valid:
        try:
            count = _bulk_count(action, selection, form, record_type)
            if step == "apply":
                if action == "export":
                    return _bulk_export(record_type, selection, form.fmt.data)
                if action == "invite":
                    return _bulk_invite(selection, form)
                changed = _bulk_apply(action, selection, form, record_type)
                db.session.commit()
                flash(
                    _(
                        "%(action)s: %(num)s changed.",
                        action=bulk_actions.ACTION_LABELS[action],
                        num=changed,
                    ),
                    "success",
                )
                return redirect(back)
        except bulk_actions.BulkError as exc:
            db.session.rollback()
            if step != "choose":
                error = str(exc)
    return render_template(
        "members/bulk.html",
        form=form,
        record_type=record_type,
        action=action,
        action_label=bulk_actions.ACTION_LABELS[action],
        selection=selection,
        all_matching=all_matching,
        filters=filters,
        count=count,
        error=error,
        back=back,
    )


@bp.route("/contacts/bulk", methods=["POST"])
@permission_required("members.edit")
def contact_bulk():
    return _bulk("contact")


@bp.route("/companies/bulk", methods=["POST"])
@permission_required("members.edit")
def company_bulk():
    return _bulk("company")
