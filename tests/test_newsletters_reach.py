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


def test_a_webhook_delivery_applied_at_once_leaves_the_rows_as_one_by_one(app_ctx):
    """The webhook applies a delivery's events together (`record_events`); the rows and
    counters end up as when the same events come one at a time (`record_event`)."""
    import random

    from crm.mail.services import record_events

    bulk_subscribers(30)
    R = NewsletterRecipient
    newsletters, rows = [], []
    for subject in ("One by one", "At once"):
        newsletter = make_newsletter(subject=subject)
        services.start_sending(newsletter)
        db.session.commit()
        newsletters.append(newsletter.id)
        rows.append(
            db.session.scalars(
                select(R.id).where(R.newsletter_id == newsletter.id).order_by(R.id)
            ).all()
        )
    rng = random.Random(15)

    def script(stage: int) -> list[tuple]:
        """(kind, row index, time, extra) in a shuffled order, some repeated."""
        if stage == 0:  # before our record of the 202
            events = [(k, i, 10 + i, {}) for i in range(10) for k in ("processed", "delivered")]
        elif stage == 1:
            events = [(k, i, 100 + i, {}) for i in range(5, 30) for k in ("delivered", "open")]
            events += [("open", i, 200 + i, {}) for i in range(5, 15)]  # a second open
            events += [("click", i, 300 + i, {"sg_message_id": f"p{i}.f"}) for i in range(12)]
            events += [(k, i, 400, {}) for i in (20, 21, 22) for k in ("bounce", "dropped")]
            events += [("bounce", 23, 410, {"type": "blocked"})]
            events += [("spamreport", i, 420, {}) for i in range(8, 12)]
            events += [("unsubscribe", i, 430 + i, {}) for i in (12, 13, 14)]
            events += [("group_unsubscribe", 15, 440, {"asm_group_id": 1})]
        else:
            events = [("delivered", i, 500 + i, {}) for i in range(30)]
        events += rng.sample(events, 5)  # the provider repeats itself
        rng.shuffle(events)
        return events

    def as_event(which: int, n: int, kind: str, index: int, at: int, extra: dict) -> dict:
        row_id = rows[which][index]
        event = _event(kind, row_id, newsletters[which], at, **extra)
        event["sg_event_id"] = f"{which}-{kind}-{index}-{at}"
        return event

    for stage in range(3):
        events = script(stage)
        for n, entry in enumerate(events):
            record_event(as_event(0, n, *entry))
            db.session.commit()
        assert record_events([as_event(1, n, *entry) for n, entry in enumerate(events)])[0] > 0
        db.session.commit()
        if stage == 0:
            for which in (0, 1):
                ledger.mark_sent(R.newsletter_id == newsletters[which], R.id.in_(rows[which][:20]))
        elif stage == 1:
            for which in (0, 1):
                ledger.mark_sent(R.newsletter_id == newsletters[which], R.state == "pending")
        db.session.commit()

    columns = [
        R.state,
        R.processed_at,
        R.delivered_at,
        R.opened_at,
        R.clicked_at,
        R.bounced_at,
        R.spam_reported_at,
        R.unsubscribed_at,
        R.provider_message_id,
    ]

    def ledger_rows(which: int) -> list[tuple]:
        return [
            tuple(row)
            for row in db.session.execute(
                select(*columns).where(R.newsletter_id == newsletters[which]).order_by(R.id)
            )
        ]

    one_by_one, at_once = ledger_rows(0), ledger_rows(1)
    assert at_once == one_by_one
    assert sum(row[7] is not None for row in at_once) == 4  # the unsubscribes
    assert _counters(newsletters[1]) == _counters(newsletters[0]) == _from_ledger(newsletters[1])
    assert _counters(newsletters[1])["bounced_count"] == 3
