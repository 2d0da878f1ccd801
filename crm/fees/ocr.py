"""Reading Nets OCR giro files: netsgiro's record parser plus the checks it leaves out.

`parse_ocr` is the one entry point. It reads every line with netsgiro's record classes
(remembering the line number, so a refusal can say where), then checks what netsgiro
does not: the structure of transmission and assignments, that each transaction's
records agree with each other, and the counts, totals and dates in the assignment and
transmission end records. Any problem raises `OcrFileError` and nothing else, so a
caller can refuse the file with one clear message before it touches the database.
The reasons are translated when they are made (the request's language on the upload
page, Norwegian in the CLI), like every other message a treasurer reads.
"""

import hashlib
from dataclasses import dataclass, field, replace
from datetime import date, datetime

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from netsgiro import records as nr
from netsgiro.enums import AssignmentType, ServiceCode

from crm.fees.errors import OcrFileError
from crm.numbers import is_digits

RECORD_LENGTH = 80
# Transaction types that carry a third amount record (free text).
TEXT_TRANSACTION_TYPES = frozenset({20, 21})
# Reversals (tilbakeføring) with KID and with text always carry "-" in the sign
# position. Nets' OCR giro specification also writes "-" on ordinary transaction types
# (its own example file has it on type 13), and then the assignment and transmission
# end records hold the *signed* sum. Files written the older way (and by netsgiro) sum
# the amounts without their sign. A file is accepted when its end totals are the signed
# sum, or the unsigned sum with "-" only on reversals: either way every sign in it is
# vouched for by a total, so one flipped character is still caught.
REVERSAL_TRANSACTION_TYPES = frozenset({18, 20})
REVERSAL_SIGN = "-"
OCR_TRANSACTION_TYPES = frozenset(range(10, 22))

_RECORD_CLASSES: dict[str, type] = {
    "10": nr.TransmissionStart,
    "20": nr.AssignmentStart,
    "30": nr.TransactionAmountItem1,
    "31": nr.TransactionAmountItem2,
    "32": nr.TransactionAmountItem3,
    "49": nr.TransactionSpecification,
    "70": nr.AvtaleGiroAgreement,
    "88": nr.AssignmentEnd,
    "89": nr.TransmissionEnd,
}
# Lazy: each name is translated where a message is made, in the reader's language.
RECORD_NAMES = {
    "10": _l("transmission start"),
    "20": _l("assignment start"),
    "30": _l("amount item 1"),
    "31": _l("amount item 2"),
    "32": _l("amount item 3"),
    "49": _l("payment specification"),
    "70": _l("AvtaleGiro agreement"),
    "88": _l("assignment end"),
    "89": _l("transmission end"),
}
# Exceptions netsgiro's record classes raise for bad input (attrs validators and
# converters, regexes, enums, strptime). Anything else would be our own bug.
_NETSGIRO_ERRORS = (ValueError, AssertionError, IndexError, KeyError, TypeError, ArithmeticError)


@dataclass(frozen=True, slots=True)
class OcrTransaction:
    """One payment as the bank reported it; `amount_ore` is negative for reversals."""

    assignment_number: str
    number: int
    type: int
    nets_date: date
    amount_ore: int
    kid: str | None
    archive_reference: str
    form_number: str
    bank_date: date | None
    payer_account: str
    text: str
    line: int


@dataclass(slots=True)
class OcrAssignment:
    number: str
    account: str
    agreement_id: str
    nets_date: date | None
    transaction_count: int = 0
    total_ore: int = 0


@dataclass(slots=True)
class OcrTransmission:
    number: str
    data_transmitter: str
    data_recipient: str
    nets_date: date
    content_hash: str
    assignments: list[OcrAssignment] = field(default_factory=list)
    transactions: list[OcrTransaction] = field(default_factory=list)

    @property
    def total_ore(self) -> int:
        """Signed sum of the transactions (reversals subtract)."""
        return sum(t.amount_ore for t in self.transactions)


def decode(data: bytes | str) -> str:
    """OCR files are ASCII in practice; free text may come as UTF-8 or ISO-8859-1."""
    if isinstance(data, str):
        return data
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("iso-8859-1")


def _lines(text: str) -> list[tuple[int, str]]:
    text = text.removeprefix("\ufeff")
    # Split on \n only: \r\n line ends lose their \r below; any other control
    # character stays inside its line and makes it malformed.
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()  # trailing blank lines are not records
    return list(enumerate(lines, start=1))


def _parse_record(number: int, line: str):
    if len(line) != RECORD_LENGTH:
        raise OcrFileError(
            _(
                "record is %(length)s characters long, not %(expected)s (truncated or damaged)",
                length=len(line),
                expected=RECORD_LENGTH,
            ),
            number,
            line,
        )
    code = line[6:8]
    cls = _RECORD_CLASSES.get(code) if line.startswith("NY") else None
    if cls is None:
        raise OcrFileError(_("not a Nets OCR record (unknown format or record type)"), number, line)
    # Only free text (amount item 3) may hold letters outside ASCII.
    if code != "32" and not line.isascii():
        raise OcrFileError(
            _(
                "%(record)s record contains characters that are not allowed",
                record=RECORD_NAMES[code],
            ),
            number,
            line,
        )
    if not line.isprintable():
        raise OcrFileError(
            _("%(record)s record contains control characters", record=RECORD_NAMES[code]),
            number,
            line,
        )
    try:
        return code, cls.from_string(line)
    except _NETSGIRO_ERRORS as exc:
        # netsgiro's own words ("did not match … record formats", strptime's
        # "unconverted data remains") mean nothing to a treasurer: say which field is
        # wrong instead. Only a refused record pays for the diagnosis.
        problem = diagnose(code, line)
        if problem is None:
            problem = _(
                "it does not follow the format of Nets' OCR giro specification",
            )
        raise OcrFileError(
            _("%(record)s record: %(problem)s", record=RECORD_NAMES[code], problem=problem),
            number,
            line,
        ) from exc


DIGITS, DATE, DATE_OR_ZEROS, ZEROS, SIGN, KID_FIELD, TEXT = range(7)
# The fields of each record of an OCR giro file (service code 09), as Nets'
# specification lays them out: (first character, last character, 1-based, name, kind).
_FIELDS = {
    "10": (
        (9, 16, _l("data transmitter"), DIGITS),
        (17, 23, _l("transmission number"), DIGITS),
        (24, 31, _l("data recipient"), DIGITS),
        (32, 80, _l("filler"), ZEROS),
    ),
    "20": (
        (9, 17, _l("agreement ID"), DIGITS),
        (18, 24, _l("assignment number"), DIGITS),
        (25, 35, _l("assignment account"), DIGITS),
        (36, 80, _l("filler"), ZEROS),
    ),
    "30": (
        (9, 15, _l("transaction number"), DIGITS),
        (16, 21, _l("settlement date"), DATE),
        (22, 23, _l("centre ID"), DIGITS),
        (24, 25, _l("day code"), DIGITS),
        (26, 26, _l("partial settlement number"), DIGITS),
        (27, 31, _l("partial settlement serial number"), DIGITS),
        (32, 32, _l("sign"), SIGN),
        (33, 49, _l("amount"), DIGITS),
        (50, 74, _l("KID"), KID_FIELD),
        (75, 80, _l("filler"), ZEROS),
    ),
    "31": (
        (9, 15, _l("transaction number"), DIGITS),
        (16, 25, _l("form number"), DIGITS),
        (26, 34, _l("archive reference"), DIGITS),
        (35, 41, _l("filler"), DIGITS),
        (42, 47, _l("bank date"), DATE_OR_ZEROS),
        (48, 58, _l("payer's account"), DIGITS),
        (59, 80, _l("filler"), ZEROS),
    ),
    "32": (
        (9, 15, _l("transaction number"), DIGITS),
        (16, 55, _l("text"), TEXT),
        (56, 80, _l("filler"), ZEROS),
    ),
    "88": (
        (9, 16, _l("number of transactions"), DIGITS),
        (17, 24, _l("number of records"), DIGITS),
        (25, 41, _l("total amount"), DIGITS),
        (42, 47, _l("settlement date"), DATE_OR_ZEROS),
        (48, 53, _l("earliest settlement date"), DATE_OR_ZEROS),
        (54, 59, _l("latest settlement date"), DATE_OR_ZEROS),
        (60, 80, _l("filler"), ZEROS),
    ),
    "89": (
        (9, 16, _l("number of transactions"), DIGITS),
        (17, 24, _l("number of records"), DIGITS),
        (25, 41, _l("total amount"), DIGITS),
        (42, 47, _l("settlement date"), DATE_OR_ZEROS),
        (48, 80, _l("filler"), ZEROS),
    ),
}
_SERVICE_CODES = {"10": "00", "89": "00"}  # the rest: "09", OCR giro


def _is_date(value: str) -> bool:
    try:
        datetime.strptime(value, "%d%m%y")
    except ValueError:
        return False
    return True


def diagnose(code: str, line: str) -> str | None:
    """What is wrong with an 80-character record of type `code`, in words a treasurer
    can act on (which field, where, what it holds); None if every field is well formed.
    """
    if code not in _FIELDS:
        return None  # AvtaleGiro-only records: refused as such by the walk
    service = line[2:4]
    expected = _SERVICE_CODES.get(code, "09")
    if service != expected:
        if code not in _SERVICE_CODES and service == "21":
            return _("this is an AvtaleGiro record (service code 21), not OCR giro")
        return _(
            "the service code (characters 3–4) is %(found)s, not %(expected)s",
            found=service,
            expected=expected,
        )
    kind = line[4:6]
    if code in ("10", "89", "20", "88") and kind != "00":
        return _(
            "characters 5–6 should be 00, not %(found)s (this is not a transactions assignment)",
            found=kind,
        )
    if code in ("30", "31", "32") and (
        not is_digits(kind) or int(kind) not in OCR_TRANSACTION_TYPES
    ):
        return _(
            "the transaction type (characters 5–6) is %(found)s, not one of 10–21",
            found=kind,
        )
    for first, last, name, kind_of in _FIELDS.get(code, ()):
        value = line[first - 1 : last]
        where = {"name": name, "first": first, "last": last, "value": value}
        if kind_of == DIGITS and not (value.isascii() and value.isdigit()):
            return _(
                "%(name)s (characters %(first)s–%(last)s) is not a number: «%(value)s»", **where
            )
        if kind_of == ZEROS and value.strip("0"):
            return _("characters %(first)s–%(last)s should be zeros: «%(value)s»", **where)
        if kind_of == SIGN and value not in ("0", REVERSAL_SIGN):
            return _("the sign (character %(first)s) must be 0 or -, not «%(value)s»", **where)
        if kind_of == KID_FIELD and not all(c.isdigit() and c.isascii() or c == " " for c in value):
            return _(
                "the KID (characters %(first)s–%(last)s) may hold only digits: «%(value)s»", **where
            )
        if kind_of in (DATE, DATE_OR_ZEROS):
            if kind_of == DATE_OR_ZEROS and value == "000000":
                continue
            if not (value.isascii() and value.isdigit() and _is_date(value)):
                return _(
                    "%(name)s (characters %(first)s–%(last)s) is not a date (ddmmyy): «%(value)s»",
                    **where,
                )
    return None


def _check_kid_field(number: int, line: str) -> None:
    kid_field = line[49:74].strip(" ")
    if " " in kid_field:
        raise OcrFileError(_("KID field has spaces between its digits"), number, line)


def _check_sign(number: int, line: str, record) -> None:
    if int(record.transaction_type) in REVERSAL_TRANSACTION_TYPES and record.sign != REVERSAL_SIGN:
        raise OcrFileError(
            _(
                "transaction type %(type)s is a reversal but its amount has no minus sign",
                type=int(record.transaction_type),
            ),
            number,
            line,
        )


def _check_filler(number: int, line: str) -> None:
    # netsgiro accepts anything in this documented filler; Nets writes digits there.
    if not is_digits(line[34:41]):
        raise OcrFileError(_("malformed amount item 2 record (filler is not digits)"), number, line)


def parse_ocr(data: bytes | str) -> OcrTransmission:
    """The transmission in an OCR giro file, checked in full; raises only OcrFileError."""
    if not isinstance(data, bytes | str):
        raise OcrFileError(_("an OCR file must be bytes or text"))
    text = decode(data)
    lines = _lines(text)
    if not lines:
        raise OcrFileError(_("the file is empty"))
    parsed = [(number, line, *_parse_record(number, line)) for number, line in lines]
    return _walk(parsed)


def _walk(parsed: list) -> OcrTransmission:  # noqa: C901 - one pass over the records, in order
    first_number, first_line, code, start = parsed[0]
    if code != "10":
        raise OcrFileError(
            _("the file must begin with a transmission start record"), first_number, first_line
        )
    last_number, last_line, code, end = parsed[-1]
    if code != "89":
        raise OcrFileError(
            _("the transmission end record is missing (truncated file?)"),
            last_number,
            last_line,
        )
    if end.nets_date is None:
        raise OcrFileError(_("transmission end record has no date"), last_number, last_line)
    digest = hashlib.sha256("\n".join(p[1] for p in parsed).encode()).hexdigest()
    transmission = OcrTransmission(
        number=start.transmission_number,
        data_transmitter=start.data_transmitter,
        data_recipient=start.data_recipient,
        nets_date=end.nets_date,
        content_hash=digest,
    )
    transactions = transmission.transactions
    assignment: OcrAssignment | None = None
    assignment_start_index = 0
    assignment_records = 0
    assignment_sum = 0  # the unsigned sum, as older end records count it
    assignment_signed = 0  # the signed sum, as Nets' specification counts it
    assignment_minus: list[tuple[int, str, int]] = []  # "-" on non-reversals
    any_minus = False
    assignment_dates: list[date] = []
    seen_assignments: set[str] = set()
    seen_transactions: set[int] = set()
    pending = None  # amount item 1 waiting for its item 2
    transmission_sum = 0
    transmission_signed = 0
    transmission_stated = 0  # the sum of the assignment end records' totals

    for index in range(1, len(parsed) - 1):
        number, line, code, record = parsed[index]
        if code in ("10", "89"):
            raise OcrFileError(
                _(
                    "unexpected %(record)s record inside the transmission",
                    record=RECORD_NAMES[code],
                ),
                number,
                line,
            )
        if code in ("49", "70") or record.service_code != ServiceCode.OCR_GIRO:
            raise OcrFileError(
                _("not an OCR giro record (AvtaleGiro files cannot be imported here)"),
                number,
                line,
            )
        if code == "20":
            if assignment is not None:
                raise OcrFileError(
                    _("assignment start before the previous assignment ended"), number, line
                )
            if record.assignment_type != AssignmentType.TRANSACTIONS:
                raise OcrFileError(_("assignment is not of the transactions type"), number, line)
            if record.assignment_number in seen_assignments:
                raise OcrFileError(_("assignment number appears twice"), number, line)
            seen_assignments.add(record.assignment_number)
            assignment = OcrAssignment(
                number=record.assignment_number,
                account=record.assignment_account,
                agreement_id=record.agreement_id or "",
                nets_date=None,
            )
            assignment_start_index = index
            assignment_records = 1
            assignment_sum = 0
            assignment_signed = 0
            assignment_minus = []
            assignment_dates = []
            seen_transactions = set()
            continue
        if assignment is None:
            raise OcrFileError(
                _("%(record)s record outside an assignment", record=RECORD_NAMES[code]),
                number,
                line,
            )
        assignment_records += 1
        if code == "30":
            if pending is not None:
                raise OcrFileError(
                    _("amount item 1 record without its amount item 2"), pending[0], pending[1]
                )
            if record.transaction_number in seen_transactions:
                raise OcrFileError(_("transaction number appears twice"), number, line)
            seen_transactions.add(record.transaction_number)
            _check_kid_field(number, line)
            _check_sign(number, line, record)
            pending = (number, line, record)
        elif code == "31":
            if pending is None:
                raise OcrFileError(_("amount item 2 record without amount item 1"), number, line)
            item1 = pending[2]
            if (
                record.transaction_number != item1.transaction_number
                or record.transaction_type != item1.transaction_type
            ):
                raise OcrFileError(
                    _("amount item 2 record does not belong to the transaction before it"),
                    number,
                    line,
                )
            _check_filler(number, line)
            amount = item1.amount
            signed = -amount if item1.sign == REVERSAL_SIGN else amount
            if item1.sign == REVERSAL_SIGN and int(item1.transaction_type) not in (
                REVERSAL_TRANSACTION_TYPES
            ):
                assignment_minus.append((pending[0], pending[1], int(item1.transaction_type)))
            assignment_sum += amount
            assignment_signed += signed
            assignment_dates.append(item1.nets_date)
            transactions.append(
                OcrTransaction(
                    assignment_number=assignment.number,
                    number=item1.transaction_number,
                    type=int(item1.transaction_type),
                    nets_date=item1.nets_date,
                    amount_ore=signed,
                    kid=item1.kid,
                    archive_reference=record.reference or "",
                    form_number=record.form_number or "",
                    bank_date=record.bank_date,
                    payer_account=record.debit_account or "",
                    text="",
                    line=pending[0],
                )
            )
            pending = None
        elif code == "32":
            previous = transactions[-1] if transactions else None
            if (
                previous is None
                or parsed[index - 1][2] != "31"
                or previous.assignment_number != assignment.number
                or record.transaction_number != previous.number
                or int(record.transaction_type) != previous.type
                or previous.type not in TEXT_TRANSACTION_TYPES
            ):
                raise OcrFileError(
                    _("amount item 3 record does not belong to the transaction before it"),
                    number,
                    line,
                )
            transactions[-1] = replace(previous, text=record.text or "")
        elif code == "88":
            if pending is not None:
                raise OcrFileError(
                    _("amount item 1 record without its amount item 2"), pending[0], pending[1]
                )
            _check_assignment_end(
                number,
                line,
                record,
                count=len(seen_transactions),
                records=assignment_records,
                signed=assignment_signed,
                unsigned=assignment_sum,
                minus=assignment_minus,
                dates=assignment_dates,
            )
            assignment.nets_date = record.nets_date
            assignment.transaction_count = len(seen_transactions)
            assignment.total_ore = assignment_signed
            transmission.assignments.append(assignment)
            transmission_sum += assignment_sum
            transmission_signed += assignment_signed
            transmission_stated += record.total_amount or 0
            any_minus = any_minus or bool(assignment_minus)
            assignment = None
        else:  # pragma: no cover - every code in _RECORD_CLASSES is handled above
            raise OcrFileError(_("unexpected record"), number, line)

    if assignment is not None:
        number, line = parsed[assignment_start_index][:2]
        raise OcrFileError(_("assignment has no end record (truncated file?)"), number, line)
    if end.num_transactions != len(transactions):
        raise OcrFileError(
            _(
                "transmission end record counts %(counted)s transactions, the file has %(found)s",
                counted=end.num_transactions,
                found=len(transactions),
            ),
            last_number,
            last_line,
        )
    if end.num_records != len(parsed):
        raise OcrFileError(
            _(
                "transmission end record counts %(counted)s records, the file has %(found)s",
                counted=end.num_records,
                found=len(parsed),
            ),
            last_number,
            last_line,
        )
    accepted = {transmission_stated, transmission_signed}
    if not any_minus:
        accepted.add(transmission_sum)
    if end.total_amount not in accepted:
        raise OcrFileError(
            _(
                "the transmission end record's total, %(total)s, is not the sum of the "
                "payments in the file, %(sum)s: the file may be damaged; ask the bank for "
                "it again",
                total=kr(end.total_amount),
                sum=kr(transmission_signed),
            ),
            last_number,
            last_line,
        )
    return transmission


def kr(ore: int) -> str:
    """`kr 1 234,50` in a message."""
    sign = "−" if ore < 0 else ""
    whole, part = divmod(abs(ore), 100)
    return f"{sign}kr {whole:,}".replace(",", " ") + f",{part:02d}"


def _check_assignment_end(
    number, line, record, *, count, records, signed, unsigned, minus, dates
) -> None:
    if record.assignment_type != AssignmentType.TRANSACTIONS:
        raise OcrFileError(_("assignment end record is of another type"), number, line)
    if record.num_transactions != count:
        raise OcrFileError(
            _(
                "assignment end record counts %(counted)s transactions, "
                "the assignment has %(found)s",
                counted=record.num_transactions,
                found=count,
            ),
            number,
            line,
        )
    if record.num_records != records:
        raise OcrFileError(
            _(
                "assignment end record counts %(counted)s records, the assignment has %(found)s",
                counted=record.num_records,
                found=records,
            ),
            number,
            line,
        )
    total = record.total_amount or 0
    if total == signed or (total == unsigned and not minus):
        return
    if total == unsigned:
        # Adds up only if the minus were not there: the sign of that amount is in doubt.
        first_number, first_line, kind = minus[0]
        raise OcrFileError(
            _(
                "the amount of this transaction (type %(type)s) has a minus sign, but the "
                "assignment's total counts it as a payment: the file may be damaged; ask "
                "the bank for it again",
                type=kind,
            ),
            first_number,
            first_line,
        )
    raise OcrFileError(
        _(
            "the assignment end record's total, %(total)s, is not the sum of its "
            "payments, %(sum)s: the file may be damaged; ask the bank for it again",
            total=kr(total),
            sum=kr(signed),
        ),
        number,
        line,
    )
    if record.nets_date is None:
        raise OcrFileError(_("assignment end record has no settlement date"), number, line)
    if dates and (record.nets_date_earliest, record.nets_date_latest) != (min(dates), max(dates)):
        raise OcrFileError(
            _("assignment end record dates do not match its transactions' dates"),
            number,
            line,
        )
