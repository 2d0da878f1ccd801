"""newsletter ledger: one index fewer, its unique key led by the contact

Revision ID: 0035_ledger_contact_key
Revises: 0034_newsletter_recipient_keys
Create Date: 2026-12-07 07:00:00

The ledger had two indexes on its contact: the unique key (newsletter_id, contact_id)
and an index on contact_id (a contact's newsletters, and the delete trigger of 0034).
The key turned round, (contact_id, newsletter_id), serves both, and a newsletter's own
rows are read through (newsletter_id, batch_number). Every ledger row written then
updates three indexes instead of four: on PostgreSQL 6.6–7.0 ms instead of 7.8–9.1 ms
per 1,000 rows (2026-12-07, bench/RESULTS.md).
"""

from alembic import op

revision = "0035_ledger_contact_key"
down_revision = "0034_newsletter_recipient_keys"
branch_labels = None
depends_on = None

TABLE = "newsletter_recipient"
KEY = "uq_newsletter_recipient_contact"
CONTACT_INDEX = "ix_newsletter_recipient_contact_id"


# SQLite rebuilds the table to change a unique key, and refuses to rename the new copy
# while the delete triggers of 0034 name the table: they go for the rebuild.
SQLITE_TRIGGERS = {
    "newsletter_recipient_gone_with_contact": ("contact", "contact_id"),
    "newsletter_recipient_gone_with_newsletter": ("newsletter", "newsletter_id"),
}


def _rekey(columns: list[str]) -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    if sqlite:
        for trigger in SQLITE_TRIGGERS:
            op.execute(f"DROP TRIGGER {trigger}")
    with op.batch_alter_table(TABLE) as batch_op:
        batch_op.drop_constraint(KEY, type_="unique")
        batch_op.create_unique_constraint(KEY, columns)
    if sqlite:
        for trigger, (table, column) in SQLITE_TRIGGERS.items():
            op.execute(
                f"CREATE TRIGGER {trigger} AFTER DELETE ON {table} FOR EACH ROW BEGIN "
                f"DELETE FROM {TABLE} WHERE {column} = OLD.id; END"
            )


def upgrade():
    _rekey(["contact_id", "newsletter_id"])
    op.drop_index(CONTACT_INDEX, table_name=TABLE)


def downgrade():
    op.create_index(CONTACT_INDEX, TABLE, ["contact_id"])
    _rekey(["newsletter_id", "contact_id"])
