"""fees: an event's invoices name their event

Revision ID: 0043_invoice_event
Revises: 0042_erase_merged_records
Create Date: 2026-12-08 00:10:00

An event's income was summed over the invoices its registrations point at
(`registration.invoice_id`). A registration row is reused when the same address
registers again after cancelling, and the new seat's invoice replaced the link: the old
invoice, still due in fees when cancelled after the deadline, dropped out of the event's
income. `invoice.event_id` is set when the seat is invoiced and never changes, so every
invoice of the event counts, whichever registration it came from.

Filled here from the registrations' current links and from the audit log, which holds
every invoice a registration ever pointed at (its `invoice_id` changes).
"""

import json

import sqlalchemy as sa
from alembic import op

revision = "0043_invoice_event"
down_revision = "0042_erase_merged_records"
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # SQLite adds a column with its reference in place; Alembic would rebuild the
        # table (and its partial index) to add the constraint.
        op.execute(
            "ALTER TABLE invoice ADD COLUMN event_id INTEGER "
            "CONSTRAINT fk_invoice_event_id_event REFERENCES event (id) ON DELETE SET NULL"
        )
    else:
        op.add_column("invoice", sa.Column("event_id", sa.Integer(), nullable=True))
        op.create_foreign_key(
            "fk_invoice_event_id_event", "invoice", "event", ["event_id"], ["id"],
            ondelete="SET NULL",
        )  # fmt: skip
    op.create_index("ix_invoice_event_id", "invoice", ["event_id"])
    invoice = sa.table(
        "invoice", sa.column("id"), sa.column("kind"), sa.column("event_id")
    )
    registration = sa.table(
        "registration", sa.column("id"), sa.column("event_id"), sa.column("invoice_id")
    )
    audit = sa.table(
        "audit_entry",
        sa.column("id"),
        sa.column("record_type"),
        sa.column("record_id"),
        sa.column("changes"),
    )
    event_of_registration = dict(
        bind.execute(sa.select(registration.c.id, registration.c.event_id)).all()
    )
    event_of_invoice: dict[int, int] = {}
    # Earlier links first (the audit log in order), then today's links win.
    entries = bind.execute(
        sa.select(audit.c.record_id, audit.c.changes)
        .where(
            audit.c.record_type == "registration",
            sa.cast(audit.c.changes, sa.Text).like('%"invoice_id"%'),
        )
        .order_by(audit.c.id)
    )
    for registration_id, changes in entries:
        if isinstance(changes, str):
            changes = json.loads(changes)
        event_id = event_of_registration.get(registration_id)
        values = (changes or {}).get("invoice_id") or []
        for value in values:
            if event_id is not None and isinstance(value, int):
                event_of_invoice[value] = event_id
    for _id, event_id, invoice_id in bind.execute(
        sa.select(registration).where(registration.c.invoice_id.is_not(None))
    ):
        event_of_invoice[invoice_id] = event_id
    for invoice_id, event_id in event_of_invoice.items():
        bind.execute(
            invoice.update()
            .where(invoice.c.id == invoice_id, invoice.c.kind == "event")
            .values(event_id=event_id)
        )


def downgrade() -> None:
    op.drop_index("ix_invoice_event_id", table_name="invoice")
    with op.batch_alter_table("invoice") as batch_op:
        batch_op.drop_column("event_id")  # its foreign key goes with it
