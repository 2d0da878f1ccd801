"""mail: the suppression list's and the webhook events' addresses in NFC

Revision ID: 0041_address_keys_nfc
Revises: 0040_consent_changes
Create Date: 2026-12-08 00:10:00

Both kept an address as `strip().lower()` of what the provider reported; the register
keeps contacts' addresses in NFC (email-validator's normal form, lower-cased). A
bounce reported in a decomposed spelling ("o" + U+0308 for "ö") therefore suppressed
nobody, and an erasure (which deletes a contact's events by address) missed it. The
key is now NFC as well (`crm.mail.services._address_key`); this brings the rows kept
so far to it. Two suppressions that become one address keep the later-updated one.

Only rows with a non-ASCII character can change (NFC leaves ASCII alone): PostgreSQL
finds them by pattern, SQLite's rows are read and checked here.
"""

import unicodedata

import sqlalchemy as sa
from alembic import op

revision = "0041_address_keys_nfc"
down_revision = "0040_consent_changes"
branch_labels = None
depends_on = None


def _key(address: str) -> str:
    return unicodedata.normalize("NFC", address).strip().lower()[:254]


def _non_ascii(conn, table: str, columns: str) -> list[tuple]:
    """`columns` (the address second) of the table's rows whose address is not ASCII."""
    if conn.dialect.name == "postgresql":
        where = "WHERE email ~ '[^\\x01-\\x7f]'"
        return conn.execute(sa.text(f"SELECT {columns} FROM {table} {where}")).all()
    rows = conn.execute(sa.text(f"SELECT {columns} FROM {table}")).all()
    return [row for row in rows if row[1] and not row[1].isascii()]


def upgrade() -> None:
    conn = op.get_bind()
    for event_id, email in _non_ascii(conn, "email_event", "id, email"):
        if _key(email) != email:
            conn.execute(
                sa.text("UPDATE email_event SET email = :email WHERE id = :id"),
                {"email": _key(email), "id": event_id},
            )
    for suppression_id, email, updated_at in _non_ascii(
        conn, "suppression", "id, email, updated_at"
    ):
        key = _key(email)
        if key == email:
            continue
        other = conn.execute(
            sa.text("SELECT id, updated_at FROM suppression WHERE email = :email"), {"email": key}
        ).first()
        if other is None:
            conn.execute(
                sa.text("UPDATE suppression SET email = :email WHERE id = :id"),
                {"email": key, "id": suppression_id},
            )
        elif other[1] >= updated_at:
            conn.execute(sa.text("DELETE FROM suppression WHERE id = :id"), {"id": suppression_id})
        else:
            conn.execute(sa.text("DELETE FROM suppression WHERE id = :id"), {"id": other[0]})
            conn.execute(
                sa.text("UPDATE suppression SET email = :email WHERE id = :id"),
                {"email": key, "id": suppression_id},
            )


def downgrade() -> None:
    # NFC is a spelling of the same address: nothing to undo.
    pass
