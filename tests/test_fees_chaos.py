"""Randomized interleavings of the money side, seeded and reproducible.

The other fee tests set up each case alone. Here each seed runs one organisation
(fee settings with a random KID scheme, pro rata rule and reminder fee; a schedule;
5-15 member companies, some without an invoice contact) through 30-80 random steps
of what a treasurer and the bank do: the annual invoice run (again: it adds nothing,
unless a company joined meanwhile), invoices with several lines and VAT rates to
companies and persons, sending (email or post), full and partial credit notes,
manual payments, refunds and write-offs, Nets OCR giro files (exact, short, over,
the same KID twice, unknown, invalid and missing KIDs, reversals; a file imported
again; the same bank transaction in a second transmission), unmatched payments
assigned or handled by staff, reminder runs, the accounting export read, and time
passing. About a third of the payments, credit notes, uploads and assignments go
through the pages as a logged-in treasurer (amounts typed in kroner, the invoice by
KID or number) instead of the services. Every step commits (or rolls back on a
refusal), and after each one:

1. each invoice's paid, written-off, credited and fee sums are those of its rows,
   its status agrees with them, and its lines and credit notes add up;
2. every transaction of every imported file is booked exactly once: on the invoice
   with its KID, or on the unmatched list (and from there at most once more, on the
   invoice staff chose); each import's counts and sums add up, and a repeated file
   changes nothing;
3. the dashboard (read through its Redis cache) and the refund-due list equal sums
   over the invoice rows; when the accounting export is read (and at the end) every
   voucher balances, its totals are the rows' and the accounting page's, and each
   invoice's receivable is its rows' balance and what its page says is owed less what
   is owed back (`outstanding_ore - refund_due_ore`);
4. KIDs are unique and are the number with its check digit; invoices and credit
   notes share one gapless number series (MOD11 skips numbers without a KID);
5. reminders: only sent, unpaid invoices, never a credited one, 14 days after the
   due date or the previous deadline, at most two; the overdue page's count agrees.

The ledger and the page used to differ, and that was only reported: a credit note and
write-offs together cancelled more than the invoice (a write-off was kept in full when a
later credit note left less owed), and an invoice with a reminder fee credited in full
showed nothing owed while the ledger held the fee. Now a credit note takes at most what
is creditable (the amount less credit notes and write-offs beyond the fees; see
`crm.fees.models.creditable`), refusals included among the steps, and the one that
takes all of it cancels the fees not written off; any difference fails.

Time is virtual: every call gets the scenario's `today`. A failure prints the seed
and the step log.
"""

from __future__ import annotations

import io
import os
import random
from collections import Counter, defaultdict
from datetime import date, timedelta

import pytest
from flask.globals import request_ctx
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from crm.extensions import db
from crm.fees import accounting
from crm.fees import kid as kidlib
from crm.fees.errors import DuplicateTransmissionError, FeeError
from crm.fees.lines import LineSpec
from crm.fees.models import (
    PRO_RATA_RULES,
    CreditNote,
    Invoice,
    InvoiceLine,
    OcrImport,
    Payment,
    Reminder,
    UnmatchedPayment,
)
from crm.fees.reminders import WAIT, reminders_due, reminders_due_count, send_due_reminders
from crm.fees.services import (
    Customer,
    add_override,
    assign_unmatched,
    create_invoice,
    credit_invoice,
    dashboard,
    get_settings,
    import_ocr_file,
    invoices_for_year,
    mark_sent_by_post,
    mark_unmatched_handled,
    queue_invoice_email,
    register_payment,
    run_annual_invoicing,
)
from tests.chaos import SeededScenario
from tests.factories import (
    Auth,
    build_ocr,
    make_company,
    make_fee_schedule,
    make_fee_settings,
    make_member,
)
from tests.test_fees_ocr import with_reversal_signs

# More seeds for a longer hunt: FEES_CHAOS_SEEDS=200 pytest tests/test_fees_chaos.py
REVERSAL_TYPES = (18,)  # tilbakeføring: the bank takes a payment back
SEEDS = range(int(os.environ.get("FEES_CHAOS_SEEDS", "8")))
YEAR = 2026
FIRST_DAY = date(YEAR, 1, 12)
# (category, rate) pairs an extra invoice line may carry.
VAT_CHOICES = (("S", 25), ("S", 15), ("S", 12), ("O", 0), ("Z", 0), ("E", 0))


def status_of(amount: int, fees: int, credited: int, paid: int, written_off: int) -> str:
    """The status the model's docstrings promise, written out again on purpose."""
    if credited > 0 and credited >= amount:
        return "credited"
    due = amount + fees - credited
    settled = paid + written_off
    if settled <= 0:
        return "open" if due > 0 else "paid"
    if settled < due:
        return "partially_paid"
    return "paid" if settled == due else "overpaid"


def kroner_text(ore: int) -> str:
    """`12 500,50`: as a treasurer types an amount."""
    whole, part = divmod(ore, 100)
    return f"{whole:,}".replace(",", " ") + f",{part:02d}"


class Scenario(SeededScenario):
    def __init__(self, seed: int, client=None):
        self.seed = seed
        self.client = client  # logged in as a treasurer: some steps go through the pages
        self.rng = random.Random(seed)
        self.today = FIRST_DAY
        self.log: list[str] = []
        self.stats: Counter[str] = Counter()
        self.transmissions = 0
        self.references = 0
        # Every file imported: (import id, its date, its text, its transactions as
        # (transaction_number, kid, øre, archive reference)).
        self.files: list[tuple[int, date, str, list[tuple[str, str | None, int, str]]]] = []
        self.credited_before: dict[int, date] = {}  # invoice id -> day it was credited

    # -- the log -----------------------------------------------------------------------

    def note(self, line: str) -> None:
        self.log.append(f"[{self.today.isoformat()}] {line}")

    # -- setup -------------------------------------------------------------------------

    def start(self) -> None:
        rng = self.rng
        self.scheme = rng.choice([kidlib.MOD10, kidlib.MOD10, kidlib.MOD11])
        make_fee_settings(
            kid_scheme=self.scheme,
            kid_length=rng.choice([8, 10, 12]),
            reminder_fee_ore=rng.choice([0, 3_500, 5_000]),  # 50 kr is above the legal cap
            pro_rata=rng.choice(PRO_RATA_RULES),
        )
        self.first_number = get_settings().next_invoice_number
        make_fee_schedule(YEAR)
        self.companies = []
        for i in range(rng.randint(5, 15)):
            self.companies.append(self._new_company(f"Medlem {self.seed}-{i} AS").id)
        if rng.random() < 0.5:
            add_override(self.companies[0], YEAR, discount_percent=33, reason="Styrevedtak")
            db.session.commit()
        self.note(
            f"start: {len(self.companies)} members, {self.scheme}, "
            f"settings {self._settings_summary()}"
        )

    def _settings_summary(self) -> str:
        s = get_settings()
        return f"kid {s.kid_length}, fee {s.reminder_fee_ore}, pro rata {s.pro_rata}"

    def _new_company(self, name: str):
        rng = self.rng
        employees = rng.choice([None, 0, 3, 12, 60, 250])
        joined = rng.choice([None, None, date(YEAR, rng.randint(1, 12), rng.randint(1, 28))])
        if rng.random() < 0.7:
            company = make_member(name, employees=employees)
            company.member_since = joined
        else:  # no invoice contact: sent by post
            company = make_company(
                name,
                membership_status="member",
                employees=employees,
                member_since=joined,
                street_address="Industrivegen 4",
                postal_code="2212",
                postal_place="Kongsvinger",
            )
        db.session.commit()
        return company

    # -- reading -----------------------------------------------------------------------

    def invoices(self) -> list[Invoice]:
        db.session.expire_all()
        return db.session.scalars(
            select(Invoice).options(selectinload(Invoice.lines)).order_by(Invoice.number)
        ).all()

    def pick_invoice(self, where=lambda i: True) -> Invoice | None:
        found = [i for i in self.invoices() if where(i)]
        return self.rng.choice(found) if found else None

    def by_web(self) -> bool:
        return self.client is not None and self.rng.random() < 0.3

    def post(self, url: str, data: dict, expect: int = 302) -> None:
        """A form posted as the treasurer would (its own request, session and commit)."""
        # Outside the scenario's request context, so the page has an app context, a
        # database session and a logged-in user of its own, as in another process.
        context = request_ctx._get_current_object()
        context.pop()
        try:
            response = self.client.post(url, data=data)
        finally:
            context.push()
        self.note(f"  POST {url} -> {response.status_code} {response.location or ''}")
        self.stats["by web"] += 1
        with self.client.session_transaction() as session:
            # What the page told the treasurer (success or why not), for the log.
            for category, message in session.pop("_flashes", []):
                self.note(f"  {category}: {message}")
                self.stats[f"web {category}"] += 1
        if response.status_code != expect:
            self.fail(f"POST {url} answered {response.status_code}, not {expect}")
        db.session.expire_all()

    def _refused(self, exc: Exception) -> None:
        db.session.rollback()
        self.note(f"  refused: {exc}")
        self.stats["refused"] += 1

    # -- actions -----------------------------------------------------------------------

    def annual_run(self) -> None:
        before = {i.company_id for i in self.invoices() if i.kind == "membership"}
        run = run_annual_invoicing(YEAR, today=self.today)
        db.session.commit()
        created = {i.company_id for i in run.created}
        self.note(f"annual run: {len(created)} created, {run.existing} existing")
        if created & before:
            self.fail(f"annual run invoiced companies again: {sorted(created & before)}")
        if run.existing != len(before):
            self.fail(f"annual run counted {run.existing} existing, there are {len(before)}")

    def company_joins(self) -> None:
        company = self._new_company(f"Ny {self.seed}-{len(self.companies)} AS")
        self.companies.append(company.id)
        self.note(f"company {company.id} joins (member since {company.member_since})")

    def extra_invoice(self) -> None:
        rng = self.rng
        lines = []
        for n in range(rng.randint(1, 4)):
            category, rate = rng.choice(VAT_CHOICES)
            quantity = rng.choice([1, 1, 2, "1.5", "0.333"])
            lines.append(LineSpec(f"Linje {n}", rng.randint(1, 200_000), quantity, category, rate))
        if rng.random() < 0.2:
            lines.append(LineSpec("Rabatt", -rng.randint(1, 5_000)))
        if rng.random() < 0.5:
            customer = Customer(name="Kari Kurs", email="kari@example.no", address="Vei 1")
        else:
            from crm.members.models import Company

            customer = db.session.get(Company, rng.choice(self.companies))
        kind = rng.choice(["event", "other"])
        try:
            invoice = create_invoice(customer, lines, kind=kind, today=self.today)
            db.session.commit()
        except FeeError as exc:  # a discount larger than the lines
            self._refused(exc)
            return
        self.note(
            f"{kind} invoice {invoice.number} to {invoice.customer_name}: "
            f"{[(line.vat_category, line.vat_rate_centi, line.net_ore) for line in invoice.lines]}"
            f" = {invoice.amount_ore}"
        )

    def send(self) -> None:
        """One invoice (maybe again), or every unsent one: by email, else by post."""
        if self.rng.random() < 0.5:
            chosen = [i for i in self.invoices() if i.send_count == 0 and i.status != "credited"]
        else:
            chosen = [self.pick_invoice(lambda i: i.status != "credited")]
        for invoice in filter(None, chosen):
            self.note(f"send invoice {invoice.number} (sent {invoice.send_count} times before)")
            try:
                queue_invoice_email(invoice, today=self.today)
            except FeeError as exc:
                self.note(f"  not by email ({exc}): by post")
                db.session.rollback()
                mark_sent_by_post([db.session.get(Invoice, invoice.id)], today=self.today)
            db.session.commit()

    def credit(self) -> None:
        invoice = None
        if self.rng.random() < 0.5:
            # Reminded or written-off invoices: where credit notes meet fees and losses.
            invoice = self.pick_invoice(
                lambda i: i.creditable_ore and (i.fees_ore or i.written_off_ore)
            )
        invoice = invoice or self.pick_invoice()
        if invoice is None:
            return
        left = invoice.creditable_ore
        amount = None
        if left > 1 and self.rng.random() < 0.5:
            amount = self.rng.randint(1, left - 1)
        elif self.rng.random() < 0.15:
            # More than is creditable (written off, or credited before): refused.
            amount = left + self.rng.randint(1, max(invoice.written_off_ore, 100))
        self.note(f"credit invoice {invoice.number} ({amount or 'all'} of {left} creditable)")
        if self.by_web():  # dated today_oslo(), whatever the scenario's day
            text = "" if amount is None else kroner_text(amount)
            self.post(f"/fees/invoices/{invoice.id}/credit", {"amount": text, "reason": "Feil"})
            return
        try:
            note = credit_invoice(invoice, "Kreditert", amount, today=self.today)
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)
            if amount is not None and 0 < amount <= left:
                self.fail(f"a credit note of {amount} refused with {left} creditable")
            return
        if amount is not None and amount > left:
            self.fail(f"a credit note of {amount} issued with only {left} creditable")
        self.note(
            f"  credit note {note.number}: {note.amount_ore}, fees cancelled "
            f"{note.fees_cancelled_ore}, invoice {invoice.status}"
        )

    def _amount_for(self, invoice: Invoice) -> int:
        """Exact, too little or too much (or the invoice's amount, whatever is owed)."""
        owed = max(invoice.outstanding_ore, 1)
        return self.rng.choice(
            [owed, owed, max(owed // 2, 1), owed + self.rng.randint(1, 50_000), invoice.amount_ore]
        )

    def _payee(self, invoices: list[Invoice]) -> Invoice:
        """Mostly an invoice that is still owed, so that some stay unpaid long enough to
        be reminded while others are paid twice."""
        unpaid = [i for i in invoices if i.outstanding_ore > 0]
        return self.rng.choice(unpaid if unpaid and self.rng.random() < 0.8 else invoices)

    def pay_manually(self) -> None:
        invoices = self.invoices()
        if not invoices:
            return
        invoice = self._payee(invoices)
        amount = self._amount_for(invoice)
        self.note(f"manual payment {amount} on invoice {invoice.number} ({invoice.status})")
        if self.by_web():
            form = {
                "kind": "payment",
                "amount": kroner_text(amount),
                "paid_on": self.today.isoformat(),
            }
            self.post(f"/fees/invoices/{invoice.id}/payments", form)
            return
        try:
            register_payment(invoice, amount, self.today, note="Bank uten KID")
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)

    def refund(self) -> None:
        invoice = self.pick_invoice(lambda i: i.paid_ore > 0)
        if invoice is None:
            return
        amount = invoice.refund_due_ore or self.rng.randint(1, invoice.paid_ore + 1)
        self.note(f"refund {amount} on invoice {invoice.number} (paid {invoice.paid_ore})")
        if self.by_web():
            form = {
                "kind": "refund",
                "amount": kroner_text(amount),
                "paid_on": self.today.isoformat(),
            }
            self.post(f"/fees/invoices/{invoice.id}/payments", form)
            return
        try:
            register_payment(invoice, amount, self.today, kind="refund")
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)

    def write_off(self) -> None:
        invoice = self.pick_invoice(lambda i: i.outstanding_ore > 0)
        if invoice is None:
            return
        amount = self.rng.randint(1, invoice.outstanding_ore + 1)
        self.note(f"write off {amount} on invoice {invoice.number}")
        try:
            register_payment(invoice, amount, self.today, kind="write_off", note="Småbeløp")
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)

    def _next_reference(self) -> str:
        self.references += 1
        return f"{self.seed:03d}{self.references:06d}"

    def ocr_file(self) -> None:
        rng = self.rng
        invoices = self.invoices()
        payments = []
        for _ in range(rng.randint(1, 6)):
            kind = rng.choices(
                ["invoice", "same_again", "unknown", "invalid", "none", "reversal"],
                [10, 2, 1, 1, 1, 1],
            )[0]
            paid = [i for i in invoices if i.paid_ore > 0]
            if kind == "reversal" and paid:
                # The bank takes back (part of) a payment: never more than was paid.
                invoice = rng.choice(paid)
                amount = rng.randint(1, invoice.paid_ore)
                payments.append((invoice.kid, amount, 18, self._next_reference()))
                invoices = [i for i in invoices if i.id != invoice.id]  # once per file
                continue
            if kind == "same_again" and payments and payments[-1][0]:
                kid, amount = payments[-1][0], payments[-1][1]
            elif kind in ("invoice", "same_again") and invoices:
                invoice = self._payee(invoices)
                kid, amount = invoice.kid, self._amount_for(invoice)
            elif kind == "invalid" and invoices:
                kid = rng.choice(invoices).kid
                kid = kid[:-1] + str((int(kid[-1]) + 1) % 10)  # the check digit is wrong
                amount = rng.randint(100, 300_000)
            elif kind == "unknown":
                # A number the series will not reach in a scenario.
                kid = kidlib.next_kid(8_000_000, get_settings().kid_length, self.scheme)[1]
                amount = rng.randint(100, 300_000)
            else:
                kid, amount = None, rng.randint(100, 300_000)
            payments.append((kid, amount, 10, self._next_reference()))
        self._import(self._split(payments))

    def _split(self, payments: list) -> list[list]:
        """One or two assignments."""
        if len(payments) > 1 and self.rng.random() < 0.3:
            cut = self.rng.randint(1, len(payments) - 1)
            return [payments[:cut], payments[cut:]]
        return [payments]

    def _import(self, assignments: list[list], nets_date: date | None = None) -> None:
        self.transmissions += 1
        number = f"{self.transmissions:07d}"
        nets_date = nets_date or self.today
        text = build_ocr(assignments, number=number, nets_date=nets_date)
        if any(t[2] in REVERSAL_TYPES for a in assignments for t in a):
            text = with_reversal_signs(text)
        self.note(f"OCR file {number}: {assignments}")
        if self.by_web():
            upload = {"file": (io.BytesIO(text.encode()), f"ocr-{number}.txt")}
            self.post("/fees/import", upload)
            import_id = db.session.scalar(select(func.max(OcrImport.id)))
        else:
            try:
                result = import_ocr_file(text, f"ocr-{number}.txt")
                db.session.commit()
            except FeeError as exc:
                self._refused(exc)
                return
            self.note(f"  matched {result.matched}, unmatched {result.unmatched}")
            import_id = result.ocr_import.id
        transactions = [
            (f"{a:07d}-{n}", kid, -amount if kind in REVERSAL_TYPES else amount, reference)
            for a, payments in enumerate(assignments, start=1)
            for n, (kid, amount, kind, reference) in enumerate(payments, start=1)
        ]
        self.files.append((import_id, nets_date, text, transactions))

    def reimport(self) -> None:
        """The same file again, as it was or with Windows line ends: refused, no change."""
        if not self.files:
            return
        _id, _day, text, _t = self.rng.choice(self.files)
        if self.rng.random() < 0.5:
            text = text.replace("\n", "\r\n")
        self.note(f"the file of import {_id} again")
        before = self.database_state()
        try:
            import_ocr_file(text, "again.txt")
            db.session.commit()
        except DuplicateTransmissionError as exc:
            self._refused(exc)
        else:
            self.fail("a file imported again was not refused")
        if self.database_state() != before:
            self.fail("a refused file changed the database")

    def same_transaction_again(self) -> None:
        """A new transmission holding a transaction an earlier one held (the bank
        delivering it twice): it must not be paid twice."""
        if not self.files:
            return
        _id, day, _text, transactions = self.rng.choice(self.files)
        _number, kid, amount, reference = self.rng.choice(transactions)
        payments = [(kid, abs(amount), 18 if amount < 0 else 10, reference)]
        if self.rng.random() < 0.5 and self.invoices():
            invoice = self.rng.choice(self.invoices())
            payments.append((invoice.kid, self._amount_for(invoice), 10, self._next_reference()))
        self.rng.shuffle(payments)
        self.note(f"a transaction of import {_id} again, in a new file")
        self._import([payments], nets_date=day)

    def assign(self) -> None:
        unmatched = self._pick_unmatched(duplicates=False)
        invoice = self.pick_invoice()
        if unmatched is None or invoice is None:
            return
        self.note(
            f"staff assign unmatched {unmatched.id} ({unmatched.kid or '-'}, "
            f"{unmatched.amount_ore}) to invoice {invoice.number} ({invoice.status})"
        )
        if self.by_web():
            reference = self.rng.choice([invoice.kid, str(invoice.number)])
            form = {"invoice": reference, "note": "Funnet på navn"}
            self.post(f"/fees/unmatched/{unmatched.id}/assign", form)
            return
        try:
            assign_unmatched(unmatched, invoice, "Funnet på navn")
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)

    def handle(self) -> None:
        unmatched = self._pick_unmatched()
        if unmatched is None:
            return
        self.note(f"staff mark unmatched {unmatched.id} handled")
        try:
            mark_unmatched_handled(unmatched, "Returnert til betaler")
            db.session.commit()
        except FeeError as exc:
            self._refused(exc)

    def _pick_unmatched(self, duplicates: bool = True) -> UnmatchedPayment | None:
        db.session.expire_all()
        query = select(UnmatchedPayment).where(UnmatchedPayment.state == "open")
        if not duplicates:
            # Staff may book one (it might be a payment of its own), but that is their
            # call, not an import booking twice; here they only close them.
            query = query.where(UnmatchedPayment.reason != "duplicate")
        found = db.session.scalars(query.order_by(UnmatchedPayment.id)).all()
        return self.rng.choice(found) if found else None

    def remind(self) -> None:
        credited = {i.id for i in self.invoices() if i.status == "credited"}
        due = reminders_due(self.today)
        counted = reminders_due_count(self.today)
        if counted != len(due):
            self.fail(f"reminders_due_count {counted}, reminders_due gives {len(due)}")
        run = send_due_reminders(self.today, with_fee=self.rng.random() < 0.7)
        db.session.commit()
        self.note(
            f"reminder run: {[(r.invoice.number, r.level, r.fee_ore) for r in run.sent]}, "
            f"problems {run.problems}"
        )
        reminded = {r.invoice_id for r in run.sent}
        if reminded & credited:
            self.fail(f"credited invoices reminded: {sorted(reminded & credited)}")

    def advance(self) -> None:
        days = self.rng.choice([1, 3, 7, 14, 20, 30])
        self.today += timedelta(days=days)
        self.note(f"{days} days pass")

    # -- invariants --------------------------------------------------------------------

    def database_state(self) -> tuple:
        db.session.expire_all()
        invoices = db.session.execute(
            select(Invoice.id, Invoice.status, Invoice.paid_ore).order_by(Invoice.id)
        ).all()
        counts = tuple(
            db.session.scalar(select(func.count()).select_from(model))
            for model in (Payment, UnmatchedPayment, OcrImport)
        )
        return tuple(invoices), counts

    def check(self) -> None:
        invoices = self.invoices()
        payments = db.session.scalars(select(Payment)).all()
        notes = db.session.scalars(select(CreditNote).options(selectinload(CreditNote.lines))).all()
        reminders = db.session.scalars(select(Reminder)).all()
        self._check_invoices(invoices, payments, notes, reminders)
        self._check_numbers(invoices, notes)
        self._check_ocr(invoices, payments)
        self._check_reminders(invoices, reminders)
        self._check_figures(invoices)

    def _check_invoices(self, invoices, payments, notes, reminders) -> None:
        paid, written_off, credited, fees = (defaultdict(int) for _ in range(4))
        for p in payments:
            (written_off if p.kind == "write_off" else paid)[p.invoice_id] += p.amount_ore
        for n in notes:
            credited[n.invoice_id] += n.amount_ore
            fees[n.invoice_id] -= n.fees_cancelled_ore
            if n.amount_ore != sum(line.net_ore + line.vat_ore for line in n.lines):
                self.fail(f"credit note {n.number}: {n.amount_ore} is not its lines' sum")
            if (n.net_ore, n.vat_ore) != (
                sum(line.net_ore for line in n.lines),
                sum(line.vat_ore for line in n.lines),
            ):
                self.fail(f"credit note {n.number}: net/VAT are not its lines' sums")
        for r in reminders:
            fees[r.invoice_id] += r.fee_ore
        for i in invoices:
            got = (i.paid_ore, i.written_off_ore, i.credited_ore, i.fees_ore)
            want = (paid[i.id], written_off[i.id], credited[i.id], fees[i.id])
            if got != want:
                self.fail(
                    f"invoice {i.number}: stored (paid, written off, credited, fees) {got}, "
                    f"its rows {want}"
                )
            status = status_of(i.amount_ore, i.fees_ore, i.credited_ore, i.paid_ore,
                               i.written_off_ore)  # fmt: skip
            if i.status != status:
                self.fail(f"invoice {i.number}: status {i.status}, its sums say {status}")
            if i.status == "credited":
                self.credited_before.setdefault(i.id, self.today)
            lines = i.lines
            if (i.net_ore, i.vat_ore, i.amount_ore) != (
                sum(line.net_ore for line in lines),
                sum(line.vat_ore for line in lines),
                sum(line.net_ore + line.vat_ore for line in lines),
            ):
                self.fail(f"invoice {i.number}: totals are not its lines' sums")
            if not 0 <= i.credited_ore <= i.amount_ore:
                self.fail(f"invoice {i.number}: credited {i.credited_ore} of {i.amount_ore}")
            if i.paid_ore < 0:
                self.fail(f"invoice {i.number}: paid {i.paid_ore} (more refunded than paid)")
            if i.outstanding_ore < 0 or i.refund_due_ore < 0:
                self.fail(f"invoice {i.number}: negative outstanding or refund due")
            if i.outstanding_ore and i.refund_due_ore:
                self.fail(f"invoice {i.number}: both outstanding and refund due")
            # Credit notes and write-offs never cancel more than the invoice and its
            # fees; once nothing is creditable, nothing is owed.
            if i.credited_ore + i.written_off_ore > i.amount_ore + i.fees_ore or i.fees_ore < 0:
                self.fail(
                    f"invoice {i.number}: credited {i.credited_ore} and written off "
                    f"{i.written_off_ore} pass amount {i.amount_ore} and fees {i.fees_ore}"
                )
            if i.credited_ore and i.creditable_ore == 0 and i.outstanding_ore:
                self.fail(f"invoice {i.number}: credited in full, {i.outstanding_ore} owed")
        memberships = Counter((i.company_id, i.membership_year) for i in invoices
                              if i.kind == "membership")  # fmt: skip
        if any(n > 1 for n in memberships.values()):
            self.fail(f"two membership invoices for a company and year: {memberships}")

    def _check_numbers(self, invoices, notes) -> None:
        settings = get_settings()
        kids = [i.kid for i in invoices]
        if len(set(kids)) != len(kids):
            self.fail(f"KIDs not unique: {[k for k, n in Counter(kids).items() if n > 1]}")
        for i in invoices:
            if not kidlib.is_valid(i.kid, self.scheme) or i.kid != kidlib.make_kid(
                i.number, settings.kid_length, self.scheme
            ):
                self.fail(f"invoice {i.number}: KID {i.kid} is not its number's")
        numbers = [i.number for i in invoices] + [n.number for n in notes]
        if len(set(numbers)) != len(numbers):
            self.fail(f"numbers used twice: {[k for k, n in Counter(numbers).items() if n > 1]}")
        # One series; MOD11 skips the numbers that would need the "-" check digit.
        expected = {
            n
            for n in range(self.first_number, settings.next_invoice_number)
            if kidlib.make_kid(n, settings.kid_length, self.scheme) is not None
        }
        if set(numbers) != expected:
            self.fail(
                f"number series has gaps or strays: missing {sorted(expected - set(numbers))}, "
                f"extra {sorted(set(numbers) - expected)}"
            )

    def _check_ocr(self, invoices, payments) -> None:
        by_kid = {i.kid: i for i in invoices}
        by_id = {i.id: i for i in invoices}
        unmatched = db.session.scalars(select(UnmatchedPayment)).all()
        ocr_payments = [p for p in payments if p.ocr_import_id is not None]
        booked = Counter((p.ocr_import_id, p.transaction_number) for p in ocr_payments)
        listed = Counter((u.ocr_import_id, u.transaction_number) for u in unmatched)
        assigned = {
            (u.ocr_import_id, u.transaction_number): u for u in unmatched if u.state == "assigned"
        }
        for key, count in booked.items():
            if count > 1:
                self.fail(f"OCR transaction {key} booked {count} times")
            if key in listed and key not in assigned:
                self.fail(f"OCR transaction {key} both booked and on the unmatched list")
        for key, u in assigned.items():
            if u.payment_id is None or key not in booked:
                self.fail(f"assigned unmatched {u.id} has no payment")
        for u in unmatched:
            if u.state == "open" and u.payment_id is not None:
                self.fail(f"open unmatched {u.id} has a payment")
        seen: dict[tuple, tuple] = {}  # bank transaction -> where it came first
        records = {r.id: r for r in db.session.scalars(select(OcrImport))}
        for import_id, _day, _text, transactions in self.files:
            record = records[import_id]
            mine = [p for p in ocr_payments if p.ocr_import_id == import_id]
            listed_here = [u for u in unmatched if u.ocr_import_id == import_id]
            direct = [p for p in mine if (import_id, p.transaction_number) not in assigned]
            if (record.matched_count, record.matched_ore) != (
                len(direct),
                sum(p.amount_ore for p in direct),
            ) or (record.unmatched_count, record.unmatched_ore) != (
                len(listed_here),
                sum(u.amount_ore for u in listed_here),
            ):
                self.fail(f"import {import_id}: its counts and sums are not its rows'")
            if record.transaction_count != record.matched_count + record.unmatched_count or (
                record.total_ore != record.matched_ore + record.unmatched_ore
            ):
                self.fail(f"import {import_id}: matched + unmatched is not the file")
            for number, kid, amount, reference in transactions:
                key = (import_id, number)
                payment = next((p for p in direct if p.transaction_number == number), None)
                listed_row = next((u for u in listed_here if u.transaction_number == number), None)
                if (payment is None) == (listed_row is None):
                    self.fail(
                        f"import {import_id} transaction {number}: booked and listed, or neither"
                    )
                row = payment or listed_row
                if (row.amount_ore, row.kid or None, row.archive_reference) != (
                    amount,
                    kid,
                    reference,
                ):
                    self.fail(f"import {import_id} transaction {number}: booked as another")
                if payment is not None and by_id[payment.invoice_id].kid != kid:
                    self.fail(f"import {import_id} transaction {number}: on the wrong invoice")
                # References are unique per scenario except where a transaction is sent
                # again on purpose, with its first file's date.
                identity = (reference, kid, amount)
                first = seen.setdefault(identity, key)
                again = first != key
                if listed_row is not None and (listed_row.reason == "duplicate") != again:
                    self.fail(
                        f"import {import_id} transaction {number}: listed as "
                        f"{listed_row.reason}, first seen as {first}"
                    )
                if payment is not None and again:
                    self.fail(f"bank transaction {identity} booked twice: {first} and {key}")
                # The KIDs of unknown and invalid transactions never become an invoice's.
                if listed_row is not None and kid in by_kid and not again:
                    self.fail(f"import {import_id} transaction {number}: its invoice exists")

    def _check_reminders(self, invoices, reminders) -> None:
        by_id = {i.id: i for i in invoices}
        levels = Counter((r.invoice_id, r.level) for r in reminders)
        if any(n > 1 for n in levels.values()):
            self.fail("two reminders of one level on an invoice")
        for r in reminders:
            invoice = by_id[r.invoice_id]
            credited_on = self.credited_before.get(invoice.id)
            if credited_on is not None and credited_on < r.sent_on:
                self.fail(f"invoice {invoice.number} reminded after it was credited")
            if invoice.sent_at is None:
                self.fail(f"invoice {invoice.number} reminded but never sent")
            if r.level == 1 and r.sent_on < invoice.due_date + WAIT:
                self.fail(f"invoice {invoice.number}: reminder 1 before 14 days past due")
            if r.level == 2:
                first = next((x for x in reminders if x.invoice_id == r.invoice_id
                              and x.level == 1), None)  # fmt: skip
                if first is None or r.sent_on < first.new_due_date + WAIT:
                    self.fail(f"invoice {invoice.number}: reminder 2 too early or without 1")
            if r.fee_ore > 3_500:
                self.fail(f"invoice {invoice.number}: reminder fee {r.fee_ore} over the cap")

    def _check_figures(self, invoices) -> None:
        for year in sorted({i.year for i in invoices} | {YEAR}):
            of_year = [i for i in invoices if i.year == year]
            live = [i for i in of_year if i.status != "credited"]
            unpaid = [i for i in live if i.status in ("open", "partially_paid")]
            figures = dashboard(year, today=self.today)
            want = {
                "invoiced": (len(live), sum(i.due_ore for i in live)),
                "paid": (
                    sum(1 for i in live if i.status in ("paid", "overpaid")),
                    sum(i.paid_ore for i in live),
                ),
                "outstanding": (len(unpaid), sum(i.outstanding_ore for i in unpaid)),
                "overdue": (
                    sum(1 for i in unpaid if i.due_date < self.today),
                    sum(i.outstanding_ore for i in unpaid if i.due_date < self.today),
                ),
                "credited": (
                    len(of_year) - len(live),
                    sum(i.credited_ore for i in of_year if i.status == "credited"),
                ),
                "refund_due": (
                    sum(1 for i in of_year if i.refund_due_ore > 0),
                    sum(i.refund_due_ore for i in of_year),
                ),
                "written_off": sum(i.written_off_ore for i in live),
            }
            got = {
                name: (getattr(figures, name).count, getattr(figures, name).ore)
                for name in ("invoiced", "paid", "outstanding", "overdue", "credited", "refund_due")
            }
            got["written_off"] = figures.written_off_ore
            listed = {i.id for i in invoices_for_year(year, refund_due=True)}
            if listed != {i.id for i in of_year if i.refund_due_ore > 0}:
                self.fail(f"the refund-due list {year} is not the invoices with a refund due")
            if got != want:
                diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
                self.fail(f"dashboard {year} (figures, rows): {diff}")
        open_unmatched = db.session.scalar(
            select(func.count())
            .select_from(UnmatchedPayment)
            .where(UnmatchedPayment.state == "open")
        )
        if figures.unmatched_open != open_unmatched:
            self.fail(f"dashboard: {figures.unmatched_open} unmatched open, rows {open_unmatched}")

    def read_accounting(self) -> None:
        """The accountant's export of every period so far: balanced, and the rows' sums."""
        self.note("accounting export read")
        invoices = self.invoices()
        settings = get_settings()
        start, end = date(YEAR - 1, 1, 1), date(YEAR + 2, 12, 31)
        items = accounting.vouchers(start, end, settings)
        unbalanced = [v.number for v in items if not v.balanced]
        if unbalanced:
            self.fail(f"vouchers that do not balance: {unbalanced}")
        totals = accounting.totals(items, settings)
        if accounting.period_totals(start, end, settings) != totals:
            self.fail("the accounting page's totals are not the vouchers'")
        want = (
            sum(i.amount_ore + i.fees_ore - i.credited_ore for i in invoices),
            sum(i.paid_ore for i in invoices),
            sum(i.written_off_ore for i in invoices),
            sum(i.vat_ore for i in invoices)
            - sum(n.vat_ore for n in db.session.scalars(select(CreditNote))),
        )
        got = (totals.net_invoiced, totals.net_received, totals.written_off, totals.vat)
        if got != want:
            self.fail(f"accounting (invoiced, received, written off, VAT) {got}, rows {want}")
        # Each invoice's receivable in the ledger is its rows' balance, and what the
        # invoice page says is owed (less what is owed back).
        receivable: dict[int, int] = defaultdict(int)
        for voucher in items:
            for posting in voucher.postings:
                if posting.account == settings.account_receivable:
                    receivable[voucher.invoice.id] += posting.debit_ore - posting.credit_ore
        for i in invoices:
            balance = i.amount_ore + i.fees_ore - i.credited_ore - i.paid_ore - i.written_off_ore
            if receivable[i.id] != balance:
                self.fail(f"invoice {i.number}: ledger {receivable[i.id]}, its rows {balance}")
            if balance != i.outstanding_ore - i.refund_due_ore:
                self.fail(
                    f"invoice {i.number} ({i.status}): ledger {balance}, page outstanding "
                    f"{i.outstanding_ore} less refund due {i.refund_due_ore} (fees "
                    f"{i.fees_ore}, written off {i.written_off_ore}, credited {i.credited_ore})"
                )
        if sum(line.vat_ore for line in db.session.scalars(select(InvoiceLine))) != sum(
            i.vat_ore for i in invoices
        ):
            self.fail("invoice lines' VAT is not the invoices'")

    # -- the run -----------------------------------------------------------------------

    ACTIONS = {
        "annual_run": 4,
        "company_joins": 1,
        "extra_invoice": 4,
        "send": 8,
        "credit": 4,
        "pay_manually": 3,
        "refund": 3,
        "write_off": 2,
        "ocr_file": 8,
        "reimport": 3,
        "same_transaction_again": 2,
        "assign": 3,
        "handle": 2,
        "remind": 6,
        "advance": 12,
        "read_accounting": 3,
    }

    def run(self) -> None:
        self.start()
        self.annual_run()
        self.check()
        self.run_steps(self.ACTIONS, self.check)
        self.read_accounting()
        print(f"seed {self.seed}: {self.summary()}")

    def summary(self) -> str:
        """What the scenario went through (shown with -s): that it tests something."""
        statuses = Counter(i.status for i in self.invoices())
        reminders = db.session.scalar(select(func.count()).select_from(Reminder))
        cancelling = db.session.scalar(
            select(func.count()).select_from(CreditNote).where(CreditNote.fees_cancelled_ore > 0)
        )
        return (
            f"{dict(statuses)}, {reminders} reminders, {cancelling} credit notes cancelling "
            f"fees, {dict(self.stats)}"
        )


@pytest.mark.parametrize("seed", SEEDS)
def test_random_money_steps_keep_every_sum_and_status_right(seed, app, client):
    Auth(app, client).login("treasurer")
    with app.test_request_context("/?lang=en"):
        Scenario(seed, client).run()
