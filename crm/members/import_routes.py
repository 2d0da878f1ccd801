"""The company import page: upload a file, see what it would change, then confirm.

The uploaded bytes stay on the server (instance/imports/<random token>) between the
preview and the confirmation, so what is written is exactly what was previewed; the
browser only sends the token back, and only its uploader may use it. The plan is made
again on confirmation: if the database changed meanwhile, the person sees the new
preview instead of an import they did not review.
"""

from datetime import date
from pathlib import Path

from flask import Blueprint, current_app, flash, redirect, render_template, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from flask_login import current_user
from flask_wtf.file import FileField, FileRequired, FileSize
from sqlalchemy.exc import IntegrityError
from wtforms import HiddenField
from wtforms.validators import DataRequired, Length, Regexp

from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.forms import Form
from crm.i18n import format_date
from crm.members import importing
from crm.members.columns import CONTACT_COLUMNS
from crm.members.importing.contacts import apply_contact_plan, plan_contact_import
from crm.members.services import MEMBERSHIP_LABELS, ROLE_LABELS, WARNING_LABELS

bp = Blueprint("imports", __name__)

MAX_UPLOAD_BYTES = 10 * 1024 * 1024
# Rows listed per section of the preview; the counts always cover the whole file.
PREVIEW_ROWS = 500


class ImportUploadForm(Form):
    file = FileField(
        _l("File (CSV, Excel workbook or Brønnøysund JSON)"),
        validators=[
            FileRequired(_l("Choose a file to import.")),
            FileSize(MAX_UPLOAD_BYTES, message=_l("The file is larger than 10 MB.")),
        ],
    )


class ContactUploadForm(Form):
    file = FileField(
        _l("File (CSV or Excel workbook)"),
        validators=[
            FileRequired(_l("Choose a file to import.")),
            FileSize(MAX_UPLOAD_BYTES, message=_l("The file is larger than 10 MB.")),
        ],
    )


class ImportConfirmForm(Form):
    token = HiddenField(validators=[DataRequired(), Regexp(importing.UPLOAD_TOKEN.pattern)])
    fingerprint = HiddenField(validators=[DataRequired(), Length(max=64)])


def _upload_dir() -> Path:
    return Path(current_app.instance_path) / "imports"


def _load(token: str | None):
    return importing.load_upload(_upload_dir(), token, current_user.id)


def _gone(upload_endpoint: str = "imports.upload"):
    flash(_("This upload was not found or has expired. Please upload the file again."), "error")
    return redirect(url_for(upload_endpoint))


def _saved_upload(form) -> str | None:
    """The token of the posted file, saved for its preview; None (with the form's error)
    when it is too large."""
    data = form.file.data.read(MAX_UPLOAD_BYTES + 1)
    if len(data) > MAX_UPLOAD_BYTES:
        form.file.errors.append(_("The file is larger than 10 MB."))
        return None
    return importing.save_upload(_upload_dir(), data, form.file.data.filename, current_user.id)


@bp.route("/companies/import", methods=["GET", "POST"])
@permission_required("members.edit")
def upload():
    form = ImportUploadForm()
    if form.validate_on_submit() and (token := _saved_upload(form)):
        return redirect(url_for("imports.preview", token=token))
    return render_template("members/import_upload.html", form=form, columns=importing.CSV_COLUMNS)


@bp.route("/companies/import/<token>")
@permission_required("members.edit")
def preview(token: str):
    upload = _load(token)
    if upload is None:
        return _gone()
    data, filename = upload
    plan = _plan(token, data, filename)
    db.session.rollback()  # planning reads only; leave nothing pending
    return render_preview(plan, token)


def _plan(token: str, data: bytes, filename: str) -> importing.ImportPlan:
    """The upload's plan: made once, and again only when the companies changed since."""
    state = importing.register_state()
    plan = importing.load_plan(_upload_dir(), token, state)
    if plan is None:
        plan = importing.plan_bytes(data, filename)
        importing.save_plan(_upload_dir(), token, plan, state)
    return plan


def render_preview(plan: importing.ImportPlan, token: str) -> str:
    form = ImportConfirmForm(token=token, fingerprint=plan.fingerprint())
    return render_template(
        "members/import_preview.html",
        plan=plan,
        form=form,
        limit=PREVIEW_ROWS,
        membership_labels=MEMBERSHIP_LABELS,
        flag_labels={
            "bankrupt": WARNING_LABELS["bankrupt"],
            "winding_up": WARNING_LABELS["winding_up"],
            "forced_dissolution": WARNING_LABELS["forced_dissolution"],
            "deleted_in_registry_on": WARNING_LABELS["deleted"],
        },
        confirm_label=ngettext(
            "Import %(num)s company", "Import %(num)s companies", plan.changes_count
        ),
    )


@bp.route("/companies/import/confirm", methods=["POST"])
@permission_required("members.edit")
def confirm():
    form = ImportConfirmForm()
    if not form.validate_on_submit():
        return _gone()
    upload = _load(form.token.data)
    if upload is None:
        return _gone()
    data, filename = upload
    plan = _plan(form.token.data, data, filename)
    if not plan.ok:
        db.session.rollback()
        flash(_("The file has errors. Nothing was imported."), "error")
        return redirect(url_for("imports.preview", token=form.token.data))
    if plan.fingerprint() != form.fingerprint.data:
        db.session.rollback()
        flash(
            _("The companies changed since the preview was made. Please check it again."),
            "warning",
        )
        return redirect(url_for("imports.preview", token=form.token.data))
    try:
        counts = importing.apply_plan(plan, user=current_user)
        db.session.commit()
    except IntegrityError:
        # Someone added one of these companies while we wrote: write none of them.
        db.session.rollback()
        flash(_("The companies changed while importing. Nothing was imported."), "error")
        return redirect(url_for("imports.preview", token=form.token.data))
    importing.discard_upload(_upload_dir(), form.token.data)
    _flash_done(counts)
    return redirect(url_for("members.company_list"))


def _flash_done(counts: dict) -> None:
    flash(
        _(
            "Import done: %(created)s new, %(updated)s updated, %(unchanged)s unchanged.",
            created=counts["created"],
            updated=counts["updated"],
            unchanged=counts["unchanged"],
        ),
        "success",
    )


def _discard_confirmed_upload() -> None:
    """Cancel: the upload named by the posted form goes (company or contact file alike)."""
    form = ImportConfirmForm()
    if form.validate_on_submit() and _load(form.token.data) is not None:
        importing.discard_upload(_upload_dir(), form.token.data)


@bp.route("/companies/import/cancel", methods=["POST"])
@permission_required("members.edit")
def cancel():
    _discard_confirmed_upload()
    return redirect(url_for("imports.upload"))


# -- contacts -------------------------------------------------------------------------
# The same steps for the contact file (crm.members.importing.contacts, also behind
# `crm contacts import`): upload, a preview of every row, confirm, all or nothing. The
# plan is made again for every view; a contact file is small beside a register file.


def _contacts_gone():
    return _gone("imports.contacts_upload")


@bp.route("/contacts/import", methods=["GET", "POST"])
@permission_required("members.edit")
def contacts_upload():
    form = ContactUploadForm()
    if form.validate_on_submit() and (token := _saved_upload(form)):
        return redirect(url_for("imports.contacts_preview", token=token))
    return render_template("members/contact_import_upload.html", form=form, columns=CONTACT_COLUMNS)


@bp.route("/contacts/import/<token>")
@permission_required("members.edit")
def contacts_preview(token: str):
    upload = _load(token)
    if upload is None:
        return _contacts_gone()
    data, filename = upload
    plan = plan_contact_import(data, filename)
    page = _render_contact_preview(plan, token)
    db.session.rollback()  # planning reads only; leave nothing pending
    return page


def _render_contact_preview(plan: importing.ImportPlan, token: str) -> str:
    form = ImportConfirmForm(token=token, fingerprint=plan.fingerprint())
    return render_template(
        "members/contact_import_preview.html",
        plan=plan,
        form=form,
        limit=PREVIEW_ROWS,
        shown=contact_change_labels(plan),
        confirm_label=ngettext(
            "Import %(num)s contact", "Import %(num)s contacts", plan.changes_count
        ),
    )


@bp.route("/contacts/import/confirm", methods=["POST"])
@permission_required("members.edit")
def contacts_confirm():
    form = ImportConfirmForm()
    if not form.validate_on_submit():
        return _contacts_gone()
    upload = _load(form.token.data)
    if upload is None:
        return _contacts_gone()
    data, filename = upload
    back = redirect(url_for("imports.contacts_preview", token=form.token.data))
    plan = plan_contact_import(data, filename)
    if not plan.ok:
        db.session.rollback()
        flash(_("The file has errors. Nothing was imported."), "error")
        return back
    if plan.fingerprint() != form.fingerprint.data:
        db.session.rollback()
        flash(
            _("The contacts changed since the preview was made. Please check it again."),
            "warning",
        )
        return back
    try:
        counts = apply_contact_plan(plan, user=current_user)
        db.session.commit()
    except (IntegrityError, importing.ImportRejected):
        db.session.rollback()
        flash(_("The contacts changed while importing. Nothing was imported."), "error")
        return back
    importing.discard_upload(_upload_dir(), form.token.data)
    _flash_done(counts)
    return redirect(url_for("members.contact_list"))


@bp.route("/contacts/import/cancel", methods=["POST"])
@permission_required("members.edit")
def contacts_cancel():
    _discard_confirmed_upload()
    return redirect(url_for("imports.contacts_upload"))


def contact_change_labels(plan: importing.ImportPlan) -> dict:
    """How the preview shows a contact plan's values: companies and networks by name
    (two queries for the whole plan), roles and status in words."""
    from sqlalchemy import select

    from crm.members.models import Company, Network

    company_ids, network_ids = set(), set()
    for row in plan.creates + plan.updates:
        for change in row.changes:
            for value in (change.old, change.new):
                if change.field == "company_id" and value:
                    company_ids.add(value)
                elif change.field == "network_ids" and value:
                    network_ids.update(value)
    companies = dict(
        db.session.execute(
            select(Company.id, Company.name).where(Company.id.in_(company_ids))
        ).all()
        if company_ids
        else []
    )
    networks = dict(
        db.session.execute(
            select(Network.id, Network.name).where(Network.id.in_(network_ids))
        ).all()
        if network_ids
        else []
    )
    return {
        "labels": {**CONTACT_FIELD_LABELS},
        "companies": companies,
        "networks": networks,
    }


CONTACT_FIELD_LABELS = {
    "first_name": _l("First name"),
    "last_name": _l("Last name"),
    "email": _l("Email"),
    "phone": _l("Phone"),
    "job_title": _l("Job title"),
    "company_id": _l("Company"),
    "is_primary_contact": ROLE_LABELS["primary"],
    "is_invoice_contact": ROLE_LABELS["invoice"],
    "is_board_representative": ROLE_LABELS["board"],
    "network_ids": _l("Networks"),
    "active": _l("Active"),
    "archived_at": _l("Archived"),
}


@bp.app_template_filter("import_value")
def _import_value(value):
    """A field value in the preview: dates dd.mm.yyyy, yes/no, an empty value as —."""
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return _("yes") if value else _("no")
    if isinstance(value, date):
        return format_date(value)
    return value


def init_app(app) -> None:
    app.register_blueprint(bp)
