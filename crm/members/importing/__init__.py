"""Company import: a CSV or Brønnøysund JSON file becomes an import plan, then one transaction.

`read_file` turns the bytes into records with line numbers (nothing touches the database),
`plan_import` matches them to companies by orgnr and says, row by row, what would be
created, updated (field by field) or left alone, and what is wrong. `apply_plan` writes a
plan only when it has no errors at all: an import is all or nothing.

CSV columns (header row; `;`, `,` or tab; UTF-8 with or without BOM, or Windows-1252):
orgnr (required), name, org_form, nace_code, nace_text, employees, street_address,
postal_code, postal_place, municipality_number, municipality_name, website,
membership_status, member_since, resigned_on, notes. An empty cell leaves the stored value
as it is.

The package's modules: `reading` (bytes to records, by content), `csv_rows` and `brreg`
(the two formats), `fields` (single values), `records` (what an import may set and the
plan's data), `planning` (plan and apply), `uploads` (files kept between preview and
confirmation), `messages` (translatable messages).
"""

from crm.members.forms import ORG_FORMS
from crm.members.importing.fields import MAX_EMPLOYEES
from crm.members.importing.messages import N_, Message
from crm.members.importing.planning import (
    apply_plan,
    name_key,
    plan_bytes,
    plan_import,
    register_state,
)
from crm.members.importing.reading import read_file
from crm.members.importing.records import (
    CSV_COLUMNS,
    IMPORT_FIELDS,
    ImportPlan,
    ImportRejected,
    Issue,
    ParsedFile,
    PlanRow,
    Record,
    display_value,
)
from crm.members.importing.uploads import (
    UPLOAD_MAX_AGE,
    UPLOAD_TOKEN,
    clean_filename,
    discard_upload,
    load_plan,
    load_upload,
    save_plan,
    save_upload,
)

__all__ = [
    "CSV_COLUMNS",
    "IMPORT_FIELDS",
    "MAX_EMPLOYEES",
    "N_",
    "ORG_FORMS",
    "UPLOAD_MAX_AGE",
    "UPLOAD_TOKEN",
    "ImportPlan",
    "ImportRejected",
    "Issue",
    "Message",
    "ParsedFile",
    "PlanRow",
    "Record",
    "apply_plan",
    "clean_filename",
    "discard_upload",
    "display_value",
    "load_plan",
    "load_upload",
    "name_key",
    "plan_bytes",
    "plan_import",
    "read_file",
    "register_state",
    "save_plan",
    "save_upload",
]
