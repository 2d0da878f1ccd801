"""Form fields shared by every area."""

from flask_babel import lazy_gettext as _l
from wtforms import IntegerField


class WholeNumberField(IntegerField):
    """IntegerField that refuses absurdly long numbers before any validator sees them.

    WTForms' NumberRange turns the value into a float, which overflows (an error, not
    a message) for numbers of some hundred digits.
    """

    def process_formdata(self, valuelist):
        if valuelist and len(valuelist[0].strip()) > 15:
            self.data = None
            raise ValueError(_l("Not a valid number."))
        super().process_formdata(valuelist)
