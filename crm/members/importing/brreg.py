"""Brønnøysund Enhetsregisteret JSON: the bulk download's array or an API search page."""

import bisect
import json
import re
from typing import Any

from crm.members.importing.fields import clean_text, parse_date, place_name, set_employees
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import ParsedFile, Record
from crm.members.municipalities import CLUSTER_MUNICIPALITIES
from crm.numbers import is_digits

_WS = re.compile(r"[ \t\n\r]*")
_DECODER = json.JSONDecoder()


def _skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()


def _array_items(text: str, pos: int) -> list[tuple[int, Any]]:
    """(start offset, value) of each element of the JSON array starting at `pos`."""
    items = []
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "]":
        return items
    while True:
        value, end = _DECODER.raw_decode(text, pos)
        items.append((pos, value))
        pos = _skip_ws(text, end)
        if text[pos] == ",":
            pos = _skip_ws(text, pos + 1)
        else:
            return items


def _member_offset(text: str, pos: int, key: str) -> int | None:
    """Offset of the value of `key` in the JSON object starting at `pos`."""
    pos = _skip_ws(text, pos + 1)
    if text[pos] == "}":
        return None
    found = None
    while True:
        name, end = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, _skip_ws(text, end) + 1)  # past the colon
        if name == key:
            found = pos  # the last duplicate wins, as in json.loads
        _value, end = _DECODER.raw_decode(text, pos)
        pos = _skip_ws(text, end)
        if text[pos] != ",":
            return found
        pos = _skip_ws(text, pos + 1)


def read_json(text: str, parsed: ParsedFile) -> None:
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        parsed.error(
            Message(
                N_("The file is not valid JSON (column %(column)s: %(reason)s)."),
                column=exc.colno,
                reason=exc.msg,
            ),
            exc.lineno,
        )
        return
    except RecursionError:
        parsed.error(Message(N_("The JSON is nested too deeply to be Brønnøysund data.")))
        return
    except ValueError:  # a number of over 4,300 digits, which Python will not convert
        parsed.error(Message(N_("The JSON holds a number too long to be Brønnøysund data.")))
        return
    start = _skip_ws(text, 0)
    if isinstance(document, list):
        items = _array_items(text, start)
    elif isinstance(document, dict) and "organisasjonsnummer" in document:
        items = [(start, document)]  # a single unit, as the API's /enheter/{orgnr} returns
    elif isinstance(document, dict) and isinstance(document.get("_embedded"), dict):
        embedded = _member_offset(text, start, "_embedded")
        # /enheter pages list "enheter"; /underenheter pages (sub-units) "underenheter".
        key = "underenheter" if "underenheter" in document["_embedded"] else "enheter"
        units = _member_offset(text, embedded, key)
        if units is None or not isinstance(document["_embedded"].get(key), list):
            parsed.error(Message(N_("The JSON has no list of units (_embedded.enheter).")))
            return
        items = _array_items(text, units)
    elif isinstance(document, dict) and "page" in document:
        return  # an API search page without hits has no _embedded at all
    else:
        parsed.error(
            Message(
                N_(
                    "The JSON is not Brønnøysund data: expected a list of units or "
                    "an API search page."
                )
            )
        )
        return
    newlines = [m.start() for m in re.finditer("\n", text)]
    for index, (offset, unit) in enumerate(items, start=1):
        line = bisect.bisect_left(newlines, offset) + 1
        parsed.records.append(unit_record(line, index, unit))


def _text(unit: dict, key: str, record: Record) -> str | None:
    value = unit.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    record.errors.append(Message(N_("%(field)s must be text."), field=key))
    return None


# The register's fields (Enhetsregisteret API: /enheter and /underenheter, and their bulk
# downloads), and what the import does with each:
# - organisasjonsnummer, navn, organisasjonsform, naeringskode1, hjemmeside: stored.
# - antallAnsatte: stored; harRegistrertAntallAnsatte false without antallAnsatte means
#   the register knows of no employees: 0 (not "keep the old count", which kept a fee tier).
# - forretningsadresse (main units) or else beliggenhetsadresse (sub-units: the place the
#   business is run): street lines (null and empty lines skipped), postal code and place,
#   municipality. postadresse is a mailing address, not where the company is: ignored.
# - konkurs, underAvvikling, underTvangsavviklingEllerTvangsopplosning: flags.
# - slettedato, and a sub-unit's nedleggelsesdato (closed down): deleted from the register.
# - overordnetEnhet: the main unit of a sub-unit (or of a public body's unit): stored.
# - Ignored on purpose: naeringskode2/3, institusjonellSektorkode, registrertI*, dates of
#   registration/foundation/statutes, maalform, aktivitet, vedtektsfestetFormaal,
#   sisteInnsendteAarsregnskap, epostadresse/telefon/mobil (the register's contact data
#   are no basis for mailing a person), the konkursdato-style dates, _links.
_FLAGS = (
    ("konkurs", "bankrupt"),
    ("underAvvikling", "winding_up"),
    ("underTvangsavviklingEllerTvangsopplosning", "forced_dissolution"),
)


def unit_record(line: int, index: int, unit: Any) -> Record:
    record = Record(line=line, orgnr="", values={}, unit=index)
    if not isinstance(unit, dict):
        record.errors.append(Message(N_("This entry is not a unit (a JSON object).")))
        return record
    orgnr = unit.get("organisasjonsnummer")
    if isinstance(orgnr, int) and not isinstance(orgnr, bool) and 0 <= orgnr < 10**9:
        orgnr = f"{orgnr:09d}"
    if not isinstance(orgnr, str) or not orgnr.strip():
        record.errors.append(Message(N_("The unit has no organisasjonsnummer.")))
    else:
        record.orgnr = orgnr.strip()
    values = record.values
    name = _text(unit, "navn", record)
    if name:
        values["name"] = name
    for key, code_field, text_field in (
        ("organisasjonsform", "org_form_code", "org_form_name"),
        ("naeringskode1", "nace_code", "nace_text"),
    ):
        block = unit.get(key)
        if block is None:
            continue
        if not isinstance(block, dict):
            record.errors.append(Message(N_("%(field)s must be an object."), field=key))
            continue
        code = _text(block, "kode", record)
        description = _text(block, "beskrivelse", record)
        values[code_field] = code or ""
        values[text_field] = description or ""
    _read_employees(unit, record)
    website = _text(unit, "hjemmeside", record)
    if website:  # the register rarely knows a website: never erase one staff entered
        values["website"] = website
    _read_address(unit, record)
    for key, target in _FLAGS:
        if key not in unit or unit[key] is None:
            continue
        if not isinstance(unit[key], bool):
            record.errors.append(Message(N_("%(field)s must be true or false."), field=key))
        else:
            values[target] = unit[key]
    for key in ("slettedato", "nedleggelsesdato"):
        if unit.get(key) is None:
            continue
        raw = unit[key]
        deleted = parse_date(raw) if isinstance(raw, str) else None
        if deleted is None:
            record.errors.append(
                Message(
                    N_("%(column)s: %(value)s is not a date (use dd.mm.yyyy or yyyy-mm-dd)."),
                    column=key,
                    value=repr(str(raw)[:50]),
                )
            )
        else:
            values["deleted_in_registry_on"] = deleted
            break
    parent = unit.get("overordnetEnhet")
    if parent is not None:
        if isinstance(parent, str) and is_digits(parent.strip()) and len(parent.strip()) == 9:
            values["parent_orgnr"] = parent.strip()
        else:
            record.errors.append(
                Message(N_("%(field)s must be an organisation number."), field="overordnetEnhet")
            )
    return record


def _read_employees(unit: dict, record: Record) -> None:
    if unit.get("antallAnsatte") is not None:
        set_employees(record, unit["antallAnsatte"])
    elif unit.get("harRegistrertAntallAnsatte") is False:
        record.values["employees"] = 0


def _read_address(unit: dict, record: Record) -> None:
    key = "forretningsadresse" if unit.get("forretningsadresse") is not None else None
    if key is None and unit.get("beliggenhetsadresse") is not None:
        key = "beliggenhetsadresse"
    if key is None:
        return
    address = unit[key]
    if not isinstance(address, dict):
        record.errors.append(Message(N_("%(field)s must be an object."), field=key))
        return
    values = record.values
    lines = address.get("adresse") or []
    # The register writes unused address lines as null or "": skip them.
    if not isinstance(lines, list) or not all(isinstance(x, str | None) for x in lines):
        record.errors.append(Message(N_("%(field)s must be a list of text."), field="adresse"))
        lines = []
    values["street_address"] = ", ".join(clean_text(x) for x in lines if x and x.strip())
    values["postal_code"] = _text(address, "postnummer", record) or ""
    values["postal_place"] = place_name(_text(address, "poststed", record) or "")
    number = _text(address, "kommunenummer", record) or ""
    values["municipality_number"] = number
    values["municipality_name"] = CLUSTER_MUNICIPALITIES.get(number) or place_name(
        _text(address, "kommune", record) or ""
    )
