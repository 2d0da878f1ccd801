"""Normalising email addresses: email-validator's rules, the check of a domain done once."""

import pytest

from crm.members import normalize
from crm.members.normalize import normalize_email


def test_a_domain_is_checked_once_for_many_addresses():
    normalize._checked_domain_name.cache_clear()
    assert normalize_email("Kari.Nordmann@example.no") == "kari.nordmann@example.no"
    assert normalize_email("ola@example.no") == "ola@example.no"
    assert normalize_email(" per@EXAMPLE.no ") == "per@example.no"
    info = normalize._checked_domain_name.cache_info()
    assert (info.misses, info.hits) == (2, 1)  # example.no; EXAMPLE.no is its own entry


def test_internationalised_domains_are_normalised_as_before():
    assert normalize_email("kari@ØRSTA.no") == "kari@ørsta.no"
    assert normalize_email("kari@ørsta.no") == "kari@ørsta.no"


@pytest.mark.parametrize(
    "address",
    ["kari@exa_mple.no", "kari@-example.no", "kari@example..no", "kari@example.test", "kari@"],
)
def test_a_bad_domain_is_refused_every_time(address):
    for _ in range(2):
        with pytest.raises(ValueError):
            normalize_email(address)


def test_each_check_gets_its_own_answer():
    checks = normalize._email_checks
    first = checks.validate_email_domain_name("example.no")
    first["domain"] = "changed.no"
    assert checks.validate_email_domain_name("example.no")["domain"] == "example.no"
