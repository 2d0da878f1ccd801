"""`crm newsletters …`: create, send (with a progress bar), status, reconcile."""

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from flask.cli import with_appcontext
from flask_babel import force_locale
from sqlalchemy import func, or_, select

from crm.audit import acting_as
from crm.extensions import db

FINAL_STATES = ("finished", "cancelled")


@contextmanager
def command_context() -> Iterator[None]:
    """Changes attributed to "cli"; messages in English (no request to pick a language)."""
    with acting_as("cli"), force_locale("en"):
        yield


def _newsletter(newsletter_id: int):
    from crm.newsletters.models import Newsletter

    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is None:
        raise click.ClickException(f"no newsletter with id {newsletter_id}")
    return newsletter


@click.group("newsletters")
def newsletters_cli():
    """Newsletters: compose from Markdown, send, follow progress."""


@newsletters_cli.command("create")
@click.option("--subject", required=True)
@click.option(
    "--body",
    "body_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
)
@click.option("--preheader", default="", help="Inbox preview text.")
@click.option("--topic", "topics", multiple=True, help="Topic slug (default: generelt).")
@click.option("--network", "networks", multiple=True, help="Network name (or slug).")
@click.option("--municipality", "municipalities", multiple=True, help="Municipality number.")
@click.option("--archive/--no-archive", default=False, help="Publish in the public archive.")
@click.option(
    "--network-mail",
    is_flag=True,
    help="The --network(s)' own mail: their contacts at member companies get it without "
    "consent (each email carries a one-click objection to that network's mail).",
)
@with_appcontext
def create_command(
    subject, body_file, preheader, topics, networks, municipalities, archive, network_mail
):
    """Create a draft from a Markdown file; prints {"id": …, "recipients": …}."""
    from crm.members.models import Network
    from crm.newsletters import services
    from crm.subscriptions.models import GENERAL_TOPIC
    from crm.subscriptions.topics import sync_topics

    try:
        body = body_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"cannot read {body_file}: {exc}") from exc
    with command_context():
        sync_topics()
        network_ids = []
        for name in networks:
            network = db.session.scalar(
                select(Network).where(
                    or_(func.lower(Network.name) == name.lower(), Network.slug == name.lower())
                )
            )
            if network is None:
                raise click.ClickException(f"unknown network {name!r}")
            network_ids.append(network.id)
        content = services.Content(
            subject=subject,
            body=body,
            preheader=preheader,
            topics=tuple(topics) or (() if network_mail else (GENERAL_TOPIC,)),
            network_ids=tuple(network_ids),
            municipalities=tuple(municipalities),
            in_archive=archive,
            kind="network_mail" if network_mail else "newsletter",
        )
        try:
            newsletter = services.create_newsletter(content)
            recipients = services.recipient_count(newsletter)
            db.session.commit()
        except services.NewsletterError as exc:
            raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps({"id": newsletter.id, "recipients": recipients}))


@newsletters_cli.command("send")
@click.argument("newsletter_id", type=int)
@click.option("--wait", is_flag=True, help="Show a progress bar until it is sent.")
@with_appcontext
def send_command(newsletter_id: int, wait: bool):
    """Start sending newsletter ID (the workers send it)."""
    from crm.newsletters import services

    with command_context():
        newsletter = _newsletter(newsletter_id)
        if newsletter.state in ("draft", "scheduled"):
            try:
                total = services.start_sending(newsletter)
                db.session.commit()
            except services.NewsletterError as exc:
                raise click.ClickException(str(exc)) from exc
            click.echo(f"Sending newsletter {newsletter_id} to {total} recipients.", err=True)
        elif not wait:
            raise click.ClickException(f"newsletter {newsletter_id} is already {newsletter.state}")
    if wait:
        _warn_without_workers()
        state = _wait(newsletter_id)
        if state != "finished":
            raise click.ClickException(f"newsletter {newsletter_id} is {state}")


def _warn_without_workers() -> None:
    from rq import Worker

    from crm.queue import get_redis

    if not Worker.all(connection=get_redis()):
        click.echo("No worker is running: start one with `crm worker`.", err=True)


def _wait(newsletter_id: int, interval: float = 0.5) -> str:
    """A progress bar (tqdm) over the ledger until nothing is pending; the final state."""
    from tqdm import tqdm

    from crm.newsletters import services

    def current():
        db.session.expire_all()
        return services.progress(_newsletter(newsletter_id))

    progress = current()
    with tqdm(total=progress["total"], unit="email", desc=f"newsletter {newsletter_id}") as bar:
        while True:
            # Postfix first: update() redraws the line, and it should show these counts.
            bar.set_postfix(sent=progress["sent"], failed=progress["failed"], refresh=False)
            bar.update(progress["done"] - bar.n)
            if progress["state"] in FINAL_STATES or progress["state"] == "paused":
                break
            time.sleep(interval)
            progress = current()
        bar.refresh()
    db.session.remove()
    return progress["state"]


@newsletters_cli.command("status")
@click.argument("newsletter_id", type=int)
@click.option("--json", "as_json", is_flag=True, help="One line of JSON.")
@with_appcontext
def status_command(newsletter_id: int, as_json: bool):
    """State and counts: total, sent, failed, pending."""
    from crm.newsletters import services

    status = services.status(_newsletter(newsletter_id))
    if as_json:
        click.echo(json.dumps(status))
        return
    for key, value in status.items():
        click.echo(f"{key}: {value}")


@newsletters_cli.command("reconcile")
@with_appcontext
def reconcile_command():
    """Enqueue again whatever lost its job (the periodic reconciler, run once now)."""
    from crm.newsletters import reconciler

    with command_context():
        click.echo(json.dumps(reconciler.reconcile()))


def init_app(app) -> None:
    app.cli.add_command(newsletters_cli)
