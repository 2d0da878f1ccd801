"""Forms of the invitation pages (Flask-WTF, CSRF)."""

from flask_babel import lazy_gettext as _l
from wtforms import StringField
from wtforms.validators import InputRequired, Regexp

from crm.events.invitations import MAX_REMINDER_DAYS
from crm.forms import Form


class ActionForm(Form):
    """Buttons that make an event's mail: only the CSRF token."""


class RegistrantReminderForm(Form):
    # Text checked as 1–2 digits (not IntegerField: NumberRange turns a 1,000-digit
    # number into a float and fails with OverflowError).
    days = StringField(
        _l("Days before"),
        validators=[InputRequired(), Regexp(r"^[0-9]{1,2}$")],
        default="2",
    )

    def number_of_days(self) -> int | None:
        """The days, if the form holds a number in range (else None)."""
        if not self.validate_on_submit():
            return None
        days = int(self.days.data)
        return days if 1 <= days <= MAX_REMINDER_DAYS else None
