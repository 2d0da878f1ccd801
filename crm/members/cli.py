"""`crm companies …` and `crm demo`."""

import click


@click.group("companies")
def companies_cli():
    """Company records."""


def init_app(app) -> None:
    app.cli.add_command(companies_cli)
