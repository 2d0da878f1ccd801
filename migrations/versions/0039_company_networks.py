"""members: the networks each company takes part in through its current contacts, kept

Revision ID: 0039_company_networks
Revises: 0038_ledger_fillfactor_half
Create Date: 2026-12-07 21:05:00

The results report counts member companies per network and whether a company is
active, which includes "has a current contact in a network". Counted from the
memberships (182,000 joined to 200,000 contacts in the benchmark's scale set) that took
115–240 ms on each first view after a change. Kept here instead, by triggers on
`contact_network` and `contact`, so no writer (form, merge, import, bulk COPY, a
cascade) can forget it:

- `company_network`: one row per (company, network) with at least one current
  (not archived) contact of the company in the network;
- `company.in_network`: whether the company has any such row. Derivable from the
  table, kept for speed: the report reads it for each of 20,000 companies, where a look
  into `company_network` per company cost 25–30 ms.

Beside them an index of the company columns the report reads (membership, its dates,
municipality, size, industry, `in_network`): its three company counts read that
(1.3 MB) instead of the table (10 MB in the scale set). With both, the members part
took 23–40 ms instead of 90–140, the networks part 23–40 instead of 215–250, joined and
resigned 5–7 instead of 34 (this machine, PostgreSQL, median of 9).

Each trigger recounts the companies a change touched, from the contacts and
memberships as they now are (the one rule, written once per dialect below), so the
order in which cascades and triggers run does not matter. On PostgreSQL the recount
first locks those companies' rows (FOR NO KEY UPDATE, which contacts' foreign-key
checks do not wait for): two transactions changing the same company's contacts recount
one after the other, the second from what the first committed.
"""

import sqlalchemy as sa
from alembic import op

revision = "0039_company_networks"
down_revision = "0038_ledger_fillfactor_half"
branch_labels = None
depends_on = None

# The companies a change touched, as an integer array, per PostgreSQL trigger: the
# memberships' contacts (a deleted contact is gone from `contact`: its company is
# recounted by the contact's own trigger), a contact's old and new company.
PG_TRIGGERS = {
    "company_network_on_membership_insert": (
        "AFTER INSERT ON contact_network REFERENCING NEW TABLE AS changed",
        "SELECT array_agg(DISTINCT c.company_id) FROM changed m "
        "JOIN contact c ON c.id = m.contact_id WHERE c.company_id IS NOT NULL",
    ),
    "company_network_on_membership_delete": (
        "AFTER DELETE ON contact_network REFERENCING OLD TABLE AS changed",
        "SELECT array_agg(DISTINCT c.company_id) FROM changed m "
        "JOIN contact c ON c.id = m.contact_id WHERE c.company_id IS NOT NULL",
    ),
    "company_network_on_membership_update": (
        "AFTER UPDATE ON contact_network REFERENCING OLD TABLE AS before NEW TABLE AS after",
        "SELECT array_agg(DISTINCT c.company_id) FROM contact c WHERE c.company_id IS NOT NULL "
        "AND c.id IN (SELECT contact_id FROM before UNION SELECT contact_id FROM after)",
    ),
    "company_network_on_contact_update": (
        "AFTER UPDATE ON contact REFERENCING OLD TABLE AS before NEW TABLE AS after",
        "SELECT array_agg(DISTINCT x.company_id) FROM before b JOIN after a ON a.id = b.id, "
        "LATERAL (VALUES (b.company_id), (a.company_id)) x(company_id) "
        "WHERE x.company_id IS NOT NULL AND (b.company_id IS DISTINCT FROM a.company_id "
        "OR (b.archived_at IS NULL) <> (a.archived_at IS NULL))",
    ),
    "company_network_on_contact_delete": (
        "AFTER DELETE ON contact REFERENCING OLD TABLE AS changed",
        "SELECT array_agg(DISTINCT company_id) FROM changed WHERE company_id IS NOT NULL",
    ),
}

# The same rule on SQLite, per row: {company} is an expression for one company's id.
SQLITE_RECOUNT = """
    DELETE FROM company_network WHERE company_id = {company};
    INSERT OR IGNORE INTO company_network (company_id, network_id)
        SELECT c.company_id, m.network_id FROM contact c
        JOIN contact_network m ON m.contact_id = c.id
        WHERE c.company_id = {company} AND c.archived_at IS NULL;
    UPDATE company SET in_network = EXISTS (
        SELECT 1 FROM company_network WHERE company_id = {company}
    ) WHERE id = {company};
"""
SQLITE_TRIGGERS = {
    "company_network_on_membership_insert": (
        "AFTER INSERT ON contact_network",
        ["(SELECT company_id FROM contact WHERE id = NEW.contact_id)"],
    ),
    "company_network_on_membership_delete": (
        "AFTER DELETE ON contact_network",
        ["(SELECT company_id FROM contact WHERE id = OLD.contact_id)"],
    ),
    "company_network_on_membership_update": (
        "AFTER UPDATE ON contact_network",
        [
            "(SELECT company_id FROM contact WHERE id = OLD.contact_id)",
            "(SELECT company_id FROM contact WHERE id = NEW.contact_id)",
        ],
    ),
    "company_network_on_contact_update": (
        "AFTER UPDATE OF company_id, archived_at ON contact",
        ["OLD.company_id", "NEW.company_id"],
    ),
    "company_network_on_contact_delete": ("AFTER DELETE ON contact", ["OLD.company_id"]),
}

# The results report's company counts read only these columns (crm.reports.services).
REPORT_COLUMNS = (
    "membership_status", "member_since", "resigned_on", "municipality_number", "employees",
    "nace_code", "in_network", "id",
)  # fmt: skip

PG_RECOUNT = """
CREATE FUNCTION company_network_recount(companies integer[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    IF companies IS NULL THEN
        RETURN;
    END IF;
    PERFORM 1 FROM company WHERE id = ANY(companies) ORDER BY id FOR NO KEY UPDATE;
    DELETE FROM company_network WHERE company_id = ANY(companies);
    INSERT INTO company_network (company_id, network_id)
        SELECT DISTINCT c.company_id, m.network_id FROM contact c
        JOIN contact_network m ON m.contact_id = c.id
        WHERE c.company_id = ANY(companies) AND c.archived_at IS NULL;
    UPDATE company SET in_network = EXISTS (
        SELECT 1 FROM company_network n WHERE n.company_id = company.id
    ) WHERE id = ANY(companies)
      AND in_network IS DISTINCT FROM EXISTS (
        SELECT 1 FROM company_network n WHERE n.company_id = company.id);
END $$
"""


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.create_table(
        "company_network",
        sa.Column("company_id", sa.Integer(), nullable=False),
        sa.Column("network_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["company_id"], ["company.id"], name=op.f("fk_company_network_company_id_company"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["network_id"], ["network.id"], name=op.f("fk_company_network_network_id_network"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("company_id", "network_id", name=op.f("pk_company_network")),
    )  # fmt: skip
    op.create_index(
        "ix_company_network_network_company", "company_network", ["network_id", "company_id"]
    )
    with op.batch_alter_table("company") as batch_op:
        batch_op.add_column(
            sa.Column("in_network", sa.Boolean(), nullable=False, server_default=sa.false())
        )
    op.execute(
        "INSERT INTO company_network (company_id, network_id) "
        "SELECT DISTINCT c.company_id, m.network_id FROM contact c "
        "JOIN contact_network m ON m.contact_id = c.id "
        "WHERE c.company_id IS NOT NULL AND c.archived_at IS NULL"
    )
    op.execute(
        "UPDATE company SET in_network = true WHERE EXISTS "
        "(SELECT 1 FROM company_network n WHERE n.company_id = company.id)"
    )
    op.create_index("ix_company_report", "company", list(REPORT_COLUMNS))
    if postgresql:
        op.execute(PG_RECOUNT)
        for name, (when, companies) in PG_TRIGGERS.items():
            op.execute(
                f"CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"PERFORM company_network_recount(({companies})); RETURN NULL; END $$"
            )
            op.execute(f"CREATE TRIGGER {name} {when} FOR EACH STATEMENT EXECUTE FUNCTION {name}()")
    else:
        for name, (when, companies) in SQLITE_TRIGGERS.items():
            body = "".join(SQLITE_RECOUNT.format(company=company) for company in companies)
            op.execute(f"CREATE TRIGGER {name} {when} FOR EACH ROW BEGIN {body} END")


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    for name, (when, _companies) in PG_TRIGGERS.items():
        table = when.split(" ON ")[1].split()[0]
        op.execute(f"DROP TRIGGER {name}" + (f" ON {table}" if postgresql else ""))
        if postgresql:
            op.execute(f"DROP FUNCTION {name}()")
    if postgresql:
        op.execute("DROP FUNCTION company_network_recount(integer[])")
    op.drop_index("ix_company_report", table_name="company")
    with op.batch_alter_table("company") as batch_op:
        batch_op.drop_column("in_network")
    op.drop_index("ix_company_network_network_company", table_name="company_network")
    op.drop_table("company_network")
