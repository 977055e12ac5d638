"""Email and Brazilian phone normalisation."""

from __future__ import annotations

import re
import unicodedata

import email_validator
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

# Fast paths. Parsing is most of what email-validator and phonenumbers cost (25-30 us a
# value, a third of a signup's validation), yet nearly everyone types one of a few plain
# spellings. For those, the outcome is decided here with the libraries' own data (their
# special-use domain list, their numbering plan) without the parse; anything else, and every
# rejection, goes through the libraries as before, so their messages stay. A property test
# (tests/unit/test_fast_paths.py) shows the two agree on generated inputs.

# Lower-case ASCII dot-atoms of the commonest characters, a domain of LDH labels, a
# letters-only top-level domain.
_PLAIN_EMAIL = re.compile(
    r"[a-z0-9_+-]+(?:\.[a-z0-9_+-]+)*@((?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63})"
)
_LOCAL_PART_MAX_LENGTH = 64
_LABEL_MAX_LENGTH = 63
# "(11) 91234-5678", "11 91234-5678", "11912345678", "+55 11 91234-5678" and the like. No
# trunk prefix or carrier code (a leading 0): phonenumbers has rules for those.
_PLAIN_PHONE = re.compile(
    r"(?:\+55 ?)?(?:\(([1-9][1-9])\) ?|([1-9][1-9]) ?)(9?[0-9]{4})[ -]?([0-9]{4})"
)


def _plain_email(email: str) -> bool:
    """Whether email-validator would accept this trimmed, lower-cased address unchanged."""
    match = _PLAIN_EMAIL.fullmatch(email)
    if match is None or email.index("@") > _LOCAL_PART_MAX_LENGTH:
        return False
    domain = match.group(1)
    # "ab--" labels are reserved (RFC 5890): left to the library, as are over-long labels.
    if "--" in domain or any(len(label) > _LABEL_MAX_LENGTH for label in domain.split(".")):
        return False
    # Read at call time: the library's own list, should anyone extend it.
    return not any(
        domain == special or domain.endswith("." + special)
        for special in email_validator.SPECIAL_USE_DOMAIN_NAMES
    )


def _plain_national_number(raw: str) -> str | None:
    """The national significant number of a plainly spelled Brazilian number."""
    match = _PLAIN_PHONE.fullmatch(raw.strip())
    if match is None:
        return None
    area_in_brackets, area, first, last = match.groups()
    return str(area_in_brackets or area) + first + last


_Description = tuple[frozenset[int], "re.Pattern[str]"] | None


class _NumberingPlan:
    """phonenumbers' typing of a national number (its ``_number_type_helper``, the same
    descriptions in the same order), on its own metadata for Brazil, with the patterns
    compiled once: the library looks each pattern up again and walks eight descriptions in
    Python for every number, a third of a signup's validation."""

    _SPECIAL = (
        (PhoneNumberType.PREMIUM_RATE, "premium_rate"),
        (PhoneNumberType.TOLL_FREE, "toll_free"),
        (PhoneNumberType.SHARED_COST, "shared_cost"),
        (PhoneNumberType.VOIP, "voip"),
        (PhoneNumberType.PERSONAL_NUMBER, "personal_number"),
        (PhoneNumberType.PAGER, "pager"),
        (PhoneNumberType.UAN, "uan"),
        (PhoneNumberType.VOICEMAIL, "voicemail"),
    )

    def __init__(self, region: str) -> None:
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        assert metadata is not None, region
        self._general = _description(metadata.general_desc)
        self._special = [
            (kind, found)
            for kind, name in self._SPECIAL
            if (found := _description(getattr(metadata, name))) is not None
        ]
        self._fixed_line = _description(metadata.fixed_line)
        self._mobile = _description(metadata.mobile)
        self._same_patterns = bool(metadata.same_mobile_and_fixed_line_pattern)

    def type_of(self, national: str) -> int:
        if not _matches(national, self._general):
            return PhoneNumberType.UNKNOWN
        for kind, description in self._special:
            if _matches(national, description):
                return kind
        if _matches(national, self._fixed_line):
            if self._same_patterns or _matches(national, self._mobile):
                return PhoneNumberType.FIXED_LINE_OR_MOBILE
            return PhoneNumberType.FIXED_LINE
        if not self._same_patterns and _matches(national, self._mobile):
            return PhoneNumberType.MOBILE
        return PhoneNumberType.UNKNOWN


def _description(desc: phonenumbers.PhoneNumberDesc | None) -> _Description:
    if desc is None or not desc.national_number_pattern:
        return None
    return frozenset(desc.possible_length or ()), re.compile(desc.national_number_pattern)


def _matches(national: str, description: _Description) -> bool:
    if description is None:
        return False
    lengths, pattern = description
    if lengths and len(national) not in lengths:
        return False
    return pattern.fullmatch(national) is not None


_BRAZIL = _NumberingPlan("BR")


def _plain_phone(raw: str, types: frozenset[int], length: int) -> str | None:
    """E.164 of a plainly spelled number that phonenumbers types as one of ``types``."""
    national = _plain_national_number(raw)
    if national is None or len(national) != length:
        return None
    # An invalid number is UNKNOWN, so this is also phonenumbers' validity check.
    if _BRAZIL.type_of(national) not in types:
        return None
    return "+55" + national


def _plain_mobile(raw: str) -> str | None:
    # Area code + 9 digits starting with 9, the rule of _is_mobile below.
    if (found := _plain_phone(raw, _MOBILE_TYPES, 11)) is not None and found[5] == "9":
        return found
    return None


def _plain_landline(raw: str) -> str | None:
    return _plain_phone(raw, _LANDLINE_TYPES, 10)


def normalise_email(raw: str) -> str:
    """Return the address trimmed, NFC-normalised and lower-cased, after a syntax check."""
    email = unicodedata.normalize("NFC", raw.strip()).lower()
    if len(email) > EMAIL_MAX_LENGTH:
        raise InvalidValue(TOO_LONG, f"Email must be at most {EMAIL_MAX_LENGTH} characters")
    if _plain_email(email):
        return email
    return _email_by_library(email)


def _email_by_library(email: str) -> str:
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
    return _plain_mobile(raw) or _mobile_by_library(raw)


def _mobile_by_library(raw: str) -> str:
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
    return _plain_landline(raw) or _landline_by_library(raw)


def _landline_by_library(raw: str) -> str:
    number = _parse_brazilian(raw)
    if number is None:
        raise InvalidValue(INVALID_PHONE, "Phone is not a valid Brazilian phone number")
    national = phonenumbers.national_significant_number(number)
    if phonenumbers.number_type(number) not in _LANDLINE_TYPES or len(national) != 10:
        raise InvalidValue(NOT_LANDLINE, "Phone must be a Brazilian landline number")
    return _e164(number)
