"""The annual report as a printable PDF: the results page's tables, drawn with fpdf2.

Like the invoice PDFs (crm/fees/pdf.py) it uses fpdf2's core Helvetica, which covers
Latin-1 (æ, ø and å); other characters become '?'.
"""

from datetime import date
from decimal import Decimal

from flask_babel import gettext as _
from fpdf import FPDF
from fpdf.fonts import FontFace

from crm.i18n import format_date, format_number
from crm.reports.services import Report

INK = (29, 39, 51)
MUTED = (95, 107, 122)
ACCENT = (23, 74, 109)
HEADER_FILL = (232, 241, 248)


# Typographic marks outside Latin-1, written as their plain forms rather than '?'.
_PLAIN = str.maketrans({"–": "-", "—": "-", "…": "...", "’": "'", "“": '"', "”": '"'})


def _latin1(text: str) -> str:
    return (text or "").translate(_PLAIN).encode("latin-1", "replace").decode("latin-1")


def _cell(value) -> str:
    if isinstance(value, Decimal):
        return f"{value:,.2f}".replace(",", " ").replace(".", ",")
    if isinstance(value, int):
        return format_number(value).replace("\u00a0", " ")
    if isinstance(value, date):
        return format_date(value)
    return str(value)


def report_pdf(report: Report, organisation: str) -> bytes:
    """Every table of `report` under a title page header, A4 portrait."""
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(auto=True, margin=18)
    pdf.set_margins(18, 16, 18)
    pdf.add_page()
    pdf.set_text_color(*ACCENT)
    pdf.set_font("Helvetica", style="B", size=20)
    pdf.cell(0, 10, _latin1(_("Annual report")), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=11)
    pdf.set_text_color(*MUTED)
    period = f"{format_date(report.start)} – {format_date(report.end)}"
    pdf.cell(0, 6, _latin1(f"{organisation} · {period}"), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    pdf.set_text_color(*INK)
    summary = _(
        "%(members)s member companies, %(active)s of them active (%(share)s %%).",
        members=report.members,
        active=report.active,
        share=report.active_share if report.active_share is not None else "-",
    )
    pdf.multi_cell(0, 6, _latin1(summary), new_x="LMARGIN", new_y="NEXT")
    heading = FontFace(emphasis="BOLD", fill_color=HEADER_FILL)
    for table in report.tables:
        pdf.ln(4)
        pdf.set_font("Helvetica", style="B", size=12)
        pdf.set_text_color(*ACCENT)
        pdf.cell(0, 7, _latin1(table.title), new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(*INK)
        pdf.set_font("Helvetica", size=9)
        if not table.rows:
            pdf.set_text_color(*MUTED)
            pdf.cell(0, 5, _latin1(_("Nothing in this period.")), new_x="LMARGIN", new_y="NEXT")
            pdf.set_text_color(*INK)
            continue
        widths = [3] + [1] * (len(table.headers) - 1)
        aligns = ["LEFT"] + ["RIGHT"] * (len(table.headers) - 1)
        with pdf.table(
            col_widths=widths, text_align=aligns, headings_style=heading, line_height=5
        ) as grid:
            header = grid.row()
            for title in table.headers:
                header.cell(_latin1(title))
            for row in table.rows:
                line = grid.row()
                for value in row:
                    line.cell(_latin1(_cell(value)))
    return bytes(pdf.output())
