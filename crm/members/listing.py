"""The company and contact lists: filters from the query string, search, order, pages.

Built to stay fast at 20,000 companies and 100,000 contacts (bench/search.py):
orders an index can serve, search conditions chosen by how broad the typed words
are, deep pages that fetch their ids first, and counts that stop at a cap.
"""

import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields

from flask_sqlalchemy.pagination import SelectPagination
from sqlalchemy import Select, String, any_, event, exists, func, inspect, select
from sqlalchemy.orm import Session, load_only, selectinload

from crm.extensions import db
from crm.members.models import (
    CONTACT_ROLES,
    MEMBERSHIP_STATUSES,
    ROLE_COLUMNS,
    Company,
    Contact,
    Network,
    SearchTerm,
    company_network,
    contact_network,
)
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.members.search import matching_ids, query_words
from crm.numbers import is_digits
from crm.pagination import parse_page  # noqa: F401  (re-exported for the routes)
from crm.urls import MAX_ID, clean_query  # noqa: F401  (re-exported for the members area)

# Lists count their rows only up to a cap and then say "more than …": counting 100,000
# rows is most of the time of a list page on PostgreSQL, and nobody pages that far.
# A search stops sooner: past 1,000 hits people type another letter.
COUNT_CAP = 10_000
SEARCH_COUNT_CAP = 1_000
# A typed word is "broad" when its prefix matches more search terms than a twentieth
# of the records (and at least this many). See search_conditions.
MIN_BROAD_SEARCH_TERMS = 2_000
# Search terms one record can have for one prefix (first and last name, email, its
# parts): a broad word with this many times SEARCH_COUNT_CAP terms surely has more hits.
MAX_TERMS_PER_RECORD = 8
# From this offset on, a page fetches its ids from the index first (deferred join).
DEFERRED_JOIN_OFFSET = 1_000


def parse_id(value) -> int | None:
    """A positive database id from untrusted input, or None."""
    text = str(value or "").strip()
    if not is_digits(text) or len(text) > 10:
        return None
    number = int(text)
    return number if 0 < number <= MAX_ID else None


def _choice(value, allowed) -> str:
    text = str(value or "")
    return text if text in allowed else ""


def _municipality(value) -> str:
    text = str(value or "")
    return text if re.fullmatch(r"\d{4}", text) else ""


def _sort_key(value, allowed: Mapping, default: str) -> str:
    text = str(value or "")
    return text if text.lstrip("-") in allowed else default


def _ordered(stmt: Select, sort: str, columns: Mapping, tiebreak, few: bool = False) -> Select:
    """ORDER BY the sort key's columns (descending for "-key"), then `tiebreak`.

    Plain columns in the same direction throughout, so an index can serve the order
    (a page deep in 100,000 rows is then a short index scan, not a sort of them all).
    With `few` (a selective search), text is compared case-folded instead, which no
    index serves: the database then sorts the few matches rather than walk the whole
    index looking for them (PostgreSQL would, not knowing that the "Hansen"s all sit
    together in the middle). Unknown values (NULL) go last either way.
    """
    descending = sort.startswith("-")
    order = []
    for column in columns[sort.lstrip("-")]:
        if few and isinstance(column.type, String):
            column = func.lower(column)
        term = column.desc() if descending else column.asc()
        order.append(term.nulls_last() if getattr(column, "nullable", True) else term)
    return stmt.order_by(*order, tiebreak.desc() if descending else tiebreak.asc())


# -- search ------------------------------------------------------------------------


@dataclass
class Search:
    """The words of a typed search, and how broad they are."""

    words: list[str]
    broad: bool = False  # walk the list instead of collecting the matches
    many: bool = False  # certainly more hits than SEARCH_COUNT_CAP


_SEARCHED_MODELS = {"company": Company, "contact": Contact}


def _term_count(record_type: str, word: str, cap: int) -> int:
    """How many search terms start with `word`, counted up to `cap` + 1."""
    capped = matching_ids(record_type, word).limit(cap + 1).subquery()
    return db.session.scalar(select(func.count()).select_from(capped))


def find(record_type: str, text: str) -> Search:
    """The typed words that can match, and how broad they are."""
    words = [
        w for w in dict.fromkeys(query_words(text)) if matching_ids(record_type, w) is not None
    ]
    if not words:
        return Search(words)
    # The highest id is the size of the register near enough, from one index lookup.
    size = db.session.scalar(select(func.max(_SEARCHED_MODELS[record_type].id))) or 0
    threshold = max(MIN_BROAD_SEARCH_TERMS, size // 20)
    certain = MAX_TERMS_PER_RECORD * SEARCH_COUNT_CAP
    counts = [_term_count(record_type, w, max(threshold, certain)) for w in words]
    return Search(
        words,
        broad=all(n > threshold for n in counts),
        # Two broad words may still have few hits in common: only one word is certain.
        many=len(words) == 1 and counts[0] > certain,
    )


def search_conditions(column, record_type: str, search: Search, counting: bool = False) -> list:
    """Conditions on an id column: the record's search terms cover every word.

    A selective search collects its matches and sorts them (`id IN (matching ids)`).
    For a broad one, collecting and sorting tens of thousands of matches is the slow
    part, and matches are then dense anywhere in the list: each word becomes a
    correlated EXISTS and the database walks the list in its order until the page is
    full. (Not for merely common words like "hansen": their matches cluster in name
    order, and the walk would pass half the register first.) One condition per word
    also sidesteps `matching_ids`' chained INTERSECT, which SQLite refuses from the
    third word on.

    Counting has no order to walk in: a broad search is counted with a plain IN, whose
    cost grows with the number of matches but never explodes.
    """
    postgresql = db.session.get_bind().dialect.name == "postgresql"
    conditions = []
    for word in search.words:
        ids = matching_ids(record_type, word)
        if search.broad and not counting:
            conditions.append(exists(ids.where(SearchTerm.record_id == column)))
        elif search.broad:
            conditions.append(column.in_(ids))
        elif postgresql:
            # PostgreSQL would rather hash the whole table against the matches; given
            # `= ANY(ARRAY(matches))` it looks the few ids up by primary key instead.
            conditions.append(column == any_(func.array(ids.scalar_subquery())))
        else:
            conditions.append(column.in_(ids))
    return conditions


# -- lists and pages ---------------------------------------------------------------


@dataclass
class ListQuery:
    """What a list page runs.

    `rows`: the records in order. `ids`: the same, ids only (for deep pages). `count`:
    ids to count, up to `cap`. `too_many`: a broad search, certainly beyond the cap,
    not counted at all.
    """

    rows: Select
    ids: Select
    count: Select
    cap: int
    too_many: bool = False


class ListPagination(SelectPagination):
    """Flask-SQLAlchemy's pagination, with a deferred join for deep pages and a capped
    count. `more_than` is the cap when the total went past it (else 0)."""

    def _query_items(self) -> list:
        query: ListQuery = self._query_args["query"]
        session = self._query_args["session"]
        offset = self._query_offset
        if offset < DEFERRED_JOIN_OFFSET:
            stmt = query.rows.limit(self.per_page).offset(offset)
        else:
            # Skipping thousands of full rows is slow; skipping index entries is not.
            page_ids = query.ids.limit(self.per_page).offset(offset)
            model = query.rows.column_descriptions[0]["entity"]
            stmt = query.rows.where(model.id.in_(page_ids))
        return list(session.execute(stmt).unique().scalars())

    def _query_count(self) -> int:
        query: ListQuery = self._query_args["query"]
        self.more_than = 0
        if query.too_many:
            total = query.cap + 1
        else:
            capped = query.count.limit(query.cap + 1).subquery()
            total = self._query_args["session"].scalar(select(func.count()).select_from(capped))
        if total > query.cap:
            self.more_than = query.cap
        return total


def paginate(query: ListQuery, page: int, per_page: int) -> ListPagination:
    """One page of a list; `.total` counted up to the query's cap."""
    return ListPagination(
        query=query,
        session=db.session(),
        page=page,
        per_page=per_page,
        max_per_page=per_page,
        error_out=False,
    )


class _Filters:
    def is_filtered(self) -> bool:
        """True when anything but the order narrows or widens the list."""
        return any(
            getattr(self, f.name) not in ("", None, False) for f in fields(self) if f.name != "sort"
        )

    def as_args(self) -> dict:
        """The filters as query arguments (for export links), without empty ones."""
        args = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in ("", None, False):
                args[f.name] = "1" if value is True else value
        return args


# -- companies ---------------------------------------------------------------------


@dataclass
class CompanyFilters(_Filters):
    """What the company list is narrowed to, read from the query string."""

    q: str = ""
    municipality: str = ""
    network: int | None = None
    status: str = ""
    role: str = ""
    archived: bool = False
    sort: str = "name"

    @classmethod
    def from_args(cls, args: Mapping) -> "CompanyFilters":
        return cls(
            q=clean_query(args.get("q")),
            municipality=_municipality(args.get("municipality")),
            network=parse_id(args.get("network")),
            status=_choice(args.get("status"), MEMBERSHIP_STATUSES),
            role=_choice(args.get("role"), CONTACT_ROLES),
            archived=args.get("archived") == "1",
            sort=_sort_key(args.get("sort"), COMPANY_SORTS, "name"),
        )


COMPANY_SORTS = {
    "name": (Company.name,),
    "orgnr": (Company.orgnr,),
    "municipality": (Company.municipality_name, Company.municipality_number),
    "employees": (Company.employees,),
    "status": (Company.membership_status,),
    "member_since": (Company.member_since,),
}


def _contacts_of_company(*conditions):
    """EXISTS: the company has a current contact meeting `conditions`."""
    return exists(
        select(Contact.id).where(
            Contact.company_id == Company.id, Contact.archived_at.is_(None), *conditions
        )
    )


def _company_conditions(filters: CompanyFilters) -> list:
    conditions = []
    if not filters.archived:
        conditions.append(Company.archived_at.is_(None))
    if filters.municipality:
        conditions.append(Company.municipality_number == filters.municipality)
    if filters.status:
        conditions.append(Company.membership_status == filters.status)
    if filters.network:
        # A current contact in the network: the pairs the database keeps (migration 0039).
        conditions.append(
            exists().where(
                company_network.c.company_id == Company.id,
                company_network.c.network_id == filters.network,
            )
        )
    if filters.role:
        role_column = getattr(Contact, ROLE_COLUMNS[filters.role])
        conditions.append(_contacts_of_company(role_column.is_(True), Contact.active.is_(True)))
    return conditions


# What the list tables show. The rest (notes, addresses, timestamps) is never read there;
# raiseload makes a template that starts to need another column fail in the tests
# instead of quietly loading it row by row. (Built when queried: load_only configures
# the mappers, which must not happen while models are still being imported.)
def _company_table_columns():
    return load_only(
        Company.id,
        Company.name,
        Company.orgnr,
        Company.nace_text,
        Company.employees,
        Company.municipality_number,
        Company.municipality_name,
        Company.membership_status,
        Company.member_since,
        Company.bankrupt,
        Company.winding_up,
        Company.forced_dissolution,
        Company.deleted_in_registry_on,
        Company.archived_at,
        raiseload=True,
    )


def company_query(filters: CompanyFilters, *, table: bool = True) -> ListQuery:
    """The companies matching `filters`, in the chosen order, and how to count them.

    With `table`, rows carry only the columns the list page shows.
    """
    search = find("company", filters.q)
    conditions = _company_conditions(filters)
    shown = conditions + search_conditions(Company.id, "company", search)
    few = bool(search.words) and not search.broad

    def ordered(*columns) -> Select:
        stmt = select(*columns).where(*shown)
        return _ordered(stmt, filters.sort, COMPANY_SORTS, Company.id, few=few)

    rows, ids = ordered(Company), ordered(Company.id)
    if table:
        rows = rows.options(_company_table_columns())
    if not filters.q:
        return ListQuery(rows, ids, select(Company.id).where(*conditions), cap=COUNT_CAP)
    narrowed = filters.municipality or filters.status or filters.network or filters.role
    return ListQuery(
        rows,
        ids,
        select(Company.id).where(
            *conditions, *search_conditions(Company.id, "company", search, counting=True)
        ),
        cap=SEARCH_COUNT_CAP,
        too_many=search.many and not narrowed,
    )


def company_select(filters: CompanyFilters) -> Select:
    """The companies matching `filters`, in the chosen order."""
    return company_query(filters, table=False).rows


# The municipality dropdown reads every company (6-9 ms at 20,000), yet its answer
# changes only when companies are added or move. Kept per process and engine, keyed by
# the highest company id (one index lookup: a new company, by any path, shows at once);
# an ORM commit that moves or deletes a company clears it, and the age limit bounds how
# long a bulk update from another process (an import in the worker) takes to show.
MUNICIPALITY_CACHE_SECONDS = 60
_municipality_cache: dict[str, tuple[float, int | None, list[tuple[str, str]]]] = {}


def municipality_choices() -> list[tuple[str, str]]:
    """The cluster's seven municipalities first, then the others present in the data."""
    key = str(db.engine.url)
    newest = db.session.scalar(select(func.max(Company.id)))
    cached = _municipality_cache.get(key)
    if cached and cached[1] == newest and time.monotonic() - cached[0] < MUNICIPALITY_CACHE_SECONDS:
        return list(cached[2])
    choices = _municipality_choices()
    _municipality_cache[key] = (time.monotonic(), newest, choices)
    return list(choices)


def _municipality_choices() -> list[tuple[str, str]]:
    choices = list(CLUSTER_MUNICIPALITIES.items())
    others = db.session.execute(
        select(Company.municipality_number, func.max(Company.municipality_name))
        .where(
            Company.municipality_number != "",
            Company.municipality_number.not_in(list(CLUSTER_MUNICIPALITIES)),
        )
        .group_by(Company.municipality_number)
    ).all()
    choices += sorted(((n, name or n) for n, name in others), key=lambda c: c[1])
    return choices


_MUNICIPALITY_FIELDS = ("municipality_number", "municipality_name")


@event.listens_for(Session, "after_flush")
def _note_municipality_changes(session: Session, flush_context) -> None:
    if any(
        isinstance(obj, Company)
        and (
            obj in session.deleted
            or any(inspect(obj).attrs[f].history.has_changes() for f in _MUNICIPALITY_FIELDS)
        )
        for obj in list(session.dirty) + list(session.deleted)
    ):
        session.info["municipalities_changed"] = True


@event.listens_for(Session, "after_commit")
def _forget_municipality_choices(session: Session) -> None:
    if session.info.pop("municipalities_changed", False):
        _municipality_cache.clear()


@event.listens_for(Session, "after_soft_rollback")
def _keep_municipality_choices(session: Session, previous_transaction) -> None:
    session.info.pop("municipalities_changed", None)


# -- contacts ----------------------------------------------------------------------


@dataclass
class ContactFilters(_Filters):
    """What the contact list is narrowed to, read from the query string."""

    q: str = ""
    company: str = ""
    network: int | None = None
    role: str = ""
    municipality: str = ""
    state: str = ""
    # Newsletter consent: a topic's slug (active consent now) or "any" topic.
    topic: str = ""
    # "company": people at a company; "none": without one (public subscribers mostly).
    kind: str = ""
    archived: bool = False
    sort: str = "name"

    @classmethod
    def from_args(cls, args: Mapping) -> "ContactFilters":
        return cls(
            q=clean_query(args.get("q")),
            company=clean_query(args.get("company"))[:100],
            network=parse_id(args.get("network")),
            role=_choice(args.get("role"), CONTACT_ROLES),
            municipality=_municipality(args.get("municipality")),
            state=_choice(args.get("state"), ("active", "left")),
            topic=_topic_slug(args.get("topic")),
            kind=_choice(args.get("kind"), CONTACT_KINDS),
            archived=args.get("archived") == "1",
            sort=_sort_key(args.get("sort"), CONTACT_SORTS, "name"),
        )


CONTACT_KINDS = ("company", "none")
ANY_TOPIC = "any"


def _topic_slug(value) -> str:
    """A topic slug's shape (the list then matches nobody when no topic has it)."""
    text = str(value or "")
    return text if re.fullmatch(r"[a-z0-9][a-z0-9-]{0,99}", text) else ""


def _consent_condition(slug: str):
    """The contact has active consent now for the topic (or for any topic), read from
    the consent ledger's current state the way the newsletter audience reads it."""
    from crm.subscriptions.ledger import active_consent_exists, contacts_with_active_consent
    from crm.subscriptions.models import Topic

    if slug == ANY_TOPIC:
        return active_consent_exists(Contact.id, db.session.scalars(select(Topic.slug)).all())
    return Contact.id.in_(contacts_with_active_consent(slug))


CONTACT_SORTS = {
    "name": (Contact.last_name, Contact.first_name),
    "company": (Company.name,),
    "email": (Contact.email,),
}


def _contact_conditions(filters: ContactFilters) -> list:
    conditions = []
    if not filters.archived:
        conditions.append(Contact.archived_at.is_(None))
    if filters.company:
        conditions += search_conditions(
            Contact.company_id, "company", find("company", filters.company)
        )
    if filters.municipality:
        conditions.append(
            Contact.company_id.in_(
                select(Company.id).where(Company.municipality_number == filters.municipality)
            )
        )
    if filters.network:
        conditions.append(
            Contact.id.in_(
                select(contact_network.c.contact_id).where(
                    contact_network.c.network_id == filters.network
                )
            )
        )
    if filters.role:
        conditions.append(getattr(Contact, ROLE_COLUMNS[filters.role]).is_(True))
    if filters.state:
        conditions.append(Contact.active.is_(filters.state == "active"))
    if filters.topic:
        conditions.append(_consent_condition(filters.topic))
    if filters.kind:
        having = filters.kind == "company"
        conditions.append(
            Contact.company_id.is_not(None) if having else Contact.company_id.is_(None)
        )
    return conditions


def _contact_table_columns() -> tuple:
    """What the contact table shows (see _company_table_columns), with companies and networks."""
    return (
        load_only(
            Contact.id,
            Contact.first_name,
            Contact.last_name,
            Contact.email,
            Contact.phone,
            Contact.job_title,
            Contact.company_id,
            Contact.is_primary_contact,
            Contact.is_invoice_contact,
            Contact.is_board_representative,
            Contact.active,
            Contact.archived_at,
            raiseload=True,
        ),
        selectinload(Contact.company).load_only(
            Company.id,
            Company.name,
            Company.municipality_number,
            Company.municipality_name,
            raiseload=True,
        ),
        selectinload(Contact.networks).load_only(Network.id, Network.name, raiseload=True),
    )


def contact_query(filters: ContactFilters, *, table: bool = True) -> ListQuery:
    """The contacts matching `filters` (companies and networks loaded), and how to count.

    With `table`, rows carry only the columns the list page shows.
    """
    search = find("contact", filters.q)
    conditions = _contact_conditions(filters)
    shown = conditions + search_conditions(Contact.id, "contact", search)

    def ordered(*columns) -> Select:
        stmt = select(*columns)
        if filters.sort.lstrip("-") == "company":
            stmt = stmt.outerjoin(Company, Contact.company_id == Company.id)
        few = bool(search.words) and not search.broad
        return _ordered(stmt.where(*shown), filters.sort, CONTACT_SORTS, Contact.id, few=few)

    rows = ordered(Contact)
    if table:
        rows = rows.options(*_contact_table_columns())
    else:
        rows = rows.options(selectinload(Contact.company), selectinload(Contact.networks))
    ids = ordered(Contact.id)
    if not (filters.q or filters.company):
        return ListQuery(rows, ids, select(Contact.id).where(*conditions), cap=COUNT_CAP)
    narrowed = (
        filters.company
        or filters.municipality
        or filters.network
        or filters.role
        or filters.topic
        or filters.kind
    )
    return ListQuery(
        rows,
        ids,
        select(Contact.id).where(
            *conditions, *search_conditions(Contact.id, "contact", search, counting=True)
        ),
        cap=SEARCH_COUNT_CAP,
        too_many=search.many and not (narrowed or filters.state),
    )


def contact_select(filters: ContactFilters) -> Select:
    """The contacts matching `filters`, in the chosen order (companies and networks loaded)."""
    return contact_query(filters, table=False).rows


def contact_or_company_match(q: str, search: Search | None = None):
    """Contacts whose own search terms, or their company's, cover every typed word
    ("kari solør" finds Kari at Solør Bruk). For short lists (a network's members);
    the contact list uses contact_query."""
    from sqlalchemy import and_, or_, true

    search = search or find("contact", q)
    words = list(dict.fromkeys(query_words(q)))
    if not words:
        return true()
    conditions = []
    for word in words:
        contact_ids = matching_ids("contact", word)
        company_ids = matching_ids("company", word)
        if contact_ids is None or company_ids is None:
            continue  # e.g. punctuation alone: no condition, as in the lists
        conditions.append(or_(Contact.id.in_(contact_ids), Contact.company_id.in_(company_ids)))
    return and_(*conditions) if conditions else true()
