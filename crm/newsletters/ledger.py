"""The recipient ledger: created in one transaction when sending starts, then settled.

`create_ledger` freezes the content, inserts one row per recipient (UNIQUE per
newsletter and contact) numbered into batches of up to NEWSLETTER_BATCH_SIZE, and the
batch rows, all with INSERT … SELECT so 100,000 recipients take one round trip each.
The rest of this module keeps the batches' counters and the newsletter's state in
step with the rows. Nothing here commits.
"""

from __future__ import annotations

import functools
from datetime import datetime

from sqlalchemy import (
    Integer,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
    text,
    true,
    update,
)

from crm.bulk import chunks, given_rows, id_in, id_join_parameter, ids_value
from crm.database import run_core
from crm.extensions import db
from crm.members.models import Contact, Network
from crm.newsletters import audience, compose
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.newsletters.queueing import after_commit, batch_job_id
from crm.newsletters.settings import batch_size
from crm.subscriptions.links import public_url
from crm.timeutil import utcnow


def archive_url(newsletter: Newsletter) -> str:
    return public_url(f"/nyhetsbrev/{newsletter.id}") if newsletter.in_archive else ""


def network_names(newsletter: Newsletter) -> tuple[str, ...]:
    """The networks whose mail it is (network mail), by name; () for a newsletter."""
    networks = audience.Audience.of(newsletter).basis_networks
    if not networks:
        return ()
    return tuple(
        db.session.scalars(
            select(Network.name).where(Network.id.in_(networks)).order_by(Network.name)
        )
    )


def freeze_content(newsletter: Newsletter) -> None:
    """Render the email once; every batch (and any resend) sends exactly this."""
    rendered = compose.render_email(
        newsletter.subject,
        newsletter.preheader,
        newsletter.body,
        archive_url(newsletter),
        network_names=network_names(newsletter),
        actions=compose.mail_actions(newsletter),
    )
    newsletter.html = rendered.html
    newsletter.text = rendered.text


# Ledger rows written when sending starts, in whole batches, by database: on PostgreSQL
# the first request can go out while the rest are written (`write_planned`, a job of its
# own, FILL_ROWS at a time per transaction). SQLite writes them all at once: it has one
# writer at a time, so a fill job beside the senders only made them wait for its lock
# (2026-12-07, 20,000 recipients: see bench/RESULTS.md). Module constants, not settings:
# tests lower them.
FIRST_ROWS: dict[str, int] = {"postgresql": 2_000}
FILL_ROWS = 5_000


def create_ledger(newsletter: Newsletter) -> int:
    """Fix the recipients and the batches they go out in; write the first batches'
    ledger rows. The row count.

    One INSERT … SELECT makes every batch from the audience (one snapshot,
    deduplicated), each `planned` with its recipients as JSON: sizes, and so the
    newsletter's counts, are right from the start. The first FIRST_ROWS rows' batches
    get their ledger rows (and jobs) now; the rest are written by the `fill_ledger`
    job, enqueued ahead of them, while the first batches go out. Until then the
    newsletter cannot finish (`finish_if_done`), and the reconciler resumes an
    interrupted fill.
    """
    size = batch_size()
    now = utcnow()
    recipients = audience.recipients_with_basis(audience.Audience.of(newsletter)).subquery()
    numbered = select(
        recipients.c.contact_id,
        recipients.c.network_id,
        ((func.row_number().over(order_by=recipients.c.contact_id) - 1) // size).label("number"),
    ).subquery()
    per_batch = select(
        literal(newsletter.id),
        numbered.c.number,
        literal("planned"),
        func.count(),
        _json_list(numbered.c.contact_id, numbered.c.network_id),
        literal(0),
        literal(0),
        literal(0),
        literal(0),
        literal(0),
        literal(""),
        literal(0),
        literal(now, type_=NewsletterBatch.updated_at.type),
    ).group_by(numbered.c.number)
    B = NewsletterBatch
    sizes = db.session.execute(
        insert(B)
        .from_select(
            [
                "newsletter_id",
                "number",
                "state",
                "size",
                "planned",
                "sent_count",
                "failed_count",
                "skipped_count",
                "attempts",
                "resends",
                "last_error",
                "enqueued_count",
                "updated_at",
            ],
            per_batch,
        )
        .returning(B.size)
    ).all()
    total = sum(number for (number,) in sizes)
    # The rows never change basis after this: counted once, for the pages.
    networks = audience.Audience.of(newsletter).basis_networks
    if not networks:
        per_basis = [[_default_basis(newsletter), None, total]] if total else []
    else:
        per_basis = [list(row) for row in db.session.execute(_planned_basis_counts(newsletter))]
    db.session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter.id)
        .values(basis_counts=per_basis)
        .execution_options(synchronize_session=False)
    )
    first_rows = FIRST_ROWS.get(_dialect())
    if first_rows is None:
        write_planned(newsletter.id, None)
        return total
    if len(sizes) * size > first_rows:
        # Ahead of the first batches' jobs: one worker writes while another sends.
        after_commit("ledger", newsletter.id)
    write_planned(newsletter.id, max(1, first_rows // size))
    return total


def _default_basis(newsletter: Newsletter) -> str:
    """The basis of a row without a basis network (as `audience.recipients_with_basis`)."""
    kind = newsletter.kind or "newsletter"
    return (
        audience.BASIS_REGISTRATION if kind in audience.REGISTRANT_KINDS else audience.BASIS_CONSENT
    )


def _dialect() -> str:
    return db.session.get_bind().dialect.name


def _postgresql() -> bool:
    return _dialect() == "postgresql"


def _json_list(contact_id, network_id):
    """The aggregate that makes a batch's `planned`: [[contact_id, network_id], …] (in
    no particular order: a batch's rows may be written in any)."""
    if _postgresql():
        return func.json_agg(func.json_build_array(contact_id, network_id))
    return func.json_group_array(func.json_array(contact_id, network_id))


def _planned_rows():
    """A select of the planned recipients: (batch id, newsletter id, batch number,
    contact id, basis network id), one row per element of each batch's `planned`."""
    B = NewsletterBatch
    if _postgresql():
        element = func.json_array_elements(B.planned).table_valued("value").alias("recipient")
        contact_id = cast(element.c.value.op("->>")(literal_column("0")), Integer)
        network_id = cast(element.c.value.op("->>")(literal_column("1")), Integer)
    else:
        element = func.json_each(B.planned).table_valued("value").alias("recipient")
        contact_id = cast(func.json_extract(element.c.value, "$[0]"), Integer)
        network_id = cast(func.json_extract(element.c.value, "$[1]"), Integer)
    return (
        select(
            B.id.label("batch_id"),
            B.newsletter_id,
            B.number,
            contact_id.label("contact_id"),
            network_id.label("network_id"),
        )
        .select_from(B)
        .join(element, true())
    )


def _into_ledger(dialect: str):
    """The INSERT of ledger rows: on PostgreSQL a plain one (the batch's row lock keeps
    a second writer out; ON CONFLICT would cost a speculative insertion per row);
    elsewhere a writer that waited for the first one's commit must add nothing.

    SQLite's INSERT OR IGNORE, not SQLAlchemy's `on_conflict_do_nothing()`: a statement
    with that clause has no cache key (SQLAlchemy 2.0), so it was compiled anew for
    every batch, 1.9 ms each, 37 of the 150 ms a 20,000-recipient start took. The same
    effect here: every NOT NULL column gets a value and the table has no CHECK, so the
    only constraint it can ignore is the unique one."""
    if dialect == "postgresql":
        return insert(NewsletterRecipient)
    return insert(NewsletterRecipient).prefix_with("OR IGNORE")


def _planned_basis_counts(newsletter: Newsletter):
    """(basis, basis_network_id, rows) of a newsletter's planned batches."""
    planned = _planned_rows().where(NewsletterBatch.newsletter_id == newsletter.id).subquery()
    basis = case(
        (planned.c.network_id.is_(None), _default_basis(newsletter)),
        else_=audience.BASIS_MEMBERSHIP,
    )
    return (
        select(basis, planned.c.network_id, func.count())
        .group_by(basis, planned.c.network_id)
        .order_by(basis, planned.c.network_id)
    )


def write_planned(newsletter_id: int, batches: int | None) -> int:
    """Write the ledger rows of up to `batches` (None: all) planned batches of the
    newsletter, the lowest numbers first, which become pending, and enqueue their jobs
    after commit; those of a cancelled newsletter are skipped instead. The number of
    batches written (0: none was left). Does not commit.

    Safe to run twice at once (the job and the reconciler): on PostgreSQL each locks
    the batches it takes, skipping those the other has locked, and finds them pending
    once it could lock them; elsewhere the second waits for the first's write lock,
    then its INSERT adds nothing (ON CONFLICT DO NOTHING) and its conditional UPDATE
    changes nothing. A contact deleted since the audience was fixed is left out (the
    batch's size says so). A contact given a row by a merge meanwhile was taken out of
    the plan then (`drop_planned`).
    """
    B = NewsletterBatch
    chosen = (
        select(B.id)
        .where(B.newsletter_id == newsletter_id, B.state == "planned")
        .order_by(B.number)
        .limit(batches)
    )
    if _postgresql():
        chosen = chosen.with_for_update(skip_locked=True)
    chosen = db.session.scalars(chosen).all()
    if not chosen:
        return 0
    default_basis = _default_basis(db.session.get(Newsletter, newsletter_id))
    written = []
    for batch_id in chosen:
        # As Core (`run_core`): given parameters, the session would take an INSERT for
        # an ORM bulk insert of those rows.
        inserted = run_core(
            _write_planned_statement(_dialect(), default_basis), {"batch_id": batch_id}
        ).rowcount
        job_id = batch_job_id(newsletter_id, batch_id, 1)
        became_pending = db.session.execute(
            update(B)
            .where(B.id == batch_id, B.state == "planned")
            .values(
                state="pending",
                planned=None,
                size=inserted,
                job_id=job_id,
                enqueued_count=1,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if became_pending:
            written.append((batch_id, job_id))
    # Read after the rows are written, with a share lock: cancelling (which locks the
    # row for update first) either came before, and is seen here, or waits for this
    # transaction and then skips the batches written here with the rest.
    state = db.session.scalar(
        select(Newsletter.state).where(Newsletter.id == newsletter_id).with_for_update(read=True)
    )
    for batch_id, job_id in written:
        if state == "cancelled":
            skip_batch(db.session.get(B, batch_id), "cancelled")
        else:
            after_commit("batch", batch_id, job_id)
    return len(chosen)


def drop_planned(contact_id: int, newsletter_ids: list[int]) -> None:
    """Take a contact out of these newsletters' planned batches (their rows not written
    yet): a merge gave them a row of their own there (`services.merge_recipients`),
    which stands for them.

    PostgreSQL only. Its writer's plain INSERT would fail on the second row, and with
    it every try at writing that batch: the rest of the newsletter would never go out.
    Elsewhere the writer's INSERT OR IGNORE leaves it out. Done here, once per merge,
    rather than by a check of every row the writer inserts (1.2 ms more a batch).
    """
    if not newsletter_ids or not _postgresql():
        return
    db.session.execute(
        text(
            "UPDATE newsletter_batch SET size = size - 1, planned = ("
            "  SELECT coalesce(json_agg(e.value), '[]'::json)"
            "  FROM json_array_elements(planned) AS e WHERE (e.value ->> 0)::int <> :contact)"
            " WHERE state = 'planned' AND newsletter_id = ANY(:newsletters)"
            " AND EXISTS (SELECT FROM json_array_elements(planned) AS e"
            "  WHERE (e.value ->> 0)::int = :contact)"
        ),
        {"contact": contact_id, "newsletters": list(newsletter_ids)},
    )


@functools.cache
def _write_planned_statement(dialect: str, default_basis: str):
    """The INSERT of a planned batch's ledger rows, built once per process (and basis)
    with the batch bound at execution: a fill job writes a batch at a time."""
    B = NewsletterBatch
    of_batch = B.id == bindparam("batch_id", type_=Integer())
    rows = _planned_rows().where(of_batch).subquery()
    contact = Contact.id == rows.c.contact_id
    if dialect == "postgresql":
        # The batch's contacts by their key, not by hashing every contact: PostgreSQL
        # takes a JSON array for 100 elements, so with a few thousand contacts it chose
        # to read them all for each batch (20,000 contacts: 13.7 → 11.2 ms a batch).
        in_batch = _planned_rows().where(of_batch).subquery()
        contact &= Contact.id == any_(func.array(select(in_batch.c.contact_id).scalar_subquery()))
    ledger_rows = (
        select(
            rows.c.newsletter_id,
            rows.c.contact_id,
            rows.c.number,
            literal("pending"),
            literal(""),
            literal(""),
            case(
                (rows.c.network_id.is_(None), default_basis),
                else_=audience.BASIS_MEMBERSHIP,
            ),
            rows.c.network_id,
        )
        # The ledger's key check (it has no foreign keys, see the model): a contact
        # deleted since the audience was fixed is not written; one that exists is
        # locked FOR KEY SHARE (as a foreign key's check would), so that a delete waits
        # for this commit, then takes the row along, while edits of the contact and
        # other newsletters' writers go on.
        .join(Contact, contact)
        .with_for_update(read=True, key_share=True, of=Contact)
    )
    return (
        _into_ledger(dialect)
        .from_select(
            [
                "newsletter_id",
                "contact_id",
                "batch_number",
                "state",
                "skip_reason",
                "error",
                "basis",
                "basis_network_id",
            ],
            ledger_rows,
        )
        # SQLAlchemy keeps the driver's row count for UPDATE and DELETE only.
        .execution_options(preserve_rowcount=True)
    )


def basis_counts_query(newsletter_id: int):
    """(basis, basis_network_id, rows) of a newsletter's ledger."""
    R = NewsletterRecipient
    return (
        select(R.basis, R.basis_network_id, func.count())
        .where(R.newsletter_id == newsletter_id)
        .group_by(R.basis, R.basis_network_id)
        .order_by(R.basis, R.basis_network_id)
    )


def counts_by_basis(newsletter_id: int) -> dict[int | str | None, int]:
    """Ledger rows per basis: None = consent, a network id = membership of it,
    "registration" = registered for the event (as `audience.count_by_basis`);
    from Newsletter.basis_counts, written with the ledger."""
    per_basis = db.session.scalar(
        select(Newsletter.basis_counts).where(Newsletter.id == newsletter_id)
    )
    if per_basis is None:  # a ledger made some other way (tests that build rows by hand)
        per_basis = db.session.execute(basis_counts_query(newsletter_id)).all()
    counts: dict[int | str | None, int] = {}
    for basis, network_id, number in per_basis:
        key = network_id if basis == "membership" else (basis if basis != "consent" else None)
        counts[key] = counts.get(key, 0) + int(number)
    return counts


def counts(newsletter_id: int) -> dict[str, int]:
    """Rows per state, from the batches' counters (cheap at 100,000 recipients)."""
    return counts_of([newsletter_id])[newsletter_id]


def counts_of(newsletter_ids: list[int]) -> dict[int, dict[str, int]]:
    """`counts` of each newsletter, in one query (a list page shows many)."""
    B = NewsletterBatch
    result = {
        newsletter_id: {"total": 0, "sent": 0, "failed": 0, "skipped": 0, "pending": 0}
        for newsletter_id in newsletter_ids
    }
    if not newsletter_ids:
        return result
    for newsletter_id, size, sent, failed, skipped in db.session.execute(
        select(
            B.newsletter_id,
            func.coalesce(func.sum(B.size), 0),
            func.coalesce(func.sum(B.sent_count), 0),
            func.coalesce(func.sum(B.failed_count), 0),
            func.coalesce(func.sum(B.skipped_count), 0),
        )
        .where(B.newsletter_id.in_(newsletter_ids))
        .group_by(B.newsletter_id)
    ):
        result[newsletter_id] = {
            "total": int(size),
            "sent": int(sent),
            "failed": int(failed),
            "skipped": int(skipped),
            "pending": int(size - sent - failed - skipped),
        }
    return result


def in_batch(batch: NewsletterBatch) -> tuple:
    """WHERE terms selecting a batch's ledger rows (they carry its number, not its id)."""
    R = NewsletterRecipient
    return (R.newsletter_id == batch.newsletter_id, R.batch_number == batch.number)


def refresh_batch(batch_id: int, **values) -> None:
    """Recount a batch's rows into its counters; `sent` / `failed` once none is pending.

    One UPDATE … FROM its rows' counts (a SELECT and an UPDATE before: a round trip
    more for every batch sent), built once per set of `values` given.
    """
    params = {f"set_{name}": value for name, value in values.items()}
    run_core(
        _refresh_statement(tuple(sorted(values))),
        {"batch_id": batch_id, "now": utcnow(), **params},
    )


@functools.cache
def _refresh_statement(names: tuple[str, ...]):
    R, B = NewsletterRecipient, NewsletterBatch
    batch_id = bindparam("batch_id", type_=Integer())

    def rows_in(state: str):
        return func.coalesce(func.sum(case((R.state == state, 1), else_=0)), 0)

    counts = (
        select(
            # The batch's id, to join on: one row of counts always (no GROUP BY), also
            # for a batch without rows.
            batch_id.label("batch_id"),
            rows_in("pending").label("pending"),
            rows_in("sent").label("sent"),
            rows_in("failed").label("failed"),
            rows_in("skipped").label("skipped"),
        )
        .join(B, (B.newsletter_id == R.newsletter_id) & (B.number == R.batch_number))
        .where(B.id == batch_id)
        .subquery("counts")
    )
    settled = counts.c.pending == 0
    state = case(
        (~settled, "pending"),
        ((counts.c.failed > 0) & (counts.c.sent == 0), "failed"),
        else_="sent",
    )
    values = {name: bindparam(f"set_{name}", type_=getattr(B, name).type) for name in names}
    # Settled: nobody holds it any more, whoever was sending it.
    for name in ("lease_owner", "lease_expires_at"):
        values.setdefault(name, case((settled, None), else_=getattr(B, name)))
    return (
        update(B)
        .where(B.id == counts.c.batch_id)
        .values(
            sent_count=counts.c.sent,
            failed_count=counts.c.failed,
            skipped_count=counts.c.skipped,
            state=state,
            updated_at=bindparam("now", type_=B.updated_at.type),
            **values,
        )
        .execution_options(synchronize_session=False)
    )


def finish_if_done(newsletter_id: int) -> bool:
    """`sending` → `finished` when no row is pending any more, nor any batch still
    planned (its rows not written yet): a conditional UPDATE.

    Only the rows of batches still pending are looked at: a batch is settled only in
    the transaction that counted none of its rows pending (`refresh_batch`), and no row
    ever becomes pending again. So the question costs a look at the pending batches'
    rows, not at all 100,000 (no index holds `state`: see the model).
    """
    result = run_core(_finish_statement(), {"newsletter_id": newsletter_id, "now": utcnow()})
    return result.rowcount == 1


@functools.cache
def _finish_statement():
    R, B = NewsletterRecipient, NewsletterBatch
    newsletter_id = bindparam("newsletter_id", type_=Integer())
    return (
        update(Newsletter)
        .where(
            Newsletter.id == newsletter_id,
            Newsletter.state == "sending",
            ~exists().where(B.newsletter_id == newsletter_id, B.state == "planned"),
            ~exists().where(
                B.newsletter_id == newsletter_id,
                B.state == "pending",
                R.newsletter_id == B.newsletter_id,
                R.batch_number == B.number,
                R.state == "pending",
            ),
        )
        .values(state="finished", finished_at=bindparam("now", type_=Newsletter.finished_at.type))
        .execution_options(synchronize_session=False)
    )


def skip_unsent(newsletter: Newsletter, reason: str) -> int:
    """Mark pending rows skipped, except those of a batch whose request is under way
    or whose outcome is unknown.

    Such a batch may well be accepted by the provider; its sender records the outcome,
    whatever the newsletter's state is by then (or the reconciler does, from events).
    """
    B = NewsletterBatch
    # Batches still planned (a cancel while the ledger is being written): their rows are
    # written now, and skipped at once (`write_planned` sees the newsletter cancelled).
    planned = db.session.scalar(
        select(func.coalesce(func.sum(B.size), 0)).where(
            B.newsletter_id == newsletter.id, B.state == "planned"
        )
    )
    if planned:
        write_planned(newsletter.id, None)
    # Not idle: a request under way, or one whose outcome is not known yet (a 5xx or
    # timeout awaiting the webhook's events). The reconciler settles those later.
    idle_batches = select(B.number).where(
        B.newsletter_id == newsletter.id,
        B.state == "pending",
        B.in_flight_since.is_(None),
        B.ambiguous_since.is_(None),
    )
    R = NewsletterRecipient
    result = db.session.execute(
        update(R)
        .where(
            R.newsletter_id == newsletter.id,
            R.state == "pending",
            R.batch_number.in_(idle_batches),
        )
        .values(state="skipped", skip_reason=reason)
        .execution_options(synchronize_session=False)
    )
    for batch_id in db.session.scalars(
        select(B.id).where(B.newsletter_id == newsletter.id, B.state == "pending")
    ).all():
        refresh_batch(batch_id)
    return planned + result.rowcount


def skip_waiting_rows(row_ids: list[int], reason: str) -> int:
    """Mark these rows skipped (`reason`) where they are still pending in a batch no
    request is under way for, as `skip_unsent` does, and recount their batches. The
    number of rows skipped."""
    if not row_ids:
        return 0
    R, B = NewsletterRecipient, NewsletterBatch
    idle = (
        select(B.id)
        .where(
            B.newsletter_id == R.newsletter_id,
            B.number == R.batch_number,
            B.state == "pending",
            B.in_flight_since.is_(None),
            B.ambiguous_since.is_(None),
        )
        .exists()
    )
    skipped = 0
    for ids in chunks(row_ids):
        skipped += db.session.execute(
            update(R)
            .where(id_in(R.id, ids), R.state == "pending", idle)
            .values(state="skipped", skip_reason=reason)
            .execution_options(synchronize_session=False)
        ).rowcount
    if skipped:
        batches = db.session.execute(
            select(B.id, B.newsletter_id)
            .join(R, (R.newsletter_id == B.newsletter_id) & (R.batch_number == B.number))
            .where(R.id.in_(row_ids))
            .distinct()
        ).all()
        for batch_id, _newsletter_id in batches:
            refresh_batch(batch_id)
        # Those were perhaps the last rows waiting (else the reconciler finishes it).
        for newsletter_id in sorted({n for _b, n in batches}):
            finish_if_done(newsletter_id)
    return skipped


def skip_batch(batch: NewsletterBatch, reason: str) -> None:
    """Mark a batch's pending rows skipped (a cancelled newsletter's last batches)."""
    R = NewsletterRecipient
    db.session.execute(
        update(R)
        .where(*in_batch(batch), R.state == "pending")
        .values(state="skipped", skip_reason=reason)
        .execution_options(synchronize_session=False)
    )
    refresh_batch(batch.id, in_flight_since=None, ambiguous_since=None)


# -- the newsletter's reach counters ------------------------------------------------------
# Newsletter.sent_count is its rows in state "sent"; each other counter is how many of
# those have the webhook timestamp below. Both ways a row can enter a counter change it
# here, in the transaction of the row's change: a row becoming sent (with the events
# that may have come before our own record of the 202), or a first event on a sent row.

# ledger timestamp -> the Newsletter counter of sent rows that have it
EVENT_COUNTERS = {
    "delivered_at": "delivered_count",
    "bounced_at": "bounced_count",
    "opened_at": "opened_count",
    "clicked_at": "clicked_count",
    "spam_reported_at": "spam_count",
}


def _add_to_counters(newsletter_id: int, added: dict[str, int]) -> None:
    added = {name: number for name, number in added.items() if number}
    if not added:
        return
    db.session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter_id)
        .values({name: getattr(Newsletter, name) + number for name, number in added.items()})
        .execution_options(synchronize_session=False)
    )


def mark_sent(*conditions, **values) -> int:
    """The not yet sent rows matching `conditions` are sent (with `values`); their
    newsletters' counters grow by them and by the events they already have. The number
    of rows marked.

    On PostgreSQL one statement: the rows' UPDATE in a WITH clause, counted there and
    added to the counters, so a batch's 1,000 rows never travel back to us. Elsewhere
    the rows' UPDATE returns them, and one UPDATE per newsletter concerned follows.
    """
    dialect = _dialect()
    return _run_mark_sent(_mark_sent_statement(conditions, values, dialect), dialect, {})


def mark_rows_sent(
    batch_key: tuple[int, int],
    row_ids: list[int],
    sent_at: datetime,
    provider_message_id: str | None,
) -> int:
    """`mark_sent` of these rows (a 202's) of the batch `batch_key` (newsletter id,
    batch number), with no error: the statement every batch runs, built once per
    process (building it, and SQLAlchemy's cache key of it, cost more CPU than the
    database's work on 1,000 rows).

    The batch's key is part of the condition, so the batch's index finds the rows, and
    the ids are joined to them (`id_join_parameter`): with the ids alone as `= ANY`,
    PostgreSQL chose to read the whole ledger (at the benchmark's 83,000 rows, 1,000
    look-ups by primary key seemed dearer to it than a scan): 5 ms, against 1.5 ms.
    """
    dialect = _dialect()
    newsletter_id, batch_number = batch_key
    return _run_mark_sent(
        _rows_sent_statement(dialect),
        dialect,
        {
            "of_newsletter": newsletter_id,
            "of_batch": batch_number,
            "row_ids": ids_value(row_ids, dialect),
            "sent_at": sent_at,
            "provider_message_id": provider_message_id,
        },
    )


@functools.cache
def _rows_sent_statement(dialect: str):
    R = NewsletterRecipient
    return _mark_sent_statement(
        (
            # (Not named for the columns: an UPDATE keeps those names for its SET.)
            R.newsletter_id == bindparam("of_newsletter", type_=Integer()),
            R.batch_number == bindparam("of_batch", type_=Integer()),
            id_join_parameter(R.id, "row_ids", dialect),
        ),
        {
            "sent_at": bindparam("sent_at", type_=R.sent_at.type),
            "provider_message_id": bindparam(
                "provider_message_id", type_=R.provider_message_id.type
            ),
            "error": "",
            # A merge during the request may have noted the row for skipping
            # (`services.merge_recipients`): it went out, the note is void.
            "skip_reason": "",
        },
        dialect,
    )


def _mark_sent_statement(conditions, values: dict, dialect: str):
    R = NewsletterRecipient
    stamps = [getattr(R, column) for column in EVENT_COUNTERS]
    marking = (
        update(R)
        .where(*conditions, R.state != "sent")
        .values(state="sent", **values)
        .returning(R.newsletter_id, *stamps)
    )
    if dialect != "postgresql":
        return marking
    marked = marking.cte("marked")
    counters = {
        "sent_count": func.count(),
        **{counter: func.count(marked.c[column]) for column, counter in EVENT_COUNTERS.items()},
    }
    per_newsletter = (
        select(marked.c.newsletter_id, *[value.label(name) for name, value in counters.items()])
        .group_by(marked.c.newsletter_id)
        .cte("per_newsletter")
    )
    return (
        update(Newsletter)
        .where(Newsletter.id == per_newsletter.c.newsletter_id)
        .values(
            {name: getattr(Newsletter, name) + per_newsletter.c[name] for name in counters}
            # Given here: SQLAlchemy's onupdate default comes out as NULL in this form.
            | {"updated_at": bindparam("now", type_=Newsletter.updated_at.type)}
        )
        .returning(per_newsletter.c.sent_count)
    )


def _run_mark_sent(statement, dialect: str, params: dict) -> int:
    if dialect == "postgresql":
        added = run_core(statement, {**params, "now": utcnow()}).all()
        return sum(number for (number,) in added)
    marked = run_core(statement, params).all()
    added: dict[int, dict[str, int]] = {}
    for newsletter_id, *row_stamps in marked:
        counts = added.setdefault(newsletter_id, {"sent_count": 0})
        counts["sent_count"] += 1
        for name, stamp in zip(EVENT_COUNTERS.values(), row_stamps, strict=True):
            if stamp is not None:
                counts[name] = counts.get(name, 0) + 1
    for newsletter_id, counts in added.items():
        _add_to_counters(newsletter_id, counts)
    return len(marked)


def note_first_event(row_id: int, newsletter_id: int, column: str, at) -> None:
    """A webhook event's timestamp on its row, if the row has none yet; counted when the
    row is sent (a row still pending is counted when it becomes sent, by `mark_sent`)."""
    R = NewsletterRecipient
    state = db.session.scalar(
        update(R)
        .where(R.id == row_id, R.newsletter_id == newsletter_id, getattr(R, column).is_(None))
        .values({column: at})
        .returning(R.state)
        .execution_options(synchronize_session=False)
    )
    if state == "sent" and column in EVENT_COUNTERS:
        _add_to_counters(newsletter_id, {EVENT_COUNTERS[column]: 1})


def note_first_events(stamps: list[tuple[int, int, str, datetime]]) -> None:
    """`note_first_event` for a webhook delivery's events: `stamps` are (row id,
    newsletter id, column, time), at most one per row and column. One UPDATE per column
    and one per newsletter concerned (in id order: concurrent deliveries take the same
    locks in the same order); the caller takes the rows' locks first, in id order."""
    R = NewsletterRecipient
    by_column: dict[str, list[tuple[int, int, datetime]]] = {}
    for row_id, newsletter_id, column, at in stamps:
        by_column.setdefault(column, []).append((row_id, newsletter_id, at))
    added: dict[int, dict[str, int]] = {}
    for column, rows in by_column.items():
        stamp = getattr(R, column)
        given = given_rows(
            "given", [("id", R.id.type), ("newsletter_id", R.id.type), ("at", stamp.type)], rows
        )
        changed = db.session.execute(
            update(R)
            .where(R.id == given.c.id, R.newsletter_id == given.c.newsletter_id, stamp.is_(None))
            .values({column: given.c.at})
            .returning(R.newsletter_id, R.state)
            .execution_options(synchronize_session=False)
        ).all()
        counter = EVENT_COUNTERS.get(column)
        for newsletter_id, state in changed:
            if state == "sent" and counter:
                counts = added.setdefault(newsletter_id, {})
                counts[counter] = counts.get(counter, 0) + 1
    for newsletter_id in sorted(added):
        _add_to_counters(newsletter_id, added[newsletter_id])
