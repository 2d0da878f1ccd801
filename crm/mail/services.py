"""The email pipeline's rules: queue, send, retry, record provider events, suppress.

Every feature sends mail through `queue_email`. It renders the templates, stores an
`EmailMessage` in the caller's transaction and enqueues the RQ job only after that
transaction commits, so a rolled-back request sends nothing. Nothing here commits.
"""

from __future__ import annotations

import contextlib
import email.utils
import functools
import hashlib
import json
import logging
import random
import re
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from email_validator import EmailNotValidError, validate_email
from flask import current_app, has_request_context, render_template
from flask_babel import force_locale, get_locale
from jinja2 import TemplateNotFound
from sqlalchemy import event as sa_event
from sqlalchemy import func, select, update
from sqlalchemy import insert as sa_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, defer
from sqlalchemy.orm.attributes import set_committed_value

from crm import bulk
from crm.bulk import chunks, id_in, text_in
from crm.extensions import db
from crm.mail.backends import (
    Address,
    Attachment,
    ConfigurationError,
    HeaderInjectionError,
    MailError,
    OutgoingMail,
    PermanentSendError,
    Recipient,
    TransientSendError,
    check_custom_headers,
    get_backend,
)
from crm.mail.models import (
    SENDABLE_STATES,
    STATE_RANK,
    EmailAttachment,
    EmailAttempt,
    EmailEvent,
    EmailMessage,
    Suppression,
    new_message_uuid,
)
from crm.organisation import services as organisation_services
from crm.timeutil import utcnow

log = logging.getLogger(__name__)

MAIL_QUEUE = "mail"
_TEMPLATE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_/-]{0,150}$")
_WHITESPACE = re.compile(r"[\s\x00-\x1f\x7f\u2028\u2029\x85]+")


class InvalidAddress(MailError, ValueError):
    """An address that cannot be mailed (bad syntax, line breaks)."""


# --- Queueing ------------------------------------------------------------------------


def normalize_address(address: str) -> str:
    """The address as we store and send it; `InvalidAddress` if it cannot be mailed."""
    if not isinstance(address, str):
        raise InvalidAddress("address must be text")
    address = address.strip()
    if not address or len(address) > 254 or _WHITESPACE.search(address):
        raise InvalidAddress(f"invalid email address {address[:254]!r}")
    try:
        valid = validate_email(
            address,
            check_deliverability=current_app.config.get("EMAIL_CHECK_DELIVERABILITY", False),
            allow_smtputf8=False,
        )
    except EmailNotValidError as exc:
        raise InvalidAddress(str(exc)) from exc
    return valid.ascii_email or valid.normalized


def single_line(value: str | None, limit: int = 998) -> str:
    """Text safe for a header: one line, no control characters, no RFC 2047 encoded-words.

    Runs of whitespace or control characters (CR, LF, NUL…) become one space, and `=?`
    becomes `= ?`, so user text cannot smuggle an encoded line break (see
    `backends.check_header`).
    """
    line = _WHITESPACE.sub(" ", str(value or "")).strip()
    while "=?" in line:
        line = line.replace("=?", "= ?")
    return line[:limit]


def _check_template_name(template: str) -> None:
    if not _TEMPLATE_NAME.match(template) or ".." in template:
        raise ValueError(f"invalid email template name {template!r}")


def _render(template: str, context: dict) -> tuple[str, str, str | None]:
    _check_template_name(template)
    base = f"email/{template}"
    subject = single_line(render_template(f"{base}.subject.txt", **context))
    text = render_template(f"{base}.txt", **context)
    html_name = f"{base}.html"
    try:
        html = render_template(html_name, **context)
    except TemplateNotFound as exc:
        if exc.name != html_name:
            raise
        html = None
    # PostgreSQL text cannot hold NUL; it has no place in mail either.
    return subject, text.replace("\x00", ""), html.replace("\x00", "") if html else html


def _current_locale() -> str:
    if has_request_context():
        return str(get_locale() or current_app.config.get("BABEL_DEFAULT_LOCALE", "nb"))
    return current_app.config.get("BABEL_DEFAULT_LOCALE", "nb")


def render_email(template: str, context: dict | None = None, locale: str | None = None):
    """(subject, text, html or None) of `templates/email/<template>.*` in `locale`."""
    context = dict(context or {})
    context.setdefault("public_base_url", current_app.config["PUBLIC_BASE_URL"])
    with force_locale(locale or _current_locale()):
        return _render(template, context)


def render_stored(message: EmailMessage) -> None:
    """Write the text of a message queued unrendered, from its stored context; nothing
    for a message that has its text."""
    if message.context is None:
        return
    subject, text, html = render_email(message.template, message.context, message.locale)
    message.subject, message.text_body, message.html_body = subject, text, html
    message.context = None


def queue_email(
    to: str,
    template: str,
    context: dict | None = None,
    *,
    to_name: str = "",
    key: str | None = None,
    category: str = "",
    contact_id: int | None = None,
    headers: dict[str, str] | None = None,
    attachments: Iterable[tuple[str, str, bytes]] | None = None,
    locale: str | None = None,
    fresh_key: bool = False,
    render_in_worker: bool = False,
) -> EmailMessage:
    """Render `templates/email/<template>.{subject.txt,txt,html}` and queue it for `to`.

    The message is added to the session and flushed, not committed; the send job is
    enqueued after the surrounding transaction commits. With a `key` already used the
    existing message is returned and nothing new is sent. `fresh_key` says the key names
    something this transaction created (a signup's random nonce), so it is not looked up
    before rendering; the INSERT still refuses a duplicate. `render_in_worker` stores the
    context (JSON) instead, and the send job renders the templates (in the stored locale)
    just before sending: a request that must answer fast leaves the rendering to the
    worker. Raises `InvalidAddress` for an
    unusable address and `HeaderInjectionError` for header names/values with line breaks.
    Suppressed addresses are not checked here: callers that must skip them (newsletters)
    ask `is_suppressed` first.
    """
    if key is not None:
        key = str(key)[:200]
        if not fresh_key:
            existing = db.session.scalar(select(EmailMessage).where(EmailMessage.key == key))
            if existing is not None:
                return existing
    to_email = normalize_address(to)
    headers = {str(k): v for k, v in (headers or {}).items()}
    check_custom_headers(headers)
    locale = locale or _current_locale()
    if render_in_worker:
        _check_template_name(template)
        subject, text, html = "", "", None
        stored_context = json.loads(json.dumps(context or {}))  # JSON now, not at the INSERT
    else:
        subject, text, html = render_email(template, context, locale)
        stored_context = None
    values = {
        "uuid": new_message_uuid(),
        "key": key,
        "to_email": to_email,
        "to_name": single_line(to_name, 200),
        "from_header": organisation_services.sender_header(),
        "subject": subject,
        "category": single_line(category, 50),
        "template": template,
        "locale": locale,
        "contact_id": contact_id,
        "text_body": text,
        "html_body": html,
        "headers": headers,
        "context": stored_context,
        "state": "queued",
    }
    message = _insert_message(values)
    if message is None:  # someone else inserted the same key a moment ago
        return db.session.scalar(select(EmailMessage).where(EmailMessage.key == key))
    for filename, content_type, content in attachments or ():
        message.attachments.append(
            EmailAttachment(
                filename=single_line(filename, 255) or "attachment",
                content_type=single_line(content_type, 100) or "application/octet-stream",
                content=bytes(content),
            )
        )
    db.session.flush()
    _enqueue_after_commit(message.uuid, attempt=0, new=True)
    return message


def _insert_message(values: dict) -> EmailMessage | None:
    if values["key"] is None:
        message = EmailMessage(**values)
        db.session.add(message)
        db.session.flush()
        return message
    # A concurrent request with the same key must not break the caller's transaction:
    # on PostgreSQL a failed statement aborts the whole transaction, so the INSERT runs in
    # a savepoint there; SQLite undoes only the statement (and pysqlite's SAVEPOINT outside
    # a transaction would commit on release). Not INSERT … ON CONFLICT: SQLAlchemy's
    # dialect INSERTs have no cache key, so that statement was compiled anew on every
    # call, which cost more CPU than all the rest of a signup's SQL.
    # The ORM INSERT … RETURNING gives the message itself: no second SELECT for it.
    savepoint = db.session.get_bind().dialect.name == "postgresql"
    try:
        with db.session.begin_nested() if savepoint else contextlib.nullcontext():
            return db.session.scalars(
                sa_insert(EmailMessage).returning(EmailMessage), [values]
            ).one()
    except IntegrityError:
        if db.session.scalar(select(EmailMessage.id).where(EmailMessage.key == values["key"])):
            return None  # the same key, inserted a moment ago by someone else
        raise


# --- Enqueueing after commit -----------------------------------------------------------

_PENDING = "crm_mail_pending_jobs"


def _enqueue_after_commit(
    message_uuid: str, attempt: int, delay: float = 0, *, new: bool = False
) -> None:
    """`new`: the message was inserted by this transaction, so no job can exist for it."""
    db.session().info.setdefault(_PENDING, []).append((message_uuid, attempt, delay, new))


@sa_event.listens_for(Session, "after_commit")
def _enqueue_pending_jobs(session: Session) -> None:
    pending = session.info.pop(_PENDING, ())
    new = [uuid for uuid, attempt, delay, is_new in pending if is_new and not delay]
    if new:
        try:
            enqueue_new_messages(new)
        except Exception:  # noqa: BLE001 - the commit stands; `crm mail requeue` recovers
            log.exception("could not enqueue %d new email(s); they stay queued", len(new))
    for message_uuid, attempt, delay, is_new in pending:
        if is_new and not delay:
            continue
        try:
            enqueue_send(message_uuid, attempt, delay)
        except Exception:  # noqa: BLE001 - the commit stands; `crm mail requeue` recovers
            log.exception("could not enqueue email %s; it stays queued", message_uuid)


@sa_event.listens_for(Session, "after_transaction_end")
def _forget_pending_jobs(session: Session, transaction) -> None:
    # The outermost transaction ended without a commit (rollback, close): its messages
    # are gone, so are their jobs. After a commit the list is already empty.
    if transaction.parent is None:
        session.info.pop(_PENDING, None)


def job_id_for(message_uuid: str, attempt: int) -> str:
    """RQ job id of a message's attempt: letters, digits and dashes only (no ':')."""
    return f"mail-{message_uuid}-{attempt}"


def enqueue_send(message_uuid: str, attempt: int = 0, delay: float = 0) -> bool:
    """Put the send job on the `mail` queue (after `delay` seconds). False if it already is.

    The job id is derived from the message and attempt number, so enqueueing the same
    message twice gives one job; the job itself also refuses to send a message twice.
    """
    from rq.exceptions import DuplicateJobError

    from crm.mail.tasks import send_message
    from crm.queue import get_queue

    queue = get_queue(MAIL_QUEUE)
    options = {
        "job_id": job_id_for(message_uuid, attempt),
        "description": f"email {message_uuid} attempt {attempt + 1}",
        "job_timeout": 120,
        "result_ttl": 3600,
        "failure_ttl": 7 * 24 * 3600,
    }
    try:
        if delay > 0:
            job = queue.create_job(send_message, args=(message_uuid,), timeout=120, **_job(options))
            queue.schedule_job(job, datetime.now(UTC) + timedelta(seconds=delay), unique=True)
        else:
            queue.enqueue(send_message, message_uuid, unique=True, **options)
    except DuplicateJobError:
        return False
    return True


def enqueue_new_messages(message_uuids: list[str]) -> None:
    """Put the first send job of messages just committed on the `mail` queue, all in one
    Redis round trip (one MULTI/EXEC).

    Their job ids name a message nobody could have enqueued before (a new uuid, attempt
    0), so the duplicate check of `enqueue_send` (a Lua script, and a round trip of its
    own besides the queue registration) has nothing to find here. The job still refuses
    to send a message twice.
    """
    from crm.mail.tasks import send_message
    from crm.queue import get_queue

    queue = get_queue(MAIL_QUEUE)
    with queue.connection.pipeline() as pipe:
        for message_uuid in message_uuids:
            job = queue.create_job(
                send_message,
                args=(message_uuid,),
                job_id=job_id_for(message_uuid, 0),
                description=f"email {message_uuid} attempt 1",
                timeout=120,
                result_ttl=3600,
                failure_ttl=7 * 24 * 3600,
            )
            queue.enqueue_job(job, pipeline=pipe)
        pipe.execute()


def _job(options: dict) -> dict:
    # create_job() takes `timeout`, enqueue() takes `job_timeout`.
    return {k: v for k, v in options.items() if k != "job_timeout"}


# --- Sending (called by the RQ job) ---------------------------------------------------


@dataclass
class SendOutcome:
    state: str
    retry_in: float | None = None


def claim_message(message_uuid: str) -> EmailMessage | None:
    """Mark a queued message `sending` (one attempt more); None if it is not sendable.

    A conditional UPDATE, so two workers holding the same job cannot both send it.
    """
    result = db.session.execute(
        update(EmailMessage)
        .where(EmailMessage.uuid == message_uuid, EmailMessage.state.in_(SENDABLE_STATES))
        .values(
            state="sending",
            attempts=EmailMessage.attempts + 1,
            next_attempt_at=None,
            updated_at=utcnow(),
        )
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    message = db.session.scalar(select(EmailMessage).where(EmailMessage.uuid == message_uuid))
    db.session.refresh(message)
    return message


def sender_address(message: EmailMessage | None = None) -> Address:
    raw = (message.from_header if message else "") or organisation_services.sender_header()
    name, address = email.utils.parseaddr(raw)
    if not address:
        raise ConfigurationError("MAIL_FROM is not set")
    return Address(address, single_line(name, 200))


def outgoing_mail(message: EmailMessage) -> OutgoingMail:
    """What the backend gets for one stored message."""
    return OutgoingMail(
        sender=sender_address(message),
        subject=message.subject,
        text=message.text_body,
        html=message.html_body,
        recipients=[
            Recipient(
                email=message.to_email,
                name=message.to_name,
                message_id=message.uuid,
                headers=dict(message.headers or {}),
            )
        ],
        categories=[message.category] if message.category else [],
        attachments=[
            Attachment(a.filename, a.content_type, a.content) for a in message.attachments
        ],
        date=message.created_at,
    )


def retry_delay(attempt: int, retry_after: float | None) -> float:
    """Seconds before the next try: what the provider asked for, else exponential backoff."""
    cap = current_app.config["MAIL_RETRY_MAX_SECONDS"]
    if retry_after is not None:
        return min(max(retry_after, 1.0), max(cap, 24 * 3600.0))
    base = current_app.config["MAIL_RETRY_BASE_SECONDS"]
    if base <= 0:
        return 0.0
    return min(cap, base * 2 ** max(attempt - 1, 0)) * random.uniform(0.8, 1.2)


def deliver(message: EmailMessage) -> SendOutcome:
    """Hand a claimed message to the backend and record the outcome (attempt, state).

    Transient errors schedule a retry (enqueued after commit) until MAIL_MAX_ATTEMPTS;
    permanent ones (SendGrid 400, configuration) mark it failed with the reason.
    """
    started_at, started = utcnow(), time.monotonic()
    # Tied to its message only when added below: tied now, the message's attempt list
    # would hold an object the session does not have while the send autoflushes.
    attempt = EmailAttempt(number=message.attempts, started_at=started_at)
    backend_name = current_app.config.get("MAIL_BACKEND", "")
    attempt.backend = str(backend_name)[:20]
    try:
        render_stored(message)  # a template error fails the message, with its reason
        backend = get_backend(current_app.config)
        provider_id = backend.send_batch(outgoing_mail(message))
    except TransientSendError as exc:
        attempt.status_code = exc.status_code
        outcome = _record_transient(message, attempt, str(exc), exc.retry_after)
    except (PermanentSendError, HeaderInjectionError, ValueError) as exc:
        attempt.status_code = getattr(exc, "status_code", None)
        outcome = _record_failure(message, attempt, str(exc))
    except Exception as exc:  # noqa: BLE001 - a bug must not leave the message "sending"
        log.exception("sending email %s failed unexpectedly", message.uuid)
        outcome = _record_failure(message, attempt, f"internal error: {type(exc).__name__}: {exc}")
    else:
        attempt.outcome = "sent"
        now = utcnow()
        message.provider_message_id = (provider_id or "")[:100] or None
        message.sent_at = message.sent_at or now
        message.last_error = ""
        _advance_state(message, "sent")
        outcome = SendOutcome("sent")
    attempt.duration_ms = int((time.monotonic() - started) * 1000)
    attempt.message = message
    db.session.add(attempt)
    db.session.flush()
    return outcome


def _record_transient(message, attempt, error: str, retry_after: float | None) -> SendOutcome:
    tries_this_round = message.attempts - message.retry_base
    if tries_this_round >= current_app.config["MAIL_MAX_ATTEMPTS"]:
        return _record_failure(
            message, attempt, f"gave up after {tries_this_round} attempts: {error}"
        )
    delay = retry_delay(tries_this_round, retry_after)
    attempt.outcome = "retry"
    attempt.error = error
    attempt.retry_at = utcnow() + timedelta(seconds=delay)
    message.last_error = error
    # Only from "sending": after a timeout a webhook event may already have shown
    # that the provider took the message, and then there is nothing to retry.
    moved = db.session.execute(
        update(EmailMessage)
        .where(EmailMessage.id == message.id, EmailMessage.state == "sending")
        .values(state="retrying", next_attempt_at=attempt.retry_at, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(message, ["state", "next_attempt_at"])
    if moved.rowcount != 1:
        return SendOutcome(message.state)
    _enqueue_after_commit(message.uuid, attempt=message.attempts, delay=delay)
    return SendOutcome("retrying", retry_in=delay)


def _record_failure(message, attempt, error: str) -> SendOutcome:
    attempt.outcome = "failed"
    attempt.error = error
    message.last_error = error
    message.failed_at = utcnow()
    message.next_attempt_at = None
    _advance_state(message, "failed")
    return SendOutcome("failed")


def _advance_state(message: EmailMessage, state: str) -> bool:
    """Move to `state` only if it ranks higher: events and the worker race each other."""
    lower = [s for s, rank in STATE_RANK.items() if rank < STATE_RANK[state]]
    result = db.session.execute(
        update(EmailMessage)
        .where(EmailMessage.id == message.id, EmailMessage.state.in_(lower))
        .values(state=state, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(message, ["state"])
    return result.rowcount == 1


def resend_message(message: EmailMessage) -> None:
    """Give a failed message a new round of attempts (staff's "resend")."""
    if not message.can_resend:
        raise ValueError("only failed messages can be sent again")
    message.state = "queued"
    message.retry_base = message.attempts
    message.failed_at = None
    message.next_attempt_at = None
    _enqueue_after_commit(message.uuid, attempt=message.attempts)


def requeue_stalled(older_than: timedelta = timedelta(minutes=10)) -> int:
    """Enqueue messages whose job was lost (Redis down at commit, a killed worker).

    Queued or retrying messages past their time, and messages stuck in `sending`
    (the worker died mid-send: they may go out twice, which beats never).
    """
    cutoff = utcnow() - older_than
    stalled = db.session.scalars(
        select(EmailMessage).where(
            (
                EmailMessage.state.in_(SENDABLE_STATES)
                & (func.coalesce(EmailMessage.next_attempt_at, EmailMessage.updated_at) < cutoff)
            )
            | ((EmailMessage.state == "sending") & (EmailMessage.updated_at < cutoff))
        )
    ).all()
    for message in stalled:
        if message.state == "sending":
            message.state = "retrying"
            message.last_error = message.last_error or "worker stopped while sending"
        _enqueue_after_commit(message.uuid, attempt=message.attempts)
    return len(stalled)


# --- Suppression ----------------------------------------------------------------------


def _address_key(address: str) -> str:
    """An address as the suppression list and the webhook's events keep it: NFC, then
    lower case, as the register keeps contacts' addresses (`normalize_email`). A bounce
    reported in another Unicode spelling (decomposed: "o" + U+0308) then suppresses
    the address we sent to. Also in migration 0041."""
    return unicodedata.normalize("NFC", str(address or "")).strip().lower()[:254]


def is_suppressed(address: str) -> bool:
    """True when the address bounced, complained, unsubscribed or was suppressed by staff."""
    return (
        db.session.scalar(select(Suppression.id).where(Suppression.email == _address_key(address)))
        is not None
    )


def suppress(address: str, reason: str, detail: str = "", event: EmailEvent | None = None):
    """Add (or refresh) an address on the suppression list."""
    key = _address_key(address)
    if not key:
        return None
    suppression = db.session.scalar(select(Suppression).where(Suppression.email == key))
    suppression = _note_suppression(
        suppression, key, reason, detail, event.id if event is not None else None
    )
    db.session.flush()
    return suppression


def _note_suppression(
    suppression: Suppression | None, key: str, reason: str, detail: str, event_id: int | None
) -> Suppression:
    """The address's suppression (found by the caller, or new) says why, and since when."""
    if suppression is None:
        suppression = Suppression(email=key)
        db.session.add(suppression)
    suppression.reason = reason
    suppression.detail = single_line(detail, 2000)
    suppression.event_id = event_id or None
    suppression.updated_at = utcnow()
    return suppression


def lift_suppression(address: str) -> bool:
    """Take an address off the suppression list; False if it was not on it."""
    suppression = db.session.scalar(
        select(Suppression).where(Suppression.email == _address_key(address))
    )
    if suppression is None:
        return False
    db.session.delete(suppression)
    db.session.flush()
    return True


# --- Webhook events -------------------------------------------------------------------

EventHandler = Callable[[dict, EmailMessage | None], None]
BatchEventHandler = Callable[[list[tuple[dict, EmailMessage | None]]], None]
_event_handlers: list[EventHandler] = []
_batch_handlers: dict[EventHandler, BatchEventHandler] = {}

# event type -> message state it implies
EVENT_STATES = {
    "processed": "sent",
    "delivered": "delivered",
    "open": "opened",
    "click": "clicked",
    "bounce": "bounced",
    "dropped": "dropped",
    "spamreport": "complained",
}
# event type -> the message's timestamp column it sets (first occurrence wins)
EVENT_TIMES = {
    "processed": "sent_at",
    "delivered": "delivered_at",
    "open": "opened_at",
    "click": "clicked_at",
    "bounce": "bounced_at",
    "dropped": "bounced_at",
}
# event type -> suppression reason
SUPPRESSING_EVENTS = {
    "bounce": "bounce",
    "dropped": "dropped",
    "spamreport": "spamreport",
    "unsubscribe": "unsubscribe",
    "group_unsubscribe": "unsubscribe",
}


def _same_group(a: EmailEvent, b: EmailEvent) -> bool:
    """Both events are about the same unsubscribe group (or one does not say which)."""
    group_a, group_b = a.raw.get("asm_group_id"), b.raw.get("asm_group_id")
    return group_a is None or group_b is None or str(group_a) == str(group_b)


def _later_group_event(record: EmailEvent, kind: str) -> EmailEvent | None:
    """A stored `kind` event for the same address and group that happened after `record`."""
    if record.occurred_at is None or not record.email:
        return None
    candidates = db.session.scalars(
        select(EmailEvent).where(
            EmailEvent.email == record.email,
            EmailEvent.event == kind,
            EmailEvent.id != record.id,
            EmailEvent.occurred_at > record.occurred_at,
        )
    )
    return next((c for c in candidates if _same_group(record, c)), None)


def _lift_group_unsubscribe(resubscribe: EmailEvent) -> None:
    """A `group_resubscribe` undoes the suppression its group's `group_unsubscribe` made.

    Only that one: a bounce, a spam report, a plain unsubscribe or staff's own
    suppression stays, and so does an unsubscribe that happened after the resubscribe.
    """
    suppression = db.session.scalar(
        select(Suppression).where(Suppression.email == resubscribe.email)
    )
    if suppression is None or suppression.event_id is None:
        return
    unsubscribe = db.session.get(EmailEvent, suppression.event_id)
    if unsubscribe is None or unsubscribe.event != "group_unsubscribe":
        return
    if not _same_group(unsubscribe, resubscribe):
        return
    if (
        unsubscribe.occurred_at is not None
        and resubscribe.occurred_at is not None
        and unsubscribe.occurred_at > resubscribe.occurred_at
    ):
        return
    lift_suppression(resubscribe.email)


def register_event_handler(
    handler: EventHandler, batch: BatchEventHandler | None = None
) -> EventHandler:
    """Call `handler(event, message_or_None)` for each new (de-duplicated) webhook event.

    It runs inside the transaction that stores the event; an exception rolls that event
    back and the webhook answers 503, so SendGrid delivers it again later.
    `batch(items)`, when given, does the same for a list of (event, message) pairs at
    once: `record_events` calls it instead of `handler` once per event.
    Usable as a decorator; registering the same function twice has no effect.
    """
    if handler not in _event_handlers:
        _event_handlers.append(handler)
    if batch is not None:
        _batch_handlers[handler] = batch
    return handler


def unregister_event_handler(handler: EventHandler) -> None:
    """Stop calling `handler` (tests, mostly)."""
    if handler in _event_handlers:
        _event_handlers.remove(handler)
    _batch_handlers.pop(handler, None)


def _clean_string(value: str) -> str:
    # PostgreSQL stores neither NUL nor lone surrogates (valid JSON may carry both).
    if value.isascii() and "\x00" not in value:
        return value  # the usual case, and a webhook delivery has thousands of strings
    return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def clean_json(value):
    """A parsed JSON value made storable: strings without NUL or lone surrogates."""
    if isinstance(value, str):
        return _clean_string(value)
    if isinstance(value, list):
        return [clean_json(v) for v in value]
    if isinstance(value, dict):
        return {_clean_string(str(k)): clean_json(v) for k, v in value.items()}
    return value


def _text(value, limit: int) -> str:
    if value is None or isinstance(value, dict | list):
        return ""
    return _clean_string(str(value))[:limit]


def _event_time(value) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(value), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def event_id_of(event: dict) -> str:
    """SendGrid's sg_event_id, or a digest of the event when it has none (or a silly one)."""
    sg_event_id = event.get("sg_event_id")
    if isinstance(sg_event_id, str) and 0 < len(sg_event_id) <= 100 and "\x00" not in sg_event_id:
        return sg_event_id
    digest = hashlib.sha256(
        json.dumps(event, sort_keys=True, default=str).encode("utf-8", "replace")
    ).hexdigest()
    return f"sha256:{digest}"


def _message_keys(event: dict, address: str) -> tuple[str | None, tuple[str, str] | None]:
    """How an event names its message: our uuid (custom_args), else SendGrid's message
    id with the recipient's address."""
    message_uuid = event.get("klynge_message_id")
    by_uuid = message_uuid[:36] if isinstance(message_uuid, str) and message_uuid else None
    provider_id = _text(event.get("sg_message_id"), 200).split(".", 1)[0]
    return by_uuid, ((provider_id[:100], address) if provider_id else None)


def _message_for_event(event: dict, address: str) -> EmailMessage | None:
    by_uuid, by_provider = _message_keys(event, address)
    if by_uuid:
        message = db.session.scalar(select(EmailMessage).where(EmailMessage.uuid == by_uuid))
        if message is not None:
            return message
    if by_provider:
        return db.session.scalar(
            select(EmailMessage)
            .where(
                EmailMessage.provider_message_id == by_provider[0],
                func.lower(EmailMessage.to_email) == by_provider[1],
            )
            .limit(1)
        )
    return None


def _event_columns(event: dict) -> dict:
    """The stored columns of a cleaned webhook event, its message aside."""
    return {
        "sg_event_id": event_id_of(event),
        "event": _text(event.get("event"), 30) or "unknown",
        "email": _address_key(_text(event.get("email"), 254)),
        "occurred_at": _event_time(event.get("timestamp")),
        "reason": _text(event.get("reason") or event.get("response") or event.get("url"), 2000),
        "sg_message_id": _text(event.get("sg_message_id"), 200),
        "raw": event,
    }


def _note_on_message(message: EmailMessage, columns: dict) -> None:
    """An event's timestamp (the first of its kind wins) and bounce reason on its message;
    its state is moved separately (`_advance_state`), guarded against races."""
    kind = columns["event"]
    column = EVENT_TIMES.get(kind)
    if column and getattr(message, column) is None:
        setattr(message, column, columns["occurred_at"] or utcnow())
    if kind in ("bounce", "dropped") and columns["reason"]:
        message.last_error = columns["reason"]


def _suppression_reason(columns: dict, record: EmailEvent | None = None) -> str | None:
    """Why the event's address goes on the suppression list, if it does."""
    kind, event = columns["event"], columns["raw"]
    reason = SUPPRESSING_EVENTS.get(kind)
    if not reason or not columns["email"]:
        return None
    if kind == "bounce" and event.get("type") == "blocked":
        return None  # a soft bounce: the address exists
    if kind == "group_unsubscribe" and _later_group_event(record, "group_resubscribe"):
        return None  # events come out of order: the person already came back
    return reason


def record_event(event: dict) -> EmailEvent | None:
    """Store one webhook event and apply it; None if it was seen before (a replay).

    Unknown event types are stored and otherwise ignored. Bounces (not soft "blocked"
    ones), drops, spam reports and unsubscribes put the address on the suppression list.
    Then every registered handler is called. `record_events` does the same for many.
    """
    event = clean_json(event)
    columns = _event_columns(event)
    if db.session.scalar(
        select(EmailEvent.id).where(EmailEvent.sg_event_id == columns["sg_event_id"])
    ):
        return None
    message = _message_for_event(event, columns["email"])
    record = EmailEvent(message=message, **columns)
    db.session.add(record)
    db.session.flush()

    kind = columns["event"]
    if message is not None:
        _note_on_message(message, columns)
        if kind in EVENT_STATES:
            _advance_state(message, EVENT_STATES[kind])
    reason = _suppression_reason(columns, record)
    if reason:
        suppress(record.email, reason, record.reason, event=record)
    if kind == "group_resubscribe" and record.email:
        _lift_group_unsubscribe(record)
    for handler in list(_event_handlers):
        handler(event, message)
    db.session.flush()
    return record


def record_events(events: list[dict]) -> tuple[int, int]:
    """Store and apply a webhook delivery's events together: (new, duplicates).

    The same effects as `record_event` for each event in turn, with a few statements per
    kind of work for the whole list instead of several per event: the replays are found
    in one query, the messages in two, the events written with COPY (PostgreSQL), message
    states moved by one guarded UPDATE per target state, suppressions read at once, and
    handlers registered with a `batch` form called once. A failure raises: the caller
    rolls back and applies the events one by one, so one bad event does not hold up the
    others.
    """
    incoming: dict[str, dict] = {}
    duplicates = 0
    for event in events:
        columns = _event_columns(clean_json(event))
        if columns["sg_event_id"] in incoming:
            duplicates += 1  # repeated within the delivery itself
        else:
            incoming[columns["sg_event_id"]] = columns
    for ids in chunks(list(incoming)):
        for seen in db.session.scalars(
            select(EmailEvent.sg_event_id).where(text_in(EmailEvent.sg_event_id, ids))
        ):
            duplicates += incoming.pop(seen, None) is not None
    new = list(incoming.values())
    if not new:
        return 0, duplicates
    messages = _messages_for_events(new)
    _store_events(new, messages)

    targets: dict[int, str] = {}
    for columns, message in zip(new, messages, strict=True):
        if message is None:
            continue
        _note_on_message(message, columns)
        state = EVENT_STATES.get(columns["event"])
        current = targets.get(message.id)
        if state and (current is None or STATE_RANK[state] > STATE_RANK[current]):
            targets[message.id] = state
    _advance_states(targets, messages)
    _suppress_for_events(new)
    items = [(columns["raw"], message) for columns, message in zip(new, messages, strict=True)]
    for handler in list(_event_handlers):
        batch = _batch_handlers.get(handler)
        if batch is not None:
            batch(items)
        else:
            for event, message in items:
                handler(event, message)
    db.session.flush()
    return len(new), duplicates


def _messages_for_events(new: list[dict]) -> list[EmailMessage | None]:
    """Each event's message, as `_message_for_event` finds it, in two queries."""
    keys = [_message_keys(columns["raw"], columns["email"]) for columns in new]
    # The bodies are not needed to apply events: they stay unloaded.
    light = defer(EmailMessage.text_body), defer(EmailMessage.html_body)
    by_uuid: dict[str, EmailMessage] = {}
    for uuids in chunks(sorted({u for u, _ in keys if u})):
        for message in db.session.scalars(
            select(EmailMessage).options(*light).where(text_in(EmailMessage.uuid, uuids))
        ):
            by_uuid[message.uuid] = message
    wanted = sorted({p[0] for u, p in keys if p and u not in by_uuid})
    by_provider: dict[tuple[str, str], EmailMessage] = {}
    for provider_ids in chunks(wanted):
        for message in db.session.scalars(
            select(EmailMessage)
            .options(*light)
            .where(text_in(EmailMessage.provider_message_id, provider_ids))
            .order_by(EmailMessage.id)
        ):
            by_provider.setdefault((message.provider_message_id, message.to_email.lower()), message)
    return [by_uuid.get(u) or (by_provider.get(p) if p else None) for u, p in keys]


def _store_events(new: list[dict], messages: list[EmailMessage | None]) -> None:
    """INSERT the new events at the driver's speed (COPY on PostgreSQL); the ids of
    those a suppression will point to are read back into `new`."""
    bulk.insert_rows(
        EmailEvent.__table__,
        [
            dict(columns, message_id=message.id if message is not None else None)
            for columns, message in zip(new, messages, strict=True)
        ],
        common={"received_at": utcnow()},
    )
    wanted = [
        c["sg_event_id"]
        for c in new
        if c["event"] in SUPPRESSING_EVENTS or c["event"] == "group_resubscribe"
    ]
    ids = {}
    for chunk in chunks(wanted):
        ids.update(
            db.session.execute(
                select(EmailEvent.sg_event_id, EmailEvent.id).where(
                    text_in(EmailEvent.sg_event_id, chunk)
                )
            ).all()
        )
    for columns in new:
        columns["id"] = ids.get(columns["sg_event_id"])


def _advance_states(targets: dict[int, str], messages: list[EmailMessage | None]) -> None:
    """`_advance_state` for many messages: one guarded UPDATE per target state, then the
    messages' states read back."""
    if not targets:
        return
    db.session.flush()  # the timestamps set on the messages go first
    by_state: dict[str, list[int]] = {}
    for message_id, state in targets.items():
        by_state.setdefault(state, []).append(message_id)
    for state, ids in by_state.items():
        lower = [s for s, rank in STATE_RANK.items() if rank < STATE_RANK[state]]
        for chunk in chunks(sorted(ids)):
            db.session.execute(
                update(EmailMessage)
                .where(id_in(EmailMessage.id, chunk), EmailMessage.state.in_(lower))
                .values(state=state, updated_at=utcnow())
                .execution_options(synchronize_session=False)
            )
    states = {}
    for chunk in chunks(sorted(targets)):
        states.update(
            db.session.execute(
                select(EmailMessage.id, EmailMessage.state).where(id_in(EmailMessage.id, chunk))
            ).all()
        )
    for message in {m.id: m for m in messages if m is not None and m.id in states}.values():
        set_committed_value(message, "state", states[message.id])


def _suppress_for_events(new: list[dict]) -> None:
    """`suppress` (and the group resubscribe's lift) for the events that call for it, in
    the events' order, with the addresses' suppressions read in one query."""
    relevant = [
        c
        for c in new
        if c["email"] and (c["event"] in SUPPRESSING_EVENTS or c["event"] == "group_resubscribe")
    ]
    if not relevant:
        return
    known: dict[str, Suppression | None] = dict.fromkeys({c["email"] for c in relevant})
    for emails in chunks(sorted(known)):
        for suppression in db.session.scalars(
            select(Suppression).where(text_in(Suppression.email, emails))
        ):
            known[suppression.email] = suppression
    for columns in relevant:
        address = columns["email"]
        record = None
        if columns["event"].startswith("group_"):
            record = db.session.get(EmailEvent, columns["id"])
        reason = _suppression_reason(columns, record)
        if reason:
            known[address] = _note_suppression(
                known[address], address, reason, columns["reason"], columns["id"]
            )
        if columns["event"] == "group_resubscribe":
            db.session.flush()
            _lift_group_unsubscribe(record)
            known[address] = db.session.scalar(
                select(Suppression).where(Suppression.email == address)
            )
    db.session.flush()


# --- Webhook authenticity ---------------------------------------------------------------

_TIMESTAMP = re.compile(r"[0-9]{1,12}")


@functools.lru_cache(maxsize=4)
def _webhook_verifier(public_key: str):
    from sendgrid.helpers.eventwebhook import EventWebhook

    return EventWebhook(public_key)


def webhook_request_is_authentic(
    public_key: str, raw_body: bytes, signature: str, timestamp: str, now: float | None = None
) -> bool:
    """SendGrid's ECDSA signature over timestamp + raw body is valid, and it is fresh.

    Fresh: signed at most MAIL_WEBHOOK_MAX_AGE_SECONDS ago and not further in the
    future than MAIL_WEBHOOK_MAX_SKEW_SECONDS, so a captured request cannot be replayed
    later. `public_key` is the base64 DER key from SendGrid's mail settings.
    """
    if not public_key or not signature or not timestamp or not _TIMESTAMP.fullmatch(timestamp):
        return False
    age = (time.time() if now is None else now) - int(timestamp)
    max_age = current_app.config["MAIL_WEBHOOK_MAX_AGE_SECONDS"]
    if age > max_age or -age > current_app.config["MAIL_WEBHOOK_MAX_SKEW_SECONDS"]:
        return False
    try:
        verifier = _webhook_verifier(public_key.strip())
    except Exception:  # noqa: BLE001 - any unreadable key means: refuse everything
        log.error("SENDGRID_WEBHOOK_PUBLIC_KEY is not a valid base64 DER public key")
        return False
    try:
        payload = raw_body.decode("utf-8")
        return bool(verifier.verify_signature(payload, signature, timestamp))
    except (ValueError, TypeError):  # not UTF-8, not base64, not an ECDSA signature
        return False
