"""CPF and CNPJ rules, checked against an oracle written from the published algorithm."""

from __future__ import annotations

import string

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from domain.documents import normalise_cnpj, normalise_cpf
from domain.values import INVALID_CHECK_DIGITS, INVALID_FORMAT, REPEATED_DIGITS, InvalidValue
from tests.factories import (
    CNPJ_BODY_ALPHABET,
    cnpj_check_digits,
    cpf_check_digits,
    is_valid_cnpj,
    is_valid_cpf,
    make_cnpj,
    make_cpf,
    mask_cnpj,
    mask_cpf,
)


def _code(normalise: object, raw: str) -> str:
    assert callable(normalise)
    with pytest.raises(InvalidValue) as caught:
        normalise(raw)
    return caught.value.code


valid_cpfs = (
    st.text(string.digits, min_size=9, max_size=9)
    .map(lambda body: body + cpf_check_digits(body))
    .filter(lambda cpf: len(set(cpf)) > 1)
)


def _valid_cnpjs(alphabet: str) -> st.SearchStrategy[str]:
    return (
        st.text(alphabet, min_size=12, max_size=12)
        .map(lambda body: body + cnpj_check_digits(body))
        .filter(lambda cnpj: len(set(cnpj)) > 1)
    )


numeric_cnpjs = _valid_cnpjs(string.digits)
alphanumeric_cnpjs = _valid_cnpjs(CNPJ_BODY_ALPHABET)
any_cnpjs = st.one_of(numeric_cnpjs, alphanumeric_cnpjs)

# Beyond same-length look-alikes: whitespace, mask characters, Unicode digits and letters.
any_character = st.one_of(
    st.sampled_from(string.digits + string.ascii_letters + " ./-"),
    st.characters(codec="utf-8"),
)


# --- the oracle itself, against the examples the Receita Federal publishes -------------------


def test_the_test_oracle_reproduces_published_check_digits() -> None:
    assert cpf_check_digits("123456789") == "09"
    assert cnpj_check_digits("112223330001") == "81"
    assert cnpj_check_digits("12ABC34501DE") == "35"


# --- CPF ---------------------------------------------------------------------------------------


def test_a_masked_cpf_is_stored_as_eleven_digits() -> None:
    assert normalise_cpf("123.456.789-09") == "12345678909"


def test_a_bare_cpf_is_kept_as_is() -> None:
    assert normalise_cpf("12345678909") == "12345678909"


def test_surrounding_whitespace_around_a_cpf_is_ignored() -> None:
    assert normalise_cpf("  123.456.789-09\n") == "12345678909"


def test_a_partly_masked_cpf_is_accepted_when_the_separators_sit_in_their_places() -> None:
    assert normalise_cpf("123456789-09") == "12345678909"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1234567890",
        "123456789090",
        "191",  # validate_docbr would zero-pad this into a "valid" CPF
        "123.456.78909-",
        "12.3456.789-09",
        "123 456 789 09",
        "123.456.789/09",
        "1234567890a",
        "١٢٣٤٥٦٧٨٩٠٩",  # Arabic-Indic digits are digits to Python, not to the Receita
    ],
)
def test_a_cpf_with_the_wrong_shape_is_rejected_as_invalid_format(raw: str) -> None:
    assert _code(normalise_cpf, raw) == INVALID_FORMAT


@pytest.mark.parametrize("digit", string.digits)
def test_a_cpf_of_one_repeated_digit_is_rejected(digit: str) -> None:
    assert _code(normalise_cpf, digit * 11) == REPEATED_DIGITS
    assert _code(normalise_cpf, mask_cpf(digit * 11)) == REPEATED_DIGITS


def test_a_cpf_with_wrong_check_digits_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise_cpf("123.456.789-00")
    assert caught.value.code == INVALID_CHECK_DIGITS
    assert caught.value.message == "CPF check digits do not match"


@given(valid_cpfs)
def test_every_valid_cpf_is_accepted_masked_and_unmasked(cpf: str) -> None:
    assert normalise_cpf(cpf) == cpf
    assert normalise_cpf(mask_cpf(cpf)) == cpf


@given(valid_cpfs, st.integers(0, 10), any_character)
@example("12345678909", 0, "2")
def test_a_single_character_change_to_a_cpf_is_rejected_unless_it_forms_another_valid_cpf(
    cpf: str, position: int, replacement: str
) -> None:
    changed = cpf[:position] + replacement + cpf[position + 1 :]
    if changed == cpf:
        return
    if is_valid_cpf(changed):
        assert normalise_cpf(changed) == changed
        return
    code = _code(normalise_cpf, changed)
    if all(char in string.digits for char in changed) and len(set(changed)) > 1:
        assert code == INVALID_CHECK_DIGITS


@given(valid_cpfs, st.integers(9, 10), st.sampled_from(string.digits))
def test_changing_a_cpf_check_digit_is_always_rejected(
    cpf: str, position: int, replacement: str
) -> None:
    changed = cpf[:position] + replacement + cpf[position + 1 :]
    if changed != cpf:
        assert _code(normalise_cpf, changed) == INVALID_CHECK_DIGITS


def test_the_cpf_check_digits_cannot_catch_every_single_digit_change() -> None:
    # Remainders 10 and 0 both give check digit 0, so some first-digit changes go unseen:
    # both are genuinely valid CPFs, and rejecting either would turn away real people.
    assert normalise_cpf("44647219909") == "44647219909"
    assert normalise_cpf("34647219909") == "34647219909"


# --- CNPJ --------------------------------------------------------------------------------------


def test_a_masked_numeric_cnpj_is_stored_as_fourteen_digits() -> None:
    assert normalise_cnpj("11.222.333/0001-81") == "11222333000181"


def test_the_published_alphanumeric_cnpj_example_is_accepted() -> None:
    assert normalise_cnpj("12.ABC.345/01DE-35") == "12ABC34501DE35"
    assert normalise_cnpj("12ABC34501DE35") == "12ABC34501DE35"


def test_lower_case_letters_in_a_cnpj_are_accepted_and_upper_cased() -> None:
    assert normalise_cnpj("12.abc.345/01de-35") == "12ABC34501DE35"
    assert normalise_cnpj(" 12abc34501De35 ") == "12ABC34501DE35"


def test_a_non_ascii_letter_that_upper_cases_to_ascii_is_not_taken_for_it() -> None:
    body = "12IBC34501DE"
    valid = body + cnpj_check_digits(body)
    assert normalise_cnpj(valid) == valid
    assert _code(normalise_cnpj, valid.replace("I", "\u0131")) == INVALID_FORMAT


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "1122233300018",
        "112223330001811",
        "11.222.333/0001-8",
        "11222333000181\n1",
        "1.1222333000181",  # validate_docbr ignores where the dots are
        "11-222-333-0001-81",
        "12ABC34501DEAB",  # check digits are always numeric
        "12.ABÇ.345/01DE-35",
        "12ABC34501DE3\uff15",  # a full-width digit
    ],
)
def test_a_cnpj_with_the_wrong_shape_is_rejected_as_invalid_format(raw: str) -> None:
    assert _code(normalise_cnpj, raw) == INVALID_FORMAT


@pytest.mark.parametrize("digit", string.digits)
def test_a_cnpj_of_one_repeated_digit_is_rejected(digit: str) -> None:
    assert _code(normalise_cnpj, digit * 14) == REPEATED_DIGITS


def test_a_cnpj_with_wrong_check_digits_is_rejected_with_a_clear_message() -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise_cnpj("12.ABC.345/01DE-53")
    assert caught.value.code == INVALID_CHECK_DIGITS
    assert caught.value.message == "CNPJ check digits do not match"


@given(any_cnpjs, st.booleans())
def test_every_valid_cnpj_numeric_or_alphanumeric_is_accepted_masked_and_unmasked(
    cnpj: str, lower: bool
) -> None:
    typed = cnpj.lower() if lower else cnpj
    assert normalise_cnpj(typed) == cnpj
    assert normalise_cnpj(mask_cnpj(typed)) == cnpj


@given(any_cnpjs, st.integers(0, 13), any_character)
@example("12ABC34501DE35", 2, "b")
@example("12ABC34501DE35", 13, "5")
@example("00000000000191", 0, "\u00df")  # "ß".upper() is two letters long
def test_a_single_character_change_to_a_cnpj_is_rejected_unless_it_forms_another_valid_cnpj(
    cnpj: str, position: int, replacement: str
) -> None:
    changed = cnpj[:position] + replacement + cnpj[position + 1 :]
    if changed.upper() == cnpj:
        return
    if is_valid_cnpj(changed):
        assert normalise_cnpj(changed) == changed.upper()
        return
    code = _code(normalise_cnpj, changed)
    body, check = changed[:12], changed[12:]
    if all(c in string.digits for c in check) and is_valid_cnpj(body + cnpj_check_digits(body)):
        # Same shape as a valid CNPJ, so only the check digits can be what is wrong.
        assert code == INVALID_CHECK_DIGITS


@given(any_cnpjs, st.integers(12, 13), st.sampled_from(string.digits))
def test_changing_a_cnpj_check_digit_is_always_rejected(
    cnpj: str, position: int, replacement: str
) -> None:
    changed = cnpj[:position] + replacement + cnpj[position + 1 :]
    if changed != cnpj:
        assert _code(normalise_cnpj, changed) == INVALID_CHECK_DIGITS


def test_the_cnpj_check_digits_cannot_catch_a_change_worth_eleven() -> None:
    # "6" is worth 6 and "A" is worth 17: a difference of 11 vanishes modulo 11, so the
    # alphanumeric format cannot tell these apart. Both are valid by the Receita's rule.
    valid = make_cnpj(0, alphanumeric=True)
    assert valid[3] != "6"
    body = valid[:3] + "6" + valid[4:12]
    original = body + cnpj_check_digits(body)
    twin = original[:3] + "A" + original[4:]
    assert normalise_cnpj(original) == original
    assert normalise_cnpj(twin) == twin


# --- the factories the other test suites rely on -----------------------------------------------


def test_make_cpf_builds_distinct_valid_cpfs() -> None:
    cpfs = [make_cpf(n) for n in range(3000)]
    assert len(set(cpfs)) == len(cpfs)
    assert all(normalise_cpf(cpf) == cpf for cpf in cpfs)


@pytest.mark.parametrize("n", [0, 111_111_109, 111_111_110, 999_999_989])
def test_make_cpf_never_builds_a_repeated_digit_cpf(n: int) -> None:
    assert is_valid_cpf(make_cpf(n))


@pytest.mark.parametrize("alphanumeric", [False, True])
def test_make_cnpj_builds_distinct_valid_cnpjs(alphanumeric: bool) -> None:
    cnpjs = [make_cnpj(n, alphanumeric=alphanumeric) for n in range(3000)]
    assert len(set(cnpjs)) == len(cnpjs)
    assert all(normalise_cnpj(cnpj) == cnpj for cnpj in cnpjs)
    assert all(any(c.isalpha() for c in cnpj) == alphanumeric for cnpj in cnpjs)
