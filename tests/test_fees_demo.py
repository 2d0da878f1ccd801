"""The demo fee year: every member invoiced, most paid."""

from sqlalchemy import select

from crm.extensions import db
from crm.fees.demo import seed_fee_year
from crm.fees.models import Invoice
from tests.factories import make_member


def test_demo_fee_year_has_paid_and_open_invoices(app):
    with app.test_request_context("/?lang=en"):
        for i in range(30):
            make_member(f"Demo {i} AS", employees=5 + i * 7)
        assert seed_fee_year(2026) == 30
        db.session.commit()
        statuses = set(db.session.scalars(select(Invoice.status)))
        assert {"paid", "open"} <= statuses
