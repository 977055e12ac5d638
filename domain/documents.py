"""CPF and CNPJ normalisation.

The shape is checked here, before validate_docbr sees the value, because the library is
lenient in ways that would let odd strings through: it zero-pads short CPFs (``"191"`` is
"valid"), ignores where mask characters sit, accepts a trailing newline on a CNPJ and lets
non-ASCII digits reach its arithmetic. The library is only trusted with the check digits, and
decides every value whose digits do not hold: the sum that accepts the rest first is the
library's own arithmetic at a fifth of its cost (``tests/unit/test_fast_paths.py`` holds the
two to the same answers).
"""

from __future__ import annotations

import re
from operator import mul

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

# The check digits' weights (Receita Federal's rules, as validate_docbr applies them). Each
# ASCII character is worth its code less 48 (a digit its value, a letter more), so a sum
# over the encoded bytes is the sum over the values plus 48 times the weights' sum.
_CPF_FIRST = (10, 9, 8, 7, 6, 5, 4, 3, 2)
_CPF_SECOND = (11, 10, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_FIRST = (5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)
_CNPJ_SECOND = (6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2)


def _weighted(raw: bytes, weights: tuple[int, ...]) -> int:
    total: int = sum(map(mul, raw, weights))  # operator.mul is typed loosely
    return total - 48 * sum(weights)


def cpf_check_digits_hold(digits: str) -> bool:
    """Whether 11 ASCII digits end in their check digits, in a fifth of validate_docbr's time
    (it builds a list and a str() a digit): every signup pays this."""
    raw = digits.encode()
    return (
        _weighted(raw, _CPF_FIRST) * 10 % 11 % 10 == raw[9] - 48
        and _weighted(raw, _CPF_SECOND) * 10 % 11 % 10 == raw[10] - 48
    )


def _cnpj_digit(total: int) -> int:
    remainder = total % 11
    return 0 if remainder < 2 else 11 - remainder


def cnpj_check_digits_hold(chars: str) -> bool:
    """Whether 14 upper-case ASCII letters or digits end in their check digits (as
    :func:`cpf_check_digits_hold`, for a CNPJ)."""
    raw = chars.encode()
    return (
        _cnpj_digit(_weighted(raw, _CNPJ_FIRST)) == raw[12] - 48
        and _cnpj_digit(_weighted(raw, _CNPJ_SECOND)) == raw[13] - 48
    )


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
    if not (cpf_check_digits_hold(digits) or _cpf.validate(digits)):
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
    if not (cnpj_check_digits_hold(chars) or _cnpj.validate(chars)):
        raise InvalidValue(INVALID_CHECK_DIGITS, "CNPJ check digits do not match")
    return chars
