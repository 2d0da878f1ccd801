"""The rules of a newsletter's life: compose, schedule, send, pause, resume, cancel.

draft ⇄ scheduled → sending ⇄ paused → finished (automatically, when nothing is
pending) · scheduled / sending / paused → cancelled. Functions change the session and
never commit; jobs they need are enqueued after the caller commits.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from flask_babel import gettext as _
from sqlalchemy import func, select, update

from crm.extensions import db
from crm.mail.backends import substitute
from crm.mail.services import queue_email
from crm.members.models import CONTACT_ROLES, Network
from crm.newsletters import audience, compose, ledger
from crm.newsletters.models import (
    EDITABLE_STATES,
    EVENT_MAIL_KINDS,
    MEMBERSHIP_FILTERS,
    NEWSLETTER_KINDS,
    Newsletter,
    NewsletterBatch,
    NewsletterRecipient,
)
from crm.newsletters.queueing import after_commit
from crm.numbers import is_digits
from crm.subscriptions.links import public_url
from crm.subscriptions.models import GENERAL_TOPIC, Topic
from crm.timeutil import utcnow


class NewsletterError(ValueError):
    """A change that breaks a rule; the message is fit to show staff."""


class NoRecipients(NewsletterError):
    """Nobody would get the newsletter: sending it would only lock it as "sent 0/0"."""

    def __init__(self):
        super().__init__(
            _(
                "Nobody would get this newsletter: no one with an address that may be "
                "mailed has active consent for the chosen topics and filters. Change who "
                "gets it, or wait for subscribers, then send it."
            )
        )


@dataclass
class Content:
    subject: str
    body: str
    preheader: str = ""
    topics: tuple[str, ...] = (GENERAL_TOPIC,)
    network_ids: tuple[int, ...] = ()
    municipalities: tuple[str, ...] = ()
    membership: str = ""
    roles: tuple[str, ...] = ()
    in_archive: bool = False
    kind: str = "newsletter"
    # Event mail (set when it is made, see crm/events/invitations.py; never edited).
    event_id: int | None = None
    parent_id: int | None = None


def _clean_line(value: str, limit: int) -> str:
    return " ".join((value or "").replace("\x00", "").split())[:limit]


def _check(content: Content) -> Content:
    subject = _clean_line(content.subject, 200)
    if not subject:
        raise NewsletterError(_("A newsletter needs a subject."))
    body = (content.body or "").replace("\x00", "").replace("\r\n", "\n")
    if not body.strip():
        raise NewsletterError(_("A newsletter needs some text."))
    if len(body) > compose.MAX_BODY_LENGTH:
        raise NewsletterError(_("The text is too long."))
    if content.kind not in NEWSLETTER_KINDS + EVENT_MAIL_KINDS:
        raise NewsletterError(_("Unknown kind of mail."))
    if (content.kind in EVENT_MAIL_KINDS) != (content.event_id is not None):
        raise NewsletterError(_("Unknown kind of mail."))
    known_topics = set(db.session.scalars(select(Topic.slug)))
    topics = tuple(dict.fromkeys(t for t in content.topics if t))
    if not topics and content.kind == "newsletter":
        raise NewsletterError(_("Choose at least one topic: only its subscribers can get it."))
    unknown = [t for t in topics if t not in known_topics]
    if unknown:
        raise NewsletterError(_("Unknown topic: %(slug)s", slug=", ".join(unknown)))
    network_ids = tuple(dict.fromkeys(int(n) for n in content.network_ids))
    if network_ids:
        found = set(db.session.scalars(select(Network.id).where(Network.id.in_(network_ids))))
        if found != set(network_ids):
            raise NewsletterError(_("Unknown network."))
    municipalities = tuple(dict.fromkeys(str(m).strip() for m in content.municipalities))
    if any(not (is_digits(m) and len(m) == 4) for m in municipalities):
        raise NewsletterError(_("A municipality number has four digits."))
    if content.kind == "network_mail" and not network_ids:
        raise NewsletterError(_("Network mail goes to the members of at least one network."))
    if content.kind == "event_invitation" and not (network_ids or topics):
        raise NewsletterError(
            _("Choose at least one network or topic: they decide who may be invited.")
        )
    if content.membership not in MEMBERSHIP_FILTERS:
        raise NewsletterError(_("Unknown membership filter."))
    roles = tuple(dict.fromkeys(r for r in content.roles))
    if any(r not in CONTACT_ROLES for r in roles):
        raise NewsletterError(_("Unknown contact role."))
    return Content(
        subject=subject,
        body=body,
        preheader=_clean_line(content.preheader, 200),
        topics=topics,
        network_ids=network_ids,
        municipalities=municipalities,
        membership=content.membership,
        roles=roles,
        in_archive=bool(content.in_archive),
        kind=content.kind,
        event_id=content.event_id,
        parent_id=content.parent_id,
    )


def _apply(newsletter: Newsletter, content: Content) -> None:
    newsletter.subject = content.subject
    newsletter.preheader = content.preheader
    newsletter.body = content.body
    newsletter.topics = list(content.topics)
    newsletter.network_ids = list(content.network_ids)
    newsletter.municipalities = list(content.municipalities)
    newsletter.membership = content.membership
    newsletter.roles = list(content.roles)
    newsletter.in_archive = content.in_archive
    newsletter.kind = content.kind
    newsletter.event_id = content.event_id
    newsletter.parent_id = content.parent_id


def content_of(newsletter: Newsletter) -> Content:
    return Content(
        subject=newsletter.subject,
        body=newsletter.body,
        preheader=newsletter.preheader,
        topics=tuple(newsletter.topics or ()),
        network_ids=tuple(newsletter.network_ids or ()),
        municipalities=tuple(newsletter.municipalities or ()),
        membership=newsletter.membership,
        roles=tuple(newsletter.roles or ()),
        in_archive=newsletter.in_archive,
        kind=newsletter.kind or "newsletter",
        event_id=newsletter.event_id,
        parent_id=newsletter.parent_id,
    )


def create_newsletter(content: Content, user=None) -> Newsletter:
    """A new draft."""
    newsletter = Newsletter(state="draft", created_by_id=user.id if user is not None else None)
    _apply(newsletter, _check(content))
    db.session.add(newsletter)
    db.session.flush()
    return newsletter


def _lock_while_editable(newsletter: Newsletter) -> bool:
    """Lock the newsletter's row if it is still a draft or scheduled, and reload it.

    Starting and editing race: a double click on Send, the scheduled start job and the
    reconciler, an edit saved just as the scheduled time comes. A no-op conditional
    UPDATE takes the row lock (SQLite: the write lock) until commit; whoever comes
    second waits for it and then finds the state changed. False: no longer editable.
    """
    if not newsletter.editable:
        return False
    db.session.flush()
    locked = db.session.execute(
        update(Newsletter)
        .where(Newsletter.id == newsletter.id, Newsletter.state.in_(EDITABLE_STATES))
        .values(state=Newsletter.state)
        .execution_options(synchronize_session=False)
    )
    db.session.refresh(newsletter)
    return locked.rowcount == 1


def update_newsletter(newsletter: Newsletter, content: Content) -> None:
    """Change a draft or scheduled newsletter (one that has not started sending)."""
    if not newsletter.editable:
        raise NewsletterError(_("A newsletter that has been sent cannot be changed."))
    if newsletter.kind in EVENT_MAIL_KINDS:
        # What an event's mail is for, and (but for an invitation) whom it goes to,
        # was fixed when it was made: only its text changes here.
        fixed = content_of(newsletter)
        if newsletter.kind == "event_invitation":
            fixed = replace(
                fixed,
                topics=content.topics,
                network_ids=content.network_ids,
                municipalities=content.municipalities,
                membership=content.membership,
                roles=content.roles,
            )
        content = replace(
            fixed,
            subject=content.subject,
            body=content.body,
            preheader=content.preheader,
            in_archive=content.in_archive,
        )
    content = _check(content)
    if not _lock_while_editable(newsletter):
        raise NewsletterError(_("A newsletter that has been sent cannot be changed."))
    _apply(newsletter, content)


def duplicate(newsletter: Newsletter, user=None) -> Newsletter:
    """A new draft with the same content and audience (e.g. next month's edition)."""
    copy = Newsletter(
        state="draft",
        created_by_id=user.id if user is not None else None,
        duplicated_from_id=newsletter.id,
    )
    _apply(copy, content_of(newsletter))
    db.session.add(copy)
    db.session.flush()
    return copy


def delete_draft(newsletter: Newsletter) -> None:
    if newsletter.state != "draft":
        raise NewsletterError(_("Only drafts can be deleted."))
    db.session.delete(newsletter)


def recipients_by_basis(newsletter: Newsletter) -> dict[int | None, int]:
    """Recipients per basis (None = consent, else a network id): if it were sent now
    (drafts), or the ledger's (once sending)."""
    if newsletter.editable:
        return audience.count_by_basis(audience.Audience.of(newsletter))
    return ledger.counts_by_basis(newsletter.id)


def recipient_count(newsletter: Newsletter) -> int:
    """Recipients if it were sent now (for drafts), or the ledger's size (once sending)."""
    if newsletter.editable:
        return audience.count(audience.Audience.of(newsletter))
    return ledger.counts(newsletter.id)["total"]


# -- sending ----------------------------------------------------------------------------


def schedule(newsletter: Newsletter, at: datetime) -> None:
    if newsletter.state not in ("draft", "scheduled"):
        raise NewsletterError(_("Only a draft can be scheduled."))
    if at <= utcnow() + timedelta(minutes=1):
        raise NewsletterError(_("Choose a time in the future."))
    # A reminder to an event's registrants goes to whoever is registered when it starts
    # (there may be nobody yet when it is planned).
    if newsletter.kind != "event_registrant_reminder" and recipient_count(newsletter) == 0:
        raise NoRecipients()
    newsletter.state = "scheduled"
    newsletter.scheduled_at = at
    after_commit("start", newsletter.id, at)


def unschedule(newsletter: Newsletter) -> None:
    if newsletter.state != "scheduled":
        raise NewsletterError(_("The newsletter is not scheduled."))
    newsletter.state = "draft"
    newsletter.scheduled_at = None


def start_sending(newsletter: Newsletter) -> int:
    """Freeze the content, create the recipient ledger and its batches: state `sending`.

    All in the caller's transaction; the batch jobs are enqueued after it commits.
    Returns the number of recipients. Raises NoRecipients when nobody would get it
    (nothing is changed then; the caller rolls back).
    """
    if not _lock_while_editable(newsletter):
        raise NewsletterError(_("This newsletter has already been sent."))
    ledger.freeze_content(newsletter)
    newsletter.state = "sending"
    newsletter.started_at = utcnow()
    newsletter.pause_reason = ""
    db.session.flush()
    total = ledger.create_ledger(newsletter)
    if total == 0:
        raise NoRecipients()
    return total


def back_to_draft_if_scheduled(newsletter_id: int, reason: str) -> None:
    """A scheduled newsletter that could not start (nobody to send to) waits as a draft,
    with the reason shown on its page (call after rolling back the failed start)."""
    newsletter = db.session.get(Newsletter, newsletter_id)
    if newsletter is not None and newsletter.state == "scheduled":
        newsletter.state = "draft"
        newsletter.scheduled_at = None
        newsletter.pause_reason = reason


def pause(newsletter: Newsletter) -> None:
    """Stop after the requests under way; nothing pending is lost."""
    if newsletter.state != "sending":
        raise NewsletterError(_("Only a newsletter that is being sent can be paused."))
    newsletter.state = "paused"
    newsletter.paused_at = utcnow()


def resume(newsletter: Newsletter) -> None:
    """Go on sending what is pending."""
    from crm.newsletters import reconciler

    if newsletter.state != "paused":
        raise NewsletterError(_("Only a paused newsletter can be resumed."))
    newsletter.state = "sending"
    newsletter.pause_reason = ""
    B = NewsletterBatch
    # Staff fixed what stopped it (or chose to try again): a fresh count of attempts.
    db.session.execute(
        update(B)
        .where(B.newsletter_id == newsletter.id, B.state == "pending")
        .values(attempts=0)
        .execution_options(synchronize_session=False)
    )
    db.session.execute(
        update(B)
        .where(B.newsletter_id == newsletter.id, B.state == "pending", B.ambiguous_since.is_(None))
        .values(next_attempt_at=None)
        .execution_options(synchronize_session=False)
    )
    db.session.flush()
    for batch in db.session.scalars(
        select(NewsletterBatch).where(
            NewsletterBatch.newsletter_id == newsletter.id, NewsletterBatch.state == "pending"
        )
    ):
        reconciler.requeue(batch)


def cancel(newsletter: Newsletter) -> int:
    """Stop for good: pending recipients are skipped (a request under way still counts)."""
    if newsletter.state not in ("scheduled", "sending", "paused"):
        raise NewsletterError(_("This newsletter cannot be cancelled."))
    if db.session.get_bind().dialect.name == "postgresql":
        db.session.execute(
            select(Newsletter.id).where(Newsletter.id == newsletter.id).with_for_update()
        )
    newsletter.state = "cancelled"
    newsletter.cancelled_at = utcnow()
    db.session.flush()
    return ledger.skip_unsent(newsletter, "cancelled")


def sample_first_name(user) -> str:
    """The first name that shows in the preview and in test copies: the staff user's own,
    or an example one, so a greeting never reads "Hei !"."""
    return (user.name or "").split(" ")[0] or "Kari"


def test_send(newsletter: Newsletter, user, to: str | None = None) -> str:
    """Send the newsletter as a recipient would see it to one address: the staff user's
    own, or a colleague's (`to`, already validated). Returns the address it went to."""
    rendered = compose.render_email(
        newsletter.subject, newsletter.preheader, newsletter.body, ledger.archive_url(newsletter)
    )
    substitutions = compose.Personalizer().substitutions(
        sample_first_name(user), public_url("/unsubscribe/test"), public_url("/preferences/test")
    )
    to = to or user.email
    queue_email(
        to,
        "newsletters/test",
        {
            "subject": substitute(rendered.subject, substitutions),
            "html": substitute(rendered.html, substitutions),
            "text": substitute(rendered.text, substitutions),
        },
        to_name=(user.name or "") if to == user.email else "",
        category="newsletter-test",
        locale=compose.newsletter_locale(),
    )
    return to


# -- progress ---------------------------------------------------------------------------

RATE_WINDOW = timedelta(seconds=30)


def status(newsletter: Newsletter) -> dict:
    """The CLI's status: state and the ledger's counts (SPEC.md's keys, and `skipped`
    so that sent + failed + skipped + pending = total)."""
    counts = ledger.counts(newsletter.id)
    return {
        "state": newsletter.state,
        "total": counts["total"],
        "sent": counts["sent"],
        "failed": counts["failed"],
        "pending": counts["pending"],
        "skipped": counts["skipped"],
    }


def progress(newsletter: Newsletter) -> dict:
    """Counts, rate (emails/s over the last 30 s) and an ETA, for the live progress bar."""
    counts = ledger.counts(newsletter.id)
    now = utcnow()
    done = counts["total"] - counts["pending"]
    rate = 0.0
    if newsletter.state == "sending" and newsletter.started_at:
        since = max(newsletter.started_at, now - RATE_WINDOW)
        recent = db.session.scalar(
            select(func.coalesce(func.sum(NewsletterBatch.sent_count), 0)).where(
                NewsletterBatch.newsletter_id == newsletter.id,
                NewsletterBatch.sent_at >= since,
            )
        )
        elapsed = max((now - since).total_seconds(), 1.0)
        rate = float(recent) / elapsed
    elif newsletter.state == "finished" and newsletter.started_at and newsletter.finished_at:
        # The average over the whole send.
        elapsed = max((newsletter.finished_at - newsletter.started_at).total_seconds(), 1.0)
        rate = counts["sent"] / elapsed
    eta = round(counts["pending"] / rate) if rate > 0 and counts["pending"] else None
    return {
        "id": newsletter.id,
        "state": newsletter.state,
        **counts,
        "done": done,
        "percent": round(100.0 * done / counts["total"], 1) if counts["total"] else 100.0,
        "rate": round(rate, 1),
        "eta_seconds": eta,
        "pause_reason": newsletter.pause_reason,
    }


# -- other areas' hooks -------------------------------------------------------------------


def merge_recipients(target, other) -> None:
    """MERGE_HOOKS: the other contact's ledger rows go to the contact it joins.

    Where both have a row in the same mailing, each keeps its own (the ledger is one
    row per contact, and both may be real sends, whose history stays), and the survivor
    gets it at most once: the other contact's row still waiting is skipped ("merged"),
    and so is the survivor's when the other's was sent or is in a request under way or
    of unknown outcome (`ledger.skip_waiting_rows`, which leaves such batches alone);
    a survivor's row in such a batch is skipped when the batch is tried again.
    """
    R, B = NewsletterRecipient, NewsletterBatch
    already = select(R.newsletter_id).where(R.contact_id == target.id)
    moved = db.session.scalars(
        update(R)
        .where(R.contact_id == other.id, R.newsletter_id.not_in(already))
        .values(contact_id=target.id)
        .returning(R.newsletter_id)
        .execution_options(synchronize_session=False)
    ).all()
    # Where the survivor's own row is still to be written, this one stands for them.
    ledger.drop_planned(target.id, moved)
    under_way = B.in_flight_since.is_not(None) | B.ambiguous_since.is_not(None)
    rows = db.session.execute(
        select(R.id, R.newsletter_id, R.contact_id, R.state, under_way.label("under_way"))
        .outerjoin(B, (B.newsletter_id == R.newsletter_id) & (B.number == R.batch_number))
        .where(
            R.contact_id.in_((target.id, other.id)),
            R.newsletter_id.in_(select(R.newsletter_id).where(R.contact_id == other.id)),
        )
    ).all()
    kept = {r.newsletter_id: r for r in rows if r.contact_id == target.id}
    waiting = []
    for row in rows:
        if row.contact_id != other.id:
            continue
        went_out = row.state == "sent" or (row.state == "pending" and row.under_way)
        if row.state == "pending" and not row.under_way:
            # An archived contact is never mailed: the survivor's row stands for both.
            waiting.append(row.id)
        elif went_out and kept[row.newsletter_id].state == "pending":
            # They had it at the other address, or most likely will: a request under
            # way is nearly always accepted. Should it not be, the other's row is
            # skipped when its batch is tried again (archived) and neither address
            # gets it: a missed copy rather than a second one.
            waiting.append(kept[row.newsletter_id].id)
    ledger.skip_waiting_rows(waiting, "merged")
    # Left pending: the survivor's rows in a batch under way, whose request may have
    # been accepted. Should the batch be tried again, they are skipped then
    # (`sending.skip_ineligible`): the person had their copy at the other address.
    if waiting:
        db.session.execute(
            update(R)
            .where(R.id.in_(waiting), R.state == "pending")
            .values(skip_reason="merged")
            .execution_options(synchronize_session=False)
        )


def set_in_archive(newsletter: Newsletter, published: bool) -> None:
    """Publish a newsletter that has gone out in the public archive, or withdraw it.

    Before sending, the compose form's checkbox decides; a cancelled newsletter is
    never shown in the archive, so it cannot be published.
    """
    if newsletter.editable:
        raise NewsletterError(_("Edit the newsletter to choose whether it is published."))
    if published and newsletter.state == "cancelled":
        raise NewsletterError(_("A cancelled newsletter cannot be published."))
    newsletter.in_archive = published


def picked_count(newsletter: Newsletter) -> int:
    """How many picked contacts the mailing is limited to (0: its whole audience; see
    crm.newsletters.audience)."""
    from crm.newsletters.models import newsletter_pick

    return db.session.scalar(
        select(func.count()).where(newsletter_pick.c.newsletter_id == newsletter.id)
    )
