"""Bytes to records: encoding, then CSV or Brønnøysund JSON by content."""

from crm.members.importing.brreg import read_json
from crm.members.importing.csv_rows import csv_rows, read_company_rows, xlsx_rows
from crm.members.importing.messages import N_, Message
from crm.members.importing.records import ParsedFile
from crm.text import CONTROL

# An XLSX workbook is a zip archive.
XLSX_MAGIC = b"PK\x03\x04"


def decode(data: bytes, parsed: ParsedFile) -> str | None:
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            parsed.encoding = "utf-16"
            return data.decode("utf-16")
        except UnicodeDecodeError:
            parsed.error(Message(N_("The file's character encoding could not be read.")))
            return None
    if b"\x00" in data:
        parsed.error(Message(N_("This is not a CSV or JSON file.")))
        return None
    try:
        parsed.encoding = "utf-8"
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            # Excel on Windows saves CSV as Windows-1252 unless told otherwise.
            text = data.decode("cp1252")
            parsed.encoding = "cp1252"
            parsed.warning(
                Message(N_("The file is not UTF-8; it was read as Windows-1252 (Excel)."))
            )
        except UnicodeDecodeError:
            parsed.error(
                Message(
                    N_("The file's character encoding is not UTF-8 or Windows-1252."),
                )
            )
            return None
    if CONTROL.search(text[:100_000]):
        parsed.error(Message(N_("This is not a CSV or JSON file.")))
        return None
    return text


def read_file(data: bytes) -> ParsedFile:
    """Records with line numbers from a CSV, XLSX or Brønnøysund JSON file, by content."""
    parsed = ParsedFile(source="")
    if not data.strip():
        parsed.error(Message(N_("The file is empty.")))
        return parsed
    if data.startswith(XLSX_MAGIC):
        parsed.source = "xlsx"
        read_company_rows(xlsx_rows(data, parsed), parsed)
        return _finish(parsed)
    text = decode(data, parsed)
    if text is None:
        return parsed
    start = text.lstrip()[:1]
    if start in ("[", "{"):
        parsed.source = "brreg"
        read_json(text, parsed)
    else:
        parsed.source = "csv"
        read_company_rows(csv_rows(text, parsed), parsed)
    return _finish(parsed)


def _finish(parsed: ParsedFile) -> ParsedFile:
    if not parsed.errors and not parsed.records:
        parsed.warning(Message(N_("The file has no companies.")))
    return parsed


# --- CSV --------------------------------------------------------------------------------
