"""Invoice lines with VAT: totals from lines, rounding, any kind of invoice, credit notes,
the migration of old invoices, and the pages, PDFs and exports that show them."""

from datetime import date

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import FeeError
from crm.fees.lines import LineSpec
from crm.fees.models import Invoice
from crm.fees.pdf import credit_note_pdf, invoice_pdf
from crm.fees.services import (
    Customer,
    create_invoice,
    credit_invoice,
    get_settings,
    queue_invoice_email,
)
from tests.factories import make_fee_settings, make_invoiced_members, make_member
from tests.migrating import insert_row, migrated_to
from tests.test_fees_invoicing import pdf_text


@pytest.fixture
def ctx(app):
    with app.test_request_context("/?lang=en"):
        yield app


PERSON = Customer(
    name="Kari Kursdeltaker",
    email="kari@example.no",
    address="Vestre gate 2",
    postal_code="2211",
    postal_place="Kongsvinger",
)


def course_invoice(**kwargs):
    return create_invoice(
        PERSON,
        [LineSpec("Kurs i regnskap 12.03.2027", 100_000, vat_category="S", vat_rate=25)],
        kind="event",
        today=date(2026, 11, 2),
        **kwargs,
    )


def test_a_course_fee_with_25_percent_vat_to_a_person_totals_net_vat_and_gross(ctx):
    make_fee_settings(next_invoice_number=7001, due_days=14)
    invoice = course_invoice()
    db.session.commit()
    assert (invoice.net_ore, invoice.vat_ore, invoice.amount_ore) == (100_000, 25_000, 125_000)
    assert invoice.number == 7001 and kidlib.is_valid(invoice.kid, kidlib.MOD10)
    assert invoice.kind == "event" and invoice.company_id is None
    assert invoice.membership_year is None and invoice.customer_orgnr == ""
    assert invoice.due_date == date(2026, 11, 16) and invoice.status == "open"
    [line] = invoice.lines
    assert (line.vat_category, str(line.vat_rate), line.vat_ore) == ("S", "25.00", 25_000)
    assert get_settings().next_invoice_number == 7002


def test_vat_is_rounded_to_the_ore_per_rate_and_the_lines_add_up(ctx):
    make_fee_settings()
    invoice = create_invoice(
        PERSON,
        [
            LineSpec("Lunsj", 3333, quantity=3, vat_category="S", vat_rate=15),  # 99,99
            LineSpec("Kursmateriell", 1, vat_category="S", vat_rate=25),
            LineSpec("Kursavgift", 1, vat_category="S", vat_rate=25),
            LineSpec("Parkering", 10001, quantity="1,5", vat_category="S", vat_rate=25),
        ],
        kind="event",
    )
    # 15 %: 9999 × 0.15 = 1499.85 → 1500. 25 %: (1 + 1 + 15002) × 0.25 = 3751 exactly,
    # though line by line it would be 0 + 0 + 3750.5 → 3751 too; the 1.5 × 100.01 net
    # rounds half up to 150.02.
    assert [line.net_ore for line in invoice.lines] == [9999, 1, 1, 15002]
    by_rate = {str(g.rate): (g.net_ore, g.vat_ore) for g in invoice.vat_breakdown()}
    assert by_rate == {"15.00": (9999, 1500), "25.00": (15004, 3751)}
    assert invoice.vat_ore == sum(line.vat_ore for line in invoice.lines) == 5251
    assert invoice.amount_ore == invoice.net_ore + invoice.vat_ore == 25003 + 5251


def test_two_one_ore_lines_at_25_percent_carry_the_groups_rounded_vat(ctx):
    make_fee_settings()
    invoice = create_invoice(
        PERSON,
        [LineSpec(f"Linje {i}", 1, vat_category="S", vat_rate=25) for i in range(2)],
    )
    # Each line alone: 0.25 → 0; the group: 2 × 0.25 = 0.5 → 1 øre, on one of the lines.
    assert invoice.vat_ore == 1 and sorted(line.vat_ore for line in invoice.lines) == [0, 1]


@pytest.mark.parametrize(
    "spec, message",
    [
        (LineSpec("Kurs", 100, vat_category="S", vat_rate=0), "needs a VAT rate"),
        (LineSpec("Kontingent", 100, vat_category="O", vat_rate=25), "has no VAT rate"),
        (LineSpec("Kurs", 100, vat_category="X"), "Unknown VAT category"),
        (LineSpec("Kurs", 100, quantity="0,0001"), "too many decimals"),
        (LineSpec("Kurs", 100, quantity=0), "cannot be zero"),
        (LineSpec("Kurs", -100), "cannot be negative"),
        (LineSpec("", 100), "needs a description"),
    ],
)
def test_unusable_lines_are_refused_and_no_number_is_used(ctx, spec, message):
    make_fee_settings(next_invoice_number=3001)
    with pytest.raises(FeeError, match=message):
        create_invoice(PERSON, [spec])
    assert get_settings().next_invoice_number == 3001


def test_annual_invoicing_makes_one_membership_line_outside_vat(ctx):
    [invoice] = make_invoiced_members(1)
    [line] = invoice.lines
    assert (line.vat_category, line.vat_rate_centi, line.quantity_milli) == ("O", 0, 1000)
    assert line.net_ore == line.unit_price_ore == invoice.amount_ore == invoice.net_ore
    assert invoice.vat_ore == 0 and invoice.kind == "membership"
    assert invoice.membership_year == invoice.year == 2026


def test_one_membership_invoice_per_company_and_year_but_any_number_of_others(ctx):
    [invoice] = make_invoiced_members(1)
    company = invoice.company
    with pytest.raises(FeeError, match="already has a membership invoice for 2026"):
        create_invoice(
            company, [LineSpec("Kontingent", 100)], kind="membership", membership_year=2026
        )
    for _ in range(2):
        other = create_invoice(
            company,
            [LineSpec("Frokostmøte", 40_000, vat_category="S", vat_rate=25)],
            kind="event",
            today=date(2026, 5, 1),
        )
        assert other.customer_orgnr == company.orgnr and other.year == 2026
    db.session.commit()
    assert len(db.session.scalars(select(Invoice)).all()) == 3


def test_a_full_credit_copies_the_lines_and_their_vat(ctx):
    make_fee_settings()
    invoice = create_invoice(
        PERSON,
        [
            LineSpec("Kurs", 80_000, vat_category="S", vat_rate=25),
            LineSpec("Bok", 20_000, vat_category="Z"),
        ],
    )
    note = credit_invoice(invoice, "Avlyst kurs")
    assert [(x.description, x.net_ore, x.vat_ore) for x in note.lines] == [
        ("Kurs", 80_000, 20_000),
        ("Bok", 20_000, 0),
    ]
    assert (note.net_ore, note.vat_ore, note.amount_ore) == (100_000, 20_000, 120_000)
    assert invoice.status == "credited"


def test_a_partial_credit_splits_the_vat_in_proportion_and_the_rest_balances(ctx):
    make_fee_settings()
    invoice = create_invoice(
        Customer.of_company(make_member()),
        [
            LineSpec("Kontingent", 100_000),  # O, 0 %
            LineSpec("Kurs", 100_000, vat_category="S", vat_rate=25),
        ],
        kind="other",
    )
    assert invoice.amount_ore == 225_000
    half = credit_invoice(invoice, "Halv pris", 112_500)
    groups = {(g.category, g.rate_centi): (g.net_ore, g.vat_ore) for g in half.vat_breakdown()}
    assert groups == {("O", 0): (50_000, 0), ("S", 2500): (50_000, 12_500)}
    assert half.amount_ore == 112_500
    rest = credit_invoice(invoice, "Resten")
    assert rest.amount_ore == 112_500
    groups = {(g.category, g.rate_centi): (g.net_ore, g.vat_ore) for g in rest.vat_breakdown()}
    assert groups == {("O", 0): (50_000, 0), ("S", 2500): (50_000, 12_500)}
    assert invoice.status == "credited" and invoice.credited_ore == 225_000


def test_an_odd_partial_credit_keeps_its_gross_amount_to_the_ore(ctx):
    make_fee_settings()
    invoice = course_invoice()
    note = credit_invoice(invoice, "Rabatt", 333)
    [line] = note.lines
    assert (line.net_ore, line.vat_ore, note.amount_ore) == (266, 67, 333)


def test_pdf_email_and_credit_note_show_lines_vat_per_rate_and_totals(ctx):
    make_fee_settings()
    invoice = course_invoice()
    text = pdf_text(invoice_pdf(invoice, get_settings())).replace("\xa0", " ")
    assert "Kurs i regnskap 12.03.2027" in text
    assert "Sum eks. mva." in text and "kr 1 000,00" in text
    assert "Mva. 25 % av kr 1 000,00" in text and "kr 250,00" in text
    assert "Sum inkl. mva." in text and "kr 1 250,00" in text
    assert "MVA" in text  # a seller charging VAT shows "Org.nr. … MVA"
    message = queue_invoice_email(invoice)
    assert message.to_email == "kari@example.no"
    assert "Mva. 25 %: kr 250,00" in message.text_body.replace("\xa0", " ")
    note = credit_invoice(invoice, "Avlyst")
    text = pdf_text(credit_note_pdf(note, get_settings())).replace("\xa0", " ")
    assert "KREDITNOTA" in text and "Avlyst" in text and "kr 250,00" in text


def test_invoice_page_and_export_show_lines_and_vat(app, client, auth):
    with app.test_request_context("/"):
        make_fee_settings()
        invoice = course_invoice()
        db.session.commit()
        invoice_id = invoice.id
    auth.login("treasurer")
    page = client.get(f"/fees/invoices/{invoice_id}").get_data(as_text=True)
    assert "Kurs i regnskap 12.03.2027" in page and 'id="invoice-lines"' in page
    assert "Sum inkl. mva." in page and "1\xa0250,00" in page.replace("&nbsp;", "\xa0")
    export = client.get("/fees/export/invoices.csv?year=2026").get_data(as_text=True)
    header, row = export.splitlines()[:2]
    assert "Mva." in header and "Nettobeløp" in header
    assert "1000" in row and "250" in row and "1250" in row


# --- the migration of existing invoices ---------------------------------------------


def test_the_migration_gives_old_invoices_one_line_with_unchanged_totals_and_kids(
    scratch_database,
):
    from flask_migrate import upgrade

    with migrated_to(scratch_database, "0007_registry_fields") as metadata:
        with db.engine.begin() as conn:
            company = insert_row(conn, metadata, "company", name="Gammel AS", orgnr="923609016")
            old = {}
            for number, amount, kid in ((1001, 250_000, "0000010017"), (1002, 0, "0000010025")):
                old[number] = insert_row(
                    conn, metadata, "invoice", number=number, company_id=company,
                    year=2024 + number - 1001, kid=kid, amount_ore=amount, description="",
                    status="open", paid_ore=0, written_off_ore=0, credited_ore=0, fees_ore=0,
                    send_count=0,
                )  # fmt: skip
            insert_row(
                conn, metadata, "credit_note", number=1003, invoice_id=old[1001],
                amount_ore=50_000, reason="Rabatt",
            )  # fmt: skip
        upgrade(revision="heads")
        with db.engine.connect() as conn:
            invoices = conn.execute(
                sa.text(
                    "SELECT number, kid, amount_ore, net_ore, vat_ore, kind, membership_year,"
                    " year FROM invoice ORDER BY number"
                )
            ).all()
            lines = conn.execute(
                sa.text(
                    "SELECT i.number, l.position, l.description, l.quantity_milli,"
                    " l.unit_price_ore, l.vat_category, l.vat_rate_centi, l.net_ore, l.vat_ore"
                    " FROM invoice_line l JOIN invoice i ON i.id = l.invoice_id ORDER BY i.number"
                )
            ).all()
            notes = conn.execute(
                sa.text(
                    "SELECT n.amount_ore, n.net_ore, n.vat_ore, l.net_ore, l.vat_category,"
                    " l.description FROM credit_note n"
                    " JOIN credit_note_line l ON l.credit_note_id = n.id"
                )
            ).all()
            # The new rule holds on the migrated table: another membership invoice for the
            # same year is refused, an event invoice is not.
            with pytest.raises(sa.exc.IntegrityError), conn.begin_nested():
                conn.execute(
                    sa.text(
                        "INSERT INTO invoice (number, kind, company_id, year, membership_year,"
                        " kid, amount_ore, net_ore, vat_ore, issue_date, due_date, description,"
                        " pricing_note, customer_name, customer_orgnr, customer_address,"
                        " customer_postal_code, customer_postal_place, customer_email, status,"
                        " paid_ore, written_off_ore, credited_ore, fees_ore, send_count,"
                        " created_at) SELECT 2001, 'membership', company_id, year,"
                        " membership_year, '0000020016', 1, 1, 0, issue_date, due_date, '', '',"
                        " '', '', '', '', '', '', 'open', 0, 0, 0, 0, 0, created_at FROM invoice"
                        " WHERE number = 1001"
                    )
                )
        db.engine.dispose()
    assert invoices == [
        (1001, "0000010017", 250_000, 250_000, 0, "membership", 2024, 2024),
        (1002, "0000010025", 0, 0, 0, "membership", 2025, 2025),
    ]
    assert lines == [
        (1001, 1, "Faktura 1001", 1000, 250_000, "O", 0, 250_000, 0),
        (1002, 1, "Faktura 1002", 1000, 0, "O", 0, 0, 0),
    ]
    assert notes == [(50_000, 50_000, 0, 50_000, "O", "Kreditering av faktura 1001")]
