"""What happened to a newsletter after it was sent, from the provider's webhook events.

The mail area stores every webhook event and calls `record_mail_event` for each; the
custom_args we sent (`klynge_newsletter`, `klynge_batch`, `klynge_recipient`) come back
in the event and name the ledger row. The first event of each kind sets a timestamp
on the row; any event also sets `processed_at`, the evidence the resend policy reads.

Unsubscribes count both the provider's own unsubscribe events and our one-click link:
a withdrawal through the link counts for the newest newsletter the person had
received before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import case, exists, func, or_, select, update
from sqlalchemy.orm import aliased

from crm.bulk import chunks, given_rows, id_in
from crm.extensions import db
from crm.members.models import Company, Contact, Network, contact_network
from crm.members.municipalities import municipality_label
from crm.newsletters import ledger
from crm.newsletters.models import Newsletter, NewsletterRecipient
from crm.subscriptions.models import ConsentEvent
from crm.timeutil import utcnow

# webhook event -> the row's timestamp column it sets
EVENT_COLUMNS = {
    "processed": "processed_at",
    "delivered": "delivered_at",
    "open": "opened_at",
    "click": "clicked_at",
    "bounce": "bounced_at",
    "dropped": "bounced_at",
    "unsubscribe": "unsubscribed_at",
    "group_unsubscribe": "unsubscribed_at",
    "spamreport": "spam_reported_at",
}
METRICS = ("sent", "delivered", "bounced", "opened", "clicked", "unsubscribed", "spam")


def _int(value) -> int | None:
    try:
        number = int(str(value))
    except (TypeError, ValueError):
        return None
    return number if 0 < number < 2**31 else None


def _event_time(value) -> datetime:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return utcnow()


def _parsed(event: dict) -> tuple[int, int, datetime, str | None] | None:
    """A newsletter event's ledger row (id, newsletter id), its time and the row's column
    it stamps (None: none); None when it names no row. A "blocked" bounce is temporary
    (the address exists): it stamps nothing."""
    row_id = _int(event.get("klynge_recipient"))
    newsletter_id = _int(event.get("klynge_newsletter"))
    if row_id is None or newsletter_id is None:
        return None
    kind = str(event.get("event") or "")
    column = EVENT_COLUMNS.get(kind)
    if kind == "bounce" and event.get("type") == "blocked":
        column = None
    return row_id, newsletter_id, _event_time(event.get("timestamp")), column


def _provider_id(event: dict) -> str:
    return str(event.get("sg_message_id") or "").split(".", 1)[0][:100]


def record_mail_event(event: dict, message=None) -> None:
    """Webhook handler (registered with crm.mail.services): note the event on its row."""
    parsed = _parsed(event)
    if parsed is None:
        return
    row_id, newsletter_id, at, column = parsed
    R = NewsletterRecipient
    values = {"processed_at": func.coalesce(R.processed_at, at)}
    if column in ledger.EVENT_COUNTERS:
        ledger.note_first_event(row_id, newsletter_id, column, at)
    elif column:
        values[column] = func.coalesce(getattr(R, column), at)
    provider_id = _provider_id(event)
    if provider_id:
        values["provider_message_id"] = func.coalesce(R.provider_message_id, provider_id)
    db.session.execute(
        update(R)
        .where(R.id == row_id, R.newsletter_id == newsletter_id)
        .values(**values)
        .execution_options(synchronize_session=False)
    )


def record_mail_events(items: list[tuple[dict, object]]) -> None:
    """`record_mail_event` for a webhook delivery's events at once (its batch form): the
    first event of each kind per row wins, as when they come one by one."""
    R = NewsletterRecipient
    firsts: dict[tuple[int, int], list] = {}  # row -> [processed_at, provider id, unsubscribed_at]
    stamps: dict[tuple[int, int, str], datetime] = {}
    for event, _message in items:
        parsed = _parsed(event)
        if parsed is None:
            continue
        row_id, newsletter_id, at, column = parsed
        first = firsts.setdefault((row_id, newsletter_id), [at, "", None])
        if column in ledger.EVENT_COUNTERS:
            stamps.setdefault((row_id, newsletter_id, column), at)
        elif column == "unsubscribed_at" and first[2] is None:
            first[2] = at
        if not first[1]:
            first[1] = _provider_id(event)
    if not firsts:
        return
    # Rows are locked in id order before any is changed, so that two deliveries (or a
    # delivery and the sender marking a batch sent) cannot wait for each other.
    for chunk in chunks(sorted(firsts)):
        db.session.execute(
            select(R.id)
            .where(id_in(R.id, [row_id for row_id, _ in chunk]))
            .order_by(R.id)
            .with_for_update()
        ).all()
    ledger.note_first_events([(*row, column, at) for (*row, column), at in stamps.items()])
    rows = sorted((*row, *first) for row, first in firsts.items())
    for chunk in chunks(rows):
        given = given_rows(
            "given",
            [
                ("id", R.id.type),
                ("newsletter_id", R.id.type),
                ("at", R.processed_at.type),
                ("provider_id", R.provider_message_id.type),
            ],
            [row[:4] for row in chunk],
        )
        db.session.execute(
            update(R)
            .where(R.id == given.c.id, R.newsletter_id == given.c.newsletter_id)
            .values(
                processed_at=func.coalesce(R.processed_at, given.c.at),
                provider_message_id=func.coalesce(
                    R.provider_message_id, func.nullif(given.c.provider_id, "")
                ),
            )
            .execution_options(synchronize_session=False)
        )
        unsubscribed = [(*row[:2], row[4]) for row in chunk if row[4] is not None]
        if unsubscribed:
            given = given_rows(
                "given",
                [("id", R.id.type), ("newsletter_id", R.id.type), ("at", R.unsubscribed_at.type)],
                unsubscribed,
            )
            db.session.execute(
                update(R)
                .where(R.id == given.c.id, R.newsletter_id == given.c.newsletter_id)
                .values(unsubscribed_at=func.coalesce(R.unsubscribed_at, given.c.at))
                .execution_options(synchronize_session=False)
            )


def _unsubscribed():
    R = NewsletterRecipient
    later = aliased(NewsletterRecipient)
    through_link = exists().where(
        ConsentEvent.contact_id == R.contact_id,
        ConsentEvent.kind == "withdrawn",
        ConsentEvent.source == "email_link",
        ConsentEvent.at >= R.sent_at,
        ~exists().where(
            later.contact_id == R.contact_id,
            later.state == "sent",
            later.sent_at > R.sent_at,
            later.sent_at <= ConsentEvent.at,
        ),
    )
    return or_(R.unsubscribed_at.is_not(None), through_link)


def _metric_columns():
    R = NewsletterRecipient

    def count_if(condition):
        return func.coalesce(func.sum(case((condition, 1), else_=0)), 0)

    return [
        func.count(),
        count_if(R.delivered_at.is_not(None)),
        count_if(R.bounced_at.is_not(None)),
        count_if(R.opened_at.is_not(None)),
        count_if(R.clicked_at.is_not(None)),
        count_if(_unsubscribed()),
        count_if(R.spam_reported_at.is_not(None)),
    ]


@dataclass
class Figures:
    label: str
    sent: int = 0
    delivered: int = 0
    bounced: int = 0
    opened: int = 0
    clicked: int = 0
    unsubscribed: int = 0
    spam: int = 0

    def rate(self, metric: str) -> float | None:
        """Share of delivered (opens, clicks) or of sent (the rest); None without any."""
        base = self.delivered if metric in ("opened", "clicked") else self.sent
        # Events can be missing or late (an open without a delivery event): cap at 100 %.
        return min(1.0, getattr(self, metric) / base) if base else None


def _figures(label: str, values) -> Figures:
    return Figures(label, *(int(v or 0) for v in values))


def _sent_rows(newsletter_id: int):
    R = NewsletterRecipient
    return (R.newsletter_id == newsletter_id, R.state == "sent")


def totals(newsletter_id: int) -> Figures:
    """The newsletter's counters (crm.newsletters.ledger keeps them); unsubscribes, which
    also count withdrawals through our link, from the ledger."""
    N = Newsletter
    counters = (N.sent_count, N.delivered_count, N.bounced_count, N.opened_count, N.clicked_count)
    sent, delivered, bounced, opened, clicked, spam = (
        db.session.execute(
            select(*counters, N.spam_count).where(N.id == newsletter_id)
        ).one_or_none()
        or (0,) * 6
    )
    unsubscribed = db.session.scalar(
        select(func.count()).where(*_sent_rows(newsletter_id), _unsubscribed())
    )
    return _figures("", [sent, delivered, bounced, opened, clicked, unsubscribed, spam])


def by_network(newsletter_id: int) -> list[Figures]:
    """Figures per network the recipients belong to (a person in two counts in both)."""
    R = NewsletterRecipient
    rows = db.session.execute(
        select(Network.name, *_metric_columns())
        .join(contact_network, contact_network.c.contact_id == R.contact_id)
        .join(Network, Network.id == contact_network.c.network_id)
        .where(*_sent_rows(newsletter_id))
        .group_by(Network.name)
        .order_by(Network.name)
    ).all()
    return [_figures(name, values) for name, *values in rows]


def by_municipality(newsletter_id: int) -> list[Figures]:
    """Figures per municipality of the recipients' companies ("" = no company)."""
    R = NewsletterRecipient
    number = func.coalesce(Company.municipality_number, "")
    rows = db.session.execute(
        select(number, *_metric_columns())
        .join(Contact, Contact.id == R.contact_id)
        .outerjoin(Company, Company.id == Contact.company_id)
        .where(*_sent_rows(newsletter_id))
        .group_by(number)
        .order_by(number)
    ).all()
    figures = []
    for value, *values in rows:
        label = municipality_label(value) if value else ""
        figures.append(_figures(label, values))
    return figures
