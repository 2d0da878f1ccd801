"""The EHF validator itself: the official examples pass, broken copies fail by rule id.

The official rule files and examples live in ../shared/fixtures/peppol (not in this
repository); without them these tests skip.
"""

import re

import pytest

from crm.fees.ehf_validation import compile_schematron, validate_ehf
from tests.conftest import SHARED

PEPPOL = SHARED / "fixtures" / "peppol"

needs_rules = pytest.mark.skipif(
    not (PEPPOL / "PEPPOL-EN16931-UBL.sch").is_file(),
    reason="the official Peppol rule files (../shared/fixtures/peppol) are not here",
)
pytest.importorskip("saxonche")


def example(name: str) -> str:
    return (PEPPOL / name).read_text(encoding="utf-8")


@needs_rules
@pytest.mark.parametrize(
    "name",
    [
        "Norwegian-example-1.xml",
        "base-example.xml",
        "vat-category-O.xml",
        "base-creditnote-correction.xml",
    ],
)
def test_official_examples_pass_schema_and_every_rule(name):
    report = validate_ehf(example(name), PEPPOL)

    assert report.rules_checked == ("CEN-EN16931-UBL.sch", "PEPPOL-EN16931-UBL.sch")
    assert report.valid, report.summary()


@needs_rules
def test_warnings_are_reported_without_failing_the_document():
    # The Norwegian example carries a schemeID the EN 16931 rules advise against.
    report = validate_ehf(example("Norwegian-example-1.xml"), PEPPOL)

    assert report.valid
    assert "UBL-CR-679" in {finding.rule for finding in report.warnings}


@needs_rules
def test_no_buyer_reference_nor_order_reference_fails_peppol_r003():
    broken = re.sub(
        r"<cbc:BuyerReference>.*?</cbc:BuyerReference>", "", example("Norwegian-example-1.xml")
    )
    broken = re.sub(r"<cac:OrderReference>.*?</cac:OrderReference>", "", broken, flags=re.S)

    report = validate_ehf(broken, PEPPOL)

    assert not report.valid
    assert report.failed_rules == {"PEPPOL-EN16931-R003"}


@needs_rules
def test_a_payable_amount_that_does_not_add_up_fails_br_co_16():
    broken = re.sub(
        r"(<cbc:PayableAmount[^>]*>)[^<]*", r"\g<1>1.00", example("Norwegian-example-1.xml")
    )

    report = validate_ehf(broken, PEPPOL)

    assert report.failed_rules == {"BR-CO-16"}


@needs_rules
def test_a_norwegian_seller_vat_number_with_a_wrong_check_digit_fails_no_r_001():
    broken = example("Norwegian-example-1.xml").replace("NO123456785MVA", "NO123456786MVA")

    assert validate_ehf(broken, PEPPOL).failed_rules == {"NO-R-001"}


@needs_rules
def test_a_norwegian_seller_without_foretaksregisteret_gets_warning_no_r_002():
    broken = example("Norwegian-example-1.xml").replace(
        "<cbc:CompanyID>Foretaksregisteret</cbc:CompanyID>", "<cbc:CompanyID>AS</cbc:CompanyID>"
    )

    report = validate_ehf(broken, PEPPOL)

    assert report.valid
    assert "NO-R-002" in {finding.rule for finding in report.warnings}


@needs_rules
def test_an_element_out_of_schema_order_fails_the_ubl_schema():
    broken = example("base-example.xml").replace(
        "<cbc:IssueDate>", "<cbc:Note>x</cbc:Note><cbc:IssueDate>", 1
    )

    report = validate_ehf(broken, PEPPOL)

    assert "XSD" in report.failed_rules


def test_without_rule_files_only_the_schema_is_checked():
    document = (
        '<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2" '
        'xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">'
        "<cbc:ID>1</cbc:ID></Invoice>"
    )

    report = validate_ehf(document, rules_dir=None)

    assert report.rules_checked == ()
    assert report.failed_rules == {"XSD"}  # IssueDate and more are missing


def test_text_that_is_not_xml_is_refused_not_raised():
    report = validate_ehf(b"<Invoice", rules_dir=None)

    assert not report.valid
    assert report.failed_rules == {"XML"}


def test_only_the_first_matching_rule_of_a_pattern_checks_a_node():
    # ISO Schematron: a node is checked by at most one rule of each pattern.
    schema = b"""<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">
      <pattern>
        <rule context="item[@special]"><assert id="S" flag="fatal" test="false()">s</assert></rule>
        <rule context="item"><assert id="G" flag="fatal" test="false()">g</assert></rule>
      </pattern>
    </schema>"""
    from saxonche import PySaxonProcessor

    processor = PySaxonProcessor(license=False)
    executable = processor.new_xslt30_processor().compile_stylesheet(
        stylesheet_text=compile_schematron(schema).decode()
    )
    node = processor.parse_xml(xml_text='<list><item special="1"/><item/></list>')
    executable.set_global_context_item(xdm_item=node)
    svrl = executable.apply_templates_returning_string(xdm_value=node)

    assert re.findall(r'id="(\w)"', svrl) == ["S", "G"]
