"""`crm mail …`: recovery for the email pipeline."""

from datetime import timedelta

import click
from flask.cli import with_appcontext

from crm.extensions import db


@click.group("mail")
def mail_cli():
    """The email pipeline."""


@mail_cli.command("requeue")
@click.option(
    "--older-than",
    default=10,
    show_default=True,
    type=click.IntRange(min=0),
    help="Minutes a message must have been waiting or sending.",
)
@with_appcontext
def requeue_command(older_than: int):
    """Enqueue again messages whose job was lost (Redis was down, a worker was killed)."""
    from crm.mail.services import requeue_stalled

    count = requeue_stalled(timedelta(minutes=older_than))
    db.session.commit()
    click.echo(f"Requeued {count} message(s).")


def init_app(app) -> None:
    app.cli.add_command(mail_cli)
