"""Email and Brazilian phone rules."""

from __future__ import annotations

import pytest

from domain.contact import normalise_email, normalise_landline, normalise_mobile_phone
from domain.values import (
    INVALID_EMAIL,
    INVALID_PHONE,
    NOT_LANDLINE,
    NOT_MOBILE,
    TOO_LONG,
    InvalidValue,
)


def _code(normalise: object, raw: str) -> str:
    assert callable(normalise)
    with pytest.raises(InvalidValue) as caught:
        normalise(raw)
    return caught.value.code


# --- email -------------------------------------------------------------------------------------


def test_an_email_is_trimmed_and_lower_cased() -> None:
    assert normalise_email("  Maria@Example.COM ") == "maria@example.com"


def test_an_email_is_stored_in_unicode_nfc() -> None:
    decomposed = "jose\u0301@exemplo.com.br"
    assert normalise_email(decomposed) == "jos\u00e9@exemplo.com.br"


def test_non_ascii_capitals_in_an_email_are_lower_cased() -> None:
    assert normalise_email("JOSÉ@EXEMPLO.COM.BR") == "josé@exemplo.com.br"


def test_the_punycode_and_unicode_spellings_of_a_domain_give_the_same_email() -> None:
    assert normalise_email("ana@xn--mnchen-3ya.de") == normalise_email("Ana@MÜNCHEN.de")


def test_an_email_of_exactly_254_characters_is_accepted() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert len(email) == 254
    assert normalise_email(email) == email


def test_an_email_over_254_characters_is_rejected_as_too_long() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 58 + ".com"
    assert _code(normalise_email, email) == TOO_LONG


def test_the_length_limit_applies_after_trimming() -> None:
    email = "a" * 64 + "@" + "b" * 63 + "." + "c" * 63 + "." + "d" * 57 + ".com"
    assert normalise_email(f"   {email}   ") == email


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "maria",
        "maria@",
        "@example.com",
        "maria@example",
        "ma ria@example.com",
        "maria..silva@example.com",
        "Maria <maria@example.com>",
        "maria@example.com.",
        "maria@[127.0.0.1]",
        "maria@exa\x00mple.com",
    ],
)
def test_an_email_with_invalid_syntax_is_rejected(raw: str) -> None:
    assert _code(normalise_email, raw) == INVALID_EMAIL


def test_an_invalid_email_explains_what_is_wrong() -> None:
    with pytest.raises(InvalidValue) as caught:
        normalise_email("maria@example")
    assert "period" in caught.value.message


# --- mobile phone ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "(11) 91234-5678",
        "11912345678",
        "+55 11 91234-5678",
        "+5511912345678",
        "+55 (11) 9 1234-5678",
        "11 9 1234 5678",
        "011 91234-5678",
        "  (11) 91234-5678  ",
    ],
)
def test_a_brazilian_mobile_number_is_stored_as_e164(raw: str) -> None:
    assert normalise_mobile_phone(raw) == "+5511912345678"


def test_mobile_numbers_from_other_area_codes_are_accepted() -> None:
    assert normalise_mobile_phone("(61) 99876-5432") == "+5561998765432"


@pytest.mark.parametrize(
    "raw",
    [
        "(11) 3123-4567",  # a landline
        "(11) 7123-4567",  # an old 8-digit range the metadata still calls mobile
    ],
)
def test_a_number_that_is_not_a_nine_digit_mobile_is_rejected_as_not_mobile(raw: str) -> None:
    assert _code(normalise_mobile_phone, raw) == NOT_MOBILE


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "91234-5678",  # no area code
        "(11) 91234-567",
        "(11) 912345-6789",
        "(20) 91234-5678",  # no such area code
        "(11) 81234-5678",
        "+1 650 253 0000",  # valid, but American
        "+351 912 345 678",  # valid, but Portuguese
        "(11) 9TAXI-CABB",  # phonenumbers would read the letters as keypad digits
        "(11) 91234-5678 ext 3",
        "tel:+55-11-91234-5678",
        "(11) 91234-5678 abc",
    ],
)
def test_something_that_is_not_a_valid_brazilian_number_is_rejected_as_invalid_phone(
    raw: str,
) -> None:
    assert _code(normalise_mobile_phone, raw) == INVALID_PHONE


# --- landline ----------------------------------------------------------------------------------


@pytest.mark.parametrize("raw", ["(11) 3123-4567", "1131234567", "+55 11 3123-4567"])
def test_a_brazilian_landline_is_stored_as_e164(raw: str) -> None:
    assert normalise_landline(raw) == "+551131234567"


@pytest.mark.parametrize(
    "raw",
    [
        "(11) 91234-5678",  # a mobile
        "0800 123 4567",  # toll free
        "4004-1234",  # a nationwide shared-cost number
    ],
)
def test_a_valid_number_that_is_not_a_landline_is_rejected_as_not_landline(raw: str) -> None:
    assert _code(normalise_landline, raw) == NOT_LANDLINE


@pytest.mark.parametrize("raw", ["3123-4567", "(11) 1234-5678", "+1 650 253 0000", "abc"])
def test_an_invalid_landline_is_rejected_as_invalid_phone(raw: str) -> None:
    assert _code(normalise_landline, raw) == INVALID_PHONE
