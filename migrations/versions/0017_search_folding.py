"""search terms rebuilt: Norwegian letters folded (ø/o/oe, å/a/aa, æ/ae/a) and contacts
findable by their company's name

Revision ID: 0017_search_folding
Revises: 0016_fee_rules

"""
from types import SimpleNamespace

from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017_search_folding'
down_revision = '0016_fee_rules'
branch_labels = None
depends_on = None

CHUNK = 5000


def _insert(bind, rows):
    table = sa.table(
        "search_term",
        sa.column("record_type", sa.String),
        sa.column("term", sa.String),
        sa.column("record_id", sa.Integer),
    )
    for start in range(0, len(rows), CHUNK):
        bind.execute(table.insert(), rows[start : start + CHUNK])


def upgrade():
    # The rule lives in the app (one place); the migration only applies it to old rows.
    from crm.members.models import Company
    from crm.members.search import terms_for

    bind = op.get_bind()
    bind.execute(sa.text("DELETE FROM search_term"))
    names = {}
    rows = []
    for company_id, name, orgnr in bind.execute(sa.text("SELECT id, name, orgnr FROM company")):
        names[company_id] = name
        shim = Company(name=name, orgnr=orgnr)
        rows.extend(
            {"record_type": "company", "record_id": company_id, "term": t} for t in terms_for(shim)
        )
    _insert(bind, rows)
    rows = []
    contacts = bind.execute(
        sa.text("SELECT id, first_name, last_name, email, phone, company_id FROM contact")
    )
    for contact_id, first, last, email, phone, company_id in contacts:
        person = SimpleNamespace(first_name=first, last_name=last, email=email, phone=phone)
        rows.extend(
            {"record_type": "contact", "record_id": contact_id, "term": t}
            for t in terms_for(person, names.get(company_id))
        )
        if len(rows) > 50_000:
            _insert(bind, rows)
            rows = []
    _insert(bind, rows)


def downgrade():
    pass  # folded terms still find everything the old ones did
