"""The schema comes only from Alembic, in one line of revisions that matches the models.

Several people add migrations at the same time; two revisions on one parent would make
`crm db upgrade` (which upgrades to the one head) fail on every fresh install.
"""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

ROOT = Path(__file__).resolve().parent.parent


def test_migrations_form_one_line_with_one_head():
    config = Config()
    config.set_main_option("script_location", str(ROOT / "migrations"))
    script = ScriptDirectory.from_config(config)
    assert len(script.get_heads()) == 1, f"several heads: {script.get_heads()}"
    assert len(script.get_bases()) == 1


def test_the_migrated_schema_matches_the_models(app):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from crm.extensions import db

    with app.app_context(), db.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"compare_type": False})
        differences = [
            d
            for d in compare_metadata(context, db.metadata)
            # Index and constraint names differ harmlessly between dialects.
            if d[0] in ("add_table", "remove_table", "add_column", "remove_column")
        ]
    assert not differences, differences
