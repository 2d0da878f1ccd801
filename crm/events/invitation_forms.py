"""Forms of the invitation pages (Flask-WTF, CSRF)."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import IntegerField
from wtforms.validators import InputRequired, NumberRange

from crm.events.invitations import MAX_REMINDER_DAYS


class ActionForm(FlaskForm):
    """Buttons that make an event's mail: only the CSRF token."""


class RegistrantReminderForm(FlaskForm):
    days = IntegerField(
        _l("Days before"),
        validators=[InputRequired(), NumberRange(min=1, max=MAX_REMINDER_DAYS)],
        default=2,
    )
