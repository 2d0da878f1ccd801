"""The organisation settings form."""

from urllib.parse import urlsplit

from flask_babel import lazy_gettext as _l
from flask_wtf.file import FileField
from stdnum.no import orgnr
from wtforms import BooleanField, StringField, TextAreaField, ValidationError
from wtforms.validators import DataRequired, Length, Optional

from crm.forms import Form
from crm.members.forms import clean_text
from crm.subscriptions.forms import single_line, valid_email


def valid_orgnr(form, field) -> None:
    value = (field.data or "").replace(" ", "")
    if value and not orgnr.is_valid(value):
        raise ValidationError(_l("Not a valid organisation number."))
    field.data = value


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
    # The sender on invoices (and EHF): the register's data.
    orgnr = StringField(_l("Organisation number"), [Optional(), valid_orgnr])
    street_address = StringField(
        _l("Address"), [Optional(), Length(max=300), single_line], filters=[clean_text]
    )
    postal_code = StringField(
        _l("Postal code"), [Optional(), Length(max=10), single_line], filters=[clean_text]
    )
    postal_place = StringField(
        _l("Postal place"), [Optional(), Length(max=100), single_line], filters=[clean_text]
    )
    email = StringField(
        _l("Email for invoice questions"), [Optional(), Length(max=254), valid_email]
    )
