"""Fee pages for treasurers and admins: thin views over crm.fees.services."""

from datetime import date

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
from flask_babel import gettext as _
from flask_babel import ngettext
from sqlalchemy import select
from sqlalchemy.orm import selectinload
from werkzeug.datastructures import MultiDict
from wtforms import SelectChoice

from crm.audit import history_for
from crm.auth.permissions import permission_required
from crm.extensions import db
from crm.fees import charts, services
from crm.fees.errors import FeeError, OcrFileError
from crm.fees.forms import (
    ACCOUNT_FIELDS,
    PRO_RATA_CHOICES,
    AccountingForm,
    ActionForm,
    AssignForm,
    CreditForm,
    HandledForm,
    InvoiceSelectionForm,
    OverrideForm,
    PaymentForm,
    ReminderForm,
    ScheduleForm,
    SendToForm,
    SettingsForm,
    UploadForm,
    YearForm,
)
from crm.fees.models import (
    INVOICE_STATUSES,
    CreditNote,
    FeeOverride,
    FeeSchedule,
    Invoice,
    OcrImport,
    Payment,
    UnmatchedPayment,
)
from crm.fees.money import kroner
from crm.members.models import Company
from crm.pagination import requested_page
from crm.timeutil import today_oslo

bp = Blueprint("fees", __name__, url_prefix="/fees")

VIEW = "fees.view"
EDIT = "fees.edit"


def _year() -> int:
    year = request.args.get("year", type=int)
    if year is None or not 2000 <= year <= 2100:
        return today_oslo().year
    return year


def _invoice_or_404(invoice_id: int) -> Invoice:
    invoice = db.session.get(Invoice, invoice_id)
    if invoice is None:
        abort(404)
    return invoice


def _commit_or_flash(error: Exception) -> None:
    db.session.rollback()
    flash(str(error), "error")


@bp.route("/")
@permission_required(VIEW)
def dashboard():
    year = _year()
    figures = services.dashboard(year)
    return render_template(
        "fees/dashboard.html",
        year=year,
        years=services.invoice_years(),
        figures=figures,
        payments_chart=charts.payments_chart(services.payments_by_day(year), figures.invoiced.ore),
        share_chart=charts.share_chart(figures.share_paid),
        schedule=services.schedule_for_year(year),
        settings_problems=services.settings_problems(services.get_settings()),
        unsendable=services.split_sendable(services.unsent_invoices(year))[1],
        recent_imports=db.session.scalars(
            select(OcrImport).order_by(OcrImport.imported_at.desc()).limit(5)
        ).all(),
        run_form=YearForm(year=year),
    )


def _page_of(query):
    """One page of a fee list (?page=), with the total counted by the database."""
    return db.paginate(
        query,
        page=requested_page(),
        per_page=current_app.config["PAGE_SIZE"],
        max_per_page=current_app.config["PAGE_SIZE"],
        error_out=False,
    )


@bp.route("/invoices")
@permission_required(VIEW)
def invoice_list():
    year = _year()
    status = request.args.get("status", "")
    if status not in (*INVOICE_STATUSES, "unpaid"):
        status = ""
    refund_due = request.args.get("refund") == "1"
    return render_template(
        "fees/invoice_list.html",
        year=year,
        years=services.invoice_years(),
        status=status,
        statuses=INVOICE_STATUSES,
        refund_due=refund_due,
        page=_page_of(
            services.invoices_for_year_query(year, status or None, refund_due=refund_due)
        ),
    )


@bp.route("/invoices/run", methods=["POST"])
@permission_required(EDIT)
def run_invoicing():
    form = YearForm()
    if not form.validate():
        flash(_("Choose a year between 2000 and 2100."), "error")
        return redirect(url_for(".dashboard"))
    year = form.year.data
    try:
        run = services.run_annual_invoicing(year)
        db.session.commit()
    except FeeError as exc:
        _commit_or_flash(exc)
        return redirect(url_for(".dashboard", year=year))
    flash(
        _(
            "%(created)s invoices created for %(year)s; %(existing)s existed already.",
            created=len(run.created),
            existing=run.existing,
            year=year,
        ),
        "success",
    )
    for problem in run.problems:
        flash(problem, "warning")
    return redirect(url_for(".invoice_list", year=year))


@bp.route("/invoices/send", methods=["POST"])
@permission_required(EDIT)
def send_unsent():
    """Queue every unsent invoice of the year that can be emailed as a background job;
    the ones that cannot (no invoice contact) are named, and listed on their own page."""
    form = YearForm()
    if not form.validate():
        abort(400)
    from crm.fees.tasks import enqueue_send_invoices

    year = form.year.data
    sendable, skipped = services.split_sendable(services.unsent_invoices(year))
    ids = [invoice.id for invoice in sendable]
    if ids:
        enqueue_send_invoices(ids)
    flash(_("%(count)s invoices are being sent.", count=len(ids)), "success")
    if skipped:
        flash(
            ngettext(
                "%(num)s invoice was not sent: %(names)s has no invoice contact with an "
                "email address.",
                "%(num)s invoices were not sent: %(names)s have no invoice contact with an "
                "email address.",
                len(skipped),
                names=", ".join(s.invoice.customer_name for s in skipped[:10])
                + (" …" if len(skipped) > 10 else ""),
            ),
            "warning",
        )
        return redirect(url_for(".unsendable", year=year))
    return redirect(url_for(".invoice_list", year=year))


@bp.route("/invoices/unsendable")
@permission_required(VIEW)
def unsendable():
    """Unsent invoices that cannot be emailed: send to a typed address, print and mark
    sent by post, or fix the company's invoice contact."""
    year = _year()
    _sendable, skipped = services.split_sendable(services.unsent_invoices(year))
    return render_template(
        "fees/unsendable.html",
        year=year,
        years=services.invoice_years(),
        skipped=skipped,
        send_form=SendToForm(),
        selection_form=InvoiceSelectionForm(year=year),
    )


def _selected_invoices(form: InvoiceSelectionForm) -> list[Invoice]:
    ids = [i for i in (form.invoice_id.data or []) if 0 < i < services.MAX_INVOICE_NUMBER]
    if not ids:
        return []
    return db.session.scalars(
        select(Invoice).where(Invoice.id.in_(ids[:2000])).order_by(Invoice.number)
    ).all()


@bp.route("/invoices/print", methods=["POST"])
@permission_required(VIEW)
def print_invoices():
    """One PDF with the chosen invoices, one after the other, to print and post."""
    from crm.fees.pdf import invoices_pdf

    form = InvoiceSelectionForm()
    if not form.validate():
        abort(400)
    invoices = _selected_invoices(form)
    if not invoices:
        flash(_("Choose the invoices first."), "warning")
        return redirect(url_for(".unsendable", year=form.year.data or today_oslo().year))
    response = Response(invoices_pdf(invoices, services.get_settings()), mimetype="application/pdf")
    response.headers["Content-Disposition"] = 'inline; filename="fakturaer.pdf"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/invoices/mark-posted", methods=["POST"])
@permission_required(EDIT)
def mark_posted():
    form = InvoiceSelectionForm()
    if not form.validate():
        abort(400)
    invoices = _selected_invoices(form)
    year = form.year.data or today_oslo().year
    if not invoices:
        flash(_("Choose the invoices first."), "warning")
        return redirect(url_for(".unsendable", year=year))
    marked = services.mark_sent_by_post(invoices)
    db.session.commit()
    flash(
        ngettext(
            "%(num)s invoice marked as sent by post.",
            "%(num)s invoices marked as sent by post.",
            len(marked),
        ),
        "success",
    )
    return redirect(url_for(".unsendable", year=year))


@bp.route("/invoices/<int:invoice_id>/send-to", methods=["POST"])
@permission_required(EDIT)
def send_invoice_to(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    form = SendToForm()
    if form.validate():
        try:
            services.queue_invoice_email(invoice, to=form.email.data)
            db.session.commit()
        except FeeError as exc:
            _commit_or_flash(exc)
        else:
            flash(
                _(
                    "Invoice %(number)s is queued for sending to %(address)s.",
                    number=invoice.number,
                    address=form.email.data,
                ),
                "success",
            )
    else:
        _flash_form_errors(form)
    return redirect(url_for(".unsendable", year=invoice.year))


@bp.route("/invoices/<int:invoice_id>")
@permission_required(VIEW)
def invoice_detail(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    from crm.fees.reminders import earliest_date, next_level

    level = next_level(invoice)
    payment_form = PaymentForm(paid_on=today_oslo())
    if invoice.status == "credited":
        # Nothing is owed on a credited invoice; money received on it can only go back.
        payment_form.kind.choices = [c for c in payment_form.kind.choices if c.value == "refund"]
    return render_template(
        "fees/invoice_detail.html",
        invoice=invoice,
        history=history_for(invoice),
        payment_form=payment_form,
        credit_form=CreditForm(),
        action_form=ActionForm(),
        reminder_form=ReminderForm(),
        next_reminder_level=level if invoice.status in ("open", "partially_paid") else None,
        next_reminder_from=earliest_date(invoice, level) if level else None,
        today=today_oslo(),
    )


@bp.route("/invoices/<int:invoice_id>.pdf")
@permission_required(VIEW)
def invoice_pdf(invoice_id: int):
    from crm.fees.pdf import invoice_pdf as draw
    from crm.fees.pdf import pdf_filename

    invoice = _invoice_or_404(invoice_id)
    response = Response(draw(invoice, services.get_settings()), mimetype="application/pdf")
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = f'{disposition}; filename="{pdf_filename(invoice)}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/credit-notes/<int:note_id>.pdf")
@permission_required(VIEW)
def credit_note_pdf(note_id: int):
    from crm.fees.pdf import credit_note_filename
    from crm.fees.pdf import credit_note_pdf as draw

    note = db.session.get(CreditNote, note_id)
    if note is None:
        abort(404)
    response = Response(draw(note, services.get_settings()), mimetype="application/pdf")
    disposition = "attachment" if request.args.get("download") else "inline"
    response.headers["Content-Disposition"] = (
        f'{disposition}; filename="{credit_note_filename(note)}"'
    )
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/invoices/<int:invoice_id>/send", methods=["POST"])
@permission_required(EDIT)
def send_invoice(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    if not ActionForm().validate():
        abort(400)
    from crm.fees.delivery import deliver_invoice

    try:
        delivery = deliver_invoice(invoice)
        db.session.commit()
    except FeeError as exc:
        _commit_or_flash(exc)
    else:
        if delivery.channel == "ehf":
            flash(_("Invoice %(number)s is sent as EHF.", number=invoice.number), "success")
        else:
            flash(_("Invoice %(number)s is queued for sending.", number=invoice.number), "success")
    return redirect(url_for(".invoice_detail", invoice_id=invoice_id))


def _ehf_response(kind: str, number: int, build) -> Response:
    from crm.fees.ehf import ehf_filename

    try:
        document = build()
    except FeeError as exc:
        flash(str(exc), "error")
        return None
    response = Response(document, mimetype="application/xml")
    response.headers["Content-Disposition"] = f'attachment; filename="{ehf_filename(number, kind)}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.route("/invoices/<int:invoice_id>/ehf.xml")
@permission_required(VIEW)
def invoice_ehf(invoice_id: int):
    """The invoice as EHF Billing 3.0 (UBL XML), to download."""
    from crm.fees.ehf import invoice_document

    invoice = _invoice_or_404(invoice_id)
    response = _ehf_response(
        "invoice",
        invoice.number,
        lambda: invoice_document(invoice, services.get_settings()),
    )
    return response or redirect(url_for(".invoice_detail", invoice_id=invoice_id))


@bp.route("/credit-notes/<int:note_id>/ehf.xml")
@permission_required(VIEW)
def credit_note_ehf(note_id: int):
    """A credit note as EHF Billing 3.0 (UBL XML), to download."""
    from crm.fees.ehf import credit_note_document

    note = db.session.get(CreditNote, note_id)
    if note is None:
        abort(404)
    response = _ehf_response(
        "credit_note",
        note.number,
        lambda: credit_note_document(note, services.get_settings()),
    )
    return response or redirect(url_for(".invoice_detail", invoice_id=note.invoice_id))


@bp.route("/credit-notes/<int:note_id>/send-ehf", methods=["POST"])
@permission_required(EDIT)
def send_credit_note_ehf(note_id: int):
    """Send a credit note as EHF, to a customer that takes EHF (its invoice went so)."""
    from crm.fees.delivery import send_credit_note_as_ehf

    note = db.session.get(CreditNote, note_id)
    if note is None:
        abort(404)
    if not ActionForm().validate():
        abort(400)
    try:
        send_credit_note_as_ehf(note)
        db.session.commit()
    except FeeError as exc:
        _commit_or_flash(exc)
    else:
        flash(_("Credit note %(number)s is sent as EHF.", number=note.number), "success")
    return redirect(url_for(".invoice_detail", invoice_id=note.invoice_id))


@bp.route("/invoices/<int:invoice_id>/payments", methods=["POST"])
@permission_required(EDIT)
def add_payment(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    form = PaymentForm()
    if form.validate():
        try:
            services.register_payment(
                invoice,
                form.amount.data,
                form.paid_on.data,
                kind=form.kind.data,
                note=form.note.data,
                payer_account=form.payer_account.data or "",
            )
            db.session.commit()
        except FeeError as exc:
            _commit_or_flash(exc)
        else:
            flash(_("Registered."), "success")
            return redirect(url_for(".invoice_detail", invoice_id=invoice_id))
    else:
        _flash_form_errors(form)
    return redirect(url_for(".invoice_detail", invoice_id=invoice_id))


@bp.route("/invoices/<int:invoice_id>/credit", methods=["POST"])
@permission_required(EDIT)
def credit(invoice_id: int):
    invoice = _invoice_or_404(invoice_id)
    form = CreditForm()
    if form.validate():
        try:
            note = services.credit_invoice(invoice, form.reason.data, form.amount.data)
            db.session.commit()
        except FeeError as exc:
            _commit_or_flash(exc)
        else:
            flash(_("Credit note %(number)s issued.", number=note.number), "success")
    else:
        _flash_form_errors(form)
    return redirect(url_for(".invoice_detail", invoice_id=invoice_id))


@bp.route("/invoices/<int:invoice_id>/remind", methods=["POST"])
@permission_required(EDIT)
def remind(invoice_id: int):
    from crm.fees.reminders import next_level, send_reminder

    invoice = _invoice_or_404(invoice_id)
    form = ReminderForm()
    if not form.validate():
        abort(400)
    level = next_level(invoice)
    try:
        if level is None:
            raise FeeError(_("There are at most two reminders."))
        send_reminder(invoice, level, with_fee=form.with_fee.data)
        db.session.commit()
    except FeeError as exc:
        _commit_or_flash(exc)
    else:
        flash(_("Reminder %(level)s is queued for sending.", level=level), "success")
    return redirect(url_for(".invoice_detail", invoice_id=invoice_id))


def _flash_form_errors(form) -> None:
    for field_name, errors in form.errors.items():
        label = getattr(form, field_name).label.text if hasattr(form, field_name) else ""
        for error in errors:
            flash(f"{label}: {error}" if label else str(error), "error")


@bp.route("/overdue")
@permission_required(VIEW)
def overdue():
    from crm.fees.reminders import WAIT, level_due, reminders_due_count

    today = today_oslo()
    page = _page_of(services.overdue_invoices_query(today))
    return render_template(
        "fees/overdue.html",
        page=page,
        # Which rows of this page get a reminder now, and how many do in all.
        reminders_due={
            invoice.id: level
            for invoice in page.items
            if invoice.sent_at is not None
            and invoice.due_date <= today - WAIT
            and (level := level_due(invoice, today)) is not None
        },
        due_count=reminders_due_count(today),
        today=today,
        form=ReminderForm(),
    )


@bp.route("/reminders", methods=["POST"])
@permission_required(EDIT)
def send_reminders():
    from crm.fees.reminders import send_due_reminders

    form = ReminderForm()
    if not form.validate():
        abort(400)
    run = send_due_reminders(with_fee=form.with_fee.data)
    db.session.commit()
    flash(_("%(count)s reminders queued.", count=len(run.sent)), "success")
    for problem in run.problems:
        flash(problem, "warning")
    return redirect(url_for(".overdue"))


@bp.route("/import", methods=["GET", "POST"])
@permission_required(EDIT)
def import_ocr():
    form = UploadForm()
    error = None
    if form.validate_on_submit():
        upload = form.file.data
        try:
            result = services.import_ocr_file(upload.read(), upload.filename or "")
            db.session.commit()
        except OcrFileError as exc:
            db.session.rollback()
            error = exc
        else:
            flash(
                _(
                    "Imported: %(matched)s matched, %(unmatched)s unmatched, %(total)s in all.",
                    matched=result.matched,
                    unmatched=result.unmatched,
                    total=result.total,
                ),
                "success",
            )
            return redirect(url_for(".import_detail", import_id=result.ocr_import.id))
    imports = db.session.scalars(
        select(OcrImport).order_by(OcrImport.imported_at.desc()).limit(20)
    ).all()
    status = 422 if error else 200
    return render_template("fees/import.html", form=form, error=error, imports=imports), status


@bp.route("/imports/<int:import_id>")
@permission_required(VIEW)
def import_detail(import_id: int):
    record = db.session.get(OcrImport, import_id)
    if record is None:
        abort(404)
    unmatched = db.session.scalars(
        select(UnmatchedPayment)
        .where(UnmatchedPayment.ocr_import_id == import_id)
        .order_by(UnmatchedPayment.id)
    ).all()
    return render_template(
        "fees/import_detail.html",
        record=record,
        unmatched=unmatched,
        paid=services.payments_of_import(import_id),
    )


@bp.route("/unmatched")
@permission_required(VIEW)
def unmatched_list():
    show_all = request.args.get("all") == "1"
    query = (
        select(UnmatchedPayment)
        # Booked ones link to their invoice: load those with the page, not per row.
        .options(selectinload(UnmatchedPayment.payment).selectinload(Payment.invoice))
        .order_by(UnmatchedPayment.paid_on, UnmatchedPayment.id)
    )
    if not show_all:
        query = query.where(UnmatchedPayment.state == "open")
    return render_template(
        "fees/unmatched.html",
        payments=db.session.scalars(query.limit(1000)).all(),
        show_all=show_all,
        assign_form=AssignForm(),
        handled_form=HandledForm(),
    )


def _unmatched_or_404(payment_id: int) -> UnmatchedPayment:
    payment = db.session.get(UnmatchedPayment, payment_id)
    if payment is None:
        abort(404)
    return payment


@bp.route("/unmatched/<int:payment_id>/assign", methods=["POST"])
@permission_required(EDIT)
def assign_unmatched(payment_id: int):
    payment = _unmatched_or_404(payment_id)
    form = AssignForm()
    if form.validate():
        invoice = services.find_invoice(form.invoice.data)
        try:
            if invoice is None:
                raise FeeError(_("No invoice has that number or KID."))
            services.assign_unmatched(payment, invoice, form.note.data)
            db.session.commit()
        except FeeError as exc:
            _commit_or_flash(exc)
        else:
            flash(_("Booked on invoice %(number)s.", number=invoice.number), "success")
    else:
        _flash_form_errors(form)
    return redirect(url_for(".unmatched_list"))


@bp.route("/unmatched/<int:payment_id>/handled", methods=["POST"])
@permission_required(EDIT)
def handle_unmatched(payment_id: int):
    payment = _unmatched_or_404(payment_id)
    form = HandledForm()
    if form.validate():
        try:
            services.mark_unmatched_handled(payment, form.note.data)
            db.session.commit()
        except FeeError as exc:
            _commit_or_flash(exc)
        else:
            flash(_("Marked as handled."), "success")
    else:
        _flash_form_errors(form)
    return redirect(url_for(".unmatched_list"))


@bp.route("/settings", methods=["GET", "POST"])
@permission_required(EDIT)
def settings():
    current = services.get_settings()
    form = SettingsForm(obj=current)
    if request.method == "GET":
        form.reminder_fee.data = current.reminder_fee_ore
    if form.validate_on_submit():
        for name in (
            "bank_account",
            "next_invoice_number",
            "kid_length",
            "kid_scheme",
            "due_days",
            "pro_rata",
            *ACCOUNT_FIELDS,
        ):
            setattr(current, name, getattr(form, name).data or ("" if name != "due_days" else 30))
        current.reminder_fee_ore = form.reminder_fee.data or 0
        current.vat_registered = bool(form.vat_registered.data)
        current.foretaksregisteret = bool(form.foretaksregisteret.data)
        # Credit notes are numbered in the same series: the next number must pass both.
        used = services.highest_used_number()
        if current.next_invoice_number <= used:
            db.session.rollback()
            form.next_invoice_number.errors.append(
                _("Invoice numbers up to %(used)s are used already.", used=used)
            )
        else:
            db.session.commit()
            flash(_("Fee settings saved."), "success")
            return redirect(url_for(".settings"))
    db.session.commit()  # get_settings may have created the row
    return render_template("fees/settings.html", form=form, history=history_for(current))


@bp.route("/schedules")
@permission_required(VIEW)
def schedule_list():
    schedules = db.session.scalars(select(FeeSchedule).order_by(FeeSchedule.year.desc())).all()
    overrides = db.session.scalars(
        select(FeeOverride).join(Company).order_by(Company.name, FeeOverride.year)
    ).all()
    return render_template(
        "fees/schedules.html",
        schedules=schedules,
        overrides=overrides,
        action_form=ActionForm(),
    )


@bp.route("/schedules/edit", methods=["GET", "POST"])
@permission_required(EDIT)
def schedule_edit():
    year = _year()
    form = ScheduleForm()
    if request.method == "GET":
        form = _prefilled_schedule_form(year)
    elif form.validate():
        try:
            tiers = form.tier_values()
            services.save_schedule(form.year.data, tiers)
            db.session.commit()
        except (FeeError, ValueError) as exc:
            db.session.rollback()
            flash(str(exc), "error")
        else:
            flash(_("Fee schedule for %(year)s saved.", year=form.year.data), "success")
            return redirect(url_for(".schedule_list"))
    return render_template("fees/schedule_form.html", form=form, year=year)


def _prefilled_schedule_form(year: int) -> ScheduleForm:
    schedule = services.schedule_for_year(year)
    form = ScheduleForm(year=year)
    if schedule is not None:
        for entry, tier in zip(form.tiers.entries, schedule.tiers, strict=False):
            entry.form.min_employees.data = tier.min_employees
            entry.form.max_employees.data = tier.max_employees
            entry.form.amount.data = tier.amount_ore
    return form


@bp.route("/overrides/new", methods=["GET", "POST"])
@permission_required(EDIT)
def override_new():
    from crm.members import services as members

    form = OverrideForm()
    company, suggestions = None, []
    if form.validate_on_submit():
        try:
            company = members.resolve_company(form.company.data)
        except members.MembersError as exc:
            form.company.errors.append(str(exc))
            suggestions = members.company_suggestions(form.company.data, limit=5)
        else:
            if company is None:
                form.company.errors.append(
                    _("No company matches. Type the organisation number or pick a suggestion.")
                )
    if company is not None:
        is_amount = form.kind.data == "amount"
        try:
            services.add_override(
                company.id,
                form.year.data,
                amount_ore=form.amount.data if is_amount else None,
                discount_percent=None if is_amount else form.discount_percent.data,
                reason=form.reason.data,
            )
        except FeeError as exc:
            db.session.rollback()
            form.year.errors.append(str(exc))
        else:
            db.session.commit()
            flash(_("Price override saved."), "success")
            return redirect(url_for(".schedule_list"))
    return render_template(
        "fees/override_form.html",
        form=form,
        suggestions=[members.company_choice_label(c) for c in suggestions],
    )


@bp.route("/overrides/<int:override_id>/delete", methods=["POST"])
@permission_required(EDIT)
def override_delete(override_id: int):
    override = db.session.get(FeeOverride, override_id)
    if override is None:
        abort(404)
    if not ActionForm().validate():
        abort(400)
    db.session.delete(override)
    db.session.commit()
    flash(_("Price override removed; invoices already issued stay as they are."), "success")
    return redirect(url_for(".schedule_list"))


@bp.route("/export/<kind>.<fmt>")
@permission_required(VIEW)
def export(kind: str, fmt: str):
    from crm.spreadsheet import export_response

    if fmt not in ("csv", "xlsx") or kind not in ("invoices", "payments"):
        abort(404)
    year = _year()
    if kind == "invoices":
        headers = [
            _("Invoice number"),
            _("Org. no."),
            _("Company"),
            _("KID"),
            _("Invoice date"),
            _("Due date"),
            _("Kind of invoice"),
            _("Net amount"),
            _("VAT"),
            _("Amount"),
            _("Credited"),
            _("Reminder fees"),
            _("Paid"),
            _("Written off"),
            _("Outstanding"),
            _("Status"),
        ]
        rows = [
            (
                i.number,
                i.customer_orgnr,
                i.customer_name,
                i.kid,
                i.issue_date,
                i.due_date,
                invoice_kind_label(i.kind),
                kroner(i.net_ore),
                kroner(i.vat_ore),
                kroner(i.amount_ore),
                kroner(i.credited_ore),
                kroner(i.fees_ore),
                kroner(i.paid_ore),
                kroner(i.written_off_ore),
                kroner(i.outstanding_ore),
                i.status,
            )
            for i in services.invoices_for_year(year)
        ]
    else:
        headers = [
            _("Date"),
            _("Booked"),
            _("Invoice number"),
            _("Org. no."),
            _("Company"),
            _("KID"),
            _("Kind"),
            _("Source"),
            _("Amount"),
            _("Archive reference"),
            _("Payer's account"),
            _("Note"),
        ]
        rows = [
            (
                p.paid_on,
                p.booked_on,
                p.invoice.number,
                p.invoice.customer_orgnr,
                p.invoice.customer_name,
                p.kid or p.invoice.kid,
                kind_label(p.kind),
                p.source.upper() if p.source == "ocr" else _("Manual"),
                kroner(p.amount_ore),
                p.archive_reference,
                p.payer_account,
                p.note,
            )
            for p in services.payments_for_year(year)
        ]
    return export_response(fmt, f"{kind}-{year}", headers, rows, sheet_title=f"{kind} {year}")


@bp.route("/accounting")
@permission_required(VIEW)
def accounting():
    """Pick a period and a format; see what the vouchers add up to beside the overview."""
    from crm.fees import accounting as acc

    today = today_oslo()
    form = AccountingForm(request.args or None)
    form.fmt.choices = [SelectChoice(key, label) for key, label in acc.FORMAT_LABELS.items()]
    if not request.args:
        form.start.data, form.end.data = date(today.year, 1, 1), date(today.year, 12, 31)
    summary = None
    settings_row = services.get_settings()
    if not request.args or form.validate():
        summary = acc.period_totals(form.start.data, form.end.data, settings_row)
    return render_template(
        "fees/accounting.html",
        form=form,
        summary=summary,
        settings=settings_row,
        formats=acc.FORMAT_LABELS,
    )


@bp.route("/accounting/export")
@permission_required(VIEW)
def accounting_export():
    from crm.fees import accounting as acc
    from crm.spreadsheet import export_response

    year = today_oslo().year
    # Without a period: this year, in the generic format.
    args = request.args or {"start": f"{year}-01-01", "end": f"{year}-12-31", "fmt": "generic"}
    form = AccountingForm(MultiDict(args))
    form.fmt.choices = [SelectChoice(key, key) for key in acc.FORMATS]
    if not form.validate():
        _flash_form_errors(form)
        return redirect(url_for(".accounting"))
    settings_row = services.get_settings()
    items = acc.vouchers(form.start.data, form.end.data, settings_row)
    name = f"bilag-{form.start.data:%Y%m%d}-{form.end.data:%Y%m%d}"
    if form.fmt.data in ("tripletex", "poweroffice"):
        response = Response(
            acc.gbat10(items, settings_row), mimetype="text/csv; charset=windows-1252"
        )
        response.headers["Content-Disposition"] = (
            f'attachment; filename="{name}-{form.fmt.data}-gbat10.csv"'
        )
        return response
    if form.fmt.data == "fiken":
        headers, rows = acc.fiken_customers(items)
        return export_response("xlsx", f"kunder-fiken-{form.start.data:%Y%m%d}", headers, rows)
    headers, rows = acc.generic_rows(items)
    return export_response("csv", name, headers, rows)


def init_app(app) -> None:
    app.register_blueprint(bp)
    from crm.members import panels

    if "fees/_company_panel.html" not in panels.COMPANY_PANELS:
        panels.COMPANY_PANELS.append("fees/_company_panel.html")
    from crm.fees.demo import demo_fee_year
    from crm.members import demo

    if demo_fee_year not in demo.DEMO_HOOKS:
        demo.DEMO_HOOKS.append(demo_fee_year)

    # Globals, not a context processor: imported macros see globals only.
    app.jinja_env.globals.update(
        fee_status_badge=STATUS_BADGES,
        fee_status_label=status_label,
        fee_kind_label=kind_label,
        invoice_kind_label=invoice_kind_label,
        fee_quantity=services.format_quantity,
        fee_rate=services.format_rate,
        fee_delivery_channel=delivery_channel,
        unmatched_reason=unmatched_reason,
        unmatched_state=unmatched_state,
        company_fee_history=company_fee_history,
        company_fee_overrides=lambda company: services.company_overrides(company.id),
    )
    from crm import ui

    # Codes in the audit history, in the same words as on the fee pages.
    ui.VALUE_LABELS.update(
        {
            ("invoice", "status"): status_label,
            ("payment", "kind"): kind_label,
            ("invoice", "kind"): invoice_kind_label,
            ("invoice_delivery", "channel"): delivery_channel,
            ("unmatched_payment", "reason"): unmatched_reason,
            ("unmatched_payment", "state"): unmatched_state,
            ("fee_settings", "pro_rata"): pro_rata_label,
        }
    )
    from flask_babel import lazy_gettext as _l

    ui.FIELD_LABELS.update(
        {
            "fee_settings.vat_registered": _l("Registered for VAT (Merverdiavgiftsregisteret)"),
            "fee_settings.foretaksregisteret": _l(
                "Registered in Foretaksregisteret (AS, ASA, branch)"
            ),
        }
    )


STATUS_BADGES = {
    "open": "info",
    "partially_paid": "warning",
    "paid": "success",
    "overpaid": "warning",
    "credited": "neutral",
}


def status_label(status: str) -> str:
    labels = {
        "open": _("Open"),
        "partially_paid": _("Partially paid"),
        "paid": _("Paid"),
        "overpaid": _("Overpaid"),
        "credited": _("Credited"),
    }
    return labels.get(status, status)


def kind_label(kind: str) -> str:
    labels = {"payment": _("Payment"), "refund": _("Refund"), "write_off": _("Write-off")}
    return labels.get(kind, kind)


def invoice_kind_label(kind: str) -> str:
    labels = {
        "membership": _("Membership fee"),
        "event": _("Event or course"),
        "other": _("Other invoice"),
    }
    return labels.get(kind, kind)


def delivery_channel(channel: str) -> str:
    labels = {"email": _("Email with PDF"), "ehf": _("EHF"), "post": _("Post")}
    return labels.get(channel, channel)


def unmatched_reason(reason: str) -> str:
    labels = {
        "no_kid": _("No KID"),
        "invalid_kid": _("Invalid KID"),
        "unknown_kid": _("Unknown KID"),
        "duplicate": _("In an earlier file"),
    }
    return labels.get(reason, reason)


def unmatched_state(state: str) -> str:
    labels = {"open": _("Open"), "assigned": _("Booked"), "handled": _("Handled")}
    return labels.get(state, state)


def pro_rata_label(value: str) -> str:
    """A joining member's share of the fee in the settings form's words."""
    return next((str(c.label) for c in PRO_RATA_CHOICES if c.value == value), value)


def company_fee_history(company) -> list[Invoice]:
    return db.session.scalars(
        select(Invoice).where(Invoice.company_id == company.id).order_by(Invoice.year.desc())
    ).all()
