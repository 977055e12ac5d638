"""The ``POST /registrations`` body: parsed, checked and normalised in one pass.

``parse_registration_form`` reports every invalid field at once through ``InvalidRegistration``;
each ``FieldError`` names the field by dotted path (``address.cep``; ``""`` for the whole body).

Error codes (stable; clients may branch on them):

- ``wrong_type``: the JSON type is wrong (a number where a string is expected, a body or
  ``address`` that is not an object, ``accepted_terms`` that is not a boolean).
- ``required``: a required field is absent, ``null`` or blank.
- ``unknown_field``: a field that the form does not have, at the top level or in ``address``;
  ten are listed per object (names cut at 64 characters), then one entry for the object
  (``""`` or ``address``) says how many more there are.
- ``not_allowed``: ``cnpj`` given for a ``PF`` registration (it must be absent or ``null``).
- ``invalid_choice``: ``person_type`` is not ``PF``/``PJ``, or ``address.state`` is not a UF.
- ``too_short`` / ``too_long``: a text is outside its length range (counted after trimming);
  ``too_long`` also applies to an email over 254 characters.
- ``invalid_characters``: a text contains control characters, lone surrogates, or invisible
  format or separator characters (bidi overrides, zero-width characters, line and paragraph
  separators: Unicode categories Cf, Zl, Zp), which make a name display as another.
- ``invalid_format``: ``cpf``, ``cnpj`` or ``address.cep`` has the wrong length or characters.
- ``repeated_digits``: a CPF or CNPJ made of one repeated digit (``111.111.111-11``).
- ``invalid_check_digits``: a CPF or CNPJ whose check digits do not match.
- ``invalid_email``: ``email`` is not a syntactically valid address.
- ``invalid_phone``: not a valid Brazilian phone number at all.
- ``not_mobile``: ``mobile_phone`` is valid but not a mobile (area code + 9 digits, first 9).
- ``not_landline``: ``phone`` is valid but not a landline.
- ``mismatch``: ``email_confirmation`` differs from ``email`` after normalisation.
- ``must_be_true``: ``accepted_terms`` is ``false``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.address import Address, normalise_cep, normalise_state
from domain.contact import normalise_email, normalise_landline, normalise_mobile_phone
from domain.documents import normalise_cnpj, normalise_cpf
from domain.errors import FieldError, InvalidRegistration
from domain.values import (
    INVALID_CHARACTERS,
    INVALID_CHOICE,
    MISMATCH,
    MUST_BE_TRUE,
    NOT_ALLOWED,
    REQUIRED,
    TOO_LONG,
    TOO_SHORT,
    UNKNOWN_FIELD,
    WRONG_TYPE,
    InvalidValue,
)

PF = "PF"
PJ = "PJ"

_FIELDS = frozenset({
    "person_type", "cpf", "cnpj", "name", "mobile_phone", "phone", "email",
    "email_confirmation", "address", "accepted_terms",
})  # fmt: skip
_ADDRESS_FIELDS = frozenset(
    {"cep", "street", "number", "complement", "neighborhood", "city", "state"}
)


@dataclass(frozen=True, slots=True)
class RegistrationDetails:
    """What a registration records: the form minus confirmation and terms, normalised."""

    person_type: str
    cpf: str
    cnpj: str | None
    name: str
    mobile_phone: str
    phone: str | None
    email: str
    address: Address

    def to_dict(self) -> dict[str, object]:
        return {
            "person_type": self.person_type,
            "cpf": self.cpf,
            "cnpj": self.cnpj,
            "name": self.name,
            "mobile_phone": self.mobile_phone,
            "phone": self.phone,
            "email": self.email,
            "address": self.address.to_dict(),
        }


def _present(value: str | None) -> str:
    # Only reached once every required field was found valid, so None is a programming error.
    if value is None:
        raise RuntimeError("a required value is missing after validation")
    return value


# Unknown fields listed per object, then one entry counting the rest; and how much of an
# unknown field's name is repeated back.
MAX_UNKNOWN_LISTED = 10
MAX_NAME_SHOWN = 64


class _Reader:
    """Reads one JSON object, recording a FieldError per bad field instead of stopping."""

    def __init__(
        self, data: Mapping[object, object], prefix: str, errors: list[FieldError]
    ) -> None:
        self.data = data
        self.prefix = prefix
        self.errors = errors

    def fail(self, key: str, code: str, message: str) -> None:
        self.errors.append(FieldError(self.prefix + key, code, message))

    def reject_unknown(self, known: frozenset[str]) -> None:
        if known.issuperset(self.data):  # nearly every body: one pass in C
            return
        # Listed up to a few, names cut short: a 16 KiB body can hold thousands of keys, and
        # the answer (stored for Idempotency-Key retries) must stay small.
        unknown = [str(key) for key in self.data if key not in known]
        for key in unknown[:MAX_UNKNOWN_LISTED]:
            shown = key if len(key) <= MAX_NAME_SHOWN else key[:MAX_NAME_SHOWN] + "…"
            self.fail(shown, UNKNOWN_FIELD, f"Unknown field {self.prefix}{shown}")
        if len(unknown) > MAX_UNKNOWN_LISTED:
            more = len(unknown) - MAX_UNKNOWN_LISTED
            self.errors.append(
                FieldError(
                    self.prefix.rstrip("."),
                    UNKNOWN_FIELD,
                    f"{more} more unknown field(s) in {self.prefix.rstrip('.') or 'the body'}",
                )
            )

    def string(self, key: str, label: str, *, required: bool) -> str | None:
        """The raw string, or None when absent/null/blank (an error if it is required)."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail(key, REQUIRED, f"{label} is required")
            return None
        if not isinstance(value, str):
            self.fail(key, WRONG_TYPE, f"{label} must be a string")
            return None
        if not value.strip():
            if required:
                self.fail(key, REQUIRED, f"{label} is required")
            return None
        return value

    def normalised(
        self, key: str, label: str, normalise: Callable[[str], str], *, required: bool = True
    ) -> str | None:
        value = self.string(key, label, required=required)
        if value is None:
            return None
        try:
            return normalise(value)
        except InvalidValue as error:
            self.fail(key, error.code, error.message)
            return None

    def text(
        self, key: str, label: str, *, min_len: int = 1, max_len: int = 200, required: bool = True
    ) -> str | None:
        """Free text, trimmed and NFC-normalised so equal-looking strings are stored equal."""
        value = self.string(key, label, required=required)
        if value is None:
            return None
        text = unicodedata.normalize("NFC", value.strip())
        # PostgreSQL text rejects NUL and UTF-8 cannot encode lone surrogates.
        if has_control_characters(text):
            self.fail(key, INVALID_CHARACTERS, f"{label} contains control characters")
        elif has_invisible_characters(text):
            self.fail(
                key,
                INVALID_CHARACTERS,
                f"{label} contains invisible formatting characters (such as a bidi override"
                " or a zero-width space)",
            )
        elif len(text) < min_len:
            self.fail(key, TOO_SHORT, f"{label} must be at least {min_len} characters")
        elif len(text) > max_len:
            self.fail(key, TOO_LONG, f"{label} must be at most {max_len} characters")
        else:
            return text
        return None


# Unicode categories Cc (C0 and C1 controls) and Cs (surrogates), as one search in C instead
# of a category lookup per character.
_CONTROL_OR_SURROGATE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def has_control_characters(text: str) -> bool:
    """Whether ``text`` holds a character of category Cc or Cs."""
    return _CONTROL_OR_SURROGATE.search(text) is not None


# Format characters (bidi overrides, zero-width spaces and joiners, the BOM) and the line and
# paragraph separators: invisible, they let one name display as another or break a line in an
# export. None is in ASCII, so most texts are decided by one check in C.
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})


def has_invisible_characters(text: str) -> bool:
    """Whether ``text`` holds a character of category Cf, Zl or Zp."""
    if text.isascii():
        return False
    # Latin-1, where Portuguese names and streets lie (á, ç, õ), holds one: the soft hyphen.
    # Deciding them so costs a tenth of a category lookup per character.
    if max(text) <= "\xff":
        return "\xad" in text
    return any(unicodedata.category(c) in _INVISIBLE for c in text)


# Lengths of the free-text fields, after trimming: (shortest, longest).
NAME_LENGTH = (2, 200)
TEXT_LENGTH = (1, 200)
NUMBER_LENGTH = (1, 20)


def parse_registration_form(data: object) -> RegistrationDetails:
    """Validate and normalise a decoded JSON body; raise ``InvalidRegistration`` listing all."""
    if type(data) is dict:
        try:
            return _common_form(data)
        except (_Unusual, InvalidValue):
            pass  # the full pass decides, and names every field that is wrong
    return _every_field(data)


def _every_field(data: object) -> RegistrationDetails:
    """The full pass: each field read and checked on its own, every error recorded."""
    errors: list[FieldError] = []
    if not isinstance(data, Mapping):
        raise InvalidRegistration([FieldError("", WRONG_TYPE, "The body must be a JSON object")])
    form = _Reader(data, "", errors)
    form.reject_unknown(_FIELDS)

    person_type = _person_type(form)
    cpf = form.normalised("cpf", "CPF", normalise_cpf)
    cnpj = _cnpj(form, person_type)
    name = form.text("name", "Name", min_len=NAME_LENGTH[0], max_len=NAME_LENGTH[1])
    mobile_phone = form.normalised("mobile_phone", "Mobile phone", normalise_mobile_phone)
    phone = form.normalised("phone", "Phone", normalise_landline, required=False)
    email = form.normalised("email", "Email", normalise_email)
    _email_confirmation(form, email)
    address = _address(form)
    _accepted_terms(form)

    if errors:
        raise InvalidRegistration(errors)
    return RegistrationDetails(
        person_type=_present(person_type),
        cpf=_present(cpf),
        cnpj=cnpj,
        name=_present(name),
        mobile_phone=_present(mobile_phone),
        phone=phone,
        email=_present(email),
        address=_present_address(address),
    )


class _Unusual(Exception):
    """A value the common form's pass does not decide (wrong, or just spelled unusually)."""


def _common_form(data: dict[Any, Any]) -> RegistrationDetails:
    """The form as the full pass returns it, for a body every field of which is present (or
    absent where it may be), of its plain type and valid: nearly every signup. A third of the
    full pass's time went into its reader's bookkeeping, which only an error needs. Raises
    ``_Unusual`` or ``InvalidValue`` for anything else; the full pass then decides
    (``tests/unit/test_form.py`` holds the two to the same answers on generated bodies)."""
    address = data.get("address")
    if (
        type(address) is not dict
        or not _FIELDS.issuperset(data)
        or not _ADDRESS_FIELDS.issuperset(address)
        or data.get("accepted_terms") is not True
    ):
        raise _Unusual
    person_type = data.get("person_type")
    if type(person_type) is not str:
        raise _Unusual
    cnpj: str | None = None
    if person_type == PJ:
        cnpj = normalise_cnpj(_plain(data.get("cnpj")))
    elif person_type != PF or data.get("cnpj") is not None:
        raise _Unusual
    email = normalise_email(_plain(data.get("email")))
    confirmation = data.get("email_confirmation")
    if type(confirmation) is not str or (
        unicodedata.normalize("NFC", confirmation.strip()).lower() != email
    ):
        raise _Unusual
    # Optional: absent, null or blank is None, as the full pass has it.
    phone = _plain(data.get("phone"), optional=True)
    complement = _plain(address.get("complement"), optional=True)
    return RegistrationDetails(
        person_type=person_type,
        cpf=normalise_cpf(_plain(data.get("cpf"))),
        cnpj=cnpj,
        name=_plain_text(data.get("name"), NAME_LENGTH),
        mobile_phone=normalise_mobile_phone(_plain(data.get("mobile_phone"))),
        phone=normalise_landline(phone) if phone else None,
        email=email,
        address=Address(
            cep=normalise_cep(_plain(address.get("cep"))),
            street=_plain_text(address.get("street"), TEXT_LENGTH),
            number=_plain_text(address.get("number"), NUMBER_LENGTH),
            complement=_plain_text(complement, TEXT_LENGTH) if complement else None,
            neighborhood=_plain_text(address.get("neighborhood"), TEXT_LENGTH),
            city=_plain_text(address.get("city"), TEXT_LENGTH),
            state=normalise_state(_plain(address.get("state"))),
        ),
    )


def _plain(value: object, *, optional: bool = False) -> str:
    """A string the full pass hands to its normaliser: not blank. An ``optional`` field's
    value may also be absent, null or blank: then it comes back empty."""
    if type(value) is str:
        if value.strip():
            return value
        if optional:
            return ""
    elif optional and value is None:
        return ""
    raise _Unusual


def _plain_text(value: object, length: tuple[int, int]) -> str:
    """``_Reader.text``'s answer for a text it accepts, decided in three checks in C: a
    printable string has no character of the categories it refuses (Cc, Cs, Cf, Zl, Zp;
    ``str.isprintable`` refuses those and more, which the full pass then decides)."""
    if type(value) is not str:
        raise _Unusual
    text = value.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if length[0] <= len(text) <= length[1] and text.isprintable():
        return text
    raise _Unusual


def _present_address(address: Address | None) -> Address:
    if address is None:
        raise RuntimeError("address is missing after validation")
    return address


def _person_type(form: _Reader) -> str | None:
    value = form.string("person_type", "Person type", required=True)
    if value is not None and value not in (PF, PJ):
        form.fail("person_type", INVALID_CHOICE, "Person type must be PF or PJ")
        return None
    return value


def _cnpj(form: _Reader, person_type: str | None) -> str | None:
    if person_type == PF:
        if form.data.get("cnpj") is not None:
            form.fail("cnpj", NOT_ALLOWED, "CNPJ must be absent or null for a PF registration")
        return None
    # With an unknown person type the CNPJ is still checked, just not demanded.
    return form.normalised("cnpj", "CNPJ", normalise_cnpj, required=person_type == PJ)


def _email_confirmation(form: _Reader, email: str | None) -> None:
    confirmation = form.string("email_confirmation", "Email confirmation", required=True)
    if email is None or confirmation is None:
        return
    # The common case, an identical address, needs no second syntax check (a third of the
    # validation time); only a differently spelled one is fully normalised.
    matches = unicodedata.normalize("NFC", confirmation.strip()).lower() == email
    if not matches:
        try:
            matches = normalise_email(confirmation) == email
        except InvalidValue:
            matches = False
    if not matches:
        form.fail("email_confirmation", MISMATCH, "Email confirmation does not match email")


def _address(form: _Reader) -> Address | None:
    value = form.data.get("address")
    if value is None:
        form.fail("address", REQUIRED, "Address is required")
        return None
    if not isinstance(value, Mapping):
        form.fail("address", WRONG_TYPE, "Address must be an object")
        return None
    before = len(form.errors)
    address = _Reader(value, "address.", form.errors)
    address.reject_unknown(_ADDRESS_FIELDS)
    cep = address.normalised("cep", "CEP", normalise_cep)
    street = address.text("street", "Street", min_len=TEXT_LENGTH[0], max_len=TEXT_LENGTH[1])
    number = address.text("number", "Number", min_len=NUMBER_LENGTH[0], max_len=NUMBER_LENGTH[1])
    complement = address.text("complement", "Complement", max_len=TEXT_LENGTH[1], required=False)
    neighborhood = address.text(
        "neighborhood", "Neighborhood", min_len=TEXT_LENGTH[0], max_len=TEXT_LENGTH[1]
    )
    city = address.text("city", "City", min_len=TEXT_LENGTH[0], max_len=TEXT_LENGTH[1])
    state = address.normalised("state", "State", normalise_state)
    if len(form.errors) > before:
        return None
    return Address(
        cep=_present(cep),
        street=_present(street),
        number=_present(number),
        complement=complement,
        neighborhood=_present(neighborhood),
        city=_present(city),
        state=_present(state),
    )


def _accepted_terms(form: _Reader) -> None:
    value = form.data.get("accepted_terms")
    if value is None:
        form.fail("accepted_terms", REQUIRED, "Accepting the terms is required")
    elif not isinstance(value, bool):
        form.fail("accepted_terms", WRONG_TYPE, "Accepted terms must be the boolean true")
    elif value is not True:
        form.fail("accepted_terms", MUST_BE_TRUE, "The terms must be accepted")
