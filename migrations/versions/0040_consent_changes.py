"""subscriptions: the consent ledger's events that made consent active or ended it, kept

Revision ID: 0040_consent_changes
Revises: 0039_company_networks
Create Date: 2026-12-07 21:30:00

The results report counts the general newsletter's subscribers at each month's end. It
replayed the whole ledger with the consent rule on each first view after a consent
change (a signup, a confirmation, a bounce): 240–280 ms over the benchmark's 121,000
events. `consent_change` keeps, for each event that changed whether a contact's consent
to a topic is active, +1 or -1 and when; the report sums it per month. It is written
with the ledger, in the same transaction (`crm.subscriptions.ledger`), and filled here
by replaying the ledger with the same rule.
"""

from collections import defaultdict

import sqlalchemy as sa
from alembic import op

from crm.subscriptions.ledger import active_change, next_status
from crm.types import UTCDateTime

revision = "0040_consent_changes"
down_revision = "0039_company_networks"
branch_labels = None
depends_on = None


def upgrade() -> None:
    changes = op.create_table(
        "consent_change",
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("change", sa.SmallInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"], ["consent_event.id"],
            name=op.f("fk_consent_change_event_id_consent_event"), ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topic.id"], name=op.f("fk_consent_change_topic_id_topic")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_consent_change")),
    )  # fmt: skip
    statuses: dict[tuple[int, int], str] = defaultdict(lambda: None)
    rows = []
    event = sa.table(
        "consent_event", sa.column("id"), sa.column("contact_id"), sa.column("topic_id"),
        sa.column("kind"), sa.column("source"), sa.column("at", UTCDateTime()),
    )  # fmt: skip
    events = op.get_bind().execute(sa.select(event).order_by(event.c.id))
    for event_id, contact_id, topic_id, kind, source, at in events:
        before = statuses[contact_id, topic_id]
        after = next_status(before, kind, source)
        if after is None:
            continue
        statuses[contact_id, topic_id] = after
        change = active_change(before, after)
        if change:
            rows.append({"event_id": event_id, "topic_id": topic_id, "at": at, "change": change})
    for start in range(0, len(rows), 10_000):
        op.bulk_insert(changes, rows[start : start + 10_000])
    # After the rows: one index build instead of 100,000 insertions into it.
    op.create_index("ix_consent_change_topic_at", "consent_change", ["topic_id", "at", "change"])


def downgrade() -> None:
    op.drop_index("ix_consent_change_topic_at", table_name="consent_change")
    op.drop_table("consent_change")
