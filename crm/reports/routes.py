"""The results page: a year (or a chosen period within it), its tables, charts and files."""

from datetime import date

from flask import Blueprint, Response, abort, flash, redirect, render_template, request, url_for
from flask_babel import gettext as _

from crm.auth.permissions import permission_required
from crm.reports import services
from crm.reports.charts import bar_chart
from crm.reports.forms import PeriodForm
from crm.spreadsheet import XLSX_MIMETYPE, export_response, workbook_bytes
from crm.timeutil import today_oslo

bp = Blueprint("reports", __name__, url_prefix="/reports")

FIRST_YEAR, LAST_YEAR = 2000, 2100


def _period(year: int) -> tuple[date, date, PeriodForm]:
    """The year, or the part of it chosen in the period form (bad input: the whole year)."""
    if not FIRST_YEAR <= year <= LAST_YEAR:
        abort(404)
    start, end = date(year, 1, 1), date(year, 12, 31)
    form = PeriodForm(request.args)
    if request.args and form.validate():
        start = form.start.data or start
        end = form.end.data or end
    elif request.args:
        flash(_("The period was not understood; the whole year is shown."), "warning")
    form.start.data, form.end.data = start, end
    return start, end, form


@bp.route("/")
@permission_required("reports.view")
def index():
    return redirect(url_for("reports.results", year=today_oslo().year))


@bp.route("/<int:year>")
@permission_required("reports.view")
def results(year: int):
    start, end, form = _period(year)
    report = services.year_report(start, end)
    charts = {
        table.key: bar_chart(table.title, table.column())
        for table in report.tables
        if table.chart == "bars" and table.rows
    }
    return render_template(
        "reports/results.html", report=report, charts=charts, form=form, year=year
    )


def _file_name(start: date, end: date, what: str) -> str:
    if (start.month, start.day, end.month, end.day) == (1, 1, 12, 31):
        return f"{what}-{start.year}"
    return f"{what}-{start.isoformat()}-{end.isoformat()}"


@bp.route("/<int:year>/results.xlsx")
@permission_required("reports.view")
def results_xlsx(year: int):
    start, end, _form = _period(year)
    report = services.year_report(start, end)
    body = workbook_bytes((t.title, t.headers, t.rows) for t in report.tables)
    response = Response(body, mimetype=XLSX_MIMETYPE)
    name = _file_name(start, end, "resultater")
    response.headers["Content-Disposition"] = f'attachment; filename="{name}.xlsx"'
    return response


@bp.route("/<int:year>/results.pdf")
@permission_required("reports.view")
def results_pdf(year: int):
    from crm.organisation import services as organisation_settings
    from crm.reports.pdf import report_pdf

    start, end, _form = _period(year)
    report = services.year_report(start, end)
    organisation = organisation_settings.display_name()
    response = Response(report_pdf(report, organisation), mimetype="application/pdf")
    name = _file_name(start, end, "arsrapport")
    response.headers["Content-Disposition"] = f'inline; filename="{name}.pdf"'
    return response


@bp.route("/<int:year>/members.<any(csv, xlsx):fmt>")
@permission_required("reports.view")
def member_companies(year: int, fmt: str):
    start, end, _form = _period(year)
    headers, rows = services.member_companies(start, end)
    name = _file_name(start, end, "medlemsbedrifter")
    return export_response(fmt, name, headers, rows, _("Member companies"))


def init_app(app) -> None:
    from crm.members import panels
    from crm.reports.engagement import company_engagement

    app.register_blueprint(bp)
    app.jinja_env.globals["company_engagement"] = company_engagement
    # First in the side column: the company's engagement at a glance.
    if ENGAGEMENT_PANEL not in panels.COMPANY_PANELS:
        panels.COMPANY_PANELS.insert(0, ENGAGEMENT_PANEL)


ENGAGEMENT_PANEL = "reports/_company_engagement.html"
