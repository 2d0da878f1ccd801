"""KID numbers: check digits (MOD10 by default, MOD11 selectable), generation, uniqueness."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from stdnum import luhn
from stdnum.no import kontonr

from crm.extensions import db
from crm.fees import kid as kidlib
from crm.fees.models import FeeSettings
from crm.fees.services import allocate_number


def test_mod10_kid_is_the_number_padded_with_a_luhn_check_digit():
    assert kidlib.make_kid(1001, 10) == "000001001" + luhn.calc_check_digit("000001001")
    assert kidlib.is_valid(kidlib.make_kid(1001, 10))
    assert luhn.is_valid(kidlib.make_kid(1001, 10))


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=10**8, max_value=10**10 - 1))
def test_mod11_agrees_with_norwegian_account_numbers(base):
    # Account numbers carry the same MOD11 check (weights 2..7 from the right), so
    # stdnum's account check is an independent witness for ours.
    base = f"{base:010d}"
    digit = kidlib.mod11_check_digit(base)
    if base.startswith("0000"):
        return  # stdnum checks those short account numbers differently
    assert kontonr.is_valid(base + digit) is (digit != "-")
    for account in ("86011117947", "12345678903"):
        assert kidlib.is_valid(account, kidlib.MOD11)


def test_mod11_numbers_that_would_need_a_dash_are_skipped():
    dash_bases = [n for n in range(1, 200) if kidlib.mod11_check_digit(f"{n:09d}") == "-"]
    assert dash_bases, "some bases need the '-' check digit"
    number = dash_bases[0]
    assert kidlib.make_kid(number, 10, kidlib.MOD11) is None
    skipped_to, kid = kidlib.next_kid(number, 10, kidlib.MOD11)
    assert skipped_to == number + 1 and kid.isdigit()


def test_invalid_kids_are_recognised():
    good = kidlib.make_kid(4321, 8)
    assert kidlib.is_valid(good)
    assert not kidlib.is_valid(good[:-1] + str((int(good[-1]) + 1) % 10))
    for bad in (None, "", "1", "12a4", " 123", "١٢٣٤", "9" * 26):
        assert not kidlib.is_valid(bad)


def test_a_number_too_long_for_the_kid_is_refused():
    with pytest.raises(kidlib.KidError):
        kidlib.make_kid(10**9, 10)


@settings(max_examples=200, deadline=None)
@given(
    start=st.integers(min_value=0, max_value=10**6),
    count=st.integers(min_value=1, max_value=300),
    length=st.integers(min_value=8, max_value=25),
    scheme=st.sampled_from(kidlib.SCHEMES),
)
def test_every_generated_kid_passes_its_check_and_is_unique(app, start, count, length, scheme):
    # Unsaved settings: taking a number writes the counter with a plain UPDATE (not an
    # audited change), which needs the app's database even when it finds no row.
    settings_ = FeeSettings(next_invoice_number=start, kid_length=length, kid_scheme=scheme)
    numbers, kids = [], []
    with app.app_context():
        for _ in range(count):
            number, kid = allocate_number(settings_)
            numbers.append(number)
            kids.append(kid)
        db.session.rollback()
    assert all(kidlib.is_valid(kid, scheme) for kid in kids)
    assert all(len(kid) == length and kid.isdigit() for kid in kids)
    assert len(set(kids)) == count and len(set(numbers)) == count
    assert numbers == sorted(numbers) and settings_.next_invoice_number == numbers[-1] + 1
    if scheme == kidlib.MOD10:
        assert all(luhn.is_valid(kid) for kid in kids)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="0123456789", min_size=2, max_size=25), st.sampled_from(kidlib.SCHEMES))
def test_validation_accepts_exactly_the_kids_with_the_right_check_digit(kid, scheme):
    expected = kidlib.check_digit(kid[:-1], scheme) == kid[-1]
    assert kidlib.is_valid(kid, scheme) is expected
