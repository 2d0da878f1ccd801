"""The `crm` command line (a Flask CLI group): users, demo, worker, serve."""

import os
import signal
import subprocess
import sys

import click
from flask import current_app
from flask.cli import FlaskGroup, with_appcontext

from crm.extensions import db


def _create_app():
    from crm import create_app

    return create_app()


@click.group(cls=FlaskGroup, create_app=_create_app, add_default_commands=True)
def main():
    """Klynge membership CRM."""


@click.group("users")
def users_cli():
    """Manage staff users."""


@users_cli.command("create")
@click.argument("email")
@click.option("--role", type=click.Choice(["admin", "staff", "treasurer"]), required=True)
@click.option(
    "--password",
    default=None,
    help="Leave out to email the user an invitation to set their own password.",
)
@with_appcontext
def users_create(email: str, role: str, password: str | None):
    """Create a user with the given role."""
    from crm.audit import acting_as
    from crm.auth.services import UserError, create_user, invite_user

    try:
        with acting_as("cli"):
            user = create_user(email, role, password)
            if password is None:
                invite_user(user)
            db.session.commit()
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Created {role} {user.email}")
    if password is None:
        # No password on screen: the user chooses one through the emailed link.
        click.echo(f"Invitation to set a password emailed to {user.email}")


@click.command("worker")
@click.option("--burst", is_flag=True, help="Stop when the queues are empty.")
def worker_command(burst: bool):
    """Run an RQ worker (with the scheduler) on all queues."""
    from crm.worker import run_worker

    run_worker(current_app._get_current_object(), burst=burst)


@click.command("ensure-admin")
@with_appcontext
def ensure_admin_command():
    """Create the first admin if there are no users (CRM_ADMIN_EMAIL / CRM_ADMIN_PASSWORD)."""
    from crm.audit import acting_as
    from crm.auth.services import UserError, ensure_first_admin

    try:
        with acting_as("setup"):
            created = ensure_first_admin(
                os.environ.get("CRM_ADMIN_EMAIL"), os.environ.get("CRM_ADMIN_PASSWORD")
            )
            db.session.commit()
    except UserError as exc:
        raise click.ClickException(str(exc)) from exc
    if created:
        user, password = created
        click.secho(f"First admin: {user.email}", fg="green")
        if not os.environ.get("CRM_ADMIN_PASSWORD"):
            click.secho(f"One-time password: {password}", fg="green", bold=True)
            click.echo("It must be changed at the first login.")


@click.command("serve")
@click.option("--host", default="127.0.0.1")
@click.option("--port", default=5000, type=int)
@click.option("--workers", default=2, type=int, help="gunicorn worker processes.")
@click.option("--threads", default=4, type=int, help="Threads per worker process.")
def serve_command(host: str, port: int, workers: int, threads: int):
    """Serve the web app with gunicorn and one RQ worker beside it, until Ctrl-C stops both."""
    from crm.queue import redis_url
    from crm.redis_server import stop_embedded_redis

    app = current_app._get_current_object()
    url = redis_url(app)
    # The RQ worker and every gunicorn worker (each builds its own app) share our Redis.
    os.environ["REDIS_URL"] = url
    worker = subprocess.Popen([sys.executable, "-m", "crm.cli", "worker"], env=dict(os.environ))
    click.echo(f"Klynge on http://{host}:{port}/ (RQ worker pid {worker.pid}); Ctrl-C stops.")
    try:
        _gunicorn(f"{host}:{port}", workers, threads).run()
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C must not cut the orderly stop short: worker first, then Redis.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _stop_worker(worker)
        stop_embedded_redis(url)
        click.echo("Stopped.")


def _gunicorn(bind: str, workers: int, threads: int):
    """gunicorn as production runs it (README: Production notes), started from Python.

    Each worker process builds its own app from the factory (no app object shared over
    a fork: database pools and sockets stay per process). gunicorn stops on Ctrl-C or
    SIGTERM and returns here (by SystemExit) so the caller can stop the rest in order.
    """
    from gunicorn.app.base import BaseApplication

    class Server(BaseApplication):
        def load_config(self):
            for key, value in {
                "bind": bind,
                "workers": max(1, workers),
                "threads": max(1, threads),
                "worker_class": "gthread",
                "timeout": 120,  # a large import upload may take a while
                "graceful_timeout": 10,
                "accesslog": "-",
                "proc_name": "klynge",
            }.items():
                self.cfg.set(key, value)

        def load(self):
            from crm import create_app

            return create_app()

    return Server()


def _stop_worker(worker: subprocess.Popen) -> None:
    """Ctrl-C in a terminal reaches the worker too; otherwise ask it to stop warmly."""
    try:
        worker.wait(timeout=5)
        return
    except subprocess.TimeoutExpired:
        worker.send_signal(signal.SIGINT)  # warm shutdown: finish the current job
    try:
        worker.wait(timeout=30)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()


def init_app(app) -> None:
    app.cli.add_command(users_cli)
    app.cli.add_command(worker_command)
    app.cli.add_command(ensure_admin_command)
    app.cli.add_command(serve_command)
    from crm.members import cli as members_cli

    members_cli.init_app(app)
    from crm.fees import cli as fees_cli

    fees_cli.init_app(app)
    from crm.newsletters import cli as newsletters_cli

    newsletters_cli.init_app(app)


if __name__ == "__main__":
    main()
