"""Forms of the fee pages. Amounts are typed in kroner (`12 500,50`) and kept as øre."""

from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField, FileRequired
from stdnum.exceptions import ValidationError as StdnumError
from stdnum.no import kontonr
from wtforms import (
    BooleanField,
    DateField,
    FieldList,
    FormField,
    HiddenField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
)
from wtforms.validators import (
    DataRequired,
    Email,
    InputRequired,
    Length,
    NumberRange,
    Optional,
    ValidationError,
)

from crm.fees.kid import MAX_LENGTH, MOD10, MOD11
from crm.fees.money import plain, to_ore
from crm.forms import Form, SubForm, WholeNumberField
from crm.numbers import is_digits


class KronerField(StringField):
    """An amount in kroner; `.data` is whole øre (int) or None when left empty."""

    def __init__(self, label=None, validators=None, allow_negative: bool = False, **kwargs):
        super().__init__(label, validators, **kwargs)
        self.allow_negative = allow_negative

    def _value(self) -> str:
        if self.raw_data:
            return self.raw_data[0]
        if self.data is None:
            return ""
        return plain(self.data).replace(".", ",")

    def process_formdata(self, valuelist):
        self.data = None
        if not valuelist or not valuelist[0].strip():
            return
        try:
            ore = to_ore(valuelist[0])
        except ValueError as exc:
            self.data = None
            raise ValueError(_l("Write an amount in kroner, like 12 500,00.")) from exc
        if ore < 0 and not self.allow_negative:
            raise ValueError(_l("The amount cannot be negative."))
        if abs(ore) >= 10**13:
            raise ValueError(_l("The amount is too large."))
        self.data = ore

    def post_validate(self, form, validation_stopped):
        # InputRequired takes " " for an answer; a required amount must be one.
        if self.flags.required and self.data is None and not self.errors:
            self.errors.append(_l("Give the amount."))


def usable_account(value: str) -> str:
    """A Norwegian bank account number (11 digits) that money can be paid to, compacted;
    ValueError otherwise.

    `stdnum.no.kontonr` checks the MOD11 check digit, but it also accepts the 7-digit
    numbers of the old postal giro (Luhn) and a row of zeros, whose check digit is
    right: neither is an account a payer's bank can send to. The first four digits are
    the bank's registration number, never 0000.
    """
    compact = kontonr.compact(value or "")
    try:
        number = kontonr.validate(compact)
    except StdnumError as exc:
        raise ValueError("not a valid account number") from exc
    if len(number) != 11 or number.startswith("0000"):
        raise ValueError("not an account number payments can go to")
    return number


def _valid_account(form, field):
    value = (field.data or "").replace(" ", "").replace(".", "")
    if not value:
        return
    try:
        field.data = usable_account(value)
    except ValueError as exc:
        raise ValidationError(
            _l("Not a valid Norwegian account number: 11 digits, like 1234.56.78903.")
        ) from exc


def _lawful_reminder_fee(form, field):
    from crm.fees.reminders import MAX_REMINDER_FEE_ORE

    if field.data is not None and field.data > MAX_REMINDER_FEE_ORE:
        raise ValidationError(
            _l(
                "The reminder fee may be at most %(max)s (1/20 of the inkassosats, "
                "inkassoforskriften § 1-2).",
                max="kr " + plain(MAX_REMINDER_FEE_ORE).replace(".", ","),
            )
        )


def _ledger_account(form, field):
    value = (field.data or "").strip()
    if not (is_digits(value) and 1 <= len(value) <= 10):
        raise ValidationError(_l("A ledger account is a number, like 1920."))
    field.data = value


# Also the words of the audit history (crm/fees/routes.py).
PRO_RATA_CHOICES = [
    SelectChoice("year", _l("The whole year's fee")),
    SelectChoice("half_year", _l("Half the fee when joining from 1 July")),
    SelectChoice("month", _l("By month, from the month of joining")),
]


class SettingsForm(Form):
    bank_account = StringField(_l("Bank account"), [DataRequired(), _valid_account])
    next_invoice_number = WholeNumberField(
        _l("Next invoice number"), [InputRequired(), NumberRange(min=1, max=10**9)]
    )
    kid_length = WholeNumberField(
        _l("KID length"), [InputRequired(), NumberRange(min=4, max=MAX_LENGTH)]
    )
    kid_scheme = SelectField(
        _l("KID check digit"),
        choices=[SelectChoice(MOD10, _l("MOD10 (Luhn)")), SelectChoice(MOD11, _l("MOD11"))],
    )
    due_days = WholeNumberField(_l("Days to pay"), [InputRequired(), NumberRange(min=1, max=365)])
    reminder_fee = KronerField(_l("Reminder fee"), [Optional(), _lawful_reminder_fee])
    vat_registered = BooleanField(_l("Registered for VAT (Merverdiavgiftsregisteret)"))
    foretaksregisteret = BooleanField(_l("Registered in Foretaksregisteret (AS, ASA, branch)"))
    pro_rata = SelectField(
        _l("Members joining during the year pay"), choices=PRO_RATA_CHOICES, default="year"
    )
    account_receivable = StringField(_l("Accounts receivable"), [DataRequired(), _ledger_account])
    account_bank = StringField(_l("Bank"), [DataRequired(), _ledger_account])
    account_output_vat = StringField(_l("Output VAT"), [DataRequired(), _ledger_account])
    account_income_vat = StringField(_l("Income with VAT"), [DataRequired(), _ledger_account])
    account_income_no_vat = StringField(
        _l("Income without VAT (membership fees)"), [DataRequired(), _ledger_account]
    )
    account_reminder_fees = StringField(_l("Reminder fees"), [DataRequired(), _ledger_account])
    account_losses = StringField(_l("Losses on receivables"), [DataRequired(), _ledger_account])


ACCOUNT_FIELDS = (
    "account_receivable",
    "account_bank",
    "account_output_vat",
    "account_income_vat",
    "account_income_no_vat",
    "account_reminder_fees",
    "account_losses",
)


class TierForm(SubForm):
    min_employees = WholeNumberField(
        _l("From employees"), [Optional(), NumberRange(min=0, max=10**6)]
    )
    max_employees = WholeNumberField(
        _l("To employees"), [Optional(), NumberRange(min=0, max=10**6)]
    )
    amount = KronerField(_l("Amount"), [Optional()])


class ScheduleForm(Form):
    year = WholeNumberField(_l("Year"), [InputRequired(), NumberRange(min=2000, max=2100)])
    tiers = FieldList(FormField(TierForm), min_entries=6, max_entries=12)

    def tier_values(self) -> list[tuple[int, int | None, int]]:
        """Filled rows as (min, max or None, amount øre); a row needs a minimum and amount."""
        rows = []
        for entry in self.tiers.entries:
            tier = entry.form
            if tier.min_employees.data is None and tier.amount.data is None:
                continue
            if tier.min_employees.data is None or tier.amount.data is None:
                raise ValueError(_l("Each tier needs a lower bound and an amount."))
            rows.append((tier.min_employees.data, tier.max_employees.data, tier.amount.data))
        return rows


class OverrideForm(Form):
    # Organisation number or exact name (the company field of the contact form): a
    # drop-down of every company is 20,000 options in a large register.
    company = StringField(_l("Company"), [DataRequired(), Length(max=300)])
    year = WholeNumberField(_l("Year (empty: every year)"), [Optional(), NumberRange(2000, 2100)])
    kind = SelectField(
        _l("Kind"),
        choices=[
            SelectChoice("amount", _l("Fixed amount")),
            SelectChoice("discount", _l("Discount in per cent")),
        ],
    )
    amount = KronerField(_l("Amount"), [Optional()])
    discount_percent = WholeNumberField(_l("Discount (%)"), [Optional(), NumberRange(0, 100)])
    reason = StringField(_l("Reason"), [DataRequired(), Length(max=300)])

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.kind.data == "amount" and self.amount.data is None:
            self.amount.errors.append(_l("Give the amount."))
            return False
        if self.kind.data == "discount" and self.discount_percent.data is None:
            self.discount_percent.errors.append(_l("Give the discount."))
            return False
        return True


class YearForm(Form):
    year = WholeNumberField(_l("Year"), [InputRequired(), NumberRange(min=2000, max=2100)])


class UploadForm(Form):
    file = FileField(_l("OCR file from the bank"), [FileRequired(_l("Choose a file."))])


class PaymentForm(Form):
    kind = SelectField(
        _l("Kind"),
        choices=[
            SelectChoice("payment", _l("Payment received")),
            SelectChoice("refund", _l("Refund paid back")),
            SelectChoice("write_off", _l("Write-off")),
        ],
    )
    amount = KronerField(_l("Amount"), [InputRequired(_l("Give the amount."))])
    paid_on = DateField(_l("Date"), [InputRequired()])
    payer_account = StringField(_l("Payer's account"), [Optional(), _valid_account])
    note = StringField(_l("Note"), [Optional(), Length(max=300)])


class CreditForm(Form):
    amount = KronerField(_l("Amount (empty: all that is left)"), [Optional()])
    reason = StringField(_l("Reason"), [DataRequired(), Length(max=300)])


class AssignForm(Form):
    invoice = StringField(_l("Invoice number or KID"), [DataRequired(), Length(max=25)])
    note = StringField(_l("Note"), [Optional(), Length(max=300)])


class HandledForm(Form):
    note = StringField(_l("What was done"), [DataRequired(), Length(max=300)])


class ReminderForm(Form):
    with_fee = BooleanField(_l("Add the reminder fee"), default=True)


class ActionForm(Form):
    """A button that only needs the CSRF token."""

    next = HiddenField()


class SendToForm(Form):
    """Send one invoice to an address the treasurer types (no invoice contact)."""

    email = StringField(_l("Email address"), [DataRequired(), Email(), Length(max=254)])


class InvoiceSelectionForm(Form):
    """Invoices picked by checkbox for a batch action (print, mark sent by post)."""

    year = WholeNumberField(_l("Year"), [Optional(), NumberRange(min=2000, max=2100)])
    invoice_id = SelectMultipleField(_l("Invoices"), coerce=int, validate_choice=False)


class AccountingForm(Form):
    """A period and a file format for the accounting export (GET, nothing changes)."""

    class Meta(Form.Meta):
        csrf = False

    start = DateField(_l("From"), [InputRequired()])
    end = DateField(_l("To"), [InputRequired()])
    fmt = SelectField(_l("Format"), default="generic")

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.end.data < self.start.data:
            self.end.errors.append(_l("The period ends before it starts."))
            return False
        if (self.end.data - self.start.data).days > 3 * 366:
            self.end.errors.append(_l("Choose a period of at most three years."))
            return False
        return True
