"""Valid request bodies and documents for tests.

The check digits are computed here from the published rules (Receita Federal), independently
of validate_docbr, so tests that use them can catch a bug in the library.
"""

from __future__ import annotations

import string
from typing import Any

CNPJ_BODY_ALPHABET = string.digits + string.ascii_uppercase
_BASE36 = CNPJ_BODY_ALPHABET
_CPF_BODIES = 10**9
_REPEATED_CPF_BODIES = [k * 111_111_111 for k in range(1, 10)]

MISSING: Any = object()
"""Pass as an override to leave the field out of the body altogether."""


def _mod11_digit(total: int) -> str:
    remainder = total % 11
    return "0" if remainder < 2 else str(11 - remainder)


def cpf_check_digits(body: str) -> str:
    """The two check digits of a 9-digit CPF body."""
    digits = [int(char) for char in body]
    first = _mod11_digit(sum(d * w for d, w in zip(digits, range(10, 1, -1), strict=True)))
    digits.append(int(first))
    second = _mod11_digit(sum(d * w for d, w in zip(digits, range(11, 1, -1), strict=True)))
    return first + second


def cnpj_check_digits(body: str) -> str:
    """The two check digits of a 12-character CNPJ body; a character is worth ASCII - 48."""
    # Per character, and ASCII only: "ß".upper() is "SS", which would shift every position.
    values = [ord(char.upper() if char.isascii() else char) - 48 for char in body]
    weights = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]
    first = _mod11_digit(sum(v * w for v, w in zip(values, weights[1:], strict=True)))
    values.append(int(first))
    second = _mod11_digit(sum(v * w for v, w in zip(values, weights, strict=True)))
    return first + second


def is_valid_cpf(cpf: str) -> bool:
    """Oracle: 11 ASCII digits, not one repeated digit, matching check digits."""
    return (
        len(cpf) == 11
        and all(char in string.digits for char in cpf)
        and len(set(cpf)) > 1
        and cpf_check_digits(cpf[:9]) == cpf[9:]
    )


def is_valid_cnpj(cnpj: str) -> bool:
    """Oracle for an unmasked CNPJ (any letter case)."""
    if not cnpj.isascii():
        return False
    cnpj = cnpj.upper()
    return (
        len(cnpj) == 14
        and all(char in CNPJ_BODY_ALPHABET for char in cnpj[:12])
        and all(char in string.digits for char in cnpj[12:])
        and len(set(cnpj)) > 1
        and cnpj_check_digits(cnpj[:12]) == cnpj[12:]
    )


def mask_cpf(cpf: str) -> str:
    return f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"


def mask_cnpj(cnpj: str) -> str:
    return f"{cnpj[:2]}.{cnpj[2:5]}.{cnpj[5:8]}/{cnpj[8:12]}-{cnpj[12:]}"


def make_cpf(n: int) -> str:
    """The n-th valid CPF (11 digits); distinct n give distinct CPFs, 0 <= n < 999_999_990."""
    if not 0 <= n < _CPF_BODIES - 10:
        raise ValueError(f"n out of range: {n}")
    # Skip 000000000 and the other one-digit bodies: their CPFs are all one repeated digit.
    body = n + 1
    for repeated in _REPEATED_CPF_BODIES:
        if body >= repeated:
            body += 1
    digits = f"{body:09d}"
    return digits + cpf_check_digits(digits)


def _base36(n: int, width: int) -> str:
    chars = []
    for _ in range(width):
        n, rest = divmod(n, 36)
        chars.append(_BASE36[rest])
    return "".join(reversed(chars))


def make_cnpj(n: int, alphanumeric: bool = False) -> str:
    """The n-th valid CNPJ (14 upper-case characters), head office branch ``0001``.

    Numeric ones cover 0 <= n < 10**8. Alphanumeric ones start with a letter, so they never
    equal a numeric one, and cover 0 <= n < 36**7.
    """
    if alphanumeric:
        if not 0 <= n < 36**7:
            raise ValueError(f"n out of range: {n}")
        root = "A" + _base36(n, 7)
    else:
        if not 0 <= n < 10**8:
            raise ValueError(f"n out of range: {n}")
        root = f"{n:08d}"
    body = root + "0001"
    return body + cnpj_check_digits(body)


def valid_address(**overrides: Any) -> dict[str, Any]:
    address: dict[str, Any] = {
        "cep": "01310-100",
        "street": "Avenida Paulista",
        "number": "1578",
        "complement": "apto 12",
        "neighborhood": "Bela Vista",
        "city": "São Paulo",
        "state": "SP",
    }
    return _apply(address, overrides)


def valid_form(**overrides: Any) -> dict[str, Any]:
    """A valid PF body as in DESIGN.md; overrides replace top-level fields (``MISSING`` drops)."""
    form: dict[str, Any] = {
        "person_type": "PF",
        "cpf": mask_cpf(make_cpf(0)),
        "cnpj": None,
        "name": "Maria da Silva",
        "mobile_phone": "(11) 91234-5678",
        "phone": "(11) 3123-4567",
        "email": "maria@example.com",
        "email_confirmation": "maria@example.com",
        "address": valid_address(),
        "accepted_terms": True,
    }
    return _apply(form, overrides)


def valid_pj_form(**overrides: Any) -> dict[str, Any]:
    """A valid PJ body: the company's CNPJ plus the responsible person's CPF."""
    defaults: dict[str, Any] = {"person_type": "PJ", "cnpj": mask_cnpj(make_cnpj(0))}
    return valid_form(**{**defaults, **overrides})


def _apply(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    for key, value in overrides.items():
        if value is MISSING:
            base.pop(key, None)
        else:
            base[key] = value
    return base
