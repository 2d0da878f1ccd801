"""The base form and form fields shared by every area."""

from flask_babel import lazy_gettext as _l
from flask_wtf import FlaskForm
from wtforms import FieldList, FormField, IntegerField, StringField
from wtforms import Form as WtForm
from wtforms.validators import ValidationError


def refuse_unstorable_text(form, field) -> None:
    """No NUL byte in any value: PostgreSQL cannot store one in text (a 500 otherwise),
    and no person types one. Checked on what was sent, whatever the field makes of it."""
    for value in field.raw_data or ():
        if isinstance(value, str) and "\x00" in value:
            raise ValidationError(_l("Contains a character that cannot be stored (NUL)."))


def blank_to_empty(value):
    """Whitespace only (spaces, line breaks) is nothing.

    `Optional()` lets such a value through without touching `.data`, so forty line
    breaks would otherwise be saved as an account number.
    """
    if isinstance(value, str) and not value.strip():
        return ""
    return value


class _StorableMeta:
    """Every field first refuses values that cannot be stored; every text field turns a
    blank value into an empty one. Areas declare their fields as usual."""

    def bind_field(self, form, unbound_field, options):
        field_class = unbound_field.field_class
        if issubclass(field_class, FieldList | FormField):
            return super().bind_field(form, unbound_field, options)  # subforms: SubForm
        args, kwargs = _storable_arguments(unbound_field)
        return field_class(
            *args,
            name=options["name"],
            _form=form,
            _prefix=options.get("prefix", ""),
            _translations=options.get("translations"),
            **kwargs,
        )


def _storable_arguments(unbound_field) -> tuple[tuple, dict]:
    """The field's arguments with the checks above added, worked out once per field of a
    form class (forms are built on every request). Tuples: fields share them."""
    arguments = unbound_field.__dict__.get("_storable_arguments")
    if arguments is None:
        # Every field takes its validators second (label, validators, …).
        args, kwargs = list(unbound_field.args), dict(unbound_field.kwargs)
        if len(args) > 1:
            args[1] = (refuse_unstorable_text, *(args[1] or ()))
        else:
            kwargs["validators"] = (refuse_unstorable_text, *(kwargs.get("validators") or ()))
        if issubclass(unbound_field.field_class, StringField):
            kwargs["filters"] = (blank_to_empty, *(kwargs.get("filters") or ()))
        arguments = unbound_field._storable_arguments = (tuple(args), kwargs)
    return arguments


class Form(FlaskForm):
    """Base of every form in Klynge (tests/test_garbage_stored_text.py checks)."""

    Meta = _StorableMeta


class SubForm(WtForm):
    """A form inside another (FormField): no CSRF token of its own, the same checks."""

    Meta = _StorableMeta


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
