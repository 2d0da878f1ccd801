"""newsletter ledger: half of each page left for its rows' updates (PostgreSQL fillfactor 50)

Revision ID: 0038_ledger_fillfactor_half
Revises: 0037_registration_form_token
Create Date: 2026-12-07 13:20:00

0036 left 30 % of each page free, room for the new versions of about two in five rows
when a whole batch is marked sent at once; the others were written elsewhere, with an
entry in each of the ledger's three indexes. With half of each page free, every row's
new version fits beside it (a HOT update: 280 of 300 in the test, against ~120), and dead versions are pruned in time for the
webhook's events. 1,000 rows marked sent in 6.8 ms instead of 9.3 (median of 30,
alternating, on a copy of the benchmark's 80,000 rows; writing them 9.3 ms instead of
8.9), for a table two fifths larger than at 70 %. Pages written from now on; SQLite has
no such setting.
"""

from alembic import op

revision = "0038_ledger_fillfactor_half"
down_revision = "0037_registration_form_token"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE newsletter_recipient SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE newsletter_recipient SET (fillfactor = 70)")
