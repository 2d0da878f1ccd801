"""The accounting export: balanced vouchers per period, the same totals as the overview,
and the files for the generic CSV, Tripletex/PowerOffice Go (GBAT10) and Fiken."""

import csv
import io
from datetime import date
from decimal import Decimal

import pytest
from openpyxl import load_workbook

from crm.extensions import db
from crm.fees import accounting
from crm.fees.lines import LineSpec
from crm.fees.reminders import send_reminder
from crm.fees.services import (
    Customer,
    create_invoice,
    credit_invoice,
    dashboard,
    get_settings,
    queue_invoice_email,
    register_payment,
    run_annual_invoicing,
)
from tests.factories import make_fee_schedule, make_fee_settings, make_member


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


def _a_year_of_fees() -> list:
    """Membership fees, a course fee with VAT, a partial credit, payments, a reminder fee
    and a write-off, all in 2026."""
    make_fee_settings(reminder_fee_ore=3_500)
    make_fee_schedule(2026)
    for i, employees in enumerate((3, 20, 80)):
        make_member(f"Medlem {i} AS", employees=employees)
    small, middle, large = run_annual_invoicing(2026, today=date(2026, 1, 15)).created
    course = create_invoice(
        Customer(name="Kari Kurs", email="kari@example.no"),
        [
            LineSpec("Kurs", 80_000, vat_category="S", vat_rate=25),
            LineSpec("Lunsj", 20_000, vat_category="S", vat_rate=15),
        ],
        kind="event",
        today=date(2026, 3, 1),
    )
    for invoice in (small, middle, large):
        queue_invoice_email(invoice, today=date(2026, 1, 15))
    register_payment(small, small.amount_ore, date(2026, 2, 10))
    register_payment(middle, 300_000, date(2026, 2, 11))
    credit_invoice(large, "Avtalt rabatt", 250_000, today=date(2026, 4, 1))
    send_reminder(middle, 1, today=date(2026, 3, 10))
    register_payment(course, course.amount_ore, date(2026, 3, 20))
    register_payment(middle, 100_000, date(2026, 5, 2), kind="write_off")
    db.session.commit()
    return [small, middle, large, course]


def test_every_voucher_balances_and_the_year_adds_up_to_the_overview(ctx):
    _a_year_of_fees()
    settings = get_settings()
    items = accounting.vouchers(date(2026, 1, 1), date(2026, 12, 31), settings)
    assert {v.kind for v in items} == set(accounting.VOUCHER_KINDS) - {"refund"}
    for voucher in items:
        assert voucher.balanced and voucher.debit_ore > 0, voucher
    totals = accounting.totals(items, settings)
    figures = dashboard(2026, today=date(2026, 12, 31))
    assert totals.net_invoiced == figures.invoiced.ore
    assert totals.net_received == figures.paid.ore
    assert totals.written_off == figures.written_off_ore
    assert totals.net_invoiced - totals.net_received - totals.written_off == (
        figures.outstanding.ore
    )
    # The course fee's VAT: 25 % of 800 kr and 15 % of 200 kr.
    assert totals.vat == 20_000 + 3_000


def test_a_period_holds_only_what_is_dated_in_it(ctx):
    _a_year_of_fees()
    settings = get_settings()
    february = accounting.vouchers(date(2026, 2, 1), date(2026, 2, 28), settings)
    assert [v.kind for v in february] == ["payment", "payment"]
    assert accounting.totals(february, settings).received == 250_000 + 300_000


def test_the_databases_period_totals_equal_the_vouchers_totals(ctx):
    _a_year_of_fees()
    settings = get_settings()
    for start, end in (
        (date(2026, 1, 1), date(2026, 12, 31)),
        (date(2026, 2, 1), date(2026, 2, 28)),
        (date(2026, 3, 1), date(2026, 4, 30)),
        (date(2025, 1, 1), date(2025, 12, 31)),
    ):
        items = accounting.vouchers(start, end, settings)
        assert accounting.period_totals(start, end, settings) == accounting.totals(
            items, settings
        ), (start, end)
    # An income account that is also the VAT account: its net postings count as VAT too.
    settings.account_income_vat = settings.account_output_vat
    year = (date(2026, 1, 1), date(2026, 12, 31))
    assert accounting.period_totals(*year, settings) == accounting.totals(
        accounting.vouchers(*year, settings), settings
    )


def test_the_generic_csv_has_norwegian_headers_and_balances_per_voucher(app, client, auth):
    with app.test_request_context("/"):
        _a_year_of_fees()
    auth.login("treasurer")
    response = client.get("/fees/accounting/export?start=2026-01-01&end=2026-12-31&fmt=generic")
    assert response.status_code == 200
    rows = list(csv.reader(io.StringIO(response.data.decode("utf-8-sig")), delimiter=";"))
    assert rows[0][:6] == ["Bilagsnummer", "Bilagsdato", "Bilagstype", "Konto", "Debet", "Kredit"]
    sums: dict[str, Decimal] = {}
    for row in rows[1:]:
        debit = Decimal((row[4] or "0").replace(",", "."))
        credit = Decimal((row[5] or "0").replace(",", "."))
        sums[row[0]] = sums.get(row[0], Decimal(0)) + debit - credit
    assert sums and all(total == 0 for total in sums.values())
    types = {row[2] for row in rows[1:]}
    assert {"Faktura", "Kreditnota", "Innbetaling", "Purregebyr"} <= types
    accounts = {row[3] for row in rows[1:]}
    assert {"1500", "1920", "2700", "3000", "3200", "3900", "7830"} <= accounts


@pytest.mark.parametrize("fmt", ["tripletex", "poweroffice"])
def test_the_gbat10_file_balances_per_voucher_and_names_the_customer(app, client, auth, fmt):
    with app.test_request_context("/"):
        invoices = _a_year_of_fees()
        kid = invoices[0].kid
    auth.login("treasurer")
    response = client.get(f"/fees/accounting/export?start=2026-01-01&end=2026-12-31&fmt={fmt}")
    assert response.status_code == 200
    lines = [line.split(";") for line in response.data.decode("cp1252").splitlines()]
    assert all(fields[0] == "GBAT10" and len(fields) == 26 for fields in lines)
    sums: dict[str, Decimal] = {}
    for fields in lines:
        sums[fields[1]] = sums.get(fields[1], Decimal(0)) + Decimal(fields[8])
    assert all(total == 0 for total in sums.values())
    receivable = [f for f in lines if f[6] == "1500" and f[16] == kid]
    assert receivable and receivable[0][11] == "Medlem 0 AS" and receivable[0][2] == "20260115"


def test_the_fiken_choice_gives_its_customer_import_sheet(app, client, auth):
    with app.test_request_context("/"):
        _a_year_of_fees()
    auth.login("treasurer")
    response = client.get("/fees/accounting/export?start=2026-01-01&end=2026-12-31&fmt=fiken")
    assert response.status_code == 200
    sheet = load_workbook(io.BytesIO(response.data)).active
    rows = list(sheet.iter_rows(values_only=True))
    assert rows[0][:4] == ("Navn", "Orgnr", "Adresse", "Adresse2")
    assert {r[0] for r in rows[1:]} == {"Medlem 0 AS", "Medlem 1 AS", "Medlem 2 AS", "Kari Kurs"}


def test_the_accounting_page_shows_the_periods_totals_and_refuses_a_reversed_period(
    app, client, auth
):
    with app.test_request_context("/"):
        _a_year_of_fees()
    auth.login("treasurer")
    page = client.get("/fees/accounting?start=2026-01-01&end=2026-12-31&fmt=generic")
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and 'id="accounting-totals"' in text
    assert "Regnskapseksport" in text
    bad = client.get("/fees/accounting?start=2026-12-31&end=2026-01-01&fmt=generic")
    assert bad.status_code == 200 and "slutter før den begynner" in bad.get_data(as_text=True)
    bad_export = client.get("/fees/accounting/export?start=x&end=2026-01-01&fmt=nope")
    assert bad_export.status_code == 302
