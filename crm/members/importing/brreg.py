"""Brønnøysund Enhetsregisteret JSON: the bulk download's array or an API search page."""

import bisect
import json
import re
from typing import Any

from crm.members.importing.fields import clean_text, parse_date, place_name, set_employees
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import ParsedFile, Record
from crm.members.municipalities import CLUSTER_MUNICIPALITIES

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
    start = _skip_ws(text, 0)
    if isinstance(document, list):
        items = _array_items(text, start)
    elif isinstance(document, dict) and "organisasjonsnummer" in document:
        items = [(start, document)]  # a single unit, as the API's /enheter/{orgnr} returns
    elif isinstance(document, dict) and isinstance(document.get("_embedded"), dict):
        embedded = _member_offset(text, start, "_embedded")
        units = _member_offset(text, embedded, "enheter")
        if units is None or not isinstance(document["_embedded"].get("enheter"), list):
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
        parsed.records.append(_unit_record(line, index, unit))


def _text(unit: dict, key: str, record: Record) -> str | None:
    value = unit.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return clean_text(value)
    record.errors.append(Message(N_("%(field)s must be text."), field=key))
    return None


def _unit_record(line: int, index: int, unit: Any) -> Record:
    record = Record(line=line, orgnr="", values={}, unit=index)
    if not isinstance(unit, dict):
        record.errors.append(Message(N_("This entry is not a unit (a JSON object).")))
        return record
    orgnr = unit.get("organisasjonsnummer")
    if isinstance(orgnr, int) and not isinstance(orgnr, bool):
        orgnr = str(orgnr)
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
    if "antallAnsatte" in unit and unit["antallAnsatte"] is not None:
        set_employees(record, unit["antallAnsatte"])
    website = _text(unit, "hjemmeside", record)
    if website:  # the register rarely knows a website: never erase one staff entered
        values["website"] = website
    address = unit.get("forretningsadresse")
    if isinstance(address, dict):
        lines = address.get("adresse") or []
        if not isinstance(lines, list) or not all(isinstance(x, str) for x in lines):
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
    elif address is not None:
        record.errors.append(
            Message(N_("%(field)s must be an object."), field="forretningsadresse")
        )
    for key, target in (("konkurs", "bankrupt"), ("underAvvikling", "winding_up")):
        if key not in unit or unit[key] is None:
            continue
        if not isinstance(unit[key], bool):
            record.errors.append(Message(N_("%(field)s must be true or false."), field=key))
        else:
            values[target] = unit[key]
    if unit.get("slettedato") is not None:
        raw = unit["slettedato"]
        deleted = parse_date(raw) if isinstance(raw, str) else None
        if deleted is None:
            record.errors.append(
                Message(
                    N_("%(column)s: %(value)s is not a date (use dd.mm.yyyy or yyyy-mm-dd)."),
                    column="slettedato",
                    value=repr(str(raw)[:50]),
                )
            )
        else:
            values["deleted_in_registry_on"] = deleted
    return record


# --- planning ---------------------------------------------------------------------------
