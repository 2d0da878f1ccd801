"""The rules of follow-ups: creating (one, from an activity, in bulk), finishing, lists,
and who gets which morning digest.

Functions here change the session but never commit: the request or job that calls
them decides. Single changes go through the ORM (the `Audited` listener logs them);
bulk creation writes its rows and their audit entries with crm.audit.bulk_create.
"""

from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import date, timedelta

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from sqlalchemy import Select, case, func, select
from sqlalchemy.orm import selectinload

from crm import audit
from crm.auth.models import User
from crm.bulk import id_in
from crm.extensions import db
from crm.followups.models import FollowUp
from crm.members.listing import parse_id
from crm.members.models import Activity, Company, Contact
from crm.timeutil import today_oslo, utcnow

# What the list can show: open (not done), done, or everything.
STATES = ("open", "done", "all")
STATE_LABELS = {"open": _l("Open"), "done": _l("Done"), "all": _l("All")}
# Due-date windows of the list filter.
DUE_WINDOWS = ("overdue", "today", "week")
DUE_LABELS = {
    "overdue": _l("Overdue"),
    "today": _l("Due today or earlier"),
    "week": _l("Due within a week"),
}
# Quick choices for "when" in the forms: in N days.
DUE_SHORTCUTS = (1, 7, 14, 30)
MAX_WHAT = 300
# The home page shows this many follow-ups; the list has the rest.
HOME_LIMIT = 15


class FollowUpError(ValueError):
    """A rule was broken; the message is fit to show the user."""


def assignable_users() -> list[User]:
    """Active users a follow-up can be assigned to, by name."""
    return list(
        db.session.scalars(
            select(User).where(User.active.is_(True)).order_by(func.lower(User.name), User.email)
        )
    )


def check_followup(what: str, due_on: date | None, assignee: User | None) -> str:
    """The cleaned text of a follow-up; FollowUpError when a field is missing."""
    what = (what or "").strip()
    if not what:
        raise FollowUpError(_("Say what is to be done."))
    if len(what) > MAX_WHAT:
        raise FollowUpError(_("Keep it under %(num)s characters.", num=MAX_WHAT))
    if due_on is None:
        raise FollowUpError(_("Choose a due date."))
    if assignee is None or not assignee.active:
        raise FollowUpError(_("Choose who will do it."))
    return what


def create_followup(
    *,
    what: str,
    due_on: date | None,
    assignee: User | None,
    company: Company | None = None,
    contact: Contact | None = None,
    activity: Activity | None = None,
    user=None,
) -> FollowUp:
    """A follow-up on a company or a contact (whose company it then also shows on)."""
    what = check_followup(what, due_on, assignee)
    if contact is not None and company is None:
        company = contact.company
    if company is None and contact is None:
        raise FollowUpError(_("A follow-up is about a company or a contact."))
    followup = FollowUp(
        what=what,
        due_on=due_on,
        assignee=assignee,
        company=company,
        contact=contact,
        activity=activity,
        created_by=user,
    )
    db.session.add(followup)
    return followup


def mark_done(followup: FollowUp, user) -> None:
    """Done now, by `user` (already done: unchanged)."""
    if followup.done_at is None:
        followup.done_at = utcnow()
        followup.done_by = user


def reopen(followup: FollowUp) -> None:
    followup.done_at = None
    followup.done_by = None


def update_followup(followup: FollowUp, *, what: str, due_on: date | None, assignee) -> None:
    """Change what, when and who."""
    followup.what = check_followup(what, due_on, assignee)
    followup.due_on = due_on
    followup.assignee = assignee


def bulk_create(
    record_type: str,
    record_ids: Sequence[int],
    *,
    what: str,
    due_on: date | None,
    assignee: User | None,
    user=None,
) -> int:
    """One follow-up per company or contact in `record_ids` (each with its audit entry).

    Contacts' follow-ups also show on their company. Returns how many were created.
    """
    what = check_followup(what, due_on, assignee)
    if record_type not in ("company", "contact"):
        raise ValueError(record_type)
    created_at = utcnow()
    base = {
        "what": what,
        "due_on": due_on,
        "assignee_id": assignee.id,
        "created_by_id": user.id if user is not None else None,
        "created_at": created_at,
        "activity_id": None,
        "done_at": None,
        "done_by_id": None,
    }
    rows = []
    if record_type == "company":
        for company_id in record_ids:
            rows.append({**base, "company_id": company_id, "contact_id": None})
        key = "company_id"
    else:
        companies = dict(
            rows_for_ids(select(Contact.id, Contact.company_id), Contact.id, record_ids)
        )
        for contact_id in record_ids:
            rows.append({**base, "contact_id": contact_id, "company_id": companies.get(contact_id)})
        key = "contact_id"
    # The batch's rows are told apart from older ones by their common creation time.
    audit.bulk_create(FollowUp, rows, key=key, scope=("created_at", created_at))
    return len(rows)


ID_CHUNK = 5_000


def rows_for_ids(stmt: Select, column, ids: Sequence[int]) -> list:
    """The rows of `stmt` whose `column` is one of `ids`, read a few thousand ids at a
    time (one array parameter on PostgreSQL, within SQLite's parameter limit)."""
    ids = list(ids)
    rows = []
    for start in range(0, len(ids), ID_CHUNK):
        rows.extend(db.session.execute(stmt.where(id_in(column, ids[start : start + ID_CHUNK]))))
    return rows


# -- lists --------------------------------------------------------------------------


@dataclass
class FollowUpFilters:
    """What the follow-up list is narrowed to, read from the query string."""

    assignee: str = "me"  # "me", "" (everyone) or a user id
    state: str = "open"
    due: str = ""
    company: int | None = None
    contact: int | None = None

    @classmethod
    def from_args(cls, args) -> "FollowUpFilters":
        assignee = str(args.get("assignee", "me") or "")
        if assignee not in ("me", "") and parse_id(assignee) is None:
            assignee = "me"
        state = str(args.get("state") or "open")
        due = str(args.get("due") or "")
        return cls(
            assignee=assignee,
            state=state if state in STATES else "open",
            due=due if due in DUE_WINDOWS else "",
            company=parse_id(args.get("company")),
            contact=parse_id(args.get("contact")),
        )

    def as_args(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}


def followup_select(filters: FollowUpFilters, user, today: date | None = None) -> Select:
    """Follow-ups matching `filters`: the user's own first, then by due date."""
    today = today or today_oslo()
    stmt = select(FollowUp).options(
        selectinload(FollowUp.company),
        selectinload(FollowUp.contact),
        selectinload(FollowUp.assignee),
    )
    if filters.assignee == "me":
        stmt = stmt.where(FollowUp.assignee_id == user.id)
    elif filters.assignee:
        stmt = stmt.where(FollowUp.assignee_id == int(filters.assignee))
    if filters.state == "open":
        stmt = stmt.where(FollowUp.done_at.is_(None))
    elif filters.state == "done":
        stmt = stmt.where(FollowUp.done_at.is_not(None))
    if filters.due == "overdue":
        stmt = stmt.where(FollowUp.due_on < today)
    elif filters.due == "today":
        stmt = stmt.where(FollowUp.due_on <= today)
    elif filters.due == "week":
        stmt = stmt.where(FollowUp.due_on <= today + timedelta(days=7))
    if filters.company:
        stmt = stmt.where(FollowUp.company_id == filters.company)
    if filters.contact:
        stmt = stmt.where(FollowUp.contact_id == filters.contact)
    mine_first = case((FollowUp.assignee_id == user.id, 0), else_=1)
    return stmt.order_by(mine_first, FollowUp.due_on, FollowUp.id)


def due_followups(user, today: date | None = None, limit: int = HOME_LIMIT):
    """Open follow-ups due today or earlier (everyone's, the user's first), and how many."""
    today = today or today_oslo()
    conditions = (FollowUp.done_at.is_(None), FollowUp.due_on <= today)
    mine_first = case((FollowUp.assignee_id == user.id, 0), else_=1)
    items = db.session.scalars(
        select(FollowUp)
        .options(
            selectinload(FollowUp.company).load_only(Company.id, Company.name),
            selectinload(FollowUp.contact).load_only(
                Contact.id, Contact.first_name, Contact.last_name, Contact.email
            ),
            selectinload(FollowUp.assignee),
        )
        .where(*conditions)
        .order_by(mine_first, FollowUp.due_on, FollowUp.id)
        .limit(limit)
    ).all()
    counts = db.session.execute(
        select(
            func.count(),
            func.count(case((FollowUp.assignee_id == user.id, 1))),
            func.count(case((FollowUp.due_on < today, 1))),
        ).where(*conditions)
    ).one()
    return items, {"total": counts[0], "mine": counts[1], "overdue": counts[2]}


def open_followups_of(record: Company | Contact) -> list[FollowUp]:
    """A company's or contact's open follow-ups by due date (a company's include its
    contacts')."""
    column = FollowUp.company_id if isinstance(record, Company) else FollowUp.contact_id
    return list(
        db.session.scalars(
            select(FollowUp)
            .options(selectinload(FollowUp.assignee), selectinload(FollowUp.contact))
            .where(column == record.id, FollowUp.done_at.is_(None))
            .order_by(FollowUp.due_on, FollowUp.id)
        )
    )


# -- the morning digest --------------------------------------------------------------


def digest_recipients(today: date) -> list[tuple[User, list[FollowUp]]]:
    """Each active user who wants the digest and has open follow-ups due by `today`,
    with those follow-ups (overdue first)."""
    rows = db.session.scalars(
        select(FollowUp)
        .join(User, User.id == FollowUp.assignee_id)
        .options(selectinload(FollowUp.company), selectinload(FollowUp.contact))
        .where(
            FollowUp.done_at.is_(None),
            FollowUp.due_on <= today,
            User.active.is_(True),
            User.followup_digest.is_(True),
        )
        .order_by(FollowUp.assignee_id, FollowUp.due_on, FollowUp.id)
    ).all()
    by_user: dict[int, list[FollowUp]] = {}
    for followup in rows:
        by_user.setdefault(followup.assignee_id, []).append(followup)
    users = {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(list(by_user))))}
    return [(users[user_id], items) for user_id, items in by_user.items()]


def digest_key(user_id: int, day: date) -> str:
    """The email key of a user's digest for a day: queued twice, sent once."""
    return f"followup-digest:{user_id}:{day.isoformat()}"


def queue_digests(today: date | None = None) -> int:
    """Queue the morning digest of every user who has follow-ups due; returns how many
    emails are new (a second run the same morning queues none)."""
    from crm.mail.models import EmailMessage
    from crm.mail.services import queue_email
    from crm.subscriptions.links import public_url

    today = today or today_oslo()
    queued = 0
    for user, items in digest_recipients(today):
        key = digest_key(user.id, today)
        if db.session.scalar(select(EmailMessage.id).where(EmailMessage.key == key)):
            continue
        queue_email(
            user.email,
            "followups/digest",
            {
                "user": user,
                "items": items,
                "today": today,
                "overdue": sum(1 for f in items if f.due_on < today),
                "list_url": public_url("/followups"),
            },
            to_name=user.name,
            key=key,
            category="followup-digest",
            locale="nb",
        )
        queued += 1
    return queued
