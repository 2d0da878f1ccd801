"""CSV files: header aliases, delimiter sniffing, one record per row."""

import csv
import io
import re

from crm.members.forms import ORG_FORMS
from crm.members.importing.fields import clean_text, parse_date, set_employees
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import (
    CSV_ALIASES,
    CSV_COLUMNS,
    MEMBERSHIP_ALIASES,
    ParsedFile,
    Record,
)


def _header_key(name: str) -> str:
    key = re.sub(r"[\s\-.]+", "_", name.strip().lower()).strip("_")
    return CSV_ALIASES.get(key, key)


def _sniff_delimiter(first_line: str) -> str:
    counts = {d: first_line.count(d) for d in (";", ",", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(text: str, parsed: ParsedFile) -> None:
    lines_before = 0
    first_line = text.split("\n", 1)[0].strip()
    sep_hint = re.fullmatch(r"sep=([;,\t|])", first_line)
    if sep_hint:  # Excel's "sep=;" first line names the delimiter
        delimiter = sep_hint.group(1)
        text = text.split("\n", 1)[1] if "\n" in text else ""
        lines_before = 1
    else:
        delimiter = _sniff_delimiter(first_line)
    parsed.delimiter = delimiter
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    header: list[str] | None = None
    previous_end = 0
    try:
        for cells in reader:
            line = lines_before + previous_end + 1
            previous_end = reader.line_num
            cells = [clean_text(c) for c in cells]
            if not any(cells):
                continue
            if header is None:
                header = [_header_key(c) for c in cells]
                if not _check_header(header, parsed, line):
                    return
                continue
            parsed.records.append(_csv_record(line, header, cells))
    except csv.Error as exc:
        parsed.error(
            Message(N_("The CSV is malformed: %(reason)s."), reason=str(exc)),
            lines_before + reader.line_num,
        )
    if header is None and not parsed.errors:
        parsed.error(Message(N_("The file is empty.")))


def _check_header(header: list[str], parsed: ParsedFile, line: int) -> bool:
    seen: set[str] = set()
    for name in header:
        if not name:
            continue
        if name in seen:
            parsed.error(Message(N_("The column %(column)s appears twice."), column=name), line)
        seen.add(name)
        if name not in CSV_COLUMNS:
            parsed.warning(
                Message(N_("The column %(column)s is not known and was ignored."), column=name),
                line,
            )
    if "orgnr" not in seen:
        parsed.error(
            Message(
                N_("The header row has no orgnr column. Columns found: %(columns)s."),
                columns=", ".join(h for h in header if h)[:300] or "—",
            ),
            line,
        )
    return not parsed.errors


def _csv_record(line: int, header: list[str], cells: list[str]) -> Record:
    record = Record(line=line, orgnr="", values={})
    if len(cells) > len(header) and any(cells[len(header) :]):
        record.errors.append(
            Message(
                N_("The row has %(cells)s fields but the header has %(columns)s."),
                cells=len(cells),
                columns=len(header),
            )
        )
    row = dict(zip(header, cells, strict=False))
    record.orgnr = row.get("orgnr", "")
    values = record.values
    for column in CSV_COLUMNS[1:]:
        raw = row.get(column, "")
        if not raw:
            continue  # an empty cell leaves the stored value as it is
        if column == "org_form":
            code = raw.upper()
            by_name = {v.casefold(): k for k, v in ORG_FORMS.items()}
            code = by_name.get(raw.casefold(), code)
            values["org_form_code"] = code
            if code in ORG_FORMS:
                values["org_form_name"] = ORG_FORMS[code]
        elif column == "employees":
            set_employees(record, raw)
        elif column == "membership_status":
            status = MEMBERSHIP_ALIASES.get(raw.casefold())
            if status is None:
                record.errors.append(
                    Message(
                        N_(
                            "Unknown membership status %(value)s: use prospect, member or resigned."
                        ),
                        value=repr(raw[:50]),
                    )
                )
            else:
                values["membership_status"] = status
        elif column in ("member_since", "resigned_on"):
            parsed_date = parse_date(raw)
            if parsed_date is None:
                record.errors.append(
                    Message(
                        N_("%(column)s: %(value)s is not a date (use dd.mm.yyyy or yyyy-mm-dd)."),
                        column=column,
                        value=repr(raw[:50]),
                    )
                )
            else:
                values[column] = parsed_date
        elif column == "municipality_number":
            if not re.fullmatch(r"\d{4}", raw):
                record.errors.append(
                    Message(
                        N_("municipality_number: %(value)s is not a 4-digit number."),
                        value=repr(raw[:50]),
                    )
                )
            else:
                values[column] = raw
        else:
            values[column] = raw
    return record
