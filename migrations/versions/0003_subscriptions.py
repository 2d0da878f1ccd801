"""subscriptions: topics, consent wording, consent ledger and state, subscribers, pending signups

Revision ID: 0003_subscriptions
Revises: 0002_mail
Create Date: 2026-11-24 09:00:00

"""
from alembic import op
import sqlalchemy as sa

import crm.types


# revision identifiers, used by Alembic.
revision = "0003_subscriptions"
down_revision = "0002_mail"
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        "topic",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("name_en", sa.String(length=100), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["network_id"], ["network.id"], name=op.f("fk_topic_network_id_network"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_topic")),
        sa.UniqueConstraint("network_id", name=op.f("uq_topic_network_id")),
        sa.UniqueConstraint("slug", name=op.f("uq_topic_slug")),
    )
    op.create_table(
        "consent_wording",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("text_nb", sa.Text(), nullable=False),
        sa.Column("text_en", sa.Text(), nullable=False),
        sa.Column("created_at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_wording")),
        sa.UniqueConstraint("version", name=op.f("uq_consent_wording_version")),
    )
    op.create_table(
        "consent_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=12), nullable=False),
        sa.Column("source", sa.String(length=12), nullable=False),
        sa.Column("at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("wording_id", sa.Integer(), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_consent_event_contact_id_contact")
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topic.id"], name=op.f("fk_consent_event_topic_id_topic")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_consent_event_user_id_user"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["wording_id"], ["consent_wording.id"],
            name=op.f("fk_consent_event_wording_id_consent_wording"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_consent_event")),
    )
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_consent_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_consent_event_topic_id"), ["topic_id"], unique=False)
        batch_op.create_index(
            "ix_consent_event_contact_topic", ["contact_id", "topic_id", "id"], unique=False
        )

    op.create_table(
        "consent_state",
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("topic_id", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("changed_at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_consent_state_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["consent_event.id"],
            name=op.f("fk_consent_state_event_id_consent_event"),
        ),
        sa.ForeignKeyConstraint(
            ["topic_id"], ["topic.id"], name=op.f("fk_consent_state_topic_id_topic")
        ),
        sa.PrimaryKeyConstraint("contact_id", "topic_id", name=op.f("pk_consent_state")),
    )
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.create_index(
            "ix_consent_state_topic_status", ["topic_id", "status"], unique=False
        )

    op.create_table(
        "subscriber",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("contact_id", sa.Integer(), nullable=False),
        sa.Column("company_name", sa.String(length=200), nullable=False),
        sa.Column("locale", sa.String(length=5), nullable=False),
        sa.Column("token_version", sa.Integer(), nullable=False),
        sa.Column("created_at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("erased_at", crm.types.UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_subscriber_contact_id_contact"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subscriber")),
        sa.UniqueConstraint("contact_id", name=op.f("uq_subscriber_contact_id")),
    )
    op.create_table(
        "pending_signup",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=32), nullable=False),
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("first_name", sa.String(length=100), nullable=False),
        sa.Column("last_name", sa.String(length=100), nullable=False),
        sa.Column("company_name", sa.String(length=200), nullable=False),
        sa.Column("topic_ids", sa.JSON(), nullable=False),
        sa.Column("wording_id", sa.Integer(), nullable=False),
        sa.Column("ip", sa.String(length=45), nullable=True),
        sa.Column("locale", sa.String(length=5), nullable=False),
        sa.Column("created_at", crm.types.UTCDateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", crm.types.UTCDateTime(timezone=True), nullable=True),
        sa.Column("contact_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["contact_id"], ["contact.id"], name=op.f("fk_pending_signup_contact_id_contact"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["wording_id"], ["consent_wording.id"],
            name=op.f("fk_pending_signup_wording_id_consent_wording"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pending_signup")),
    )
    with op.batch_alter_table("pending_signup", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_pending_signup_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_pending_signup_email"), ["email"], unique=False)


def downgrade():
    with op.batch_alter_table("pending_signup", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pending_signup_email"))
        batch_op.drop_index(batch_op.f("ix_pending_signup_created_at"))
    op.drop_table("pending_signup")
    op.drop_table("subscriber")
    with op.batch_alter_table("consent_state", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_state_topic_status")
    op.drop_table("consent_state")
    with op.batch_alter_table("consent_event", schema=None) as batch_op:
        batch_op.drop_index("ix_consent_event_contact_topic")
        batch_op.drop_index(batch_op.f("ix_consent_event_topic_id"))
        batch_op.drop_index(batch_op.f("ix_consent_event_at"))
    op.drop_table("consent_event")
    op.drop_table("consent_wording")
    op.drop_table("topic")
