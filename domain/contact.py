"""Email and Brazilian phone normalisation."""

from __future__ import annotations

import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from domain.values import (
    INVALID_EMAIL,
    INVALID_PHONE,
    NOT_LANDLINE,
    NOT_MOBILE,
    TOO_LONG,
    InvalidValue,
)

EMAIL_MAX_LENGTH = 254

# phonenumbers is generous: it reads letters as keypad digits ("9TAXI-CABB"), extensions
# ("ext 3") and "tel:" URIs. Only what a person types for a Brazilian number gets through.
_PHONE_CHARS = re.compile(r"\+?[0-9\s().\-]+")

_MOBILE_TYPES = frozenset({PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE_OR_MOBILE})
_LANDLINE_TYPES = frozenset({PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE})


def normalise_email(raw: str) -> str:
    """Return the address trimmed, NFC-normalised and lower-cased, after a syntax check."""
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise InvalidValue(TOO_LONG, f"Email must be at most {EMAIL_MAX_LENGTH} characters")
    try:
        result = validate_email(email, check_deliverability=False)
    except EmailNotValidError as error:
        # The library's sentences are specific and client-friendly ("... should have a period").
        raise InvalidValue(INVALID_EMAIL, str(error).rstrip(".")) from None
    # The library turns "xn--" domains into Unicode; lower-case again so both spellings of
    # one mailbox end up identical, which the uniqueness rule depends on.
    return unicodedata.normalize("NFC", result.normalized.lower())


def _parse_brazilian(raw: str) -> phonenumbers.PhoneNumber | None:
    if not _PHONE_CHARS.fullmatch(raw.strip()):
        return None
    try:
        number = phonenumbers.parse(raw, "BR")
    except phonenumbers.NumberParseException:
        return None
    if number.country_code != 55 or not phonenumbers.is_valid_number(number):
        return None
    return number


def _e164(number: phonenumbers.PhoneNumber) -> str:
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def _is_mobile(number: phonenumbers.PhoneNumber) -> bool:
    national = phonenumbers.national_significant_number(number)
    # The metadata still types some old 8-digit ranges ("(11) 7123-4567") as MOBILE; the
    # form's rule is the current plan: area code + 9 digits starting with 9.
    return (
        phonenumbers.number_type(number) in _MOBILE_TYPES
        and len(national) == 11
        and national[2] == "9"
    )


def normalise_mobile_phone(raw: str) -> str:
    """Return a Brazilian mobile number as E.164 (``+5511912345678``)."""
    number = _parse_brazilian(raw)
    if number is None:
        raise InvalidValue(INVALID_PHONE, "Mobile phone is not a valid Brazilian phone number")
    if not _is_mobile(number):
        raise InvalidValue(
            NOT_MOBILE, "Mobile phone must be an area code followed by 9 digits starting with 9"
        )
    return _e164(number)


def normalise_landline(raw: str) -> str:
    """Return a Brazilian fixed-line number as E.164 (``+551131234567``)."""
    number = _parse_brazilian(raw)
    if number is None:
        raise InvalidValue(INVALID_PHONE, "Phone is not a valid Brazilian phone number")
    national = phonenumbers.national_significant_number(number)
    if phonenumbers.number_type(number) not in _LANDLINE_TYPES or len(national) != 10:
        raise InvalidValue(NOT_LANDLINE, "Phone must be a Brazilian landline number")
    return _e164(number)
