"""`crm events …`: the event list and an event's registrations, for scripts (SPEC.md)."""

import csv
import json
import sys

import click
from flask.cli import with_appcontext
from sqlalchemy import select

from crm.events import services
from crm.events.models import Event, Registration
from crm.extensions import db
from crm.urls import MAX_ID

REGISTRATION_FIELDS = ("email", "name", "company_orgnr", "status", "position", "attended_sessions")


@click.group("events")
def events_cli():
    """Events: list them, export registrations."""


def event_rows() -> list[dict]:
    """Every event as SPEC.md's `crm events list --json` gives it, soonest first."""
    events = db.session.scalars(select(Event).order_by(Event.id)).all()
    rows = []
    for event in events:
        counts = services.seat_counts(event.id)
        rows.append(
            {
                "id": event.id,
                "title": event.title,
                "kind": event.kind,
                "starts_at": event.starts_at.isoformat() if event.starts_at else None,
                "capacity": event.capacity,
                "confirmed": counts["confirmed"],
                "waitlisted": counts["waitlisted"],
                "published": event.published,
            }
        )
    rows.sort(key=lambda row: (row["starts_at"] is None, row["starts_at"] or "", row["id"]))
    return rows


@events_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array (SPEC.md's fields).")
@with_appcontext
def list_command(as_json: bool):
    """Every event with its seats and registrations."""
    rows = event_rows()
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    for row in rows:
        capacity = "∞" if row["capacity"] is None else row["capacity"]
        state = "published" if row["published"] else "draft"
        click.echo(
            f"{row['id']:>5}  {row['starts_at'] or '-':<25}  {row['confirmed']:>4}/{capacity!s:<4} "
            f"wait {row['waitlisted']:>3}  {state:<9}  {row['title']}"
        )


def registration_rows(event_id: int) -> list[dict]:
    """An event's registrations (SPEC.md's fields): seats first, then the waitlist in order."""
    registrations = db.session.scalars(
        select(Registration).where(Registration.event_id == event_id).order_by(Registration.id)
    ).all()
    attended = services.attended_sessions([r.id for r in registrations])
    order = {"confirmed": 0, "offered": 1, "waitlisted": 2, "cancelled": 3}
    registrations = sorted(
        registrations,
        key=lambda r: (order.get(r.status, 9), r.waitlist_position or 0, r.id),
    )
    rows = []
    place = 0
    for registration in registrations:
        position = None
        if registration.status == "waitlisted":
            place += 1
            position = place
        rows.append(
            {
                "email": registration.email,
                "name": registration.name,
                "company_orgnr": registration.company.orgnr if registration.company else None,
                "status": registration.status,
                "position": position,
                "attended_sessions": attended.get(registration.id, 0),
            }
        )
    return rows


@events_cli.command("registrations")
@click.argument("event_id", type=click.IntRange(1, MAX_ID))
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv")
@with_appcontext
def registrations_command(event_id: int, fmt: str):
    """The registrations of event EVENT_ID as CSV or JSON."""
    if db.session.get(Event, event_id) is None:
        raise click.ClickException(f"No event with id {event_id}.")
    rows = registration_rows(event_id)
    if fmt == "json":
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    writer = csv.DictWriter(sys.stdout, fieldnames=REGISTRATION_FIELDS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})


def init_app(app) -> None:
    app.cli.add_command(events_cli)
