"""The ledger written in chunks: the first batches at once, the rest while they go out.

A newsletter's recipients are fixed when sending starts (its batches, `planned`); the
first FIRST_ROWS rows are written then, the rest by the `fill_ledger` job, or by the
reconciler if that job was lost. Lowered here so a few subscribers make many batches.
"""

import contextlib
import email
import email.policy
import threading

import pytest
from sqlalchemy import delete, func, select, text
from sqlalchemy.exc import OperationalError

from crm.database import run_core
from crm.extensions import db
from crm.members.models import Contact, Network
from crm.newsletters import ledger, reconciler, sending, services, tasks
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.timeutil import utcnow
from tests.factories import (
    bulk_subscribers,
    make_company,
    make_contact,
    make_newsletter,
    make_subscriber,
)
from tests.factories import start_newsletter as start

pytest_plugins = ["tests.sendgrid_server"]


@pytest.fixture
def small_chunks(app, monkeypatch):
    """Batches of 2, the first one written when sending starts, then 2 per chunk."""
    monkeypatch.setitem(app.config, "NEWSLETTER_BATCH_SIZE", 2)
    monkeypatch.setattr(ledger, "FIRST_ROWS", {"postgresql": 2, "sqlite": 2})
    monkeypatch.setattr(ledger, "FILL_ROWS", 4)


@pytest.fixture
def sendgrid(app, sendgrid_server, monkeypatch):
    for key, value in sendgrid_server.worker_env().items():
        monkeypatch.setitem(app.config, key, value)
    monkeypatch.setitem(app.config, "NEWSLETTER_RATE_PER_MINUTE", 6_000_000)
    return sendgrid_server


def batch_states(newsletter_id: int) -> list[tuple[int, str, int]]:
    db.session.expire_all()
    B = NewsletterBatch
    return db.session.execute(
        select(B.number, B.state, B.size).where(B.newsletter_id == newsletter_id).order_by(B.number)
    ).all()


def ledger_contacts(newsletter_id: int) -> list[int]:
    R = NewsletterRecipient
    return db.session.scalars(
        select(R.contact_id).where(R.newsletter_id == newsletter_id).order_by(R.contact_id)
    ).all()


def status(newsletter_id: int) -> dict:
    db.session.expire_all()
    return services.status(db.session.get(Newsletter, newsletter_id))


def test_sending_starts_with_the_first_batch_written_and_the_counts_of_all(
    app, app_ctx, small_chunks, sendgrid
):
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    assert start(newsletter) == 7
    assert batch_states(newsletter.id) == [
        (0, "pending", 2),
        (1, "planned", 2),
        (2, "planned", 2),
        (3, "planned", 1),
    ]
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)[:2]
    assert status(newsletter.id) | {"state": None} == {
        "state": None,
        "total": 7,
        "sent": 0,
        "failed": 0,
        "pending": 7,
        "skipped": 0,
    }
    assert services.recipients_by_basis(db.session.get(Newsletter, newsletter.id)) == {None: 7}

    # The first batch goes out before the rest is written: not finished yet.
    first = db.session.scalar(
        select(NewsletterBatch.id).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.number == 0
        )
    )
    assert sending.run_batch(first, reschedule=lambda *a: None) == "done"
    assert status(newsletter.id)["state"] == "sending"


def test_the_fill_job_writes_the_rest_and_then_it_finishes(app, app_ctx, small_chunks, sendgrid):
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)
    assert tasks.fill_ledger(newsletter.id) == "3 batches written"
    assert tasks.fill_ledger(newsletter.id) == "0 batches written"  # run twice: no-op
    assert [state for _n, state, _s in batch_states(newsletter.id)] == ["pending"] * 4
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)
    for batch in db.session.scalars(
        select(NewsletterBatch).where(NewsletterBatch.newsletter_id == newsletter.id)
    ).all():
        assert batch.job_id and batch.enqueued_count == 1
        assert sending.run_batch(batch.id, reschedule=lambda *a: None) == "done"
    assert status(newsletter.id) == {
        "state": "finished",
        "total": 7,
        "sent": 7,
        "failed": 0,
        "pending": 0,
        "skipped": 0,
    }
    assert len(sendgrid.recipients) == 7 == len(set(sendgrid.recipients))


def test_one_job_goes_on_with_the_next_batches_writing_those_still_planned(
    app, app_ctx, small_chunks, sendgrid
):
    """The first batch's job sends the whole newsletter: with no fill job run, it writes
    each planned batch itself, sends it, and takes that batch's job off the queue."""
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)  # batch 0 written; 1-3 planned, their fill job never run here
    first = db.session.scalar(
        select(NewsletterBatch.id).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.number == 0
        )
    )
    dropped: list[str] = []
    outcome = sending.run_batches(first, reschedule=lambda *a: None, drop_job=dropped.append)
    assert outcome == "done"
    assert status(newsletter.id)["state"] == "finished"
    assert [state for _n, state, _s in batch_states(newsletter.id)] == ["sent"] * 4
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)
    assert len(sendgrid.requests) == 4
    assert len(sendgrid.recipients) == 7 == len(set(sendgrid.recipients))
    later = db.session.scalars(
        select(NewsletterBatch.job_id)
        .where(NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.number > 0)
        .order_by(NewsletterBatch.number)
    ).all()
    assert dropped == later  # each further batch's own job, taken off the queue


def test_a_job_going_on_with_the_next_batches_gives_way_to_waiting_mail(
    app, app_ctx, small_chunks, sendgrid
):
    """A confirmation email queued meanwhile is not held up by the rest of a newsletter:
    the run stops after its batch, and the next batches keep their own jobs."""
    from crm.mail.services import queue_email
    from crm.newsletters import queueing

    bulk_subscribers(6)
    newsletter = make_newsletter()
    start(newsletter)
    tasks.fill_ledger(newsletter.id)
    first = db.session.scalar(
        select(NewsletterBatch.id).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.number == 0
        )
    )
    assert not queueing.more_urgent_jobs_waiting()
    queue_email("ny@example.no", "newsletters/test", {"subject": "Hei", "html": "", "text": ""})
    db.session.commit()  # enqueued after commit, on the mail queue
    assert queueing.more_urgent_jobs_waiting()
    dropped: list[str] = []
    sending.run_batches(
        first,
        reschedule=lambda *a: None,
        drop_job=dropped.append,
        give_way=queueing.more_urgent_jobs_waiting,
    )
    states = [state for _n, state, _s in batch_states(newsletter.id)]
    assert states == ["sent", "pending", "pending"]
    assert dropped == []


def test_a_batch_tried_before_is_left_to_its_own_job(app, app_ctx, small_chunks, sendgrid):
    """Going on with the next batches takes only untried ones: a batch with a history
    (here a failed attempt) keeps its own job and its backoff."""
    bulk_subscribers(4)
    newsletter = make_newsletter()
    start(newsletter)
    tasks.fill_ledger(newsletter.id)
    first, second = db.session.scalars(
        select(NewsletterBatch)
        .where(NewsletterBatch.newsletter_id == newsletter.id)
        .order_by(NewsletterBatch.number)
    ).all()
    second.attempts = 1
    db.session.commit()
    dropped: list[str] = []
    sending.run_batches(first.id, reschedule=lambda *a: None, drop_job=dropped.append)
    assert dropped == []
    assert [state for _n, state, _s in batch_states(newsletter.id)] == ["sent", "pending"]
    assert len(sendgrid.recipients) == 2


def test_a_queued_batch_job_is_taken_off_the_queue_once(app, app_ctx):
    from rq import Queue
    from rq.job import Job

    from crm.newsletters import queueing
    from crm.queue import get_redis

    queueing.enqueue_batch(41, "nl-4-batch-41-1")
    queue = Queue(queueing.QUEUE, connection=get_redis())
    assert queue.job_ids == ["nl-4-batch-41-1"]
    assert queueing.drop_queued_job("nl-4-batch-41-1")
    assert queue.job_ids == []
    assert not get_redis().exists(Job.key_for("nl-4-batch-41-1"))
    assert not queueing.drop_queued_job("nl-4-batch-41-1")  # gone (or taken): left alone


def test_no_newsletter_finishes_while_batches_are_planned(app, app_ctx, small_chunks, sendgrid):
    bulk_subscribers(3)
    newsletter = make_newsletter()
    start(newsletter)
    first = batch_states(newsletter.id)[0]
    assert first[1] == "pending"
    first_id = db.session.scalar(
        select(NewsletterBatch.id).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.state == "pending"
        )
    )
    sending.run_batch(first_id, reschedule=lambda *a: None)
    assert not ledger.finish_if_done(newsletter.id)
    assert status(newsletter.id)["state"] == "sending"


def test_the_reconciler_writes_what_a_lost_fill_job_left(app, app_ctx, small_chunks, sendgrid):
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)  # its fill job is never run here: as if Redis lost it
    assert reconciler.reconcile()["resumed"] == 3
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)
    assert reconciler.reconcile()["resumed"] == 0


def test_cancelling_while_the_ledger_is_written_skips_the_planned_batches(
    app, app_ctx, small_chunks, sendgrid
):
    bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)
    services.cancel(db.session.get(Newsletter, newsletter.id))
    db.session.commit()
    assert status(newsletter.id) == {
        "state": "cancelled",
        "total": 7,
        "sent": 0,
        "failed": 0,
        "pending": 0,
        "skipped": 7,
    }
    assert tasks.fill_ledger(newsletter.id) == "0 batches written"
    assert len(sendgrid.recipients) == 0


def logistikk_members(count: int) -> tuple[Network, list[int]]:
    """Logistikk with `count` contacts at a member company (mailed on that basis)."""
    logistikk = db.session.scalar(select(Network).filter_by(name="Logistikk"))
    member = make_company("Medlem AS", membership_status="member")
    contacts = [
        make_contact(f"M{n}", email=f"m{n}@example.no", company_id=member.id, networks=[logistikk])
        for n in range(count)
    ]
    return logistikk, [c.id for c in contacts]


def test_a_contact_deleted_before_its_row_is_written_is_left_out(app_ctx, small_chunks):
    logistikk, contact_ids = logistikk_members(5)
    mail = make_newsletter("Referat", kind="network_mail", topics=(), network_ids=(logistikk.id,))
    start(mail)
    gone = contact_ids[4]  # in batch 2, still planned
    db.session.execute(delete(Contact).where(Contact.id == gone))
    db.session.commit()
    tasks.fill_ledger(mail.id)
    assert ledger_contacts(mail.id) == contact_ids[:4]
    assert batch_states(mail.id)[2] == (2, "pending", 0)
    assert status(mail.id)["total"] == 4


def test_a_contact_given_a_duplicates_row_by_a_merge_before_its_own_is_written_gets_one(
    app, app_ctx, small_chunks, sendgrid
):
    """The duplicate's row (written) moves to the kept contact, whose own row is still
    planned: the merge takes that one out of the plan. On PostgreSQL the INSERT
    failed on the ledger's unique key, every time, and the rest never went out."""
    from crm.members.services import merge_contacts

    contact_ids = sorted(bulk_subscribers(5))
    newsletter = make_newsletter()
    start(newsletter)  # batch 0 (the first two) written; 1 and 2 planned
    kept = db.session.get(Contact, contact_ids[4])  # in batch 2, still planned
    merge_contacts(kept, db.session.get(Contact, contact_ids[0]))  # written, batch 0
    db.session.commit()
    assert tasks.fill_ledger(newsletter.id) == "2 batches written"
    db.session.commit()
    assert ledger_contacts(newsletter.id) == contact_ids[1:]
    assert batch_states(newsletter.id)[2] == (2, "pending", 0)
    for batch_id in db.session.scalars(
        select(NewsletterBatch.id).where(NewsletterBatch.newsletter_id == newsletter.id)
    ).all():
        sending.run_batch(batch_id, reschedule=lambda *a: None)
    assert status(newsletter.id) | {"total": None} == {
        "state": "finished",
        "total": None,
        "sent": 4,
        "failed": 0,
        "pending": 0,
        "skipped": 0,
    }
    assert sendgrid.recipients.count(kept.email) == 1


def test_network_mail_counts_its_bases_before_the_rows_are_written(app_ctx, small_chunks):
    logistikk, _members = logistikk_members(3)
    make_subscriber("abonnent@example.no")
    make_subscriber("leser@example.no")
    mail = make_newsletter(
        "Møtereferat", kind="network_mail", topics=("generelt",), network_ids=(logistikk.id,)
    )
    assert start(mail) == 5
    assert services.recipients_by_basis(db.session.get(Newsletter, mail.id)) == {
        logistikk.id: 3,
        None: 2,
    }
    tasks.fill_ledger(mail.id)
    R = NewsletterRecipient
    assert sorted(
        db.session.execute(
            select(R.basis, R.basis_network_id, func.count())
            .where(R.newsletter_id == mail.id)
            .group_by(R.basis, R.basis_network_id)
        ).all()
    ) == [("consent", None, 2), ("membership", logistikk.id, 3)]


def test_a_real_worker_writes_the_rest_and_sends_each_subscriber_once(
    app, app_ctx, small_chunks, outbox, run_worker
):
    bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)
    run_worker()
    assert status(newsletter.id)["state"] == "finished"
    addresses = [
        email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["To"]
        .addresses[0]
        .addr_spec
        for path in outbox.glob("*.eml")
    ]
    assert len(addresses) == 7 == len(set(addresses))


def test_a_deleted_contact_or_newsletter_takes_its_ledger_rows_along(app_ctx, small_chunks):
    logistikk, contact_ids = logistikk_members(3)
    mail = make_newsletter("Referat", kind="network_mail", topics=(), network_ids=(logistikk.id,))
    start(mail)
    tasks.fill_ledger(mail.id)
    other = make_newsletter("Neste", kind="network_mail", topics=(), network_ids=(logistikk.id,))
    start(other)
    tasks.fill_ledger(other.id)
    db.session.execute(delete(Contact).where(Contact.id == contact_ids[0]))
    db.session.commit()
    assert ledger_contacts(mail.id) == contact_ids[1:]
    assert ledger_contacts(other.id) == contact_ids[1:]
    db.session.execute(delete(Newsletter).where(Newsletter.id == mail.id))
    db.session.commit()
    assert ledger_contacts(mail.id) == []
    assert ledger_contacts(other.id) == contact_ids[1:]


@contextlib.contextmanager
def uncommitted_fill(app, newsletter_id: int, batches: int | None):
    """`ledger.write_planned` in another thread, its transaction held open (its locks
    held) while the block runs, committed after it; yields the batches it took."""
    holding, release = threading.Event(), threading.Event()
    taken = []

    def writer():
        with app.app_context():
            taken.append(ledger.write_planned(newsletter_id, batches))
            holding.set()
            release.wait(10)
            db.session.commit()

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(10)
    try:
        yield taken[0]
    finally:
        release.set()
        thread.join(10)


def test_writing_the_ledger_holds_back_a_delete_of_its_contacts_but_not_an_edit(
    app, app_ctx, small_chunks
):
    """PostgreSQL: while a fill writes rows, staff can still edit those contacts (and a
    second newsletter can write rows for them); deleting one waits for the commit."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time")
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)  # batch 0 written; 1, 2 and 3 planned
    planned = sorted(set(contact_ids) - set(ledger_contacts(newsletter.id)))
    with uncommitted_fill(app, newsletter.id, None), db.engine.connect() as other:
        with other.begin():
            other.execute(text("SET LOCAL lock_timeout = '1s'"))
            other.execute(
                text("UPDATE contact SET first_name = 'Endret' WHERE id = :id"),
                {"id": planned[0]},
            )
        with pytest.raises(OperationalError, match="lock timeout"), other.begin():
            other.execute(text("SET LOCAL lock_timeout = '1s'"))
            other.execute(text("DELETE FROM contact WHERE id = :id"), {"id": planned[0]})
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)
    assert db.session.get(Contact, planned[0]).first_name == "Endret"


def test_two_writers_at_once_share_the_planned_batches_out(app, app_ctx, small_chunks):
    """PostgreSQL: the fill job and the reconciler at the same time each take batches
    the other has not locked; every contact gets one row."""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has one writer at a time: the second waits for the first")
    contact_ids = bulk_subscribers(7)
    newsletter = make_newsletter()
    start(newsletter)  # batch 0 written; 1, 2 and 3 planned
    with uncommitted_fill(app, newsletter.id, 1) as taken:  # locks batch 1
        # Waiting for the first writer's lock would be an error here, not a delay.
        db.session.execute(text("SET LOCAL lock_timeout = '2s'"))
        assert ledger.write_planned(newsletter.id, None) == 2  # batches 2 and 3
        db.session.commit()
    assert taken == 1
    assert [state for _n, state, _s in batch_states(newsletter.id)] == ["pending"] * 4
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)
    assert ledger.write_planned(newsletter.id, None) == 0


def test_a_second_writer_of_a_batch_adds_no_row_and_the_insert_is_compiled_once(
    app, app_ctx, small_chunks
):
    """SQLite: a writer that waited for the first one's lock finds the batch's rows
    written and adds none (INSERT OR IGNORE), without an error. The statement is
    compiled once per process: `on_conflict_do_nothing()` made it uncacheable."""
    contact_ids = bulk_subscribers(3)
    newsletter = make_newsletter()
    start(newsletter)  # batch 0 written; 1 planned
    batch = db.session.scalar(
        select(NewsletterBatch).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.number == 1
        )
    )
    dialect = db.engine.dialect.name
    statement = ledger._write_planned_statement(dialect, "consent")
    assert statement._generate_cache_key() is not None
    assert ledger.write_planned(newsletter.id, None) == 1
    db.session.commit()
    if dialect != "postgresql":  # PostgreSQL's second writer never gets this far
        # The second writer's INSERT, as it runs after waiting (the batch still planned
        # in its snapshot): the rows are there, none is added.
        db.session.execute(
            text("UPDATE newsletter_batch SET planned = :planned WHERE id = :id"),
            {"planned": f"[[{contact_ids[2]}, null]]", "id": batch.id},
        )
        assert run_core(statement, {"batch_id": batch.id}).rowcount == 0
        db.session.rollback()
    assert ledger_contacts(newsletter.id) == sorted(contact_ids)


def test_marking_rows_sent_leaves_the_ledgers_indexes_alone_on_postgresql(app, app_ctx):
    """Pages half empty (migrations 0036, 0038): a row's update when its request is
    accepted is a HOT update, written beside the old version, with no index entries to
    add. (Migration 0036 alone: about two in five.)"""
    if db.engine.dialect.name != "postgresql":
        pytest.skip("a PostgreSQL storage setting")
    bulk_subscribers(300)
    newsletter = make_newsletter()
    start(newsletter)
    db.session.commit()
    R = NewsletterRecipient
    row_ids = db.session.scalars(select(R.id).where(R.newsletter_id == newsletter.id)).all()
    assert len(row_ids) == 300
    ledger.mark_rows_sent((newsletter.id, 0), row_ids, utcnow(), "sg-1")
    hot = db.session.scalar(
        text("SELECT pg_stat_get_xact_tuples_hot_updated('newsletter_recipient'::regclass)")
    )
    assert hot >= 250, hot  # nearly all (280 of 300 measured; 70 % full pages: ~120)
