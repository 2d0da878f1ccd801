"""The course certificate as a one-page PDF (fpdf2, like the invoices): participant,
company, course, dates, hours, and the public URL that verifies it."""

from decimal import Decimal

from flask_babel import force_locale
from flask_babel import gettext as _
from fpdf import FPDF

from crm.events.models import Certificate
from crm.events.services import certificate_url
from crm.fees.pdf import _latin1
from crm.i18n import format_date


def certificate_filename(certificate: Certificate) -> str:
    return f"kursbevis-{certificate.registration.event_id}-{certificate.registration_id}.pdf"


def _hours(value: Decimal) -> str:
    text = f"{value:.2f}".rstrip("0").rstrip(".")
    return text.replace(".", ",")


def certificate_pdf(certificate: Certificate) -> bytes:
    """The certificate in the participant's language."""
    registration = certificate.registration
    event = registration.event
    with force_locale(registration.locale or "nb"):
        pdf = FPDF(orientation="L", format="A4")
        pdf.set_auto_page_break(False)
        pdf.add_page()
        pdf.set_draw_color(31, 95, 139)
        pdf.set_line_width(1.2)
        pdf.rect(12, 12, 273, 186)
        pdf.set_text_color(31, 95, 139)
        pdf.set_font("helvetica", "B", 30)
        pdf.set_y(34)
        pdf.cell(0, 14, _latin1(_("Course certificate")), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_text_color(29, 39, 51)
        pdf.set_font("helvetica", "", 14)
        pdf.ln(6)
        pdf.cell(
            0, 8, _latin1(_("This is to certify that")), align="C", new_x="LMARGIN", new_y="NEXT"
        )
        pdf.set_font("helvetica", "B", 24)
        pdf.cell(0, 14, _latin1(registration.name), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 14)
        if registration.company_label:
            pdf.cell(
                0, 8, _latin1(registration.company_label), align="C", new_x="LMARGIN", new_y="NEXT"
            )
        pdf.ln(4)
        pdf.cell(0, 8, _latin1(_("has completed")), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "B", 20)
        pdf.multi_cell(0, 11, _latin1(event.title), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.set_font("helvetica", "", 13)
        dates = ", ".join(format_date(s.starts_at) for s in event.sessions)
        pdf.multi_cell(0, 7, _latin1(dates), align="C", new_x="LMARGIN", new_y="NEXT")
        pdf.cell(
            0,
            8,
            _latin1(
                _(
                    "%(attended)s of %(total)s sessions, %(hours)s hours",
                    attended=certificate.sessions_attended,
                    total=len(event.sessions),
                    hours=_hours(certificate.hours),
                )
            ),
            align="C",
            new_x="LMARGIN",
            new_y="NEXT",
        )
        pdf.set_y(170)
        pdf.set_font("helvetica", "", 10)
        pdf.set_text_color(95, 107, 122)
        issued = _("Issued %(date)s", date=format_date(certificate.issued_at))
        pdf.cell(0, 6, _latin1(issued), align="C", new_x="LMARGIN", new_y="NEXT")
        verify = _("Verify: %(url)s", url=certificate_url(certificate))
        pdf.cell(0, 6, _latin1(verify), align="C", new_x="LMARGIN", new_y="NEXT")
        return bytes(pdf.output())


def badges_pdf(event, registrations) -> bytes:
    """Name badges, eight to an A4 page (2 × 4, 90 × 60 mm): name, company, event."""
    pdf = FPDF(format="A4")
    pdf.set_auto_page_break(False)
    width, height, left, top = 90, 60, 12, 20
    for index, registration in enumerate(registrations):
        if index % 8 == 0:
            pdf.add_page()
        column, row = index % 2, (index % 8) // 2
        x, y = left + column * (width + 6), top + row * (height + 6)
        pdf.set_draw_color(200, 210, 220)
        pdf.rect(x, y, width, height)
        pdf.set_fill_color(31, 95, 139)
        pdf.rect(x, y, width, 9, style="F")
        pdf.set_text_color(255, 255, 255)
        pdf.set_font("helvetica", "B", 9)
        pdf.set_xy(x + 3, y + 1.5)
        pdf.cell(width - 6, 6, _latin1(event.title)[:60])
        pdf.set_text_color(29, 39, 51)
        pdf.set_font("helvetica", "B", 18)
        pdf.set_xy(x + 3, y + 20)
        pdf.multi_cell(width - 6, 8, _latin1(registration.name), align="C")
        pdf.set_font("helvetica", "", 11)
        pdf.set_xy(x + 3, y + 42)
        pdf.cell(width - 6, 6, _latin1(registration.company_label)[:50], align="C")
    if not registrations:
        pdf.add_page()
    return bytes(pdf.output())
