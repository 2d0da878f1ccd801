"""Forms of the public signup pages and the staff consent panel."""

import re
import threading

from flask import current_app
from flask_babel import lazy_gettext as _l
from flask_wtf.form import _Auto
from wtforms import (
    BooleanField,
    EmailField,
    HiddenField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.validators import DataRequired, Length, Optional, ValidationError
from wtforms.widgets import CheckboxInput, ListWidget

from crm.forms import Form
from crm.mail.services import normalize_address
from crm.members.normalize import normalize_email
from crm.subscriptions.ledger import CHANNEL_LABELS

# Control characters (CR, LF, NUL, …) have no place in a name, address or company; they
# are refused here, and the mailer refuses them in headers as well.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def single_line(form, field) -> None:
    if field.data and _CONTROL.search(field.data):
        raise ValidationError(_l("Line breaks and control characters are not allowed here."))


def valid_email(form, field) -> None:
    if not field.data:
        return
    try:
        # The register's rules, then the mailer's (which also refuses non-ASCII local
        # parts): an address accepted here can always be mailed.
        normalized = normalize_email(field.data)
        if not normalized.isascii():
            # The mailer's check differs from the register's for non-ASCII addresses
            # only (it refuses a non-ASCII local part): an ASCII one that passed the
            # first passes it too, and each check costs a parse.
            normalize_address(normalized)
    except ValueError as exc:
        raise ValidationError(_l("Please enter a valid email address.")) from exc
    field.data = normalized


def topic_choices(topics, locale: str) -> list[SelectChoice]:
    return [SelectChoice(t.slug, t.label(locale)) for t in topics]


class MultiCheckboxField(SelectMultipleField):
    """Checkboxes for a multiple choice; values are checked by the view, not WTForms."""

    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("validate_choice", False)
        super().__init__(*args, **kwargs)


class SubscribeForm(Form):
    """The public signup form.

    No session CSRF token: the form is embedded in an iframe on the cluster's website,
    where browsers do not send our (SameSite=Lax) session cookie, so a session-bound
    token could never match. `started` (signed by us, time-stamped) takes its place:
    it proves the form was fetched from this site and how long filling it in took.
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
    company = StringField(
        _l("Company (optional)"),
        validators=[
            Optional(),
            Length(max=200, message=_l("At most %(max)d characters.")),
            single_line,
        ],
    )
    topics = MultiCheckboxField(_l("What would you like to hear about?"))
    # No labels of their own (the consent box shows the wording): without one, WTForms
    # would translate a label made from the field's name on every request.
    consent = BooleanField(
        "",
        validators=[DataRequired(message=_l("Please tick the box to confirm your consent."))],
    )
    wording = HiddenField("")
    started = HiddenField("")
    # Honeypot: hidden from people (CSS, aria-hidden, no tab stop); bots fill it in.
    website = StringField(_l("Leave this field empty"))


_submissions = threading.local()


def submitted_signup() -> SubscribeForm:
    """The request's posted signup, processed (not yet validated) by a SubscribeForm
    that this thread keeps for its app and processes anew for each signup.

    Binding a form's fields (a label, validators and flags for each, a third of the
    CPU a whole signup takes in Python) gives the same fields every time; processing
    sets everything a request reads (data, raw data, errors when validated). Read it
    within the request and never show it: a form to show (with its errors) is a
    `SubscribeForm()` of its own, as the thread's next signup reuses this one.
    """
    app = current_app._get_current_object()
    kept = getattr(_submissions, "kept", None)
    if kept is None or kept[0] is not app:
        form = SubscribeForm()
        _submissions.kept = (app, form)
        return form
    form = kept[1]
    form.process(_Auto)  # the request's form data, as the form's construction takes it
    return form


class ConfirmForm(Form):
    """Only a button: a link preview or mail scanner that follows the GET confirms nothing."""


class PreferencesForm(Form):
    topics = MultiCheckboxField(_l("Topics"))


class StaffConsentForm(Form):
    topics = MultiCheckboxField(_l("Topics"))
    channel = SelectField(
        _l("Given"),
        choices=[SelectChoice(code, label) for code, label in CHANNEL_LABELS.items()],
    )
    note = TextAreaField(
        _l("Note (required: when, where, what was said)"),
        validators=[
            DataRequired(message=_l("Describe how and when the person gave consent.")),
            Length(max=2000, message=_l("At most %(max)d characters.")),
        ],
    )


class StaffWithdrawForm(Form):
    topics = MultiCheckboxField(_l("Topics"))
    note = TextAreaField(
        _l("Note"),
        validators=[Optional(), Length(max=2000, message=_l("At most %(max)d characters."))],
    )


class EraseForm(Form):
    confirm = BooleanField(
        _l("I understand that the person's data is removed for good."),
        validators=[DataRequired(message=_l("Tick the box to confirm."))],
    )


class LinkCompanyForm(Form):
    """Staff link a subscriber to the company record suggested from their signup."""

    company_id = HiddenField()
