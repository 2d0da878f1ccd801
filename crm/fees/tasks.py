"""RQ jobs of the fees area: load by id, call a service, commit."""

import logging

from crm.extensions import db

log = logging.getLogger(__name__)


def send_invoices(invoice_ids: list[int]) -> dict:
    """Send each invoice (EHF or email); one refusal does not stop the others."""
    from flask_babel import force_locale

    from crm.audit import acting_as
    from crm.fees.delivery import deliver_invoice
    from crm.fees.errors import FeeError
    from crm.fees.models import Invoice

    sent, problems = 0, []
    # A job has no request to take a language from: invoices go out in Norwegian.
    with acting_as("fees job"), force_locale("nb"):
        for invoice_id in invoice_ids:
            invoice = db.session.get(Invoice, invoice_id)
            if invoice is None or invoice.send_count:
                continue  # gone, or sent meanwhile: a retried job must not send twice
            try:
                deliver_invoice(invoice)  # EHF where the company takes it, else email
                db.session.commit()
                sent += 1
            except FeeError as exc:
                db.session.rollback()
                problems.append(str(exc))
                log.warning("invoice %s not sent: %s", invoice_id, exc)
    return {"sent": sent, "problems": problems}


def enqueue_send_invoices(invoice_ids: list[int]):
    from crm.queue import get_queue

    return get_queue("default").enqueue(send_invoices, invoice_ids, job_timeout=1800)
