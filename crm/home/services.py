"""What each role sees first after logging in: the boxes of the home page.

Every box is a fixed number of queries with a LIMIT, so the page costs the same with
200 contacts or 200,000 (tests/test_home.py counts them).

Other areas add to the page without this module knowing them:
- `UPCOMING_SOURCES`: functions `(today, limit) -> list[Upcoming]` whose items join the
  "upcoming" box (the events area adds its events here);
- `HOME_PANELS`: template names included at the end of the staff boxes, like the
  company page's panels (e.g. event registrations this week).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from flask import url_for
from flask_babel import lazy_gettext as _l
from sqlalchemy import and_, exists, func, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.members.models import Activity, Company, Contact
from crm.table_versions import cached_many, watch
from crm.timeutil import OSLO, today_oslo, utcnow

LIMIT = 8
BOUNCE_EVENTS = ("bounce", "dropped", "spamreport")
UPCOMING_KINDS = ("meeting", "seminar")
# Redis key the newsletter reconciler stamps with the time of its last run.
RECONCILER_LAST_RUN_KEY = "klynge:reconciler:last-run"


@dataclass
class Upcoming:
    """One thing coming up: a meeting, a seminar, an event."""

    when: date | datetime
    title: str
    url: str
    kind: str  # a label, already translated
    detail: str = ""

    @property
    def sort_key(self) -> datetime:
        if isinstance(self.when, datetime):
            return self.when.astimezone(OSLO).replace(tzinfo=None)
        return datetime(self.when.year, self.when.month, self.when.day)


UPCOMING_SOURCES: list[Callable[[date, int], list[Upcoming]]] = []
HOME_PANELS: list[str] = []


def week_start(today: date | None = None) -> datetime:
    """Monday 00:00 Oslo time of this week, as UTC."""
    today = today or today_oslo()
    monday = today - timedelta(days=today.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=OSLO)


def upcoming_meetings(today: date, limit: int = LIMIT) -> list[Upcoming]:
    """Meetings and seminars recorded as activities, from today on."""
    from crm.members.services import ACTIVITY_LABELS

    activities = db.session.scalars(
        select(Activity)
        .options(
            selectinload(Activity.company).load_only(Company.id, Company.name),
            selectinload(Activity.network),
        )
        .where(Activity.occurred_on >= today, Activity.kind.in_(UPCOMING_KINDS))
        .order_by(Activity.occurred_on, Activity.id)
        .limit(limit)
    ).all()
    items = []
    for a in activities:
        if a.network is not None:
            url, detail = url_for("members.network_detail", network_id=a.network.id), a.network.name
        elif a.company is not None:
            url, detail = url_for("members.company_detail", company_id=a.company.id), a.company.name
        else:
            url, detail = url_for("members.contact_detail", contact_id=a.contact_id), ""
        kind = str(ACTIVITY_LABELS.get(a.kind, a.kind))
        items.append(Upcoming(a.occurred_on, a.summary, url, kind, detail))
    return items


# The events area's pages, in the order they are tried for a link to an event (its
# staff page is being built alongside this one; the public page is in SPEC.md).
EVENT_ENDPOINTS = ("events.event_detail", "events.detail", "public_events.event_detail")


def _event_url(event_id: int) -> str:
    from flask import current_app

    for endpoint in EVENT_ENDPOINTS:
        if endpoint in current_app.view_functions:
            try:
                return url_for(endpoint, event_id=event_id)
            except Exception:  # noqa: BLE001 - another argument name: try the next page
                continue
    return f"/arrangementer/{event_id}"


def upcoming_event_sessions(today: date, limit: int = LIMIT) -> list[Upcoming]:
    """Sessions of events (crm/events) from today on."""
    from crm.events.models import Event, EventSession

    rows = db.session.execute(
        select(EventSession.starts_at, Event.id, Event.title, Event.kind, Event.venue)
        .join(Event, Event.id == EventSession.event_id)
        .where(EventSession.starts_at >= _start_of(today))
        .order_by(EventSession.starts_at, EventSession.id)
        .limit(limit)
    ).all()
    label = str(_l("Event"))
    return [
        Upcoming(starts_at, title, _event_url(event_id), label, venue or "")
        for starts_at, event_id, title, _kind, venue in rows
    ]


def _start_of(day: date) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=OSLO)


def upcoming(today: date | None = None, limit: int = LIMIT) -> list[Upcoming]:
    """Meetings, seminars, event sessions and whatever other areas add, soonest first."""
    today = today or today_oslo()
    items = upcoming_meetings(today, limit) + upcoming_event_sessions(today, limit)
    for source in UPCOMING_SOURCES:
        items.extend(source(today, limit))
    return sorted(items, key=lambda item: item.sort_key)[:limit]


@dataclass
class NewPeople:
    subscribers: int = 0
    pending: int = 0
    latest: list = field(default_factory=list)  # (Subscriber, Contact)
    registrations: int = 0  # event registrations


def new_people(since: datetime, limit: int = LIMIT) -> NewPeople:
    """Newsletter subscribers who confirmed since `since`, and signups still waiting
    for their confirmation."""
    from crm.events.models import Registration
    from crm.subscriptions.models import PendingSignup, Subscriber

    def count(column, *conditions):
        return select(func.count(column)).where(*conditions).scalar_subquery()

    # A contact merged into another keeps its subscriber record (the survivor gets one
    # too): the person is counted and listed once, as the survivor.
    not_merged = (
        select(Contact.id)
        .where(Contact.id == Subscriber.contact_id, Contact.merged_into_id.is_(None))
        .exists()
    )
    # The three counts in one round trip.
    subscribers, pending, registrations = db.session.execute(
        select(
            count(
                Subscriber.id,
                Subscriber.created_at >= since,
                Subscriber.erased_at.is_(None),
                not_merged,
            ),
            count(PendingSignup.id, PendingSignup.created_at >= since),
            count(Registration.id, Registration.created_at >= since),
        )
    ).one()
    latest = db.session.execute(
        select(Subscriber, Contact)
        .join(Contact, Contact.id == Subscriber.contact_id)
        .where(
            Subscriber.created_at >= since,
            Subscriber.erased_at.is_(None),
            Contact.merged_into_id.is_(None),
        )
        .order_by(Subscriber.created_at.desc(), Subscriber.id.desc())
        .limit(limit)
    ).all()
    return NewPeople(
        subscribers or 0, pending or 0, [tuple(row) for row in latest], registrations or 0
    )


def mail_problems(since: datetime, limit: int = LIMIT):
    """Bounces, drops and spam complaints since `since` (newest first), and how many."""
    from crm.mail.models import EmailEvent

    condition = and_(EmailEvent.event.in_(BOUNCE_EVENTS), EmailEvent.received_at >= since)
    events = db.session.scalars(
        select(EmailEvent).where(condition).order_by(EmailEvent.id.desc()).limit(limit)
    ).all()
    total = db.session.scalar(select(func.count(EmailEvent.id)).where(condition))
    return events, total or 0


def _without_primary_contact():
    return and_(
        Company.membership_status == "member",
        Company.archived_at.is_(None),
        ~exists().where(
            Contact.company_id == Company.id,
            # Bare booleans, not IS TRUE: PostgreSQL matches them to the partial index
            # ix_contact_current_primary.
            Contact.is_primary_contact,
            Contact.active,
            Contact.archived_at.is_(None),
        ),
    )


# What the check reads (crm.table_versions): it is kept until a company or contact changes.
_PRIMARY_CONTACT_READ = watch(Company.__table__.name, Contact.__table__.name)


def _without_primary_contact_ids(limit: int) -> list[int]:
    """The first `limit` ids by name, and the count of all, last: [id, …, total]."""
    matches = (
        select(Company.id, Company.name, func.count().over().label("total"))
        .where(_without_primary_contact())
        .subquery()
    )
    rows = db.session.execute(
        select(matches.c.id, matches.c.total).order_by(matches.c.name, matches.c.id).limit(limit)
    ).all()
    return [row.id for row in rows] + [rows[0].total if rows else 0]


def companies_without_primary_contact(limit: int = LIMIT):
    """Member companies nobody is the primary contact of (by name), and how many.

    One pass over the companies gives both: the count is a window over every match,
    which also keeps PostgreSQL from walking the name index to find the first few (it
    would probe every member company that way when all of them have a primary contact).
    The probe per company is served by ix_contact_current_primary (migration 0021). The
    answer is kept in Redis until a company or a contact changes.
    """
    found = cached_many(
        f"without-primary:{limit}",
        {"ids": (_PRIMARY_CONTACT_READ, lambda: _without_primary_contact_ids(limit))},
    )["ids"]
    *ids, total = found
    if not ids:
        return [], 0
    by_id = {
        company.id: company
        for company in db.session.scalars(
            select(Company).options(_company_columns()).where(Company.id.in_(ids))
        )
    }
    # (A bump lost with Redis could leave a deleted company among the kept ids.)
    return [by_id[i] for i in ids if i in by_id], total


def _company_columns():
    from sqlalchemy.orm import load_only

    return load_only(
        Company.id, Company.name, Company.municipality_number, Company.municipality_name
    )


# -- admins: system health -----------------------------------------------------------


@dataclass
class QueueHealth:
    name: str
    queued: int
    started: int
    failed: int
    scheduled: int


@dataclass
class WebhookHealth:
    """Whether SendGrid's event webhook reaches us (only asked when mail goes through
    SendGrid): the last event received, the last newsletter request accepted, and
    whether events stopped coming after it."""

    last_event: datetime | None
    last_sent: datetime | None
    silent: bool


@dataclass
class SystemHealth:
    redis_ok: bool
    queues: list[QueueHealth]
    workers: int
    reconciler_last_run: datetime | None
    reconciler_late: bool
    error: str = ""
    webhook: WebhookHealth | None = None

    @property
    def ok(self) -> bool:
        silent = self.webhook is not None and self.webhook.silent
        return self.redis_ok and not self.reconciler_late and bool(self.workers) and not silent


# SendGrid's first events for a request come within minutes; none an hour after a
# newsletter went out means the webhook is not set up (or not reaching us).
WEBHOOK_QUIET = timedelta(hours=1)


def webhook_health() -> WebhookHealth:
    """Without the event webhook, bounces and unsubscribes in the mail client are never
    recorded, and a newsletter batch whose answer was lost (a timeout) is sent again once
    NEWSLETTER_AMBIGUOUS_GRACE_SECONDS have passed: its events are what settle it."""
    from crm.mail.models import EmailEvent
    from crm.newsletters.models import NewsletterBatch

    # The newest of each by key (the primary key's index), not by time (a scan of all).
    last_event = db.session.scalar(
        select(EmailEvent.received_at).order_by(EmailEvent.id.desc()).limit(1)
    )
    B = NewsletterBatch
    last_sent = db.session.scalar(
        select(B.sent_at).where(B.sent_at.is_not(None)).order_by(B.id.desc()).limit(1)
    )
    silent = (
        last_sent is not None
        and utcnow() - last_sent > WEBHOOK_QUIET
        and (last_event is None or last_event < last_sent)
    )
    return WebhookHealth(last_event, last_sent, silent)


def system_health(connection=None) -> SystemHealth:
    """RQ queues (waiting, running, failed, scheduled jobs), live workers, when the
    newsletter reconciler last ran, and (sending through SendGrid) whether its event
    webhook reaches us. Redis being down is a finding, not an error."""
    from flask import current_app
    from rq import Queue, Worker

    from crm.queue import QUEUE_NAMES, get_redis

    webhook = None
    if current_app.config.get("MAIL_BACKEND") == "sendgrid":
        webhook = webhook_health()
    try:
        connection = connection or get_redis()
        queues = []
        for name in QUEUE_NAMES:
            queue = Queue(name, connection=connection)
            queues.append(
                QueueHealth(
                    name,
                    queue.count,
                    queue.started_job_registry.count,
                    queue.failed_job_registry.count,
                    queue.scheduled_job_registry.count,
                )
            )
        workers = Worker.count(connection=connection)
        stamp = connection.get(RECONCILER_LAST_RUN_KEY)
    except Exception as exc:  # noqa: BLE001 - any Redis failure is shown as such
        return SystemHealth(False, [], 0, None, True, type(exc).__name__, webhook)
    last_run = datetime.fromisoformat(stamp.decode()) if stamp else None
    interval = float(current_app.config.get("NEWSLETTER_RECONCILE_SECONDS", 60) or 60)
    late = last_run is None or utcnow() - last_run > timedelta(seconds=max(interval * 5, 300))
    return SystemHealth(True, queues, workers, last_run, late, webhook=webhook)


def record_reconciler_run(connection=None) -> None:
    """Stamp the reconciler's last run (read by `system_health`)."""
    from crm.queue import get_redis

    (connection or get_redis()).set(RECONCILER_LAST_RUN_KEY, utcnow().isoformat())
