"""the fee settings' sender (name, orgnr, address, email) moves to the organisation

Revision ID: 0014_organisation_sender
Revises: 0013_accounts

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0014_organisation_sender'
down_revision = '0013_accounts'
branch_labels = None
depends_on = None

MOVED = ("orgnr", "street_address", "postal_code", "postal_place", "email")


def upgrade():
    bind = op.get_bind()
    fee = bind.execute(sa.text(
        "SELECT cluster_name, orgnr, street_address, postal_code, postal_place, email "
        "FROM fee_settings ORDER BY id LIMIT 1"
    )).mappings().first()
    if fee is not None:
        organisation = bind.execute(sa.text("SELECT * FROM organisation WHERE id = 1")).mappings().first()
        values = {key: fee[key] or "" for key in MOVED}
        if organisation is None:
            bind.execute(
                sa.text(
                    "INSERT INTO organisation (id, name, sender_name, sender_email, privacy_url, "
                    "footer_text, logo_filename, logo_content_type, orgnr, street_address, "
                    "postal_code, postal_place, email, updated_at) VALUES (1, :name, '', '', '', "
                    "'', '', '', :orgnr, :street_address, :postal_code, :postal_place, :email, "
                    "CURRENT_TIMESTAMP)"
                ),
                dict(values, name=fee["cluster_name"] or "Klynge"),
            )
        else:
            # Settings already made on the organisation page win; blanks take the fee values.
            changes = {k: v for k, v in values.items() if v and not organisation[k]}
            if fee["cluster_name"] and organisation["name"] in ("", "Klynge"):
                changes["name"] = fee["cluster_name"]
            if changes:
                assignments = ", ".join(f"{k} = :{k}" for k in changes)
                bind.execute(sa.text(f"UPDATE organisation SET {assignments} WHERE id = 1"), changes)
    with op.batch_alter_table('fee_settings', schema=None) as batch_op:
        for column in ("cluster_name",) + MOVED:
            batch_op.drop_column(column)


def downgrade():
    with op.batch_alter_table('fee_settings', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cluster_name', sa.String(length=200), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('orgnr', sa.String(length=9), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('street_address', sa.String(length=300), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('postal_code', sa.String(length=10), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('postal_place', sa.String(length=100), nullable=False, server_default=''))
        batch_op.add_column(sa.Column('email', sa.String(length=254), nullable=False, server_default=''))
    bind = op.get_bind()
    organisation = bind.execute(sa.text("SELECT * FROM organisation WHERE id = 1")).mappings().first()
    if organisation is not None:
        values = {key: organisation[key] for key in MOVED}
        bind.execute(
            sa.text(
                "UPDATE fee_settings SET cluster_name = :name, orgnr = :orgnr, "
                "street_address = :street_address, postal_code = :postal_code, "
                "postal_place = :postal_place, email = :email"
            ),
            dict(values, name=organisation["name"]),
        )
