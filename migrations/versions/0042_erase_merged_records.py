"""subscriptions: the records merged into an erased person emptied as the person was

Revision ID: 0042_erase_merged_records
Revises: 0041_address_keys_nfc
Create Date: 2026-12-08 00:40:00

Erasing a person (GDPR art. 17) emptied their contact but not the contacts merged into
it, which kept names, addresses, phone numbers and notes, their pending signups, their
copies of emails, and their values in the audit log; confirming such a pending signup
then led to the erased shell and failed. `crm.subscriptions.gdpr.erase_person` now
empties them too; this does it for the erasures made before. Written out here (not
calling the app's code, which may change after this revision) in plain SQL, the audit
log's JSON in Python.
"""

import json
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from crm.types import UTCDateTime

revision = "0042_erase_merged_records"
down_revision = "0041_address_keys_nfc"
branch_labels = None
depends_on = None

ERASED = "[erased]"  # as crm.subscriptions.gdpr.ERASED
PERSONAL = {
    "contact": {"first_name", "last_name", "email", "phone", "job_title", "notes", "networks"},
    "subscriber": {"company_name"},
}

MERGED_INTO_ERASED = """
WITH RECURSIVE absorbed(id) AS (
    SELECT c.id FROM contact c
    JOIN subscriber s ON s.contact_id = c.merged_into_id
    WHERE s.erased_at IS NOT NULL
    UNION
    SELECT c.id FROM contact c JOIN absorbed a ON c.merged_into_id = a.id
)
SELECT c.id, c.email FROM contact c WHERE c.id IN (SELECT id FROM absorbed)
"""


def upgrade() -> None:
    conn = op.get_bind()
    rows = conn.execute(sa.text(MERGED_INTO_ERASED)).all()
    if not rows:
        return
    ids = [row[0] for row in rows]
    emails = [row[1] for row in rows if row[1]]
    now = datetime.now(UTC)
    binds = {
        "ids": sa.bindparam("ids", expanding=True),
        "emails": sa.bindparam("emails", expanding=True),
        "now": sa.bindparam("now", type_=UTCDateTime()),
    }

    def run(sql: str, **params) -> None:
        statement = sa.text(sql).bindparams(*(binds[name] for name in params if name in binds))
        conn.execute(statement, params)

    run("DELETE FROM pending_signup WHERE contact_id IN :ids", ids=ids)
    run("DELETE FROM search_term WHERE record_type = 'contact' AND record_id IN :ids", ids=ids)
    run("DELETE FROM contact_network WHERE contact_id IN :ids", ids=ids)
    run(
        "UPDATE email_message SET to_email = :erased, to_name = '', text_body = '',"
        " html_body = NULL, headers = '{}', context = NULL WHERE contact_id IN :ids",
        ids=ids,
        erased=ERASED,
    )
    if emails:
        run("DELETE FROM pending_signup WHERE email IN :emails", emails=emails)
        run(
            "UPDATE email_message SET to_email = :erased, to_name = '', text_body = '',"
            " html_body = NULL, headers = '{}', context = NULL WHERE to_email IN :emails",
            emails=emails,
            erased=ERASED,
        )
        run(
            "UPDATE email_event SET email = :erased, raw = '{}' WHERE email IN :emails",
            emails=emails,
            erased=ERASED,
        )
    run(
        "UPDATE contact SET first_name = '', last_name = '', email = NULL, phone = NULL,"
        " job_title = '', notes = '', active = :false, company_id = NULL,"
        " archived_at = COALESCE(archived_at, :now) WHERE id IN :ids",
        ids=ids,
        now=now,
        false=False,
    )
    run(
        "UPDATE subscriber SET company_name = '', erased_at = COALESCE(erased_at, :now),"
        " token_version = token_version + 1 WHERE contact_id IN :ids",
        ids=ids,
        now=now,
    )
    _scrub_audit_entries(conn, ids)


def _scrub_audit_entries(conn, ids: list[int]) -> None:
    """The personal values in the audit log of those contacts and their subscriber
    profiles, blanked (who changed which field when stays)."""
    profiles = (
        conn.execute(
            sa.text("SELECT id FROM subscriber WHERE contact_id IN :ids").bindparams(
                sa.bindparam("ids", expanding=True)
            ),
            {"ids": ids},
        )
        .scalars()
        .all()
    )
    for record_type, record_ids in (("contact", ids), ("subscriber", profiles)):
        if not record_ids:
            continue
        entries = conn.execute(
            sa.text(
                "SELECT id, record_id, changes FROM audit_entry"
                " WHERE record_type = :type AND record_id IN :ids"
            ).bindparams(sa.bindparam("ids", expanding=True)),
            {"type": record_type, "ids": record_ids},
        ).all()
        for entry_id, record_id, changes in entries:
            if isinstance(changes, str):
                changes = json.loads(changes)
            scrubbed = {
                field: (
                    [None if value is None else ERASED for value in values]
                    if field in PERSONAL[record_type]
                    else values
                )
                for field, values in (changes or {}).items()
            }
            conn.execute(
                sa.text(
                    "UPDATE audit_entry SET changes = :changes, record_label = :label"
                    " WHERE id = :id"
                ).bindparams(sa.bindparam("changes", type_=sa.JSON())),
                {"changes": scrubbed, "label": f"#{record_id}", "id": entry_id},
            )


def downgrade() -> None:
    # Erased data cannot come back.
    pass
