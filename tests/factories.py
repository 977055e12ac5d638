"""Valid request bodies and documents for tests.

The documents come from the load generator's own check-digit code, written from the published
rules (Receita Federal) independently of validate_docbr, so tests that use them can catch a bug
in the library.
"""

from __future__ import annotations

import string
from typing import Any

from bench.bodies import (
    cnpj_check_digits,
    cpf_check_digits,
    make_cnpj,
    make_cpf,
    mask_cnpj,
    mask_cpf,
)

CNPJ_BODY_ALPHABET = string.digits + string.ascii_uppercase

__all__ = [
    "MISSING",
    "cnpj_check_digits",
    "cpf_check_digits",
    "is_valid_cnpj",
    "is_valid_cpf",
    "make_cnpj",
    "make_cpf",
    "mask_cnpj",
    "mask_cpf",
    "valid_address",
    "valid_form",
    "valid_pj_form",
]

MISSING: Any = object()
"""Pass as an override to leave the field out of the body altogether."""


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
