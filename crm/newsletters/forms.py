"""Forms for composing, scheduling and acting on newsletters (Flask-WTF, CSRF)."""

from datetime import datetime, time

from flask_babel import lazy_gettext as _l
from wtforms import (
    BooleanField,
    DateField,
    SelectChoice,
    SelectField,
    StringField,
    TextAreaField,
    TimeField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError

from crm.forms import Form
from crm.members.forms import MultiCheckboxField, clean_text
from crm.members.listing import municipality_choices
from crm.members.models import CONTACT_ROLES
from crm.members.municipalities import municipality_label
from crm.members.services import network_choices
from crm.newsletters.compose import MAX_BODY_LENGTH
from crm.subscriptions.forms import valid_email
from crm.subscriptions.topics import active_topics
from crm.timeutil import OSLO

# The audience's words, shared by the compose form and the newsletter's page.
MEMBERSHIP_LABELS = {
    "": _l("Members and others"),
    "member": _l("Member companies only"),
    "non_member": _l("Not member companies"),
}
ROLE_LABELS = {
    "primary": _l("Primary contacts"),
    "invoice": _l("Invoice contacts"),
    "board": _l("Board representatives"),
}
KIND_LABELS = {
    "newsletter": _l("Newsletter (needs consent)"),
    "network_mail": _l("Network mail (to the networks' member contacts)"),
}
# An event's mail is made from the event's page (crm/events/invitations.py), not chosen here.
EVENT_KIND_LABELS = {
    "event_invitation": _l("Invitation to an event"),
    "event_invitation_reminder": _l("Reminder to invitees who have not answered"),
    "event_registrant_reminder": _l("Reminder to registrants"),
    "event_message": _l("Message to registrants"),
}
KIND_CHOICES = tuple(SelectChoice(value, label) for value, label in KIND_LABELS.items())
MEMBERSHIP_CHOICES = tuple(SelectChoice(value, label) for value, label in MEMBERSHIP_LABELS.items())
ROLE_CHOICES = tuple(SelectChoice(role, ROLE_LABELS[role]) for role in CONTACT_ROLES)


def municipality_labels() -> dict[str, str]:
    """Every municipality that can be chosen, by number, labelled "Kongsvinger (3401)"."""
    return {number: municipality_label(number, name) for number, name in municipality_choices()}


def _body_text(value):
    if not isinstance(value, str):
        return value
    return value.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n")


def _fits_a_header(form, field):
    """The subject becomes a header: refuse what the mail backends would refuse for every
    recipient, such as a line break hidden in an encoded word (`=?utf-8?q?=0D=0A…?=`)."""
    from crm.mail.backends import HeaderInjectionError, check_header

    try:
        check_header("Subject", field.data or "")
    except HeaderInjectionError as exc:
        raise ValidationError(_l("The subject cannot contain a line break.")) from exc


class NewsletterForm(Form):
    subject = StringField(
        _l("Subject"),
        validators=[DataRequired(), Length(max=200), _fits_a_header],
        filters=[clean_text],
    )
    preheader = StringField(
        _l("Preview text"), validators=[Optional(), Length(max=200)], filters=[clean_text]
    )
    body = TextAreaField(
        _l("Text (Markdown)"),
        validators=[DataRequired(), Length(max=MAX_BODY_LENGTH)],
        filters=[_body_text],
    )
    kind = SelectField(_l("Kind of mail"), choices=KIND_CHOICES, default="newsletter")
    topics = MultiCheckboxField(_l("Topics"))
    networks = MultiCheckboxField(_l("Networks"), coerce=int)
    municipalities = MultiCheckboxField(_l("Municipalities"))
    membership = SelectField(_l("Companies"), choices=MEMBERSHIP_CHOICES, default="")
    roles = MultiCheckboxField(_l("Contact roles"), choices=ROLE_CHOICES)
    in_archive = BooleanField(_l("Publish in the public newsletter archive"))

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.topics.choices = [SelectChoice(t.slug, t.name) for t in active_topics()]
        self.networks.choices = [SelectChoice(n.id, n.name) for n in network_choices()]
        self.municipalities.choices = [
            SelectChoice(number, label) for number, label in municipality_labels().items()
        ]


class ScheduleForm(Form):
    date = DateField(_l("Date"), validators=[DataRequired()])
    time = TimeField(_l("Time"), validators=[DataRequired()], default=time(9, 0))

    def moment(self) -> datetime:
        """The chosen local (Europe/Oslo) time as an aware datetime."""
        return datetime.combine(self.date.data, self.time.data).replace(tzinfo=OSLO)


class ActionForm(Form):
    """Buttons that change a newsletter's state: only the CSRF token."""


class TestSendForm(Form):
    """Where a test copy goes: the staff user's own address, or a colleague's."""

    email = StringField(
        _l("Send a test copy to"),
        validators=[
            DataRequired(_l("Please enter a valid email address.")),
            Length(max=254),
            valid_email,
        ],
    )
