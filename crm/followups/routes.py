"""Follow-up pages: the list, create and edit, done and reopen, one's digest setting.

Views stay thin: they read forms and query strings, call crm/followups/services.py
and commit.
"""

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_login import current_user

from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.followups import services
from crm.followups.forms import DigestForm, FollowUpForm
from crm.followups.models import FollowUp
from crm.members.listing import MAX_ID, parse_id, parse_page
from crm.members.models import Company, Contact
from crm.timeutil import today_oslo

bp = Blueprint("followups", __name__, url_prefix="/followups")


@bp.context_processor
def _labels():
    return {
        "followup_state_labels": services.STATE_LABELS,
        "followup_due_labels": services.DUE_LABELS,
    }


def _followup_or_404(followup_id: int) -> FollowUp:
    if followup_id > MAX_ID:
        abort(404)
    return db.get_or_404(FollowUp, followup_id)


def _back(default: str) -> str:
    """Where a button on another page (company, contact, home) asked to return to."""
    target = request.form.get("next") or request.args.get("next") or ""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return default


@bp.route("")
@permission_required("members.view")
def followup_list():
    filters = services.FollowUpFilters.from_args(request.args)
    page = db.paginate(
        services.followup_select(filters, current_user),
        page=parse_page(request.args.get("page")),
        per_page=current_app.config["PAGE_SIZE"],
        error_out=False,
    )
    return render_template(
        "followups/list.html",
        filters=filters,
        page=page,
        users=services.assignable_users(),
        states=services.STATES,
        due_windows=services.DUE_WINDOWS,
        digest_form=DigestForm(enabled=current_user.followup_digest),
    )


@bp.route("/new", methods=["GET", "POST"])
@permission_required("members.edit")
def followup_create():
    company_id = parse_id(request.values.get("company"))
    contact_id = parse_id(request.values.get("contact"))
    contact = db.session.get(Contact, contact_id) if contact_id else None
    company = db.session.get(Company, company_id) if company_id else None
    if contact is None and company is None:
        flash(_("Open the company or contact the follow-up is about, and add it there."), "error")
        return redirect(url_for("followups.followup_list"))
    form = FollowUpForm(data={"assignee": current_user.id})
    if form.validate_on_submit():
        assignee = db.session.get(services.User, form.assignee.data)
        try:
            services.create_followup(
                what=form.what.data,
                due_on=form.due_on.data,
                assignee=assignee,
                company=company,
                contact=contact,
                user=current_user,
            )
        except services.FollowUpError as exc:
            db.session.rollback()
            form.what.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("Follow-up added."), "success")
            if contact is not None:
                default = url_for("members.contact_detail", contact_id=contact.id)
            else:
                default = url_for("members.company_detail", company_id=company.id)
            return redirect(_back(default))
    return render_template(
        "followups/form.html", form=form, followup=None, company=company, contact=contact
    )


@bp.route("/<int:followup_id>/edit", methods=["GET", "POST"])
@permission_required("members.edit")
def followup_edit(followup_id: int):
    followup = _followup_or_404(followup_id)
    form = FollowUpForm(obj=followup, data={"assignee": followup.assignee_id})
    if form.validate_on_submit():
        try:
            services.update_followup(
                followup,
                what=form.what.data,
                due_on=form.due_on.data,
                assignee=db.session.get(services.User, form.assignee.data),
            )
        except services.FollowUpError as exc:
            db.session.rollback()
            form.what.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("Follow-up saved."), "success")
            return redirect(url_for("followups.followup_list"))
    return render_template(
        "followups/form.html",
        form=form,
        followup=followup,
        company=followup.company,
        contact=followup.contact,
    )


@bp.route("/<int:followup_id>/done", methods=["POST"])
@permission_required("members.edit")
def followup_done(followup_id: int):
    followup = _followup_or_404(followup_id)
    if DigestForm().validate_on_submit():  # the CSRF token only
        services.mark_done(followup, current_user)
        db.session.commit()
        flash(_("Marked as done: %(what)s", what=followup.what), "success")
    return redirect(_back(url_for("followups.followup_list")))


@bp.route("/<int:followup_id>/reopen", methods=["POST"])
@permission_required("members.edit")
def followup_reopen(followup_id: int):
    followup = _followup_or_404(followup_id)
    if DigestForm().validate_on_submit():
        services.reopen(followup)
        db.session.commit()
        flash(_("Opened again: %(what)s", what=followup.what), "success")
    return redirect(_back(url_for("followups.followup_list")))


@bp.route("/digest", methods=["POST"])
@permission_required("members.view")
def digest_setting():
    form = DigestForm()
    if form.validate_on_submit():
        current_user.followup_digest = bool(form.enabled.data)
        db.session.commit()
        if current_user.followup_digest:
            flash(_("You get an email of your due follow-ups every morning."), "success")
        else:
            flash(_("You no longer get the morning email of follow-ups."), "success")
    return redirect(url_for("followups.followup_list"))


def init_app(app) -> None:
    from crm import ui
    from crm.followups import tasks
    from crm.members.panels import COMPANY_PANELS, CONTACT_PANELS
    from crm.worker import WORKER_HOOKS

    app.register_blueprint(bp)
    app.jinja_env.globals["open_followups"] = services.open_followups_of
    app.jinja_env.globals["today_oslo"] = today_oslo
    ui.FIELD_LABELS.update(
        {
            "what": _l("What"),
            "due_on": _l("Due"),
            "assignee_id": _l("Who"),
            "contact_id": _l("Contact"),
            "activity_id": _l("Activity"),
            "done_at": _l("Done"),
            "done_by_id": _l("Done by"),
            "created_by_id": _l("Created by"),
            "followup_digest": _l("Morning email of follow-ups"),
            "participants": _l("Participants"),
            "leaders": _l("Leaders"),
            "network_id": _l("Network"),
        }
    )
    for panels in (COMPANY_PANELS, CONTACT_PANELS):
        if "followups/_panel.html" not in panels:
            panels.insert(0, "followups/_panel.html")
    if tasks.digest_tick not in WORKER_HOOKS:
        WORKER_HOOKS.append(tasks.digest_tick)
