"""Sending one batch: claim it, send it in one provider request, record the outcome.
A batch's job then goes on with its newsletter's next untried batches for a while
(`run_batches`), each claimed the same way.

Exactly-once effect, step by step:

1. Claim. A conditional UPDATE takes the batch's lease (owner token + expiry) only if
   it is pending, not leased by a live sender, due, and its newsletter is sending. On
   PostgreSQL the row is first locked with SELECT … FOR UPDATE SKIP LOCKED, so two
   claimers never even wait for each other. One sender per batch, on both databases.
2. Earlier outcome unknown? If a previous request's answer was never recorded (the
   sender died mid-request) or was a 5xx / timeout, the batch is *ambiguous*: it is
   checked against the webhook's events for its recipients. Any event means the
   provider accepted it: the rows become `sent` without a resend. No event within
   NEWSLETTER_AMBIGUOUS_GRACE_SECONDS: it is sent again (README: resend policy).
3. Re-check each pending row with the audience rule (consent, suppression, erasure):
   rows that no longer qualify become `skipped`.
4. Rate limit (the Redis bucket shared by all workers), then mark the batch in flight
   (committed) and make the request.
5. 202: the request's rows become `sent` with the X-Message-Id, in one transaction.
   429: everyone pauses until the reset time, then the batch is tried again (not a
   failed attempt). 5xx / timeout: ambiguous, see 2. 400: the refused recipient (if
   named) fails and the rest go again; otherwise the batch fails. 401/403, or a batch
   out of attempts (NEWSLETTER_MAX_ATTEMPTS): the newsletter pauses, rows stay pending.

Each step commits before the next, so a crash anywhere leaves a state the next
sender (or the reconciler, once the lease expired) continues from.
"""

from __future__ import annotations

import functools
import logging
import re
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta
from urllib.error import URLError

from flask import current_app
from flask_babel import gettext as _
from sqlalchemy import Integer, bindparam, exists, func, inspect, or_, select, text, true, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import aliased, make_transient_to_detached

from crm.bulk import id_in
from crm.database import run_core
from crm.extensions import db
from crm.mail.backends import (
    ConfigurationError,
    HeaderInjectionError,
    OutgoingMail,
    PermanentSendError,
    Recipient,
    TransientSendError,
    check_header,
)
from crm.mail.services import sender_address
from crm.members.models import Contact
from crm.newsletters import audience, compose, ledger
from crm.newsletters.backend import newsletter_backend
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.newsletters.ratelimit import RateLimiter
from crm.newsletters.settings import setting
from crm.subscriptions.links import DEFAULT_TOKEN_VERSION, unsubscribe_urls
from crm.subscriptions.models import Subscriber
from crm.subscriptions.subscribers import header_safe
from crm.timeutil import utcnow

log = logging.getLogger(__name__)

# "personalizations.12.to.0.email": the recipient SendGrid refused.
_REFUSED_PERSONALIZATION = re.compile(r"personalizations\.(\d+)\.")


@dataclass
class Step:
    """What one attempt came to: done (with an outcome), or wait this long and retry."""

    done: bool
    outcome: str = ""
    wait: float = 0.0


def Done(outcome: str) -> Step:  # noqa: N802 - reads like a value
    return Step(True, outcome)


def Wait(seconds: float, outcome: str = "waiting") -> Step:  # noqa: N802
    return Step(False, outcome, max(0.0, seconds))


def new_owner() -> str:
    """A lease owner token; in a worker it names the worker (`token@name`), so that
    the others can tell from RQ's worker registry when the holder died
    (`reconciler.release_dead_senders`) instead of waiting for the lease to run out."""
    from crm.worker import current_worker_name

    token = secrets.token_hex(8)
    name = current_worker_name()
    if name and len(name) <= OWNER_LENGTH - len(token) - 1:
        return f"{token}@{name}"
    return token


OWNER_LENGTH = 64  # NewsletterBatch.lease_owner


def lease_worker(owner: str | None) -> str | None:
    """The RQ worker named in a lease owner token, if any."""
    token, at, name = (owner or "").partition("@")
    return name if at and name else None


def _lease_until():
    return utcnow() + timedelta(seconds=setting("NEWSLETTER_LEASE_SECONDS"))


def _newsletter_sending(batch_newsletter_id):
    return exists().where(Newsletter.id == batch_newsletter_id, Newsletter.state == "sending")


def _claimable(B, now) -> tuple:
    """WHERE terms of a batch that may be claimed now (B: NewsletterBatch or an alias)."""
    return (
        B.state == "pending",
        or_(B.lease_expires_at.is_(None), B.lease_expires_at < now),
        or_(B.next_attempt_at.is_(None), B.next_attempt_at <= now),
        _newsletter_sending(B.newsletter_id),
    )


def claim_batch(batch_id: int, owner: str) -> NewsletterBatch | None:
    """Take the batch's lease if nobody holds it and it is due; None if not.

    One statement, which returns the batch. On PostgreSQL it first locks the row with
    FOR UPDATE SKIP LOCKED, so two claimers never even wait for each other.
    """
    return _claimed(
        _claim_statement(db.session.get_bind().dialect.name),
        {"batch_id": batch_id, "owner": owner, "now": utcnow(), "until": _lease_until()},
    )


def claim_next_batch(newsletter_id: int, owner: str) -> NewsletterBatch | None:
    """`claim_batch` of the newsletter's lowest-numbered batch that may be claimed now
    and was not tried yet; None if there is none."""
    return _claimed(
        _claim_statement(db.session.get_bind().dialect.name, next_of_newsletter=True),
        {"of_newsletter": newsletter_id, "owner": owner, "now": utcnow(), "until": _lease_until()},
    )


def _claimed(statement, params: dict) -> NewsletterBatch | None:
    """Run a claim as a plain statement (`run_core`) and make the row it returns the
    session's instance of the batch, as committed (`merge(load=False)`: no query).
    Through the ORM, its bulk UPDATE machinery cost more CPU than the claim itself."""
    row = run_core(statement, params).one_or_none()
    if row is None:
        return None
    batch = NewsletterBatch(**row._mapping)
    make_transient_to_detached(batch)
    return db.session.merge(batch, load=False)


@functools.cache
def _claim_statement(dialect: str, next_of_newsletter: bool = False):
    """The claim, built once per process with its values bound at execution: building
    it and SQLAlchemy's cache key of it cost more CPU than PostgreSQL's work on it.
    `next_of_newsletter`: of the newsletter's next claimable batch, not a given one."""
    B = NewsletterBatch
    now = bindparam("now", type_=B.updated_at.type)
    L = aliased(NewsletterBatch)
    if next_of_newsletter:
        chosen = (
            select(L.id)
            .where(
                L.newsletter_id == bindparam("of_newsletter", type_=Integer()),
                # Not tried yet: a batch with a history (an unknown outcome, a retry)
                # goes on with its own job, as before.
                L.attempts == 0,
                L.in_flight_since.is_(None),
                L.ambiguous_since.is_(None),
                *_claimable(L, now),
            )
            .order_by(L.number)
            .limit(1)
        )
        if dialect == "postgresql":
            chosen = chosen.with_for_update(skip_locked=True, of=L)
        target = (B.id == chosen.scalar_subquery(), *_claimable(B, now))
    else:
        batch_id = bindparam("batch_id", type_=Integer())
        target = (B.id == batch_id, *_claimable(B, now))
        if dialect == "postgresql":
            locked = (
                select(L.id)
                .where(L.id == batch_id, *_claimable(L, now))
                .with_for_update(skip_locked=True, of=L)
                .scalar_subquery()
            )
            target = (B.id == locked, *target)
    return (
        update(B)
        .where(*target)
        .values(
            lease_owner=bindparam("owner", type_=B.lease_owner.type),
            lease_expires_at=bindparam("until", type_=B.lease_expires_at.type),
            updated_at=now,
        )
        # Every column but the deferred `planned` (None once a batch is pending).
        .returning(*[column for column in B.__table__.c if column.key != "planned"])
    )


def _update_own_batch(batch: NewsletterBatch, owner: str, *conditions, **values) -> bool:
    """UPDATE the batch only while `owner` still holds its lease."""
    result = db.session.execute(
        update(NewsletterBatch)
        .where(NewsletterBatch.id == batch.id, NewsletterBatch.lease_owner == owner, *conditions)
        .values(updated_at=utcnow(), **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def mark_in_flight(batch: NewsletterBatch, owner: str, started) -> bool:
    """The batch's request goes out now: in flight since `started`, one attempt more and
    the lease renewed, only while `owner` holds the lease and the newsletter is sending.
    Whether it was marked."""
    result = run_core(
        _in_flight_statement(),
        {"batch_id": _id(batch), "owner": owner, "now": started, "until": _lease_until()},
    )
    return result.rowcount == 1


@functools.cache
def _in_flight_statement():
    """Built once per process with its values bound at execution (as the claim), and
    run as a plain UPDATE on the connection: one per batch."""
    B = NewsletterBatch
    now = bindparam("now", type_=B.updated_at.type)
    return (
        update(B)
        .where(
            B.id == bindparam("batch_id", type_=Integer()),
            B.lease_owner == bindparam("owner", type_=B.lease_owner.type),
            _newsletter_sending(B.newsletter_id),
        )
        .values(
            in_flight_since=now,
            attempts=B.attempts + 1,
            lease_expires_at=bindparam("until", type_=B.lease_expires_at.type),
            updated_at=now,
        )
    )


def extend_lease(batch: NewsletterBatch, owner: str, seconds: float = 0) -> bool:
    until = _lease_until() + timedelta(seconds=seconds)
    return _update_own_batch(batch, owner, lease_expires_at=until)


def release(batch: NewsletterBatch, owner: str, wait: float | None = None, error: str = "") -> None:
    """Give the lease back; with `wait`, the batch is not due before then."""
    values = {"lease_owner": None, "lease_expires_at": None}
    if wait is not None:
        values["next_attempt_at"] = utcnow() + timedelta(seconds=wait)
    if error:
        values["last_error"] = error[:2000]
    _update_own_batch(batch, owner, **values)


def backoff(attempts: int) -> float:
    base = setting("NEWSLETTER_RETRY_BASE_SECONDS")
    return min(setting("NEWSLETTER_RETRY_MAX_SECONDS"), base * 2 ** max(attempts - 1, 0))


# -- the rows of a batch --------------------------------------------------------------


@dataclass
class Row:
    id: int
    contact_id: int
    email: str | None
    first_name: str
    last_name: str
    # The network whose membership is the basis for mailing them (None: consent).
    network_id: int | None = None
    # Their link tokens' version (crm.subscriptions.links), read with the row; None:
    # not read, `build_mail` asks for it.
    token_version: int | None = None
    # Whether the audience rule still lets them have it (`pending_rows` asks).
    eligible: bool = True
    # Set on a row still pending: skip it if it is tried again (see `skip_ineligible`).
    skip_reason: str = ""


def batch_rows(batch: NewsletterBatch, *conditions) -> list[Row]:
    """The batch's ledger rows with their contacts' addresses, names and link token
    versions, in id order."""
    statement = _rows_statement(*ledger.in_batch(batch), *conditions)
    return [Row(*values) for values in run_core(statement)]


def pending_rows(batch: NewsletterBatch, newsletter: Newsletter) -> list[Row]:
    """The batch's pending rows, each with whether the audience rule (consent,
    suppression, erasure, …) still lets them have the newsletter, in one query."""
    statement = _pending_rows_statement(audience.Audience.of(newsletter))
    result = run_core(
        statement, {"newsletter_id": batch.newsletter_id, "batch_number": batch.number}
    )
    return [Row(*values) for values in result]


@functools.lru_cache(maxsize=32)
def _pending_rows_statement(rule: audience.Audience):
    """Built once per audience (so per newsletter) with the batch bound at execution:
    with the rule's many subqueries, building it and SQLAlchemy's cache key of it cost
    more CPU than PostgreSQL's work on 1,000 rows."""
    R = NewsletterRecipient
    return _rows_statement(
        R.newsletter_id == bindparam("newsletter_id", type_=Integer()),
        R.batch_number == bindparam("batch_number", type_=Integer()),
        R.state == "pending",
        eligible=audience.may_receive(rule),
    )


def _rows_statement(*conditions, eligible=None):
    """`Row`s of the ledger rows matching `conditions`; `eligible`: a condition on the
    row's contact, read as the row's `eligible`."""
    R = NewsletterRecipient
    return (
        select(
            R.id,
            R.contact_id,
            Contact.email,
            Contact.first_name,
            Contact.last_name,
            R.basis_network_id,
            # A contact has at most one subscriber (unique): the join adds no rows.
            func.coalesce(Subscriber.token_version, DEFAULT_TOKEN_VERSION),
            true() if eligible is None else eligible,
            R.skip_reason,
        )
        .join(Contact, Contact.id == R.contact_id)
        .outerjoin(Subscriber, Subscriber.contact_id == R.contact_id)
        .where(*conditions)
        .order_by(R.id)
    )


def _set_rows(row_ids: list[int], **values) -> None:
    if not row_ids:
        return
    R = NewsletterRecipient
    for start in range(0, len(row_ids), 1000):
        db.session.execute(
            update(R)
            .where(id_in(R.id, row_ids[start : start + 1000]))
            .values(**values)
            .execution_options(synchronize_session=False)
        )


def skip_ineligible(newsletter: Newsletter, batch: NewsletterBatch, rows: list[Row]) -> list[Row]:
    """The rows still allowed to receive it (`Row.eligible`, from `pending_rows`); the
    others are marked skipped (with why)."""
    rule = audience.Audience.of(newsletter)
    excluded = [r for r in rows if not r.eligible]
    reasons = audience.exclusion_reasons(rule, [r.contact_id for r in excluded])
    by_reason: dict[str, list[int]] = {}
    for row in excluded:
        by_reason.setdefault(reasons[row.contact_id], []).append(row.id)
    keep, seen = [], set()
    for row in rows:
        if not row.eligible:
            continue
        if row.skip_reason:
            # Merged while this row's batch was under way: the person had their copy at
            # the other contact's address (`services.merge_recipients`).
            by_reason.setdefault(row.skip_reason, []).append(row.id)
            continue
        address = row.email.lower()
        if address in seen:
            # SendGrid refuses a request naming an address twice; one copy is enough.
            by_reason.setdefault("duplicate", []).append(row.id)
            continue
        seen.add(address)
        keep.append(row)
    for reason, ids in by_reason.items():
        _set_rows(ids, state="skipped", skip_reason=reason)
    if by_reason:
        # Counted now: the request may end ambiguous, rate limited or paused, leaving
        # the batch pending (and these rows counted as pending) for minutes.
        ledger.refresh_batch(_id(batch))
    return keep


def _preferences_url(unsubscribe_url: str) -> str:
    # Both links carry the same per-contact token (crm.subscriptions.links).
    return unsubscribe_url.replace("/unsubscribe/", "/preferences/", 1)


def _checked_recipient(template: Recipient, **values) -> Recipient:
    """A Recipient like `template` (fully checked by its constructor) with its own
    address, name, links and ids.

    Its header names and the shape of their values are the template's, and the links
    are the public base URL plus a token of URL-safe characters: only the address and
    the name differ in ways a check can catch, so only they are checked here. The
    constructor's checks, 1,000 times over, were a tenth of a batch's CPU time.
    """
    check_header("To", values["email"])
    if "=?" in values["name"]:
        check_header("To", values["name"])
    recipient = object.__new__(Recipient)
    recipient.__dict__.update(template.__dict__, **values)
    return recipient


def build_mail(
    newsletter: Newsletter, batch: NewsletterBatch, rows: list[Row]
) -> tuple[OutgoingMail, list[Row], list[tuple[Row, str]]]:
    """One request's content: a personalization per row with its own links and headers.

    Returns the mail, the rows in it (in personalization order) and rows that cannot
    be mailed at all (with the reason).
    """
    # Network mail: every link is the one-click objection to a network's mail (that of
    # the row's membership basis; for consent holders, the mail's first network).
    networks = audience.Audience.of(newsletter).basis_networks
    read = all(r.token_version is not None for r in rows)
    links = unsubscribe_urls(
        [r.contact_id for r in rows],
        {r.contact_id: r.network_id or networks[0] for r in rows} if networks else None,
        versions={r.contact_id: r.token_version for r in rows} if read else None,
    )
    extra = compose.extra_substitutions(newsletter, [r.contact_id for r in rows])
    personalizer = compose.Personalizer(
        compose.tags_used(newsletter.subject, newsletter.html, newsletter.text)
    )
    recipients, included, unmailable = [], [], []
    newsletter_arg, batch_arg = str(newsletter.id), str(batch.id)
    message_id_prefix = f"nl{newsletter_arg}-"
    substitutions_of = personalizer.substitutions
    template = None
    for row in rows:
        unsubscribe = links[row.contact_id]
        row_id = str(row.id)
        substitutions = substitutions_of(row.first_name, unsubscribe, _preferences_url(unsubscribe))
        if extra:
            substitutions.update(extra.get(row.contact_id, {}))
        values = {
            "email": row.email,
            "name": header_safe(f"{row.first_name} {row.last_name}", 200),
            "message_id": message_id_prefix + row_id,
            "headers": {
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
            "substitutions": substitutions,
            "custom_args": {
                "klynge_newsletter": newsletter_arg,
                "klynge_batch": batch_arg,
                "klynge_recipient": row_id,
            },
        }
        try:
            if template is None:
                recipient = template = Recipient(**values)
            else:
                recipient = _checked_recipient(template, **values)
        except (HeaderInjectionError, ValueError) as exc:
            unmailable.append((row, str(exc)))
            continue
        recipients.append(recipient)
        included.append(row)
    mail = OutgoingMail(
        sender=sender_address(),
        subject=newsletter.subject,
        text=newsletter.text or "",
        html=newsletter.html,
        recipients=recipients,
        categories=["newsletter"],
        date=utcnow(),
    )
    return mail, included, unmailable


# -- webhook evidence -------------------------------------------------------------------


def accepted_by_provider(batch: NewsletterBatch) -> bool:
    """Any webhook event for a recipient of the batch: the provider took the request."""
    R = NewsletterRecipient
    return bool(
        db.session.scalar(
            select(exists().where(*ledger.in_batch(batch), R.processed_at.is_not(None)))
        )
    )


def confirm_sent_from_events(batch: NewsletterBatch) -> None:
    """The ambiguous request did go out: its (still pending) rows are sent."""
    R = NewsletterRecipient
    now = utcnow()
    provider_id = db.session.scalar(
        select(R.provider_message_id)
        .where(*ledger.in_batch(batch), R.provider_message_id.is_not(None))
        .limit(1)
    )
    ledger.mark_sent(
        *ledger.in_batch(batch),
        R.state == "pending",
        sent_at=func.coalesce(R.processed_at, now),
        provider_message_id=func.coalesce(R.provider_message_id, provider_id),
        skip_reason="",  # it went out after all, whatever a merge meanwhile noted
    )
    ledger.refresh_batch(
        batch.id,
        lease_owner=None,
        lease_expires_at=None,
        ambiguous_since=None,
        in_flight_since=None,
        sent_at=now,
        provider_message_id=provider_id,
        last_error="",
    )


# -- one attempt ----------------------------------------------------------------------------


def commit_lazily() -> None:
    """Commit without waiting for PostgreSQL to write it to disk (synchronous_commit
    off, for this transaction only; SQLite runs with synchronous=NORMAL anyway).

    Only for steps whose loss in a database crash the protocol already recovers from:
    the claim (the lease is gone, and nothing is sent without the in-flight mark),
    the 202's record (the durable in-flight mark makes the batch ambiguous, settled
    from the webhook's events) and a settled batch without a request. The in-flight
    mark itself is committed durably before every request. With PostgreSQL shared by
    busy neighbours, a disk flush per commit was most of a batch's wall time.
    """
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(text("SET LOCAL synchronous_commit = off"))
    db.session.commit()


def _id(instance) -> int:
    """The primary key of a mapped instance, also after a commit expired it (reading
    `.id` then costs a SELECT that reloads every column; a batch paid three)."""
    return inspect(instance).identity[0]


def _finish_batch(batch: NewsletterBatch) -> Step:
    newsletter_id = batch.newsletter_id
    ledger.refresh_batch(_id(batch), lease_owner=None, lease_expires_at=None, in_flight_since=None)
    commit_lazily()
    return _finish_newsletter_if_done(newsletter_id)


def _finish_newsletter_if_done(newsletter_id: int) -> Step:
    # In a transaction of its own, after the batch's: two senders finishing the last two
    # batches at once then cannot each miss the other's rows.
    if ledger.finish_if_done(newsletter_id):
        log.info("newsletter %s finished", newsletter_id)
    # A plain commit: unless this finished the newsletter (once per newsletter) the
    # transaction wrote nothing, and PostgreSQL then writes no commit record to flush;
    # `commit_lazily` would cost a statement for nothing.
    db.session.commit()
    return Done("done")


def _reload(batch: NewsletterBatch) -> Newsletter:
    """The batch and its newsletter as they are now, in one query; the newsletter."""
    _batch, newsletter = db.session.execute(
        _reload_statement(),
        {"batch_id": _id(batch)},
        execution_options={"populate_existing": True},
    ).one()
    return newsletter


@functools.cache
def _reload_statement():
    return (
        select(NewsletterBatch, Newsletter)
        .join(Newsletter, Newsletter.id == NewsletterBatch.newsletter_id)
        .where(NewsletterBatch.id == bindparam("batch_id", type_=Integer()))
    )


def attempt(batch: NewsletterBatch, owner: str, limiter: RateLimiter, finish: bool = True) -> Step:
    """One try at sending a claimed batch. Commits as it goes.

    `finish`: after a 202, look whether the newsletter is finished now (a transaction
    of its own); False leaves that to the caller, who goes on with the next batch."""
    newsletter = _reload(batch)
    if batch.lease_owner != owner:
        return Done("lease-lost")
    if newsletter.state != "sending":
        release(batch, owner)
        db.session.commit()
        return Done("stopped")

    # 2. An earlier request whose outcome we do not know.
    if batch.in_flight_since is not None:
        batch.ambiguous_since = batch.ambiguous_since or batch.in_flight_since
        batch.in_flight_since = None
        batch.last_error = batch.last_error or "the sender stopped during the request"
        db.session.commit()
    if batch.ambiguous_since is not None:
        if accepted_by_provider(batch):
            confirm_sent_from_events(batch)
            db.session.commit()
            log.info("batch %s: the provider's events show it was accepted", batch.id)
            return _finish_batch(batch)
        grace = setting("NEWSLETTER_AMBIGUOUS_GRACE_SECONDS")
        remaining = (batch.ambiguous_since - utcnow()).total_seconds() + grace
        if remaining > 0:
            return Wait(remaining, "awaiting-events")
        log.warning(
            "batch %s: no provider events after %ss, sending again (%s)",
            batch.id,
            grace,
            batch.last_error,
        )
        batch.ambiguous_since = None
        batch.resends += 1
        db.session.commit()

    # 3. What is left, and who may still have it.
    rows = pending_rows(batch, newsletter)
    if rows:
        rows = skip_ineligible(newsletter, batch, rows)
    if not rows:
        return _finish_batch(batch)
    if batch.attempts >= setting("NEWSLETTER_MAX_ATTEMPTS"):
        # Nobody is dropped for our provider's trouble: the newsletter waits for staff,
        # its rows stay pending, and Resume starts the count again.
        release(batch, owner)
        pause_newsletter(
            newsletter.id,
            _(
                "Stopped after %(attempts)s failed attempts to send batch %(number)s: %(error)s",
                attempts=batch.attempts,
                number=batch.number + 1,
                error=batch.last_error,
            ),
        )
        db.session.commit()
        return Done("paused")
    mail, rows, unmailable = build_mail(newsletter, batch, rows)
    for row, error in unmailable:
        _set_rows([row.id], state="failed", error=error[:2000])
    if not rows:
        return _finish_batch(batch)
    if unmailable:
        ledger.refresh_batch(_id(batch))  # counted now, as in `skip_ineligible`

    # 4. Rate limit, then in flight.
    wait = limiter.acquire(len(rows))
    if wait > 0:
        db.session.commit()
        return Wait(wait, "rate-limited")
    started = utcnow()
    in_flight = mark_in_flight(batch, owner, started)
    # Which rows are the batch's: read before the commit expires the batch.
    batch_key = (batch.newsletter_id, batch.number)
    db.session.commit()
    if not in_flight:
        release(batch, owner)
        db.session.commit()
        return Done("stopped")

    # 5. The request, and what its answer means.
    try:
        provider_id = newsletter_backend(current_app.config).send_batch(mail)
    except TransientSendError as exc:
        return _transient(batch, owner, limiter, exc, started)
    except ConfigurationError as exc:
        _update_own_batch(batch, owner, in_flight_since=None, last_error=str(exc)[:2000])
        release(batch, owner)
        pause_newsletter(newsletter.id, str(exc))
        db.session.commit()
        return Done("paused")
    except (PermanentSendError, ValueError) as exc:
        return _refused(batch, owner, rows, exc)
    _record_sent_persistently(batch, batch_key, rows, provider_id)
    if not finish:
        return Done("done")
    return _finish_newsletter_if_done(_id(newsletter))


RECORD_TRIES = 5


def _record_sent_persistently(
    batch, batch_key: tuple[int, int], rows: list[Row], provider_id: str | None
) -> None:
    """The provider has them: try hard to write that down (a busy database, a dropped
    connection). Should it still fail, the in-flight mark stays and the webhook's
    events settle the batch (the ambiguous path) instead of a blind resend."""
    for attempt_number in range(1, RECORD_TRIES + 1):
        try:
            _record_sent(batch, batch_key, rows, provider_id)
            return
        except DBAPIError:
            db.session.rollback()
            if attempt_number == RECORD_TRIES:
                raise
            log.warning("batch %s: recording the 202 failed, trying again", batch.id)
            time.sleep(attempt_number)


def _record_sent(
    batch: NewsletterBatch, batch_key: tuple[int, int], rows: list[Row], provider_id: str | None
) -> None:
    """The 202: the request's rows are sent, with the X-Message-Id, in one transaction,
    and the batch (settled: its other rows were skipped or failed before) is released.

    Recorded even if our lease ran out meanwhile: the provider has them, that is the
    fact the ledger must show.
    """
    now = utcnow()
    provider_id = (provider_id or "")[:100] or None
    ledger.mark_rows_sent(batch_key, [r.id for r in rows], now, provider_id)
    ledger.refresh_batch(
        _id(batch),
        lease_owner=None,
        lease_expires_at=None,
        in_flight_since=None,
        ambiguous_since=None,
        provider_message_id=provider_id,
        sent_at=now,
        last_error="",
    )
    commit_lazily()  # lost in a database crash: the in-flight mark stays, see above


def _transient(batch, owner, limiter: RateLimiter, exc: TransientSendError, started) -> Step:
    error = str(exc)[:2000]
    if exc.status_code == 429:
        # Definitely not accepted. Everyone waits for the provider's reset time; being
        # told to wait is not a failed attempt (a long throttle must not fail anyone).
        wait = exc.retry_after if exc.retry_after is not None else 1.0
        limiter.pause_all(wait)
        _not_an_attempt(batch, owner, error)
        db.session.commit()
        return Wait(wait, "rate-limited-by-provider")
    if _connection_refused(exc):
        # Nothing reached the provider: not ambiguous, just try again later.
        _update_own_batch(batch, owner, in_flight_since=None, last_error=error)
        db.session.commit()
        return Wait(backoff(batch.attempts + 1), "unreachable")
    # 5xx or timeout: the provider may have accepted it. Wait for its events.
    _update_own_batch(batch, owner, in_flight_since=None, ambiguous_since=started, last_error=error)
    db.session.commit()
    grace = setting("NEWSLETTER_AMBIGUOUS_GRACE_SECONDS")
    return Wait(max(grace, backoff(batch.attempts + 1)), "ambiguous")


def _not_an_attempt(batch, owner, error: str) -> None:
    """The request is over and does not count against NEWSLETTER_MAX_ATTEMPTS."""
    _update_own_batch(
        batch, owner, in_flight_since=None, attempts=NewsletterBatch.attempts - 1, last_error=error
    )


def _connection_refused(exc: BaseException) -> bool:
    cause = exc.__cause__
    if isinstance(cause, URLError):
        cause = cause.reason
    return isinstance(cause, ConnectionRefusedError)


def _refused(batch, owner, rows: list[Row], exc: Exception) -> Step:
    """400: if the provider named the recipient it refused, fail that one and go again."""
    error = str(exc)[:2000]
    match = _REFUSED_PERSONALIZATION.search(error)
    if match and int(match.group(1)) < len(rows):
        row = rows[int(match.group(1))]
        _set_rows([row.id], state="failed", error=error)
        _not_an_attempt(batch, owner, error)  # the address's fault, not the batch's
        if len(rows) > 1:
            # Counted now, as in `skip_ineligible` (the retry may end ambiguous). Not
            # when it was the last: settled, the batch would lose its lease before the
            # retry that finishes it.
            ledger.refresh_batch(_id(batch))
        db.session.commit()
        return Wait(0, "recipient-refused")
    _set_rows([r.id for r in rows], state="failed", error=error)
    ledger.refresh_batch(batch.id, in_flight_since=None, last_error=error)
    db.session.commit()
    return _finish_batch(batch)


def pause_newsletter(newsletter_id: int, reason: str) -> None:
    """`sending` → `paused` with a reason staff see (bad API key, provider unreachable)."""
    db.session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter_id, Newsletter.state == "sending")
        .values(state="paused", paused_at=utcnow(), pause_reason=reason[:2000])
        .execution_options(synchronize_session=False)
    )


# -- the job's loop ----------------------------------------------------------------------


MAX_INLINE_TOTAL = 60.0


# How long one job goes on sending a newsletter's next batches after its own (`run_batches`).
RUN_SECONDS = 5.0


def run_batches(batch_id: int, *, reschedule, drop_job, give_way=lambda: False) -> str:
    """`run_batch`, then the newsletter's next batches not tried yet, one after the
    other, while there are any to claim and for up to RUN_SECONDS; the first batch's
    outcome.

    When there is none to claim but planned ones (their ledger rows not written yet),
    it writes the next one itself, as the fill job would.

    Each further batch is claimed as any batch is (its lease committed first), then
    its own job is taken off the queue (`drop_job(job_id)`; one a worker already took
    finds the batch claimed and does nothing): RQ's handling of a job per batch cost an
    eighth of a worker's time. A batch that does not go out at once (a wait, a pause)
    ends the run; its own job or the reconciler carries on as before. So does
    `give_way()` (jobs waiting that workers take first: a confirmation email must not
    wait for a 100,000-recipient newsletter).
    """
    from crm.queue import get_redis

    limiter = RateLimiter(get_redis())
    deadline = time.monotonic() + RUN_SECONDS
    newsletter_id, outcome = _claim_and_run(batch_id, reschedule, limiter, finish=False)
    step = outcome
    while newsletter_id is not None and step in ("done", "not-claimed"):
        if time.monotonic() >= deadline or give_way():
            break
        owner = new_owner()
        batch = claim_next_batch(newsletter_id, owner)
        commit_lazily()
        if batch is None:
            # Nothing written to send yet (the fill job is at it): write the next
            # planned batch here instead of waiting idle for the fill's next chunk.
            # Lost in a database crash, it is planned again: the reconciler writes it.
            if not ledger.write_planned(newsletter_id, 1):
                break
            commit_lazily()
            continue
        if batch.job_id:
            drop_job(batch.job_id)
        step = _run_claimed(batch, owner, reschedule, limiter, finish=False)
    if newsletter_id is not None:
        # After the last batch this run recorded (each run's look comes after its own
        # record's commit: two runs finishing the last two batches cannot both miss).
        _finish_newsletter_if_done(newsletter_id)
    return outcome


def run_batch(batch_id: int, *, reschedule) -> str:
    """Claim and send one batch, waiting inline for short waits, rescheduling for long.

    `reschedule(batch, seconds)` enqueues the batch's job again (after commit).
    """
    from crm.queue import get_redis

    return _claim_and_run(batch_id, reschedule, RateLimiter(get_redis()))[1]


def _claim_and_run(
    batch_id: int, reschedule, limiter: RateLimiter, finish: bool = True
) -> tuple[int | None, str]:
    """`run_batch`: (the batch's newsletter id, None if there is no such batch; the outcome)."""
    owner = new_owner()
    batch = claim_batch(batch_id, owner)
    commit_lazily()
    if batch is None:
        newsletter_id = db.session.scalar(
            select(NewsletterBatch.newsletter_id).where(NewsletterBatch.id == batch_id)
        )
        return newsletter_id, "not-claimed"
    return batch.newsletter_id, _run_claimed(batch, owner, reschedule, limiter, finish)


def _run_claimed(
    batch: NewsletterBatch, owner: str, reschedule, limiter: RateLimiter, finish: bool = True
) -> str:
    batch_id = _id(batch)
    waited = 0.0
    try:
        while True:
            step = attempt(batch, owner, limiter, finish)
            if step.done:
                return step.outcome
            inline = setting("NEWSLETTER_MAX_INLINE_WAIT_SECONDS")
            if step.wait <= inline and waited + step.wait <= MAX_INLINE_TOTAL:
                if not extend_lease(batch, owner, step.wait):
                    db.session.commit()
                    return "lease-lost"
                db.session.commit()
                time.sleep(step.wait)
                waited += step.wait
                continue
            release(batch, owner, wait=step.wait)
            reschedule(batch, step.wait)
            db.session.commit()
            return step.outcome
    except Exception as exc:
        db.session.rollback()
        # A bug, the database or Redis gone: give the batch back after a backoff; the
        # reconciler enqueues it again. An in-flight mark stays: outcome unknown.
        try:
            fresh = db.session.get(NewsletterBatch, batch_id, populate_existing=True)
            release(
                fresh, owner, wait=backoff(fresh.attempts + 1), error=f"{type(exc).__name__}: {exc}"
            )
            db.session.commit()
        except Exception:  # noqa: BLE001 - the lease expires by itself
            db.session.rollback()
        raise
