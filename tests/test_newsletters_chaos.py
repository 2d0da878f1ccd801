"""Randomized interleavings of the newsletter sending protocol, seeded and reproducible.

The other sending tests set up each fault alone. Here each seed runs one newsletter
through 30-80 random steps: senders running a batch (`run_batch` or the job's
`run_batches`) against the SendGrid test server answering 202, 500, accept-then-500,
a timeout, accept-then-timeout, 429 or a 400 naming one recipient; senders dying in
the middle of a request (before or after the provider took it); webhook events
arriving; the reconciler; time passing; contacts withdrawing, being suppressed,
erased or merged (a subscriber cannot be deleted: their consent events keep the
row); staff pausing, resuming and cancelling. Some of those also happen *while a
request is under way* (from inside the backend's send, in an app context of their
own, so with their own database session, as another process would).
After every step and at the end, once everything has been let run out:

1. the server accepted no address (and no ledger row) twice for the newsletter, and a
   merged person gets no new copy after the merge if they had one, and at most one;
2. at the end the newsletter is `finished` (or stays `cancelled`), every row is
   sent, skipped (with a reason) or failed, and a row is `sent` exactly when the
   server accepted it (`sent` implies accepted after every step);
3. the batches' counters and `ledger.counts` agree with the rows' states;
4. after a cancel, only batches in flight or ambiguous at that moment were accepted.

Time is virtual: the grace period, leases and backoffs are far longer than a scenario
takes, and a "time passes" step moves the batches' timestamps back past all of them
(and clears the 429 pause in Redis). The README's resend policy assumes the webhook's
events of an accepted request arrive within the grace period, so that step first
delivers the events of every request the server accepted. With no wall clock in the
protocol's decisions, a seed replays the same way.

A failure prints the seed and the step log. A recipient who misses their copy because
they were merged while it was under way (documented in `services.merge_recipients`)
is reported, not failed.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from datetime import timedelta

import pytest
from sqlalchemy import select

from crm.auth.models import User
from crm.extensions import db
from crm.mail.services import record_event, suppress
from crm.members.models import Contact
from crm.members.services import MembersError, merge_contacts
from crm.newsletters import ledger, reconciler, sending, services
from crm.newsletters.backend import BatchSendGridBackend
from crm.newsletters.models import Newsletter, NewsletterBatch, NewsletterRecipient
from crm.newsletters.ratelimit import PAUSE_KEY
from crm.queue import get_redis
from crm.subscriptions import gdpr
from crm.subscriptions import ledger as consent_ledger
from crm.timeutil import utcnow
from tests.chaos import SeededScenario
from tests.factories import bulk_subscribers, make_newsletter, make_user
from tests.sendgrid_server import SendGridServer

pytestmark = pytest.mark.slow

SEEDS = range(25)
GRACE = 60.0  # seconds, far longer than a scenario runs: only `advance` passes it
LEASE = 60.0
# A "time passes" step moves every timestamp back this far: past the grace period,
# any lease, any backoff and any 429 wait.
ADVANCE = timedelta(seconds=3 * GRACE)
CLIENT_TIMEOUT = 0.15
STALL = 0.3  # held longer than the client waits


class SenderKilled(BaseException):
    """A sender process dying mid-request: not an Exception, so no handler cleans up."""


@pytest.fixture(scope="module")
def shared_sendgrid_server():
    server = SendGridServer().start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chaos_sendgrid(app, shared_sendgrid_server, monkeypatch):
    sendgrid_server = shared_sendgrid_server
    sendgrid_server.reset()
    for key, value in sendgrid_server.worker_env().items():
        monkeypatch.setitem(app.config, key, value)
    monkeypatch.setitem(app.config, "SENDGRID_TIMEOUT_SECONDS", CLIENT_TIMEOUT)
    monkeypatch.setitem(app.config, "NEWSLETTER_AMBIGUOUS_GRACE_SECONDS", GRACE)
    monkeypatch.setitem(app.config, "NEWSLETTER_LEASE_SECONDS", LEASE)
    monkeypatch.setitem(app.config, "NEWSLETTER_RETRY_BASE_SECONDS", 5.0)
    monkeypatch.setitem(app.config, "NEWSLETTER_RETRY_MAX_SECONDS", 20.0)
    monkeypatch.setitem(app.config, "NEWSLETTER_RATE_PER_MINUTE", 6_000_000)
    monkeypatch.setitem(app.config, "NEWSLETTER_MAX_ATTEMPTS", 3)
    # Every wait goes back to the "queue" (our step loop) instead of sleeping inline:
    # only then can events, staff and time come between a sender's tries.
    monkeypatch.setitem(app.config, "NEWSLETTER_MAX_INLINE_WAIT_SECONDS", 0)
    return sendgrid_server


class Scenario(SeededScenario):
    def __init__(self, seed: int, app, server, monkeypatch):
        self.seed = seed
        self.rng = random.Random(seed)
        self.app = app
        self.server = server
        self.log: list[str] = []
        self.delivered: set[tuple[int, int]] = set()  # (request index, personalization)
        self.merges: list[tuple[int, set[int]]] = []  # (requests made before, the person)
        self.person: dict[int, int] = {}  # contact id -> merged into (union-find)
        self.left_out: set[int] = set()  # contacts who withdrew, were suppressed or erased
        self.stats: Counter[str] = Counter()  # actions taken and senders' outcomes
        self.cancel: tuple[int, set[int]] | None = None  # requests before it, batches exempt
        self.die: str | None = None  # the next request's sender dies: "before" / "after"
        self.during: list[str] = []  # actions to take while the next request is under way
        self.nested = False
        # Requests made so far, and the number of the one each accepted request was
        # (a request under way when something happens was made before it).
        self.made = 0
        self.made_of: dict[int, int] = {}
        original = BatchSendGridBackend.send_batch

        def send_batch(backend, mail):
            made, self.made = self.made, self.made + 1
            accepted_before = len(self.server.requests)
            die, self.die = self.die, None
            during, self.during = self.during, []
            after = self.rng.random() < 0.5
            if not after:
                self._meanwhile(during)
            if die == "before":
                self.note("  the sender dies before the provider has the request")
                raise SenderKilled
            try:
                return original(backend, mail)
            finally:
                if after:
                    self._meanwhile(during)
                self._note_made(mail, accepted_before, made)
                if die == "after":
                    self.note("  the sender dies after the provider accepted the request")
                    raise SenderKilled  # noqa: B012 - a killed process has no answer

        monkeypatch.setattr(BatchSendGridBackend, "send_batch", send_batch)

    def _note_made(self, mail, accepted_before: int, made: int) -> None:
        rows = {r.custom_args["klynge_recipient"] for r in mail.recipients}
        for index in range(accepted_before, len(self.server.requests)):
            personalizations = self.server.requests[index].body["personalizations"]
            if index not in self.made_of and rows == {
                p["custom_args"]["klynge_recipient"] for p in personalizations
            }:
                self.made_of[index] = made
                return

    # -- the log -----------------------------------------------------------------------

    # -- setup -------------------------------------------------------------------------

    def start(self) -> None:
        rng = self.rng
        self.contacts = bulk_subscribers(rng.randint(15, 30), prefix=f"c{self.seed}-")
        self.address_owner = {
            email.lower(): cid
            for cid, email in db.session.execute(
                select(Contact.id, Contact.email).where(Contact.id.in_(self.contacts))
            )
        }
        self.admin_id = make_user("admin").id
        newsletter = make_newsletter(f"Chaos {self.seed}")
        self.newsletter_id = newsletter.id
        self.may_cancel = self.seed % 3 == 0
        size = rng.randint(2, 4)
        self.app.config["NEWSLETTER_BATCH_SIZE"] = size
        first_rows = rng.choice([None, size * 2])  # some seeds write the ledger in parts
        if first_rows:
            ledger.FIRST_ROWS.update(postgresql=first_rows, sqlite=first_rows)
        total = services.start_sending(newsletter)
        db.session.commit()
        self.note(f"start: {total} recipients, batches of {size}, first rows {first_rows or 'all'}")

    # -- state -------------------------------------------------------------------------

    def newsletter(self) -> Newsletter:
        db.session.expire_all()
        return db.session.get(Newsletter, self.newsletter_id)

    def batches(self) -> list[NewsletterBatch]:
        db.session.expire_all()
        return db.session.scalars(
            select(NewsletterBatch)
            .where(NewsletterBatch.newsletter_id == self.newsletter_id)
            .order_by(NewsletterBatch.number)
        ).all()

    def rows(self) -> list:
        """The ledger's rows as plain tuples (no ORM instance to reload one at a time)."""
        R = NewsletterRecipient
        return db.session.execute(
            select(R.id, R.contact_id, R.batch_number, R.state, R.skip_reason)
            .where(R.newsletter_id == self.newsletter_id)
            .order_by(R.id)
        ).all()

    def batch_counters(self) -> list:
        B = NewsletterBatch
        return db.session.execute(
            select(B.number, B.state, B.size, B.sent_count, B.failed_count, B.skipped_count)
            .where(B.newsletter_id == self.newsletter_id)
            .order_by(B.number)
        ).all()

    def accepted(self, since: int = 0) -> list[tuple[int, int, dict]]:
        """(request index, personalization index, personalization) of this newsletter."""
        found = []
        for index, request in enumerate(list(self.server.requests)[since:], start=since):
            for number, p in enumerate(request.body["personalizations"]):
                if p.get("custom_args", {}).get("klynge_newsletter") == str(self.newsletter_id):
                    found.append((index, number, p))
        return found

    def find(self, contact_id: int) -> int:
        while self.person.get(contact_id, contact_id) != contact_id:
            contact_id = self.person[contact_id]
        return contact_id

    def live_contacts(self) -> list[Contact]:
        db.session.expire_all()
        return db.session.scalars(
            select(Contact)
            .where(Contact.id.in_(self.contacts), Contact.archived_at.is_(None))
            .order_by(Contact.id)
        ).all()

    # -- actions -----------------------------------------------------------------------

    def _pick_batch(self) -> NewsletterBatch:
        """Mostly a batch a sender can take now; else any pending one (a spare job)."""
        now = utcnow()
        batches = self.batches()
        pending = [b for b in batches if b.state == "pending"]
        due = [
            b
            for b in pending
            if (b.next_attempt_at is None or b.next_attempt_at <= now)
            and (b.lease_expires_at is None or b.lease_expires_at < now)
        ]
        if due and self.rng.random() < 0.8:
            return self.rng.choice(due)
        return self.rng.choice(pending or batches)

    def send(self) -> None:
        batch = self._pick_batch()
        answer = self.rng.choices(
            ["202", "500", "accept-500", "timeout", "accept-timeout", "429", "400"],
            weights=[5, 2, 2, 1, 1, 1, 1],
        )[0]
        self._queue_answer(answer, batch)
        if self.rng.random() < 0.25 and not self.nested:
            self.during.append(self._random_meanwhile())
        job = self.rng.choice(["run_batch", "run_batches"])
        self.note(f"send batch {batch.number} ({job}), provider answers {answer}")
        self._run_sender(batch.id, job)
        self.during = []  # no request was made: what was to happen meanwhile does not

    def _queue_answer(self, answer: str, batch: NewsletterBatch) -> None:
        server = self.server
        if answer == "500":
            server.fail_next(1, status=self.rng.choice([500, 502, 503]))
        elif answer == "accept-500":
            server.accept_then_fail_next(1, status=500)
        elif answer == "timeout":
            server.stall_next(1, seconds=STALL)
        elif answer == "accept-timeout":
            server.accept_then_stall_next(1, seconds=STALL)
        elif answer == "429":
            server.rate_limit_next(1, retry_after=self.rng.choice([0, 30]))
        elif answer == "400":
            number = self.rng.randrange(batch.size + 1)  # past the end: the whole batch
            server.refuse_next(
                1,
                message="Does not contain a valid address.",
                field_name=f"personalizations.{number}.to.0.email",
            )

    def _run_sender(self, batch_id: int, job: str) -> None:
        rescheduled = []

        def reschedule(batch, seconds):
            rescheduled.append((sending._id(batch), round(seconds, 1)))

        try:
            if job == "run_batch":
                outcome = sending.run_batch(batch_id, reschedule=reschedule)
            else:
                outcome = sending.run_batches(
                    batch_id,
                    reschedule=reschedule,
                    drop_job=lambda job_id: None,
                    give_way=lambda: self.rng.random() < 0.4,
                )
        except SenderKilled:
            db.session.rollback()
            self._expire_dead_leases()
            outcome = "killed"
        finally:
            self.server._faults.clear()  # an answer not asked for does not carry over
        self.note(f"  -> {outcome}, rescheduled {rescheduled}")
        self.stats[outcome] += 1

    def _expire_dead_leases(self) -> None:
        """What the dead sender leaves: its in-flight mark, its lease run out (or its
        worker seen dead by `release_dead_senders`)."""
        past = utcnow() - timedelta(seconds=1)
        for batch in self.batches():
            if batch.lease_owner is not None and batch.lease_expires_at > past:
                batch.lease_expires_at = past
        db.session.commit()

    def kill(self) -> None:
        self.die = self.rng.choice(["before", "after"])
        batch = self._pick_batch()
        self.note(f"send batch {batch.number}, its sender will die ({self.die})")
        self._run_sender(batch.id, "run_batch")
        self.die = None

    def events(self) -> None:
        """The webhook brings `processed` events of some accepted requests (the first
        personalization of each, or all)."""
        waiting = sorted({i for i, n, _p in self.accepted() if (i, n) not in self.delivered})
        if not waiting:
            self.note("events: none waiting")
            return
        chosen = self.rng.sample(waiting, self.rng.randint(1, len(waiting)))
        partly = self.rng.random() < 0.5
        self.note(f"events of requests {sorted(chosen)}{' (first only)' if partly else ''}")
        for index, number, p in self.accepted():
            if index in chosen and (index, number) not in self.delivered:
                if not (partly and number):
                    self._deliver(index, number, p)

    def _deliver(self, index: int, number: int, p: dict) -> None:
        request = self.server.requests[index]
        args = p.get("custom_args") or {}
        record_event(
            {
                "event": "processed",
                "email": p["to"][0]["email"],
                "timestamp": int(request.at),
                "sg_event_id": f"processed-{args.get('klynge_recipient')}-{request.message_id}",
                "sg_message_id": f"{request.message_id}.filter0001",
                **args,
            }
        )
        db.session.commit()
        self.delivered.add((index, number))

    def deliver_all(self) -> None:
        for index, number, p in self.accepted():
            if (index, number) not in self.delivered:
                self._deliver(index, number, p)

    def advance(self) -> None:
        """Time passes: past the grace period, leases, backoffs and 429 waits. Every
        accepted request's events arrive first (README: within the grace period)."""
        self.note("time passes (every accepted request's events have arrived)")
        self.deliver_all()
        for batch in self.batches():
            for name in ("lease_expires_at", "next_attempt_at", "ambiguous_since"):
                if getattr(batch, name) is not None:
                    setattr(batch, name, getattr(batch, name) - ADVANCE)
            if batch.in_flight_since is not None:
                batch.in_flight_since -= ADVANCE
        db.session.commit()
        get_redis().delete(PAUSE_KEY)

    def reconcile(self) -> None:
        result = reconciler.reconcile()
        self.note(f"reconcile: {result}")

    def withdraw(self) -> None:
        contact = self._some_contact()
        if contact is not None:
            self.note(f"contact {contact.id} withdraws consent")
            self.left_out.add(contact.id)
            consent_ledger.withdraw_all(contact, source="email_link", note="chaos")
            db.session.commit()

    def suppress(self) -> None:
        contact = self._some_contact()
        if contact is not None:
            self.note(f"address of contact {contact.id} suppressed")
            self.left_out.add(contact.id)
            suppress(contact.email, "bounce")
            db.session.commit()

    def erase(self) -> None:
        contact = self._some_contact()
        if contact is not None:
            self.note(f"contact {contact.id} erased")
            self.left_out.add(contact.id)
            gdpr.erase_person(contact, user=db.session.get(User, self.admin_id))
            db.session.commit()

    def merge(self) -> None:
        live = self.live_contacts()
        if len(live) < 2:
            return
        target, other = self.rng.sample(live, 2)
        self.note(f"contact {other.id} merged into {target.id}")
        before = self.made
        try:
            merge_contacts(target, other)
            db.session.commit()
        except MembersError as exc:
            db.session.rollback()
            self.note(f"  refused: {exc}")
            return
        self.person[self.find(other.id)] = self.find(target.id)
        root = self.find(target.id)
        group = {c for c in self.contacts if self.find(c) == root}
        self.merges.append((before, group))

    def pause(self) -> None:
        newsletter = self.newsletter()
        if newsletter.state == "sending":
            self.note("staff pause")
            services.pause(newsletter)
            db.session.commit()

    def resume(self) -> None:
        newsletter = self.newsletter()
        if newsletter.state == "paused":
            self.note(f"staff resume (paused: {newsletter.pause_reason or 'by staff'})")
            services.resume(newsletter)
            db.session.commit()

    def cancel_sending(self) -> None:
        newsletter = self.newsletter()
        if self.may_cancel and newsletter.state in ("sending", "paused"):
            exempt = {
                b.id
                for b in self.batches()
                if b.in_flight_since is not None or b.ambiguous_since is not None
            }
            before = len(self.server.requests)
            self.note(f"staff cancel (batches under way: {sorted(exempt)})")
            services.cancel(newsletter)
            db.session.commit()
            self.cancel = (before, exempt)

    def _some_contact(self) -> Contact | None:
        live = self.live_contacts()
        return self.rng.choice(live) if live else None

    # Things that may happen while a request is under way (another process's doing).
    MEANWHILE = ("withdraw", "suppress", "erase", "merge", "pause", "cancel_sending")

    def _random_meanwhile(self) -> str:
        return self.rng.choice([*self.MEANWHILE, "events", "reconcile", "other_sender"])

    def other_sender(self) -> None:
        self.send()

    def _meanwhile(self, actions: list[str]) -> None:
        # The answer queued for the request under way is kept for it.
        saved = list(self.server._faults)
        self.server._faults.clear()
        for action in actions:
            self.note(f"  meanwhile ({action}):")
            self.stats[f"meanwhile {action}"] += 1
            # An app context of its own: its own database session, as another process.
            with self.app.app_context():
                self.nested = True
                try:
                    getattr(self, action)()
                finally:
                    self.nested = False
                    db.session.remove()
        self.server._faults.clear()
        self.server._faults.extend(saved)

    # -- invariants --------------------------------------------------------------------

    def check(self, final: bool = False) -> None:
        accepted = self.accepted()
        by_address = Counter(p["to"][0]["email"].lower() for _i, _n, p in accepted)
        twice = [a for a, n in by_address.items() if n > 1]
        if twice:
            self.fail(f"addresses accepted twice: {twice}")
        row_ids = Counter(int(p["custom_args"]["klynge_recipient"]) for _i, _n, p in accepted)
        if any(n > 1 for n in row_ids.values()):
            self.fail(f"rows accepted twice: {[r for r, n in row_ids.items() if n > 1]}")
        self._check_merged_people(accepted)
        self._check_cancel()

        rows = self.rows()
        sent = {r.id for r in rows if r.state == "sent"}
        if sent - set(row_ids):
            self.fail(f"rows sent that the server never accepted: {sorted(sent - set(row_ids))}")
        self._check_counts(rows)
        if not final:
            return
        newsletter = self.newsletter()
        expected = "cancelled" if self.cancel else "finished"
        if newsletter.state != expected:
            self.fail(f"newsletter {newsletter.state}, not {expected}")
        unsettled = [(r.id, r.state, r.skip_reason) for r in rows if r.state == "pending"]
        unsettled += [
            (r.id, r.state, "") for r in rows if r.state == "skipped" and not r.skip_reason
        ]
        if unsettled:
            self.fail(f"rows not settled (or skipped without a reason): {unsettled}")
        existing = {r.id for r in rows}
        lost = set(row_ids) & (existing - sent)
        if lost:
            states = {r.id: (r.state, r.skip_reason) for r in rows if r.id in lost}
            self.fail(f"rows the server accepted but not marked sent: {states}")
        self._report_misses(rows, accepted)

    def _person_of(self, p: dict) -> int | None:
        owner = self.address_owner.get(p["to"][0]["email"].lower())
        return None if owner is None else self.find(owner)

    def _check_merged_people(self, accepted) -> None:
        for before, group in self.merges:
            copies = [
                (self.made_of[i], p)
                for i, _n, p in accepted
                if self.address_owner.get(p["to"][0]["email"].lower()) in group
            ]
            earlier = [c for c in copies if c[0] < before]
            later = [c for c in copies if c[0] >= before]
            if len(later) > (0 if earlier else 1):
                self.fail(
                    f"merged person {sorted(group)}: {len(earlier)} copies before the merge, "
                    f"{len(later)} after: {[p['to'][0]['email'] for _i, p in copies]}"
                )

    def _check_cancel(self) -> None:
        if self.cancel is None:
            return
        before, exempt = self.cancel
        late = {int(p["custom_args"]["klynge_batch"]) for _i, _n, p in self.accepted(since=before)}
        if late - exempt:
            self.fail(f"batches accepted after the cancel: {sorted(late - exempt)}")

    def _check_counts(self, rows) -> None:
        by_state = Counter(r.state for r in rows)
        counts = ledger.counts(self.newsletter_id)
        mine = {s: counts[s] for s in ("sent", "failed", "skipped")}
        theirs = {s: by_state.get(s, 0) for s in ("sent", "failed", "skipped")}
        if mine != theirs:
            self.fail(f"ledger.counts {counts} but rows by state {dict(by_state)}")
        batches = self.batch_counters()
        planned = sum(b.size for b in batches if b.state == "planned")
        if counts["total"] != len(rows) + planned:
            self.fail(f"ledger.counts total {counts['total']}, rows {len(rows)} + {planned}")
        sent_count = db.session.scalar(
            select(Newsletter.sent_count).where(Newsletter.id == self.newsletter_id)
        )
        if sent_count != by_state.get("sent", 0):
            self.fail(f"newsletter.sent_count {sent_count}, rows by state {dict(by_state)}")
        per_batch: dict[int, Counter] = {}
        for r in rows:
            per_batch.setdefault(r.batch_number, Counter())[r.state] += 1
        for batch in batches:
            if batch.state == "planned":
                continue
            c = per_batch.get(batch.number, Counter())
            got = (batch.sent_count, batch.failed_count, batch.skipped_count)
            if got != (c["sent"], c["failed"], c["skipped"]):
                self.fail(f"batch {batch.number} counters {got}, rows {dict(c)}")
            settled = c["pending"] == 0
            if settled != (batch.state != "pending"):
                self.fail(f"batch {batch.number} {batch.state} with rows {dict(c)}")

    def _report_misses(self, rows, accepted) -> None:
        if self.cancel:
            return  # nobody is owed a copy
        got = {self._person_of(p) for _i, _n, p in accepted}
        # People left out by their own doing (or staff's) are no miss.
        left_out = {self.find(c) for c in self.left_out}
        for r in rows:
            person = self.find(r.contact_id)
            if r.skip_reason == "merged" and person not in got and person not in left_out:
                group = [
                    (x.contact_id, x.state, x.skip_reason)
                    for x in rows
                    if self.find(x.contact_id) == self.find(r.contact_id)
                ]
                line = f"seed {self.seed}: contact {r.contact_id} (merged) got no copy: {group}"
                print(line)
                if os.environ.get("CHAOS_LOG"):
                    print("\n".join(self.log))

    # -- the run -----------------------------------------------------------------------

    ACTIONS = {
        "send": 30,
        "kill": 6,
        "events": 12,
        "reconcile": 7,
        "advance": 10,
        "withdraw": 3,
        "suppress": 3,
        "erase": 2,
        "merge": 4,
        "pause": 3,
        "resume": 5,
        "cancel_sending": 2,
    }

    def run(self) -> None:
        self.start()
        self.run_steps(self.ACTIONS, self.check)
        self.note("--- letting it run out ---")
        for _ in range(40):
            if self._done():
                break
            self.resume()
            self.advance()
            self.reconcile()
            for batch in self.batches():
                if batch.state == "pending":
                    self.note(f"send batch {batch.number}")
                    self._run_sender(batch.id, "run_batch")
            self.check()
        self.reconcile()
        self.check(final=True)
        print(f"seed {self.seed}: {self.summary()}")

    def summary(self) -> str:
        """What the scenario went through (shown with -s): that it tests something."""
        resends = sum(b.resends for b in self.batches())
        rows = Counter(r.state for r in self.rows())
        return (
            f"{self.newsletter().state}, rows {dict(rows)}, resends {resends}, "
            f"faults {dict(self.server.faults_used)}, {dict(self.stats)}"
        )

    def _done(self) -> bool:
        newsletter = self.newsletter()
        if newsletter.state == "finished":
            return True
        return newsletter.state == "cancelled" and all(
            b.state != "pending" and b.state != "planned" for b in self.batches()
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_random_interleavings_send_nobody_twice(seed, app, app_ctx, chaos_sendgrid, monkeypatch):
    monkeypatch.setattr(ledger, "FIRST_ROWS", dict(ledger.FIRST_ROWS))
    monkeypatch.setattr(ledger, "FILL_ROWS", 4)
    Scenario(seed, app, chaos_sendgrid, monkeypatch).run()
