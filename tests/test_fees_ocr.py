"""Importing Nets OCR giro files: every payment booked to the øre, and refusals that
change nothing (repeats, damaged and truncated files). Files are written by netsgiro."""

import gc
import random
from collections import Counter
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from crm import audit
from crm.audit import AuditEntry, acting_as
from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.errors import DuplicateTransmissionError, FeeError, OcrFileError
from crm.fees.models import Invoice, OcrImport, Payment, UnmatchedPayment
from crm.fees.ocr import parse_ocr
from crm.fees.services import (
    assign_unmatched,
    dashboard,
    import_ocr_file,
    invoice_status,
    mark_unmatched_handled,
)
from tests.factories import build_ocr, make_invoiced_members


def database_state() -> tuple:
    """Everything an import could change, to compare before and after a refusal."""
    invoices = db.session.execute(
        select(Invoice.id, Invoice.status, Invoice.paid_ore).order_by(Invoice.id)
    ).all()
    counts = tuple(
        db.session.scalar(select(func.count()).select_from(model))
        for model in (Payment, UnmatchedPayment, OcrImport, AuditEntry)
    )
    return tuple(invoices), counts


def small_file(kids: list[str], number: str = "0000001") -> str:
    """Two assignments, a text transaction (records 30, 31, 32) and a payment without KID."""
    return build_ocr(
        [
            [(kids[0], 250_000), (None, 1_000), (kids[1], 300_000, 21)],
            [(kids[2], 125_000), (kids[1], 450_000)],
        ],
        number=number,
    )


def with_reversal_signs(text: str) -> str:
    """netsgiro writes sign "0" everywhere; Nets writes "-" on reversal types (18, 20)."""
    return "\n".join(
        line[:31] + "-" + line[32:] if line[6:8] == "30" and line[4:6] in ("18", "20") else line
        for line in text.split("\n")
    )


# --- acceptance 1: hundreds of transactions in several assignments, to the øre -------


def test_import_books_every_payment_and_status_to_the_ore(app, runner, tmp_path):
    with app.test_request_context("/?lang=en"):
        invoices = make_invoiced_members(240)
        rng = random.Random(5)
        plan: dict[int, list[int]] = {}  # invoice id -> payments in øre, in both files
        first: list[list[tuple]] = [[], [], []]
        second: list[list[tuple]] = [[], []]
        for index, invoice in enumerate(invoices):
            amount = invoice.amount_ore
            scenario = index % 6
            if scenario == 0:
                payments = []  # unpaid
            elif scenario == 1:
                payments = [amount]
            elif scenario == 2:
                payments = [amount // 3]
            elif scenario == 3:
                payments = [amount - 12_345, 12_345]  # split over two assignments
            elif scenario == 4:
                payments = [amount + 1]  # one øre too much
            else:
                payments = [amount // 2, amount - amount // 2]  # the rest in the next file
            plan[invoice.id] = payments
            for n, ore in enumerate(payments):
                if scenario == 5 and n == 1:
                    second[rng.randrange(2)].append((invoice.kid, ore))
                elif scenario == 3:
                    first[n].append((invoice.kid, ore))
                else:
                    first[rng.randrange(3)].append((invoice.kid, ore))
        unknown = kidlib.make_kid(999_999, 10)  # a valid KID no invoice has
        invalid = invoices[0].kid[:-1] + str((int(invoices[0].kid[-1]) + 1) % 10)
        first[2] += [(unknown, 77_700), (invalid, 12_500), (None, 4_200)]
        for assignment in first:
            rng.shuffle(assignment)

        path = tmp_path / "ocr1.txt"
        path.write_text(build_ocr(first, number="0000101"))
        result = runner.invoke(args=["fees", "import-ocr", str(path)])
        assert result.exit_code == 0, result.output
        matched_first = sum(len(a) for a in first) - 3
        assert result.output.strip() == (
            f"matched {matched_first} / unmatched 3 / total {matched_first + 3}"
        )
        assert matched_first + 3 >= 200  # hundreds of transactions

        path2 = tmp_path / "ocr2.txt"
        path2.write_text(build_ocr(second, number="0000102", nets_date=date(2026, 3, 9)))
        result = runner.invoke(args=["fees", "import-ocr", str(path2)])
        assert result.exit_code == 0, result.output

        db.session.expire_all()
        statuses = Counter()
        for invoice in db.session.scalars(select(Invoice)):
            paid = sum(plan[invoice.id])
            assert invoice.paid_ore == paid, invoice.number
            expected = invoice_status(invoice.amount_ore, 0, 0, paid, 0)
            assert invoice.status == expected, invoice.number
            statuses[invoice.status] += 1
            booked = db.session.scalars(
                select(Payment.amount_ore).where(Payment.invoice_id == invoice.id)
            ).all()
            assert sorted(booked) == sorted(plan[invoice.id])
        assert statuses == {"open": 40, "paid": 120, "partially_paid": 40, "overpaid": 40}

        unmatched = {u.kid: u for u in db.session.scalars(select(UnmatchedPayment))}
        assert unmatched[unknown].reason == "unknown_kid"
        assert unmatched[unknown].amount_ore == 77_700
        assert unmatched[invalid].reason == "invalid_kid"
        assert unmatched[""].reason == "no_kid"

        record = db.session.scalar(
            select(OcrImport).where(OcrImport.transmission_number == "0000101")
        )
        all_first = [ore for a in first for _kid, ore in a]
        assert record.total_ore == sum(all_first)
        assert record.unmatched_ore == 77_700 + 12_500 + 4_200
        assert record.matched_ore == sum(all_first) - record.unmatched_ore
        assert (record.assignment_count, record.transaction_count) == (3, len(all_first))

        figures = dashboard(2026)
        total_paid = sum(sum(p) for p in plan.values())
        assert figures.paid.ore == total_paid
        assert figures.invoiced.ore == sum(i.amount_ore for i in invoices)
        assert figures.paid.count == 160
        outstanding = sum(
            max(i.amount_ore - sum(plan[i.id]), 0)
            for i in invoices
            if i.status in ("open", "partially_paid")
        )
        assert figures.outstanding.ore == outstanding


def test_every_payment_and_invoice_change_is_in_the_audit_log(app):
    with app.test_request_context("/?lang=en"):
        invoices = make_invoiced_members(2)
        import_ocr_file(build_ocr([[(invoices[0].kid, invoices[0].amount_ore)]]), "a.txt")
        db.session.commit()
        payment = db.session.scalar(select(Payment))
        entries = db.session.scalars(select(AuditEntry).where(AuditEntry.record_type == "payment"))
        assert [e.record_id for e in entries] == [payment.id]
        change = db.session.scalar(
            select(AuditEntry).where(
                AuditEntry.record_type == "invoice",
                AuditEntry.record_id == invoices[0].id,
                AuditEntry.action == "update",
            )
        )
        assert change.changes["status"] == ["open", "paid"]


def test_bulk_writes_leave_the_entries_the_orm_listener_leaves(app):
    """The OCR import writes in bulk; its audit entries must read exactly like those of
    a payment and an invoice change made through the ORM."""
    with app.test_request_context("/?lang=en"), acting_as("treasurer"):
        first, second = make_invoiced_members(2)
        row = {
            "invoice_id": first.id,
            "kind": "payment",
            "source": "ocr",
            "amount_ore": 12_345,
            "paid_on": date(2026, 3, 2),
            "booked_on": date(2026, 3, 3),
            "kid": first.kid,
            "transaction_number": "1-1",
            "archive_reference": "000000042",
            "payer_account": "12345678903",
        }
        db.session.add(Payment(**row))
        first.paid_ore, first.status = 12_345, "partially_paid"
        db.session.commit()
        audit.bulk_create(
            Payment, [{**row, "transaction_number": "1-2"}], key="transaction_number",
            scope=("invoice_id", first.id),
        )  # fmt: skip
        old = {"paid_ore": 0, "status": "open"}
        new = {"paid_ore": 12_345, "status": "partially_paid"}
        audit.bulk_update(Invoice, [(second.id, Invoice.audit_label_of(vars(second)), old, new)])
        db.session.commit()

        def entry(record_type, action, record_id):
            found = db.session.scalars(
                select(AuditEntry).where(
                    AuditEntry.record_type == record_type,
                    AuditEntry.action == action,
                    AuditEntry.record_id == record_id,
                )
            ).one()
            return found.actor, found.record_label, found.changes, found.at.tzinfo

        by_orm, in_bulk = db.session.scalars(select(Payment.id).order_by(Payment.id)).all()
        orm_entry = entry("payment", "create", by_orm)
        bulk_entry = entry("payment", "create", in_bulk)
        assert orm_entry[2].pop("transaction_number") == [None, "1-1"]
        assert bulk_entry[2].pop("transaction_number") == [None, "1-2"]
        # created_at differs by the moment; it must be there and look the same.
        assert orm_entry[2].pop("created_at")[1][:4] == bulk_entry[2].pop("created_at")[1][:4]
        assert bulk_entry == orm_entry
        assert entry("invoice", "update", second.id)[2] == entry("invoice", "update", first.id)[2]
        db.session.refresh(second)
        assert (second.paid_ore, second.status) == (12_345, "partially_paid")


def test_the_garbage_collector_runs_again_after_an_import_good_or_refused(app):
    with app.test_request_context("/?lang=en"):
        invoice = make_invoiced_members(1)[0]
        text = build_ocr([[(invoice.kid, invoice.amount_ore)]])
        with pytest.raises(OcrFileError):
            import_ocr_file(text[:-5])
        assert gc.isenabled()
        import_ocr_file(text)
        assert gc.isenabled()


def test_a_reversal_subtracts_from_what_was_paid(app):
    with app.test_request_context("/?lang=en"):
        invoice = make_invoiced_members(1)[0]
        text = build_ocr([[(invoice.kid, invoice.amount_ore), (invoice.kid, 10_000, 18)]])
        import_ocr_file(with_reversal_signs(text))
        db.session.commit()
        assert invoice.paid_ore == invoice.amount_ore - 10_000
        assert invoice.status == "partially_paid"


def test_an_unmatched_payment_is_booked_once_even_from_a_stale_page(app):
    with app.test_request_context("/?lang=en"):
        invoice = make_invoiced_members(1)[0]
        import_ocr_file(build_ocr([[("1234567897", 250_000)]]))
        db.session.commit()
        unmatched = db.session.scalar(select(UnmatchedPayment))
        assign_unmatched(unmatched, invoice)
        db.session.commit()
        before = database_state()
        # A second click (another tab) loaded the payment before the first committed.
        for book in (
            lambda: assign_unmatched(unmatched, invoice, "igjen"),
            lambda: mark_unmatched_handled(unmatched, "Returnert"),
        ):
            assert unmatched.amount_ore == 250_000  # loaded again after the commit
            set_committed_value(unmatched, "state", "open")
            with pytest.raises(FeeError, match="a moment ago"):
                book()
            db.session.rollback()
            assert database_state() == before
        assert (invoice.paid_ore, invoice.status) == (250_000, "paid")
        assert db.session.scalar(select(UnmatchedPayment.state)) == "assigned"
        assert db.session.scalar(select(func.count()).select_from(Payment)) == 1


def test_a_bank_transaction_delivered_again_in_a_new_transmission_is_not_paid_twice(app):
    """Found by test_fees_chaos.py (seed 0): a file with a new transmission number that
    holds a transaction an earlier file held booked it a second time."""
    with app.test_request_context("/?lang=en"):
        first, second = make_invoiced_members(2)
        paid = (first.kid, first.amount_ore, 10, "000004711")
        import_ocr_file(build_ocr([[paid]], number="0000001"))
        db.session.commit()
        # The same transaction again, beside a new one, and a payment of the same amount
        # on the same KID and day that the bank tells apart by its archive reference.
        again = [paid, (second.kid, 100_000, 10, "000004712"), (*paid[:3], "000004713")]
        result = import_ocr_file(build_ocr([again], number="0000002"))
        db.session.commit()
        assert (result.matched, result.unmatched) == (2, 1)
        assert (first.paid_ore, first.status) == (2 * first.amount_ore, "overpaid")
        assert (second.paid_ore, second.status) == (100_000, "partially_paid")
        listed = db.session.scalar(select(UnmatchedPayment))
        assert (listed.reason, listed.kid, listed.archive_reference) == (
            "duplicate",
            first.kid,
            "000004711",
        )
        assert result.ocr_import.unmatched_ore == first.amount_ore
        # Handled by staff, it is still known: a third delivery is listed again.
        mark_unmatched_handled(listed, "Allerede bokført")
        result = import_ocr_file(build_ocr([[paid]], number="0000003"))
        db.session.commit()
        assert (result.matched, result.unmatched) == (0, 1)
        assert first.paid_ore == 2 * first.amount_ore


# --- acceptance 2: repeats, damage and truncation are refused and change nothing ------


def test_reimport_of_same_transmission_changes_nothing(app, runner, tmp_path):
    with app.test_request_context("/?lang=en"):
        invoices = make_invoiced_members(3)
        text = small_file([i.kid for i in invoices])
        import_ocr_file(text, "first.txt")
        db.session.commit()
        before = database_state()

        with pytest.raises(DuplicateTransmissionError, match="already imported"):
            import_ocr_file(text, "again.txt")
        db.session.rollback()
        # The same content with Windows line ends is the same transmission.
        with pytest.raises(DuplicateTransmissionError):
            import_ocr_file(text.replace("\n", "\r\n").encode(), "crlf.txt")
        db.session.rollback()
        # Another file claiming the same transmission number from the same sender.
        other = build_ocr([[(invoices[0].kid, 100)]], number="0000001")
        with pytest.raises(DuplicateTransmissionError):
            import_ocr_file(other, "other.txt")
        db.session.rollback()

        path = tmp_path / "again.txt"
        path.write_text(text)
        result = runner.invoke(args=["fees", "import-ocr", str(path)])
        assert result.exit_code != 0
        message = result.output.strip()
        assert "\n" not in message and "already imported" in message
        assert database_state() == before


def _refused(text: str, line: int | None = None) -> OcrFileError:
    with pytest.raises(OcrFileError) as caught:
        parse_ocr(text)
    if line is not None:
        assert caught.value.line == line, (caught.value, text)
    return caught.value


def _kids() -> list[str]:
    return [kidlib.make_kid(n, 10) for n in (1001, 1002, 1003)]


# Bytes that never belong in an OCR record, whatever the field.
CORRUPTIONS = ("X", "#", "\x00", "\xff", "\n", "é")


def test_every_single_byte_corruption_of_any_record_is_refused_at_its_line():
    text = small_file(_kids())
    lines = text.rstrip("\n").split("\n")
    checked = 0
    for index, line in enumerate(lines):
        # Amount item 3 is free text: any printable letter is a valid change there.
        positions = range(15, 80) if line[6:8] == "32" else ()
        for position in range(80):
            if position in positions:
                continue
            for byte in CORRUPTIONS:
                damaged = lines.copy()
                damaged[index] = line[:position] + byte + line[position + 1 :]
                error = _refused("\n".join(damaged))
                assert error.line in (index + 1, index + 2), (index, position, byte, error)
                checked += 1
    assert checked > 5000


def test_every_change_of_the_sign_is_refused_at_its_line():
    # These end records sum amounts without their sign: a payment whose "0" became "-"
    # would add up that way, so such a file must use the signed sum for a "-" on an
    # ordinary type; a reversal must carry its "-".
    text = with_reversal_signs(
        build_ocr([[(_kids()[0], 250_000), (_kids()[1], 1_000, 18), (_kids()[2], 700, 20)]])
    )
    parse_ocr(text)  # the reversals, correctly signed, are accepted
    lines = text.rstrip("\n").split("\n")
    checked = 0
    for index, line in enumerate(lines):
        if line[6:8] != "30":
            continue
        for char in map(chr, range(32, 256)):
            if char == line[31]:
                continue
            damaged = lines.copy()
            damaged[index] = line[:31] + char + line[32:]
            error = _refused("\n".join(damaged), line=index + 1)
            if char in "-0":
                assert "sign" in error.reason, error
            checked += 1
    assert checked == 3 * 223


def test_every_digit_change_in_amounts_counts_and_totals_is_refused():
    text = small_file(_kids())
    lines = text.rstrip("\n").split("\n")
    fields = {"30": [range(32, 49)], "88": [range(8, 41)], "89": [range(8, 41)]}
    checked = 0
    for index, line in enumerate(lines):
        for span in fields.get(line[6:8], []):
            for position in span:
                digit = str((int(line[position]) + 1) % 10)
                damaged = lines.copy()
                damaged[index] = line[:position] + digit + line[position + 1 :]
                _refused("\n".join(damaged))
                checked += 1
    assert checked > 100


def test_every_change_of_transaction_number_or_type_is_refused():
    lines = small_file(_kids()).rstrip("\n").split("\n")
    for index, line in enumerate(lines):
        if line[6:8] not in ("30", "31", "32"):
            continue
        for position in (*range(4, 6), *range(8, 15)):
            for digit in "0123456789":
                if digit == line[position]:
                    continue
                damaged = lines.copy()
                damaged[index] = line[:position] + digit + line[position + 1 :]
                _refused("\n".join(damaged))


def test_a_kid_with_a_changed_digit_goes_to_the_unmatched_list(app):
    # KIDs carry their own check digit: a changed digit is caught there, not refused.
    with app.test_request_context("/?lang=en"):
        invoice = make_invoiced_members(1)[0]
        good = build_ocr([[(invoice.kid, invoice.amount_ore)]])
        lines = good.split("\n")
        line = lines[2]
        position = 73 - 3
        lines[2] = line[:position] + str((int(line[position]) + 1) % 10) + line[position + 1 :]
        result = import_ocr_file("\n".join(lines))
        db.session.commit()
        assert (result.matched, result.unmatched) == (0, 1)
        assert db.session.scalar(select(UnmatchedPayment.reason)) == "invalid_kid"
        assert invoice.status == "open"


def test_every_truncated_file_is_refused():
    text = small_file(_kids()).rstrip("\n")
    for length in range(len(text)):
        _refused(text[:length])


def test_a_malformed_or_truncated_file_changes_nothing(app, runner, tmp_path):
    with app.test_request_context("/?lang=en"):
        invoices = make_invoiced_members(3)
        before = database_state()
        text = small_file([i.kid for i in invoices])
        lines = text.split("\n")
        broken_amount = lines.copy()
        broken_amount[2] = broken_amount[2][:40] + "9" + broken_amount[2][41:]
        cases = {
            "truncated.txt": text[: len(text) // 2],
            "amount.txt": "\n".join(broken_amount),
            "letters.txt": text.replace("NY09", "NX09", 1),
            "empty.txt": "",
        }
        for name, content in cases.items():
            path = tmp_path / name
            path.write_text(content)
            result = runner.invoke(args=["fees", "import-ocr", str(path)])
            assert result.exit_code != 0, name
            message = result.output.strip()
            assert message.startswith("Error:") and "\n" not in message, message
            assert "refused" in message
            assert database_state() == before, name
        result = runner.invoke(args=["fees", "import-ocr", str(tmp_path / "amount.txt")])
        # The changed amount is found where the assignment's total no longer adds up.
        assert "line 10: the assignment end record's total" in result.output


def test_the_cli_gives_the_reason_on_one_line_in_one_language(app, runner, tmp_path):
    with app.app_context():
        make_invoiced_members(1)
    lines = small_file(_kids()).split("\n")
    lines[9] = lines[9][:20] + "7" + lines[9][21:]  # the first assignment's end: a count
    path = tmp_path / "count.txt"
    path.write_text("\n".join(lines))
    result = runner.invoke(args=["fees", "import-ocr", str(path)])
    assert result.exit_code != 0
    message = result.output.strip()
    assert "\n" not in message
    assert "line 10: assignment end record counts 7009 records" in message  # the CLI's English


def test_the_error_names_the_line_and_the_record():
    lines = small_file(_kids()).rstrip("\n").split("\n")
    lines[9] = lines[9][:20] + "7" + lines[9][21:]  # the first assignment's end: a count
    error = _refused("\n".join(lines), line=10)
    assert "assignment end record" in error.reason
    assert error.record == lines[9]
    assert str(error).startswith("line 10: ")


def test_avtalegiro_and_foreign_files_are_refused_with_a_reason():
    _refused("this is not an OCR file\n", line=1)
    _refused(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    _refused("NY" + "0" * 78, line=1)


# --- fuzzing the parser entry point --------------------------------------------------


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=2000))
def test_fuzzed_bytes_raise_nothing_but_the_projects_error(data):
    try:
        parse_ocr(data)
    except OcrFileError:
        pass


VALID = small_file(_kids())


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["replace", "insert", "delete", "dup_line", "drop_line"]),
            st.integers(min_value=0, max_value=len(VALID)),
            st.characters(codec="latin-1"),
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzzed_variants_of_a_valid_file_raise_nothing_but_the_projects_error(edits):
    text = VALID
    for kind, position, char in edits:
        position = min(position, len(text))
        if kind == "replace":
            text = text[:position] + char + text[position + 1 :]
        elif kind == "insert":
            text = text[:position] + char + text[position:]
        elif kind == "delete":
            text = text[:position] + text[position + 1 :]
        else:
            lines = text.split("\n")
            at = position % max(len(lines), 1)
            if kind == "dup_line":
                lines.insert(at, lines[at])
            else:
                del lines[at]
            text = "\n".join(lines)
    for data in (text, text.encode("latin-1")):
        try:
            parse_ocr(data)
        except OcrFileError:
            pass


def test_parse_ocr_refuses_what_is_not_a_file():
    for value in (None, 42, ["NY"]):
        with pytest.raises(OcrFileError):
            parse_ocr(value)
