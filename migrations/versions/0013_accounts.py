"""accounts: revocable sessions, forced password change, TOTP, invitations, security settings;
user emails normalised (NFKC, lower case) as login and uniqueness now compare them

Revision ID: 0013_accounts
Revises: 0012_organisation
"""
import unicodedata

import sqlalchemy as sa
from alembic import op

import crm.types

revision = "0013_accounts"
down_revision = "0012_organisation"
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("session_version", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(
            sa.Column(
                "must_change_password", sa.Boolean(), server_default=sa.false(), nullable=False
            )
        )
        batch_op.add_column(sa.Column("totp_secret", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("invited_at", crm.types.UTCDateTime(timezone=True), nullable=True)
        )
    op.create_table(
        "security_settings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("require_totp_for_privileged", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_security_settings")),
    )
    # Stored addresses in the form login and uniqueness now compare (full-width letters,
    # case). An address whose normal form another user has already is left alone: an
    # admin must merge those two by hand.
    bind = op.get_bind()
    user = sa.table("user", sa.column("id", sa.Integer), sa.column("email", sa.String))
    rows = bind.execute(sa.select(user.c.id, user.c.email)).all()
    taken = {email for _, email in rows}
    for user_id, email in rows:
        normal = unicodedata.normalize("NFKC", email or "").strip().lower()
        if normal != email and normal not in taken:
            bind.execute(user.update().where(user.c.id == user_id).values(email=normal))
            taken.add(normal)


def downgrade():
    op.drop_table("security_settings")
    with op.batch_alter_table("user", schema=None) as batch_op:
        batch_op.drop_column("invited_at")
        batch_op.drop_column("totp_secret")
        batch_op.drop_column("must_change_password")
        batch_op.drop_column("session_version")
