"""Brazilian postal address: CEP, state (UF) and the address value itself."""

from __future__ import annotations

import re
from dataclasses import dataclass

from domain.values import INVALID_CHOICE, INVALID_FORMAT, InvalidValue

UFS = frozenset(
    {
        "AC", "AL", "AP", "AM", "BA", "CE", "DF", "ES", "GO", "MA", "MT", "MS", "MG", "PA",
        "PB", "PR", "PE", "PI", "RJ", "RN", "RS", "RO", "RR", "SC", "SP", "SE", "TO",
    }
)  # fmt: skip

# ASCII classes on purpose: \d would accept Unicode digits that are not a CEP.
CEP_SHAPE = re.compile(r"[0-9]{5}-?[0-9]{3}")


def normalise_cep(raw: str) -> str:
    """Return the CEP as 8 digits; accepts ``01310-100`` or ``01310100``."""
    text = raw.strip()
    if not CEP_SHAPE.fullmatch(text):
        raise InvalidValue(INVALID_FORMAT, "CEP must be 8 digits, optionally masked as 00000-000")
    return text.replace("-", "")


def normalise_state(raw: str) -> str:
    """Return the UF upper-cased; any letter case is accepted."""
    # str.upper() maps U+017F (long s) to "S"; only an ASCII spelling may name a UF.
    text = raw.strip()
    state = text.upper()
    if not text.isascii() or state not in UFS:
        raise InvalidValue(INVALID_CHOICE, "State must be one of the 27 Brazilian UFs, e.g. SP")
    return state


@dataclass(frozen=True, slots=True)
class Address:
    """A normalised address; build it through the form parser, which enforces the rules."""

    cep: str
    street: str
    number: str
    complement: str | None
    neighborhood: str
    city: str
    state: str

    def to_dict(self) -> dict[str, str | None]:
        # Spelled out: dataclasses.asdict deep-copies field by field, a projector's hot path.
        return {
            "cep": self.cep,
            "street": self.street,
            "number": self.number,
            "complement": self.complement,
            "neighborhood": self.neighborhood,
            "city": self.city,
            "state": self.state,
        }
