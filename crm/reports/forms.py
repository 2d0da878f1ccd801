"""The period picker of the results page (a GET form: the period is in the address)."""

from flask_babel import lazy_gettext as _l
from wtforms import DateField
from wtforms.validators import Optional

from crm.forms import Form


class PeriodForm(Form):
    class Meta:
        csrf = False  # a GET form that changes nothing

    start = DateField(_l("From"), validators=[Optional()])
    end = DateField(_l("To"), validators=[Optional()])

    def validate(self, extra_validators=None) -> bool:
        if not super().validate(extra_validators):
            return False
        if self.start.data and self.end.data and self.start.data > self.end.data:
            self.end.errors.append(_l("The end of the period is before its start."))
            return False
        return True
