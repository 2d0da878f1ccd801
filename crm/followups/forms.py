"""Forms of the follow-ups area (Flask-WTF, CSRF)."""

from flask_babel import lazy_gettext as _l
from wtforms import BooleanField, DateField, SelectChoice, SelectField, StringField
from wtforms.validators import DataRequired, Length

from crm.followups.services import MAX_WHAT, assignable_users
from crm.forms import Form
from crm.members.forms import clean_text


def user_choices() -> list[SelectChoice]:
    return [SelectChoice(u.id, u.name or u.email) for u in assignable_users()]


class FollowUpForm(Form):
    what = StringField(
        _l("What is to be done"),
        validators=[DataRequired(), Length(max=MAX_WHAT)],
        filters=[clean_text],
    )
    due_on = DateField(_l("Due"), validators=[DataRequired()])
    assignee = SelectField(_l("Who"), coerce=int, validate_choice=True)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.assignee.choices = user_choices()


class DigestForm(Form):
    """Turn one's own morning digest on or off."""

    enabled = BooleanField(_l("Email me my due follow-ups every morning"))
