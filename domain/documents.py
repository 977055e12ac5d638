"""CPF and CNPJ normalisation.

The shape is checked here, before validate_docbr sees the value, because the library is
lenient in ways that would let odd strings through: it zero-pads short CPFs (``"191"`` is
"valid"), ignores where mask characters sit, accepts a trailing newline on a CNPJ and lets
non-ASCII digits reach its arithmetic. The library is only trusted with the check digits.
"""

from __future__ import annotations

import re

from validate_docbr import CNPJ, CPF

from domain.values import INVALID_CHECK_DIGITS, INVALID_FORMAT, REPEATED_DIGITS, InvalidValue

# Mask characters are optional but, when present, must sit where the mask puts them.
# Explicit ASCII classes: \d would also match Arabic-Indic and other Unicode digits.
CPF_SHAPE = re.compile(r"[0-9]{3}\.?[0-9]{3}\.?[0-9]{3}-?[0-9]{2}")
# Lower case is matched here and upper-cased afterwards, never the other way round:
# str.upper() maps some non-ASCII letters onto ASCII (U+0131 dotless i -> "I").
CNPJ_SHAPE = re.compile(
    r"[0-9A-Za-z]{2}\.?[0-9A-Za-z]{3}\.?[0-9A-Za-z]{3}/?[0-9A-Za-z]{4}-?[0-9]{2}"
)
_MASK = str.maketrans("", "", "./-")

_cpf = CPF()
_cnpj = CNPJ()


def normalise_cpf(raw: str) -> str:
    """Return the CPF as 11 digits; accepts ``123.456.789-09`` or ``12345678909``."""
    text = raw.strip()
    if not CPF_SHAPE.fullmatch(text):
        raise InvalidValue(
            INVALID_FORMAT, "CPF must be 11 digits, optionally masked as 000.000.000-00"
        )
    digits = text.translate(_MASK)
    # All-same-digit CPFs satisfy the check-digit formula but are never issued.
    if len(set(digits)) == 1:
        raise InvalidValue(REPEATED_DIGITS, "CPF cannot be a single repeated digit")
    if not _cpf.validate(digits):
        raise InvalidValue(INVALID_CHECK_DIGITS, "CPF check digits do not match")
    return digits


def normalise_cnpj(raw: str) -> str:
    """Return the CNPJ as 14 upper-case characters, numeric or alphanumeric, mask removed."""
    text = raw.strip()
    if not CNPJ_SHAPE.fullmatch(text):
        raise InvalidValue(
            INVALID_FORMAT,
            "CNPJ must be 12 letters or digits followed by 2 check digits, "
            "optionally masked as 00.000.000/0000-00",
        )
    chars = text.translate(_MASK).upper()
    if len(set(chars)) == 1:
        raise InvalidValue(REPEATED_DIGITS, "CNPJ cannot be a single repeated digit")
    if not _cnpj.validate(chars):
        raise InvalidValue(INVALID_CHECK_DIGITS, "CNPJ check digits do not match")
    return chars
