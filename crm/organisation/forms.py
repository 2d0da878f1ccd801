"""The organisation settings form."""

from urllib.parse import urlsplit

from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from wtforms import BooleanField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length, Optional

from crm.forms import Form
from crm.members.forms import clean_text
from crm.subscriptions.forms import single_line, valid_email


def web_address(form, field) -> None:
    """An http(s) address with a host, nothing else (it becomes a link on public pages)."""
    if not field.data:
        return
    parts = urlsplit(field.data)
    if parts.scheme not in ("http", "https") or not parts.netloc or " " in field.data:
        raise ValidationError(_l("Enter a full web address starting with https://."))


class OrganisationForm(Form):
    name = StringField(
        _l("Name of the organisation"),
        [DataRequired(), Length(max=200), single_line],
        filters=[clean_text],
    )
    logo = FileField(_l("Logo"))
    remove_logo = BooleanField(_l("Remove the logo"))
    sender_name = StringField(
        _l("Sender name of emails"),
        [Optional(), Length(max=200), single_line],
        filters=[clean_text],
    )
    sender_email = StringField(
        _l("Sender address of emails"), [Optional(), Length(max=254), valid_email]
    )
    privacy_url = StringField(
        _l("Privacy policy (web address)"),
        [Optional(), Length(max=500), single_line, web_address],
        filters=[clean_text],
    )
    footer_text = TextAreaField(
        _l("Footer of emails and public pages"),
        [Optional(), Length(max=1000)],
        filters=[clean_text],
    )
