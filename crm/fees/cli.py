"""`crm fees …`: the annual invoice run, the invoice list and the OCR giro import."""

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask.cli import with_appcontext
from flask_babel import force_locale

from crm.audit import acting_as
from crm.extensions import db

LIST_COLUMNS = (
    "invoice_number", "orgnr", "company", "kid", "amount", "paid", "status", "due_date",
    "kind", "net", "vat",
)  # fmt: skip


@contextmanager
def command_context() -> Iterator[None]:
    """Changes attributed to "cli"; messages in English, as the rest of the CLI speaks.

    Forcing a locale also keeps gettext from asking for a request that a CLI run has not.
    """
    with acting_as("cli"), force_locale("en"):
        yield


@click.group("fees")
def fees_cli():
    """Membership fees: invoices, payments, reminders."""


@fees_cli.command("invoice")
@click.option("--year", type=int, required=True, help="The fee year to invoice.")
@with_appcontext
def invoice_command(year: int):
    """Create one invoice per member company for YEAR (again: creates nothing new)."""
    from crm.fees.errors import FeeError
    from crm.fees.services import run_annual_invoicing

    try:
        with command_context():
            run = run_annual_invoicing(year)
            db.session.commit()
    except FeeError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from exc
    click.echo(f"created {len(run.created)} invoices for {year}; {run.existing} existed already")
    for problem in run.problems:
        click.echo(f"skipped: {problem}", err=True)


def invoice_rows(year: int) -> list[tuple]:
    from crm.fees.money import kroner
    from crm.fees.services import invoices_for_year

    return [
        (
            invoice.number,
            invoice.customer_orgnr,
            invoice.customer_name,
            invoice.kid,
            kroner(invoice.amount_ore),
            kroner(invoice.paid_ore),
            invoice.status,
            invoice.due_date,
            invoice.kind,
            kroner(invoice.net_ore),
            kroner(invoice.vat_ore),
        )
        for invoice in invoices_for_year(year)
    ]


@fees_cli.command("list")
@click.option("--year", type=int, required=True)
@click.option("--format", "fmt", type=click.Choice(["csv", "table"]), default="table")
@with_appcontext
def list_command(year: int, fmt: str):
    """The invoices of YEAR as CSV (amounts like 12500.00) or as a table."""
    with command_context():
        rows = invoice_rows(year)
    if fmt == "csv":
        from crm.spreadsheet import MACHINE, csv_bytes

        sys.stdout.write(csv_bytes(LIST_COLUMNS, rows, MACHINE).decode("utf-8"))
        return
    text_rows = [[_cell(value) for value in row] for row in rows]
    widths = [
        max([len(header)] + [len(row[i]) for row in text_rows])
        for i, header in enumerate(LIST_COLUMNS)
    ]
    numeric = {0, 4, 5}
    for row in [list(LIST_COLUMNS), *text_rows]:
        click.echo(
            "  ".join(
                cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i])
                for i, cell in enumerate(row)
            ).rstrip()
        )
    click.echo(f"{len(rows)} invoices")


def _cell(value) -> str:
    from datetime import date
    from decimal import Decimal

    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


@fees_cli.command("import-ocr")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@with_appcontext
def import_ocr_command(file: Path):
    """Import a Nets OCR giro FILE: prints matched / unmatched / total."""
    from crm.fees.errors import FeeError
    from crm.fees.services import import_ocr_file

    try:
        with command_context():
            result = import_ocr_file(file.read_bytes(), file.name)
            db.session.commit()
    except FeeError as exc:
        db.session.rollback()
        raise click.ClickException(f"{file.name} refused: {exc}") from exc
    click.echo(f"matched {result.matched} / unmatched {result.unmatched} / total {result.total}")


@fees_cli.command("remind")
@click.option("--no-fee", is_flag=True, help="Send without the reminder fee.")
@with_appcontext
def remind_command(no_fee: bool):
    """Queue every reminder that is due today (at most two per invoice)."""
    from crm.fees.reminders import send_due_reminders

    with command_context():
        run = send_due_reminders(with_fee=not no_fee)
        db.session.commit()
    click.echo(f"queued {len(run.sent)} reminders")
    for problem in run.problems:
        click.echo(f"skipped: {problem}", err=True)


@fees_cli.command("ehf")
@click.argument("number", type=int)
@click.option(
    "--validate",
    is_flag=True,
    help="Check it against the UBL 2.1 schema (and the official rules in PEPPOL_RULES_DIR); "
    "the report goes to standard error, exit 1 when it is not valid.",
)
@with_appcontext
def ehf_command(number: int, validate: bool):
    """Write invoice or credit note NUMBER as EHF Billing 3.0 (UBL XML) to standard output."""
    from flask import current_app

    from crm.fees.ehf import document_for_number
    from crm.fees.errors import FeeError
    from crm.fees.services import get_settings

    try:
        with command_context():
            _kind, document = document_for_number(number, get_settings())
    except FeeError as exc:
        db.session.rollback()
        raise click.ClickException(str(exc)) from exc
    finally:
        db.session.rollback()  # only read; get_settings may have made the row
    sys.stdout.buffer.write(document)
    sys.stdout.flush()
    if validate:
        from crm.fees.ehf_validation import ValidationUnavailable, validate_ehf

        try:
            report = validate_ehf(document, current_app.config.get("PEPPOL_RULES_DIR") or None)
        except ValidationUnavailable as exc:
            raise click.ClickException(str(exc)) from exc
        click.echo(report.summary(), err=True)
        if not report.valid:
            sys.exit(1)


def init_app(app) -> None:
    app.cli.add_command(fees_cli)
