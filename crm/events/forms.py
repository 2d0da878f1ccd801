"""Forms of the events area: the public registration form and the staff event form."""

from datetime import datetime, time

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    EmailField,
    FieldList,
    FormField,
    HiddenField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import DataRequired, Length, NumberRange, Optional, ValidationError

from crm.events.models import AUDIENCES, EVENT_KINDS, PARTICIPANT_TYPES
from crm.fees.forms import KronerField
from crm.forms import Form, SubForm, WholeNumberField
from crm.subscriptions.forms import MultiCheckboxField, single_line, valid_email
from crm.timeutil import OSLO

MAX_SESSIONS = 20


def _choices(labels: dict) -> list[SelectChoice]:
    return [SelectChoice(key, label) for key, label in labels.items()]


class RegistrationForm(Form):
    """The public registration form.

    Like the newsletter signup it can be embedded in an iframe, so no session CSRF
    token (see SubscribeForm): the signed `started` time and the honeypot stand in.
    """

    class Meta:
        csrf = False

    name = StringField(
        _l("Your name"),
        validators=[
            DataRequired(message=_l("Please enter your name.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    email = EmailField(
        _l("Email address"),
        validators=[
            DataRequired(message=_l("Please enter your email address.")),
            Length(max=254, message=_l("At most %(max)d characters.")),
            single_line,
            valid_email,
        ],
    )
    phone = StringField(
        _l("Mobile phone"),
        validators=[
            Optional(),
            Length(max=30, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    company = StringField(
        _l("Company"),
        validators=[
            Optional(),
            Length(max=200, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    participant_type = SelectField(
        _l("I take part as"), choices=_choices(PARTICIPANT_TYPES), default="member_employee"
    )
    note = TextAreaField(
        _l("Dietary needs or other notes (optional)"),
        validators=[Optional(), Length(max=2000, message=_l("At most %(max)d characters."))],
    )
    terms = BooleanField(
        _l("I accept that my name, company and contact details are stored for this event."),
        validators=[DataRequired(message=_l("Please accept the terms to register."))],
    )
    started = HiddenField()
    # Honeypot: hidden from people (CSS, aria-hidden, no tab stop); bots fill it in.
    website = StringField(_l("Leave this field empty"))


class DetailsForm(Form):
    """What a registrant may change through the personal link."""

    phone = StringField(
        _l("Mobile phone"),
        validators=[
            Optional(),
            Length(max=30, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    participant_type = SelectField(_l("I take part as"), choices=_choices(PARTICIPANT_TYPES))
    note = TextAreaField(
        _l("Dietary needs or other notes (optional)"),
        validators=[Optional(), Length(max=2000, message=_l("At most %(max)d characters."))],
    )


class TransferForm(Form):
    name = StringField(
        _l("Colleague's name"),
        validators=[
            DataRequired(message=_l("Please enter your colleague's name.")),
            Length(max=200, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    email = EmailField(
        _l("Colleague's email address"),
        validators=[
            DataRequired(message=_l("Please enter your colleague's email address.")),
            Length(max=254, message=_l("At most %(max)d characters.")),
            single_line,
            valid_email,
        ],
    )
    phone = StringField(
        _l("Colleague's mobile phone"),
        validators=[
            Optional(),
            Length(max=30, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )


class ButtonForm(Form):
    """A form that is only a button (cancel, accept an offer, publish, …)."""


# -- staff ----------------------------------------------------------------------------


class SessionForm(SubForm):
    title = StringField(_l("Session title (optional)"), [Optional(), Length(max=200), single_line])
    date = DateField(_l("Date"), [Optional()])
    start = TimeField(_l("Starts"), [Optional()])
    end = TimeField(_l("Ends"), [Optional()])
    uid = HiddenField()


def _oslo(day, at: time) -> datetime:
    return datetime.combine(day, at).replace(tzinfo=OSLO)


class EventForm(Form):
    title = StringField(
        _l("Title"),
        [DataRequired(message=_l("Give the event a title.")), Length(max=200), single_line],
    )
    kind = SelectField(_l("Kind"), choices=_choices(EVENT_KINDS), default="seminar")
    description = TextAreaField(_l("Description (Markdown)"), [Optional(), Length(max=20000)])
    venue = StringField(_l("Venue"), [Optional(), Length(max=300), single_line])
    audience = SelectField(_l("Who may register"), choices=_choices(AUDIENCES), default="members")
    capacity = WholeNumberField(
        _l("Seats (empty: unlimited)"), [Optional(), NumberRange(min=0, max=100000)]
    )
    company_quota = WholeNumberField(
        _l("Seats per member company (empty: no limit)"),
        [Optional(), NumberRange(min=1, max=10000)],
    )
    registration_deadline_date = DateField(_l("Registration deadline"), [Optional()])
    registration_deadline_time = TimeField(_l("at"), [Optional()], default=time(23, 59))
    cancellation_deadline_date = DateField(_l("Cancellation deadline"), [Optional()])
    cancellation_deadline_time = TimeField(_l("at"), [Optional()], default=time(23, 59))
    cancellation_fee = KronerField(_l("Cancellation fee after the deadline"), [Optional()])
    member_price = KronerField(_l("Price for member companies (excl. VAT)"), [Optional()])
    price = KronerField(_l("Price for others (excl. VAT)"), [Optional()])
    vat_percent = WholeNumberField(
        _l("VAT (%)"), [Optional(), NumberRange(min=0, max=100)], default=25
    )
    completion_percent = WholeNumberField(
        _l("Share of sessions needed for a certificate (%)"),
        [Optional(), NumberRange(min=1, max=100)],
    )
    networks = MultiCheckboxField(_l("Networks"), coerce=int)
    sessions = FieldList(FormField(SessionForm), min_entries=1, max_entries=MAX_SESSIONS)

    def validate_sessions(self, field) -> None:
        if not self.session_values():
            raise ValidationError(_l("Add at least one session with a date, start and end."))

    def session_values(self) -> list[tuple[str, str, datetime, datetime]]:
        """Filled session rows as (uid, title, starts_at, ends_at), in UTC-aware Oslo time.

        Raises ValidationError for a half-filled row or one that ends before it starts.
        """
        rows = []
        for entry in self.sessions.entries:
            row = entry.form
            filled = [row.date.data, row.start.data, row.end.data]
            if not any(filled):
                continue
            if not all(filled):
                raise ValidationError(_l("Each session needs a date, a start and an end."))
            starts, ends = _oslo(row.date.data, row.start.data), _oslo(row.date.data, row.end.data)
            if ends <= starts:
                raise ValidationError(_l("A session must end after it starts."))
            rows.append((row.uid.data or "", row.title.data or "", starts, ends))
        # A row names its session by uid; two rows naming one (a form edited by hand, or
        # a stale copy) would edit that session twice and drop the other row.
        uids = [uid for uid, *_ in rows if uid]
        if len(uids) != len(set(uids)):
            raise ValidationError(_l("A session is listed twice. Reload the page and try again."))
        return rows

    def deadline(self, which: str) -> datetime | None:
        day = getattr(self, f"{which}_deadline_date").data
        if day is None:
            return None
        return _oslo(day, getattr(self, f"{which}_deadline_time").data or time(23, 59))


class CheckInSearchForm(Form):
    class Meta:
        csrf = False

    q = StringField(_l("Name or company"), [Optional(), Length(max=200)])
