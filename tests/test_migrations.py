"""The schema comes only from Alembic, in one line of revisions that matches the models.

Several people add migrations at the same time; two revisions on one parent would make
`crm db upgrade` (which upgrades to the one head) fail on every fresh install.
"""

from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from tests.migrating import migrated_to

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


def test_0043_gives_each_event_invoice_its_event_also_from_the_audit_log(scratch_database):
    # A registration cancelled, then made again: the first invoice's link was replaced
    # and lives only in the audit log; the second is the registration's own.
    from datetime import date

    import sqlalchemy as sa
    from flask_migrate import upgrade

    from crm.audit import AuditEntry
    from crm.events.models import Event, Registration
    from crm.extensions import db
    from crm.fees.models import Invoice

    with migrated_to(scratch_database, "0042_erase_merged_records"):
        with db.engine.begin() as connection:
            connection.execute(sa.insert(Event.__table__).values(id=7, title="LEAN"))
            for number, kind in ((1, "event"), (2, "event"), (3, "membership")):
                values = {
                    "id": number, "number": 1000 + number, "kind": kind, "year": 2026,
                    "kid": f"{number:010d}", "amount_ore": 100, "issue_date": date(2026, 12, 1),
                    "due_date": date(2026, 12, 31),
                }  # fmt: skip
                # The model's other defaults fill the rest; event_id is not there yet.
                connection.execute(sa.insert(Invoice.__table__).values(values))
            connection.execute(
                sa.insert(Registration.__table__).values(
                    id=5, event_id=7, name="Kari", email="kari@example.no", invoice_id=2
                )
            )
            for changes in ({"invoice_id": [None, 1]}, {"invoice_id": [1, None]}):
                connection.execute(
                    sa.insert(AuditEntry.__table__).values(
                        actor="x",
                        action="update",
                        record_type="registration",
                        record_id=5,
                        record_label="Kari",
                        changes=changes,
                    )  # fmt: skip
                )
        upgrade(revision="0043_invoice_event")
        with db.engine.connect() as connection:
            linked = dict(connection.execute(sa.text("SELECT id, event_id FROM invoice")).all())
        assert linked == {1: 7, 2: 7, 3: None}
