"""Demo data for `crm demo`: a fee year with paid, partly paid and open invoices."""

import random
from datetime import timedelta

from crm.fees.services import get_settings, register_payment, run_annual_invoicing, save_schedule
from crm.organisation import services as organisation
from crm.organisation.models import DEFAULT_NAME
from crm.timeutil import today_oslo

DEMO_TIERS = ((1, 9, 250_000), (10, 49, 750_000), (50, 199, 1_250_000), (200, None, 2_500_000))


def seed_fee_year(year: int | None = None, rng: random.Random | None = None) -> int:
    """Invoice every member for `year` (default: this year) and pay most of them.

    Fills in the fee settings and the organisation (the sender on invoices) with demo
    values where they are empty. Returns how many
    invoices were created. The caller commits.
    """
    rng = rng or random.Random(5)
    today = today_oslo()
    year = year or today.year
    settings = get_settings()
    settings.bank_account = settings.bank_account or "86011117947"
    seller = organisation.for_update()
    if seller.name in ("", DEFAULT_NAME):
        seller.name = "Kongsvingerregionen Industriklynge"
    seller.orgnr = seller.orgnr or "974760673"
    seller.street_address = seller.street_address or "Gågata 1"
    seller.postal_code = seller.postal_code or "2211"
    seller.postal_place = seller.postal_place or "Kongsvinger"
    save_schedule(year, DEMO_TIERS)
    issued = today - timedelta(days=60)
    run = run_annual_invoicing(year, today=issued)
    for invoice in run.created:
        roll = rng.random()
        paid_on = issued + timedelta(days=rng.randint(3, 45))
        if roll < 0.6:
            register_payment(invoice, invoice.amount_ore, paid_on, note="Demo")
        elif roll < 0.7:
            register_payment(invoice, invoice.amount_ore // 2, paid_on, note="Demo")
    return len(run.created)


def demo_fee_year(rng: random.Random, companies, contacts, options: dict) -> str | None:
    """`crm demo` hook: this year's invoices for the demo members, most of them paid."""
    created = seed_fee_year(rng=random.Random(rng.random()))
    return f"Invoiced {created} members for {today_oslo().year} (most of them paid)."
