"""A newsletter's reach counters (sent, delivered, …) stay equal to its ledger's rows
through sending and a webhook burst, duplicates and early events included."""

from sqlalchemy import func, select

from crm.extensions import db
from crm.mail.services import record_event
from crm.newsletters import ledger, services
from crm.newsletters.models import Newsletter, NewsletterRecipient
from tests.factories import bulk_subscribers, make_newsletter

COUNTED = {"sent_count": None, **{v: k for k, v in ledger.EVENT_COUNTERS.items()}}


def _event(kind: str, row_id: int, newsletter_id: int, n: int, **extra) -> dict:
    return {
        "event": kind,
        "email": f"x{row_id}@example.no",
        "timestamp": 1700000000 + n,
        "sg_event_id": f"{kind}-{row_id}-{n}",
        "klynge_newsletter": str(newsletter_id),
        "klynge_recipient": str(row_id),
        **extra,
    }


def _from_ledger(newsletter_id: int) -> dict[str, int]:
    R = NewsletterRecipient
    counts = {}
    for name, column in COUNTED.items():
        condition = [getattr(R, column).is_not(None)] if column else []
        counts[name] = db.session.scalar(
            select(func.count()).where(
                R.newsletter_id == newsletter_id, R.state == "sent", *condition
            )
        )
    return counts


def _counters(newsletter_id: int) -> dict[str, int]:
    newsletter = db.session.get(Newsletter, newsletter_id)
    db.session.refresh(newsletter)
    return {name: getattr(newsletter, name) for name in COUNTED}


def test_counters_equal_the_ledger_after_sending_and_a_webhook_burst_with_duplicates(app_ctx):
    bulk_subscribers(40)
    newsletter = make_newsletter()
    services.start_sending(newsletter)
    db.session.commit()
    R = NewsletterRecipient
    rows = db.session.scalars(
        select(R.id).where(R.newsletter_id == newsletter.id).order_by(R.id)
    ).all()
    assert len(rows) == 40
    n = 0

    def burst(row_ids, kinds):
        nonlocal n
        for row_id in row_ids:
            for kind in kinds:
                for _twice in range(2):  # the provider repeats events
                    n += 1
                    record_event(_event(kind, row_id, newsletter.id, n))
        db.session.commit()

    # Events before our own record of the 202 (the rows still pending) ...
    burst(rows[:10], ["processed", "delivered", "open"])
    # ... then the 202 for the first half, the rest still pending.
    ledger.mark_sent(R.newsletter_id == newsletter.id, R.id.in_(rows[:20]))
    db.session.commit()
    assert _counters(newsletter.id)["sent_count"] == 20
    burst(rows[5:30], ["delivered", "open", "click"])
    burst(rows[30:33], ["bounce", "dropped"])
    burst(rows[33:35], ["bounce"])
    record_event(_event("bounce", rows[35], newsletter.id, 999, type="blocked"))
    burst(rows[8:12], ["spamreport"])
    db.session.commit()
    assert _counters(newsletter.id) == _from_ledger(newsletter.id)

    # The rest goes out (an ambiguous batch settled from its events, say).
    ledger.mark_sent(R.newsletter_id == newsletter.id, R.state == "pending")
    db.session.commit()
    burst(rows, ["delivered"])
    counters = _counters(newsletter.id)
    assert counters == _from_ledger(newsletter.id)
    assert counters["sent_count"] == 40 and counters["delivered_count"] == 40
    assert counters["bounced_count"] == 5 and counters["spam_count"] == 4
    # Marking sent rows sent again changes nothing.
    assert ledger.mark_sent(R.newsletter_id == newsletter.id) == 0
    assert _counters(newsletter.id) == counters


def test_recipients_by_basis_are_counted_once_with_the_ledger(app_ctx):
    bulk_subscribers(7)
    newsletter = make_newsletter()
    assert services.start_sending(newsletter) is not None
    db.session.commit()
    stored = db.session.scalar(
        select(Newsletter.basis_counts).where(Newsletter.id == newsletter.id)
    )
    assert stored == [["consent", None, 7]]
    from_rows = db.session.execute(ledger.basis_counts_query(newsletter.id)).all()
    assert [list(row) for row in from_rows] == stored
    assert ledger.counts_by_basis(newsletter.id) == {None: 7}
