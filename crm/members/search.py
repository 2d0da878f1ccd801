"""Search as you type over names, orgnr, email and phone, fast at 100,000 rows.

Each company and contact owns a set of lowercase word terms in `search_term`; a query
word matches a record when some term starts with it (an index range scan on both
SQLite and PostgreSQL, where `LIKE '%…%'` would read the whole table). Terms are kept
current by one session listener, so no view has to remember to update them.

Terms and typed words are folded the same way (`fold`): Norwegian letters as people
type them without a Norwegian keyboard (ø/o/oe, å/a/aa, æ/ae/a) and accents dropped,
so "Solor", "soloer" and "Solør" are one word. A contact's terms include its company's
name, so "kari solør" finds Kari at Solør Bruk; renaming a company reindexes its
contacts.
"""

import re
import unicodedata

from sqlalchemy import delete, event, insert, inspect, intersect, select
from sqlalchemy.orm import Session

from crm.members.models import Company, Contact, SearchTerm

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_MAX_TERM = 254
# Digits, spaces, + and - only: a phone number or orgnr typed with separators.
_NUMBER_QUERY = re.compile(r"^[\d\s+\-.()]+$")

_INDEXED_FIELDS = {
    Company: ("name", "orgnr"),
    Contact: ("first_name", "last_name", "email", "phone", "company_id"),
}

_LETTERS = str.maketrans({"æ": "a", "ø": "o", "å": "a", "ä": "a", "ö": "o", "ß": "ss"})
# Two-letter spellings of æ, ø and å, and the å of old names (Aasen, Glaamdal).
_DIGRAPHS = re.compile(r"ae|oe|aa")


def fold(text: str) -> str:
    """A word as it is indexed and searched: lower case, æ/ø/å and their two-letter
    spellings folded to a/o/a, accents dropped ("Glåmdal", "Glaamdal", "glamdal" →
    "glamdal"; "Bærekraft", "Baerekraft" → "barekraft")."""
    text = text.casefold().translate(_LETTERS)
    while True:  # until nothing changes ("aae" → "ae" → "a"): folding twice is folding once
        folded = _DIGRAPHS.sub(lambda m: m.group(0)[0], text)
        if folded == text:
            break
        text = folded
    if not text.isascii():
        decomposed = unicodedata.normalize("NFKD", text)
        text = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return text


def _words(text: str | None) -> set[str]:
    return {fold(w) for w in _WORD.findall(text or "")}


# Organisation forms in company names: on every contact they would only bloat the index.
_ORG_FORM_WORDS = frozenset({"as", "asa", "ans", "da", "sa", "ba", "enk", "nuf", "iks", "kf"})


def terms_for(record, company_name: str | None = None) -> set[str]:
    """All terms a record can be found by (a contact's include `company_name`, its
    company's name, when given)."""
    terms: set[str] = set()
    if isinstance(record, Company):
        terms |= _words(record.name)
        if record.orgnr:
            terms.add(record.orgnr)
    else:
        terms |= _words(record.first_name) | _words(record.last_name)
        terms |= _words(company_name) - _ORG_FORM_WORDS
        if record.email:
            email = fold(record.email)
            local, _, domain = email.partition("@")
            terms |= {email, local, domain} | _words(local) | _words(domain)
        if record.phone:
            digits = record.phone.lstrip("+")
            terms.add(digits)
            if record.phone.startswith("+47"):
                terms.add(digits[2:])  # the 8-digit national number people type
    return {t[:_MAX_TERM] for t in terms if t}


def query_words(query: str) -> list[str]:
    """The words of a typed query; a number typed with spaces counts as one word."""
    query = (query or "").strip()[:200]
    if _NUMBER_QUERY.match(query):
        digits = re.sub(r"\D", "", query)
        if digits.startswith("00"):
            digits = digits[2:]
        return [digits] if digits else []
    words = [fold(w) for w in query.split()]
    # An email typed in full is one term; otherwise split on punctuation.
    result = []
    for word in words:
        result.extend([word] if "@" in word else _WORD.findall(word))
    return [w[:_MAX_TERM] for w in result if w][:8]


def matching_ids(record_type: str, query: str):
    """A subquery of ids whose terms cover every word of `query` (None: no filter)."""
    words = query_words(query)
    if not words:
        return None
    selects = [
        select(SearchTerm.record_id).where(
            SearchTerm.record_type == record_type,
            SearchTerm.term >= word,
            SearchTerm.term < word + "\U0010ffff",
        )
        for word in words
    ]
    return selects[0] if len(selects) == 1 else intersect(*selects)


def _needs_reindex(session: Session, obj) -> bool:
    if obj in session.new:
        return True
    state = inspect(obj)
    return any(state.attrs[f].history.has_changes() for f in _INDEXED_FIELDS[type(obj)])


def _company_names(connection, company_ids: set[int]) -> dict[int, str]:
    if not company_ids:
        return {}
    return dict(
        connection.execute(
            select(Company.id, Company.name).where(Company.id.in_(list(company_ids)))
        ).all()
    )


@event.listens_for(Session, "after_flush")
def _reindex(session: Session, flush_context) -> None:
    changed = [
        obj
        for obj in list(session.new) + list(session.dirty)
        if type(obj) in _INDEXED_FIELDS and _needs_reindex(session, obj)
    ]
    deleted = [obj for obj in session.deleted if type(obj) in _INDEXED_FIELDS]
    if not changed and not deleted:
        return
    connection = session.connection()
    # Contacts whose company was renamed carry the new name in their terms.
    renamed = [
        c.id
        for c in changed
        if isinstance(c, Company) and c not in session.new and inspect(c).attrs.name.history.added
    ]
    followers = []
    changed_contacts = {o.id for o in changed if isinstance(o, Contact)}
    if renamed:
        followers = [
            row
            for row in connection.execute(
                select(
                    Contact.id,
                    Contact.first_name,
                    Contact.last_name,
                    Contact.email,
                    Contact.phone,
                    Contact.company_id,
                ).where(Contact.company_id.in_(renamed))
            )
            if row.id not in changed_contacts
        ]
    records = [(obj.__tablename__, obj.id) for obj in changed + deleted]
    records += [("contact", row.id) for row in followers]
    for record_type, record_id in records:
        connection.execute(
            delete(SearchTerm).where(
                SearchTerm.record_type == record_type, SearchTerm.record_id == record_id
            )
        )
    names = _company_names(
        connection,
        {o.company_id for o in changed if isinstance(o, Contact) and o.company_id}
        | {row.company_id for row in followers},
    )
    rows = []
    for obj in changed:
        company_name = names.get(obj.company_id) if isinstance(obj, Contact) else None
        rows.extend(
            {"record_type": obj.__tablename__, "record_id": obj.id, "term": term}
            for term in terms_for(obj, company_name)
        )
    for row in followers:
        rows.extend(
            {"record_type": "contact", "record_id": row.id, "term": term}
            for term in terms_for(row, names.get(row.company_id))
        )
    if rows:
        connection.execute(insert(SearchTerm), rows)
