"""`crm companies …` and `crm demo`."""

import random
import sys
from contextlib import nullcontext
from pathlib import Path

import click
from flask.cli import with_appcontext

from crm.database import analyze_after_commit
from crm.extensions import db

# Files with more rows than this show a progress bar (on stderr) while they are checked.
PROGRESS_THRESHOLD = 1000


@click.group("companies")
def companies_cli():
    """Company records."""


def _progress(length: int, label: str):
    if length < PROGRESS_THRESHOLD:
        return nullcontext(None)
    return click.progressbar(length=length, label=label, file=sys.stderr)


def _municipality_numbers(_ctx, _param, value: str | None) -> tuple[str, ...]:
    numbers = tuple(n.strip() for n in (value or "").split(",") if n.strip())
    for number in numbers:
        if len(number) != 4 or not number.isascii() or not number.isdigit():
            raise click.BadParameter(f"{number!r} is not a 4-digit municipality number")
    return numbers


@companies_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@click.option(
    "--new-in-municipalities",
    callback=_municipality_numbers,
    metavar="NUMBERS",
    help="Comma-separated municipality numbers (e.g. 3401,3414): new companies only from "
    "these. Needed to add any from a bulk download.",
)
@with_appcontext
def import_command(file: Path, dry_run: bool, new_in_municipalities: tuple[str, ...]):
    """Import companies from a CSV file or Brønnøysund (Enhetsregisteret) JSON.

    Companies are matched by organisation number: known ones are updated, new ones come
    in as prospects. Nothing is written when any row has an error. Brønnøysund's bulk
    download (gzip, or any JSON file over 64 MB) is streamed in bounded memory: it
    updates the companies we have, and adds prospects only with --new-in-municipalities.
    """
    from crm.members.importing import ImportRejected, apply_plan, plan_import, read_file
    from crm.members.importing.register_file import is_register_stream

    if is_register_stream(file):
        parsed = _read_stream(file, new_in_municipalities)
    else:
        parsed = read_file(file.read_bytes())
        if new_in_municipalities:
            _keep_new_in(parsed, new_in_municipalities)
    with _progress(len(parsed.records), "Checking") as bar:
        plan = plan_import(parsed, file.name, progress=bar.update if bar else None)
    _print_plan(plan)
    if not plan.ok:
        for issue in plan.errors:
            click.echo(str(issue), err=True)
        click.echo("Nothing was imported. Fix the errors above and run again.", err=True)
        sys.exit(1)
    if dry_run:
        db.session.rollback()
        click.echo("Dry run: nothing was written.")
        return
    try:
        with _progress(plan.changes_count, "Writing") as bar:
            apply_plan(plan, progress=bar.update if bar else None)
        db.session.commit()
    except ImportRejected:  # pragma: no cover - plan.ok was checked above
        db.session.rollback()
        raise
    except Exception as exc:
        db.session.rollback()
        raise click.ClickException(f"Nothing was imported: {exc}") from exc
    click.echo("Import done.")


def _read_stream(file: Path, municipalities: tuple[str, ...]):
    from crm.members.importing.register_file import (
        StreamCounts,
        open_register,
        read_register_stream,
    )

    counts = StreamCounts()
    with file.open("rb") as raw:
        with click.progressbar(length=file.stat().st_size, label="Reading", file=sys.stderr) as bar:
            # Progress in bytes of the file as stored: the number of units is not known.
            parsed = read_register_stream(
                open_register(raw),
                new_in_municipalities=municipalities,
                progress=lambda _units: bar.update(raw.tell() - bar.pos),
                counts=counts,
            )
    click.echo(f"{file.name}: {counts.units} units read, {counts.relevant} for us")
    return parsed


def _keep_new_in(parsed, municipalities: tuple[str, ...]) -> None:
    """Only known companies, and new ones located in `municipalities`."""
    from crm.members.models import Company
    from crm.members.normalize import normalize_orgnr

    known = set(db.session.scalars(db.select(Company.orgnr)))

    def wanted(record) -> bool:
        try:
            orgnr = normalize_orgnr(record.orgnr)
        except ValueError:
            return True  # kept, so that planning reports the unusable number
        return orgnr in known or record.values.get("municipality_number") in municipalities

    parsed.records = [r for r in parsed.records if wanted(r)]


def _print_plan(plan) -> None:
    from crm.members.importing import display_value

    kind = {
        "csv": f"CSV ({_delimiter_name(plan.delimiter)})",
        "xlsx": "Excel workbook",
        "brreg": "Brønnøysund JSON",
    }
    click.echo(f"{plan.filename}: {kind.get(plan.source, 'unreadable')}, {len(plan.rows)} rows")
    if plan.creates:
        click.echo("\nNew companies (as prospects unless the file says otherwise):")
        for row in plan.creates:
            flags = f"  [{', '.join(row.flags)}]" if row.flags else ""
            status = row.values.get("membership_status", "prospect")
            click.echo(f"  {row.orgnr}  {row.name}  ({status}){flags}")
    if plan.updates:
        click.echo("\nChanges:")
        for row in plan.updates:
            click.echo(f"  {row.orgnr}  {row.name}")
            for change in row.changes:
                click.echo(
                    f"      {change.field}: {display_value(change.old)} → "
                    f"{display_value(change.new)}"
                )
    if plan.warnings:
        click.echo("\nWarnings:")
        for issue in plan.warnings:
            company = f"{issue.orgnr} {issue.name}: " if issue.orgnr else ""
            click.echo(f"  {issue.where}: {company}{issue.message}")
    counts = plan.counts()
    click.echo(
        f"\nCreated: {counts['created']}  Updated: {counts['updated']}  "
        f"Unchanged: {counts['unchanged']}  Errors: {counts['errors']}"
    )


@click.group("contacts")
def contacts_cli():
    """Contact records."""


@contacts_cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show what would change; write nothing.")
@with_appcontext
def import_contacts_command(file: Path, dry_run: bool):
    """Import contacts from a CSV or XLSX file (the contact export's columns).

    Contacts are matched by email, else by name within their company; their companies
    must be in the register. Nothing is written when any row has an error.
    """
    from crm.members.importing import display_value
    from crm.members.importing.contacts import apply_contact_plan, plan_contact_import

    plan = plan_contact_import(file.read_bytes(), file.name)
    click.echo(f"{plan.filename}: {plan.source or 'unreadable'}, {len(plan.rows)} rows")
    for row in plan.creates + plan.updates:
        click.echo(f"  {row.where}: {row.name or row.values.get('email', '')} ({row.action})")
        for change in row.changes:
            click.echo(
                f"      {change.field}: {display_value(change.old)} → {display_value(change.new)}"
            )
    for issue in plan.warnings:
        click.echo(f"  {issue.where}: {issue.message}")
    if not plan.ok:
        for issue in plan.errors:
            click.echo(str(issue), err=True)
        click.echo("Nothing was imported. Fix the errors above and run again.", err=True)
        sys.exit(1)
    if dry_run:
        db.session.rollback()
        click.echo("Dry run: nothing was written.")
        return
    counts = apply_contact_plan(plan)
    db.session.commit()
    click.echo(
        f"Created: {counts['created']}  Updated: {counts['updated']}  "
        f"Unchanged: {counts['unchanged']}  Errors: {counts['errors']}"
    )


def _delimiter_name(delimiter: str) -> str:
    return {";": "semicolon", ",": "comma", "\t": "tab"}.get(delimiter, repr(delimiter))


@click.command("demo")
@click.option("--companies", default=150, show_default=True, type=click.IntRange(1, 100_000))
@click.option(
    "--subscribers",
    default=500,
    show_default=True,
    type=click.IntRange(0, 1_000_000),
    help="Newsletter subscribers (created by the subscriptions area, once it exists).",
)
@click.option("--seed", default=2026, show_default=True, type=int, help="Same seed, same data.")
@click.option("--append", is_flag=True, help="Add to existing companies instead of refusing.")
@with_appcontext
def demo_command(companies: int, subscribers: int, seed: int, append: bool):
    """Fill the database with realistic demo data: companies, contacts, networks."""
    from crm.audit import acting_as
    from crm.members import demo
    from crm.timeutil import today_oslo

    existing = demo.company_count(db.session)
    if existing and not append:
        raise click.ClickException(
            f"The database already has {existing} companies; "
            "demo data goes into an empty one (or pass --append)."
        )
    rng = random.Random(seed)
    options = {"subscribers": subscribers, "seed": seed, "append": append, "today": today_oslo()}
    lines = []
    with acting_as("demo"):
        result = demo.generate(db.session, companies=companies, rng=rng, today=options["today"])
        for hook in demo.DEMO_HOOKS:
            line = hook(rng, result.companies, result.contacts, options)
            if line:
                lines.append(line)
        db.session.flush()
    # Like an import: PostgreSQL's planner should know the filled tables at once.
    created = len(result.companies) + len(result.contacts) + subscribers
    analyze_after_commit(db.session, sorted(db.metadata.tables), created)
    db.session.commit()
    statuses = [c.membership_status for c in result.companies]
    municipalities = {c.municipality_number for c in result.companies}
    click.echo(
        f"Created {len(result.companies)} companies in {len(municipalities)} municipalities "
        f"({statuses.count('member')} members, {statuses.count('prospect')} prospects, "
        f"{statuses.count('resigned')} resigned), {len(result.contacts)} contacts, "
        f"{result.network_links} network memberships, {result.activities} activities."
    )
    for line in lines:
        click.echo(line)
    if subscribers and not demo.DEMO_HOOKS:
        click.echo("No newsletter subscribers: that part of Klynge is not installed yet.")


def init_app(app) -> None:
    app.cli.add_command(companies_cli)
    app.cli.add_command(contacts_cli)
    app.cli.add_command(demo_command)
