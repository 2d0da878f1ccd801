"""Forms for companies, contacts, networks, activities and merges (Flask-WTF, CSRF)."""

from urllib.parse import urlsplit

from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, Regexp, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from crm.forms import Form, WholeNumberField
from crm.members.models import ACTIVITY_KINDS, MEMBERSHIP_STATUSES
from crm.members.normalize import normalize_email, normalize_orgnr, normalize_phone
from crm.members.services import ACTIVITY_LABELS, MEMBERSHIP_LABELS
from crm.timeutil import today_oslo

# The organisation forms of Enhetsregisteret a cluster member is likely to have; the
# names are the register's own (Norwegian) descriptions, stored as they come.
ORG_FORMS = {
    "AS": "Aksjeselskap",
    "ASA": "Allmennaksjeselskap",
    "ENK": "Enkeltpersonforetak",
    "ANS": "Ansvarlig selskap",
    "DA": "Selskap med delt ansvar",
    "SA": "Samvirkeforetak",
    "NUF": "Norskregistrert utenlandsk foretak",
    "STI": "Stiftelse",
    "FLI": "Forening/lag/innretning",
    "KF": "Kommunalt foretak",
    "IKS": "Interkommunalt selskap",
    "KOMM": "Kommune",
    "ORGL": "Organisasjonsledd",
    "SF": "Statsforetak",
}


def clean_text(value):
    """Trimmed text without control characters (PostgreSQL refuses NUL in text)."""
    if not isinstance(value, str):
        return value
    value = value.replace("\r\n", "\n").replace("\r", "\n")
    return "".join(ch for ch in value if ch.isprintable() or ch in "\n\t").strip()


def _optional_int(value):
    """An id from a select, or None for nothing/garbage (the service then says what is
    missing)."""
    if value is None or value == "":
        return None
    text = str(value).strip()
    if not text.isascii() or not text.isdigit() or len(text) > 10:
        return None
    return int(text)


class MultiCheckboxField(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class CompanyForm(Form):
    orgnr = StringField(
        _l("Organisation number"),
        validators=[DataRequired(), Length(max=20)],
        filters=[clean_text],
    )
    name = StringField(
        _l("Name"), validators=[DataRequired(), Length(max=200)], filters=[clean_text]
    )
    org_form_code = SelectField(_l("Organisation form"), validate_choice=True)
    nace_code = StringField(
        _l("Industry code"),
        validators=[
            Optional(),
            Length(max=10),
            Regexp(r"^\d{2}(\.\d{1,3})?$", message=_l("Write the code like 25.620.")),
        ],
        filters=[clean_text],
    )
    nace_text = StringField(_l("Industry"), validators=[Length(max=300)], filters=[clean_text])
    employees = WholeNumberField(
        _l("Employees"), validators=[Optional(), NumberRange(min=0, max=1_000_000)]
    )
    municipality_number = StringField(
        _l("Municipality number"),
        validators=[
            Optional(),
            Regexp(r"^\d{4}$", message=_l("A municipality number has four digits.")),
        ],
        filters=[clean_text],
    )
    municipality_name = StringField(
        _l("Municipality"), validators=[Length(max=100)], filters=[clean_text]
    )
    street_address = StringField(_l("Address"), validators=[Length(max=300)], filters=[clean_text])
    postal_code = StringField(
        _l("Postal code"),
        validators=[Optional(), Regexp(r"^\d{4}$", message=_l("A postal code has four digits."))],
        filters=[clean_text],
    )
    postal_place = StringField(
        _l("Postal place"), validators=[Length(max=100)], filters=[clean_text]
    )
    website = StringField(_l("Website"), validators=[Length(max=300)], filters=[clean_text])
    membership_status = SelectField(
        _l("Membership"),
        choices=[SelectChoice(s, MEMBERSHIP_LABELS[s]) for s in MEMBERSHIP_STATUSES],
    )
    member_since = DateField(_l("Member since"), validators=[Optional()])
    resigned_on = DateField(_l("Resigned"), validators=[Optional()])
    notes = TextAreaField(_l("Notes"), validators=[Length(max=10_000)], filters=[clean_text])

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        choices = [SelectChoice("", "—")] + [
            SelectChoice(code, f"{code} – {name}") for code, name in ORG_FORMS.items()
        ]
        # A code from the register that is not in our list stays choosable, but only
        # the stored one: a posted value is not proof of anything.
        stored = getattr(kwargs.get("obj"), "org_form_code", None)
        if stored and stored not in ORG_FORMS:
            choices.append(SelectChoice(stored, stored))
        self.org_form_code.choices = choices

    def validate_orgnr(self, field):
        try:
            field.data = normalize_orgnr(field.data or "")
        except ValueError:
            raise ValidationError(
                _("Not a valid organisation number: 9 digits with a correct check digit.")
            ) from None

    def validate_website(self, field):
        if not field.data:
            return
        url = field.data if "://" in field.data else "https://" + field.data
        try:
            parts = urlsplit(url)
            host = parts.hostname or ""
        except ValueError:
            raise ValidationError(_("Not a web address.")) from None
        if parts.scheme not in ("http", "https") or "." not in host or " " in url:
            raise ValidationError(_("Not a web address."))
        if len(url) > 300:
            raise ValidationError(_("The address is too long."))
        field.data = url


class ContactForm(Form):
    first_name = StringField(_l("First name"), validators=[Length(max=100)], filters=[clean_text])
    last_name = StringField(_l("Last name"), validators=[Length(max=100)], filters=[clean_text])
    email = StringField(_l("Email"), validators=[Length(max=254)], filters=[clean_text])
    phone = StringField(_l("Phone"), validators=[Length(max=40)], filters=[clean_text])
    job_title = StringField(_l("Job title"), validators=[Length(max=200)], filters=[clean_text])
    company = StringField(_l("Company"), validators=[Length(max=300)], filters=[clean_text])
    is_primary_contact = BooleanField(_l("Primary contact"))
    is_invoice_contact = BooleanField(_l("Invoice contact"))
    is_board_representative = BooleanField(_l("Board representative"))
    networks = MultiCheckboxField(_l("Networks"), coerce=int)
    left_company = BooleanField(_l("Has left the company"))
    notes = TextAreaField(_l("Notes"), validators=[Length(max=10_000)], filters=[clean_text])
    confirm_duplicate = BooleanField(_l("Save anyway: this is a different person"))

    def validate_email(self, field):
        if not field.data:
            field.data = None
            return
        try:
            field.data = normalize_email(field.data)
        except ValueError:
            raise ValidationError(_("Not a valid email address.")) from None
        if len(field.data) > 254:
            raise ValidationError(_("Not a valid email address."))

    def validate_phone(self, field):
        if not field.data:
            field.data = None
            return
        try:
            field.data = normalize_phone(field.data)
        except ValueError:
            raise ValidationError(
                _("Not a valid phone number. Norwegian numbers have 8 digits.")
            ) from None

    def validate(self, extra_validators=None) -> bool:
        valid = super().validate(extra_validators)
        if not (self.first_name.data or self.last_name.data or self.email.data):
            self.first_name.errors = [
                *self.first_name.errors,
                _("Give a name or an email address."),
            ]
            valid = False
        return valid


class ActivityForm(Form):
    kind = SelectField(
        _l("Type"), choices=[SelectChoice(k, ACTIVITY_LABELS[k]) for k in ACTIVITY_KINDS]
    )
    occurred_on = DateField(_l("Date"), validators=[DataRequired()], default=today_oslo)
    summary = StringField(
        _l("Summary"), validators=[DataRequired(), Length(max=300)], filters=[clean_text]
    )
    details = TextAreaField(_l("Details"), validators=[Length(max=10_000)], filters=[clean_text])
    participants = MultiCheckboxField(_l("Who took part"), coerce=int, validate_choice=False)
    followup_what = StringField(
        _l("Follow up (optional)"),
        validators=[Optional(), Length(max=300)],
        filters=[clean_text],
    )
    followup_due_on = DateField(_l("Follow up by"), validators=[Optional()])
    followup_assignee = SelectField(
        _l("Who follows up"), coerce=_optional_int, validate_choice=False
    )

    def __init__(self, *args, participants=(), **kwargs):
        """`participants`: the contacts who can be ticked as having taken part."""
        super().__init__(*args, **kwargs)
        self.participants.choices = [
            SelectChoice(c.id, c.name or c.email or "") for c in participants
        ]
        from crm.followups.forms import user_choices

        self.followup_assignee.choices = user_choices()

    def validate_followup_due_on(self, field):
        if self.followup_what.data and not field.data:
            raise ValidationError(_("When should it be followed up?"))


class NetworkForm(Form):
    name = StringField(
        _l("Name"), validators=[DataRequired(), Length(max=100)], filters=[clean_text]
    )
    description = TextAreaField(
        _l("Description"), validators=[Length(max=5_000)], filters=[clean_text]
    )
    active = BooleanField(_l("Active"), default=True)


class NetworkMemberForm(Form):
    who = StringField(
        _l("Contact's email, or a company's name or organisation number"),
        validators=[DataRequired(), Length(max=200)],
        filters=[clean_text],
    )


class ConfirmForm(Form):
    """A button that changes something: only the CSRF token."""


class MergeForm(Form):
    other_id = WholeNumberField(validators=[DataRequired(), NumberRange(min=1, max=2**31 - 1)])


class BulkForm(Form):
    """A bulk action on a selection of the company or contact list (see bulk_actions).

    Every field is optional here: what an action needs is checked by the service, which
    says what is missing."""

    action = SelectField(_l("Action"), validate_choice=False)
    target_network = SelectField(_l("Network"), coerce=_optional_int, validate_choice=False)
    status = SelectField(
        _l("Membership"),
        choices=[SelectChoice(s, MEMBERSHIP_LABELS[s]) for s in MEMBERSHIP_STATUSES],
        validate_choice=False,
    )
    on = DateField(_l("From date"), validators=[Optional()])
    what = StringField(
        _l("What is to be done"), validators=[Optional(), Length(max=300)], filters=[clean_text]
    )
    due_on = DateField(_l("Due"), validators=[Optional()])
    assignee = SelectField(_l("Who"), coerce=_optional_int, validate_choice=False)
    topic = SelectField(_l("Topic"), coerce=_optional_int, validate_choice=False)
    channel = SelectField(
        _l("Given"),
        choices=[
            SelectChoice("in_person", _l("In person")),
            SelectChoice("phone", _l("By phone")),
            SelectChoice("email", _l("By email")),
            SelectChoice("letter", _l("In writing")),
        ],
        validate_choice=False,
    )
    wording_version = SelectField(_l("Wording shown"), coerce=_optional_int, validate_choice=False)
    note = TextAreaField(
        _l("Evidence (when, where, how)"),
        validators=[Optional(), Length(max=2000)],
        filters=[clean_text],
    )
    event = SelectField(_l("Event"), coerce=_optional_int, validate_choice=False)
    fmt = SelectField(
        _l("Format"),
        choices=[SelectChoice("xlsx", "Excel"), SelectChoice("csv", "CSV")],
        validate_choice=False,
    )
