"""Shared vocabulary of the value normalisers: the error they raise and its stable codes.

Codes are part of the public API (clients branch on them), so they live in one place and
never change meaning; messages may be reworded freely.
"""

from __future__ import annotations

WRONG_TYPE = "wrong_type"
REQUIRED = "required"
UNKNOWN_FIELD = "unknown_field"
NOT_ALLOWED = "not_allowed"
INVALID_CHOICE = "invalid_choice"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
INVALID_CHARACTERS = "invalid_characters"
INVALID_FORMAT = "invalid_format"
REPEATED_DIGITS = "repeated_digits"
INVALID_CHECK_DIGITS = "invalid_check_digits"
INVALID_EMAIL = "invalid_email"
INVALID_PHONE = "invalid_phone"
NOT_MOBILE = "not_mobile"
NOT_LANDLINE = "not_landline"
MISMATCH = "mismatch"
MUST_BE_TRUE = "must_be_true"


class InvalidValue(Exception):
    """A single value failed a rule; the form parser turns it into a ``FieldError``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
