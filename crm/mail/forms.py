"""Forms of the email log: buttons that change something carry a CSRF token."""

from flask_babel import lazy_gettext as _l
from wtforms import EmailField
from wtforms.validators import DataRequired, Email, Length

from crm.forms import Form


class ResendForm(Form):
    """Send a failed message again (no fields: the CSRF token is the point)."""


class LiftSuppressionForm(Form):
    """Take an address off the suppression list."""


class TestEmailForm(Form):
    address = EmailField(
        _l("Send to"),
        validators=[DataRequired(), Length(max=254), Email(check_deliverability=False)],
    )
