"""Request bodies for the load generator: realistic, valid and never repeated.

Every valid body draws one index from a counter. Process ``p`` of ``P`` uses the indices
``offset + p, offset + p + P, offset + p + 2P, ...``, so the processes of one run never share
an index and a run covers one contiguous block starting at a random ``offset``: two runs
against the same database only collide if their blocks overlap, which for runs of a few
million bodies in a space of a billion CPFs is rare (and shows up as 409s on valid bodies in
the report, never as a wrong acceptance).

The check digits are computed here from the published rules (Receita Federal); production
code must not import ``tests/``, which has its own independent copy.
"""

from __future__ import annotations

import random
import string
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

CPF_SPACE: Final = 10**9 - 10
"""Distinct valid CPFs reachable by :func:`make_cpf` (9-digit bodies minus the repeated ones)."""

_BASE36: Final = string.digits + string.ascii_uppercase
_REPEATED_CPF_BODIES: Final = [k * 111_111_111 for k in range(1, 10)]
_CNPJ_WEIGHTS: Final = [6, 5, 4, 3, 2, 9, 8, 7, 6, 5, 4, 3, 2]

# Kinds of body, as reported per kind with the status codes they got.
PF: Final = "pf"
PJ_NUMERIC: Final = "pj_numeric"
PJ_ALPHANUMERIC: Final = "pj_alphanumeric"
DUPLICATE: Final = "duplicate"
INVALID: Final = "invalid"
KINDS: Final = (PF, PJ_NUMERIC, PJ_ALPHANUMERIC, DUPLICATE, INVALID)
EXPECTED_STATUS: Final = {
    PF: 202,
    PJ_NUMERIC: 202,
    PJ_ALPHANUMERIC: 202,
    DUPLICATE: 409,
    INVALID: 422,
}
"""What a correct server answers each kind when it is not shedding load (429, 503)."""


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
    values = [ord(char) - 48 for char in body]
    first = _mod11_digit(sum(v * w for v, w in zip(values, _CNPJ_WEIGHTS[1:], strict=True)))
    values.append(int(first))
    second = _mod11_digit(sum(v * w for v, w in zip(values, _CNPJ_WEIGHTS, strict=True)))
    return first + second


def make_cpf(n: int) -> str:
    """The n-th valid CPF (11 digits); distinct ``n`` modulo :data:`CPF_SPACE` differ."""
    body = n % CPF_SPACE + 1
    # Skip the one-digit bodies (111111111, ...): their CPFs are one repeated digit, invalid.
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
    """The n-th valid CNPJ (14 characters); distinct ``n`` (below 10**12) give distinct ones.

    Numeric: 8-digit root ``n mod 10**8`` and branch ``1 + n // 10**8`` (head office first).
    Alphanumeric: a root starting with a letter, so it never equals a numeric one.
    """
    if alphanumeric:
        root = "A" + _base36(n % 36**7, 7)
        branch = 1 + n // 36**7
    else:
        root = f"{n % 10**8:08d}"
        branch = 1 + n // 10**8
    body = f"{root}{branch % 10**4:04d}"
    return body + cnpj_check_digits(body)


def mask_cpf(cpf: str) -> str:
    return f"{cpf[:3]}.{cpf[3:6]}.{cpf[6:9]}-{cpf[9:]}"


def mask_cnpj(cnpj: str) -> str:
    return f"{cnpj[:2]}.{cnpj[2:5]}.{cnpj[5:8]}/{cnpj[8:12]}-{cnpj[12:]}"


# Capitals with their UF and CEP range, so addresses look like the real traffic mix.
_CITIES: Final = (
    ("São Paulo", "SP", 1_000_000, 5_999_999),
    ("Rio de Janeiro", "RJ", 20_000_000, 23_799_999),
    ("Belo Horizonte", "MG", 30_000_000, 31_999_999),
    ("Salvador", "BA", 40_000_000, 42_599_999),
    ("Fortaleza", "CE", 60_000_000, 61_599_999),
    ("Brasília", "DF", 70_000_000, 72_799_999),
    ("Curitiba", "PR", 80_000_000, 82_999_999),
    ("Recife", "PE", 50_000_000, 52_999_999),
    ("Porto Alegre", "RS", 90_000_000, 91_999_999),
    ("Manaus", "AM", 69_000_000, 69_099_999),
    ("Belém", "PA", 66_000_000, 66_999_999),
    ("Goiânia", "GO", 74_000_000, 74_899_999),
    ("São Luís", "MA", 65_000_000, 65_109_999),
    ("Maceió", "AL", 57_000_000, 57_099_999),
    ("Natal", "RN", 59_000_000, 59_139_999),
    ("Teresina", "PI", 64_000_000, 64_099_999),
    ("João Pessoa", "PB", 58_000_000, 58_099_999),
    ("Aracaju", "SE", 49_000_000, 49_098_999),
    ("Campo Grande", "MS", 79_000_000, 79_124_999),
    ("Cuiabá", "MT", 78_000_000, 78_109_999),
    ("Florianópolis", "SC", 88_000_000, 88_099_999),
    ("Vitória", "ES", 29_000_000, 29_099_999),
    ("Porto Velho", "RO", 76_800_000, 76_834_999),
    ("Rio Branco", "AC", 69_900_000, 69_923_999),
    ("Macapá", "AP", 68_900_000, 68_914_999),
    ("Boa Vista", "RR", 69_300_000, 69_339_999),
    ("Palmas", "TO", 77_000_000, 77_249_999),
)
_STREETS: Final = (
    "Rua das Flores", "Avenida Brasil", "Rua Sete de Setembro", "Avenida Getúlio Vargas",
    "Rua XV de Novembro", "Travessa São José", "Rua Dom Pedro II", "Alameda Santos",
    "Rua da Conceição", "Avenida Presidente Vargas", "Rua Tiradentes", "Rua Barão do Rio Branco",
)  # fmt: skip
_NEIGHBOURHOODS: Final = (
    "Centro", "Jardim América", "Vila Nova", "Boa Vista", "Santa Cecília", "Liberdade",
    "São Cristóvão", "Aparecida", "Bela Vista", "Copacabana", "Savassi", "Jardim Botânico",
)  # fmt: skip
_COMPLEMENTS: Final = (None, None, "apto 12", "casa 2", "bloco B, apto 301", "fundos", "sala 5")
_FIRST_NAMES: Final = (
    "Maria", "José", "Ana", "João", "Antônio", "Francisca", "Carlos", "Paulo", "Lúcia",
    "Luiz", "Márcia", "Pedro", "Júlia", "Gabriel", "Letícia", "Conceição", "Raimundo", "Íris",
)  # fmt: skip
_LAST_NAMES: Final = (
    "da Silva", "dos Santos", "Oliveira", "Souza", "Rodrigues", "Ferreira", "Alves", "Pereira",
    "Lima", "Gomes", "Ribeiro", "Araújo", "Conceição", "Magalhães", "Nóbrega", "Guimarães",
)  # fmt: skip
_COMPANY_SUFFIXES: Final = ("Ltda.", "ME", "EIRELI", "S.A.", "Comércio e Serviços Ltda.")


Claim = tuple[str, str, str | None]
"""The unique values of a valid body: email, CPF, CNPJ (None for a PF)."""


@dataclass(frozen=True, slots=True)
class Mix:
    """Shares of the body kinds; the rest of the valid bodies are PF."""

    duplicates: float
    invalid: float
    pj: float


def _mutate_cpf(body: dict[str, Any]) -> None:
    cpf = body["cpf"]
    last = str((int(cpf[-1]) + 1) % 10)
    body["cpf"] = cpf[:-1] + last


def _mutate_cep(body: dict[str, Any]) -> None:
    body["address"]["cep"] = body["address"]["cep"][:-1]


def _mutate_confirmation(body: dict[str, Any]) -> None:
    body["email_confirmation"] = "other-" + body["email"]


def _mutate_state(body: dict[str, Any]) -> None:
    body["address"]["state"] = "XX"


def _mutate_terms(body: dict[str, Any]) -> None:
    body["accepted_terms"] = False


def _mutate_mobile(body: dict[str, Any]) -> None:
    body["mobile_phone"] = "(11) 3123-4567"  # a landline where a mobile is required


def _mutate_email(body: dict[str, Any]) -> None:
    body["email"] = body["email_confirmation"] = body["email"].replace("@", "@@")


def _mutate_name(body: dict[str, Any]) -> None:
    body["name"] = " "


# Each produces a 422 for a different field, so the server's whole validation path is used.
_MUTATIONS: Final[tuple[Callable[[dict[str, Any]], None], ...]] = (
    _mutate_cpf, _mutate_cep, _mutate_confirmation, _mutate_state, _mutate_terms,
    _mutate_mobile, _mutate_email, _mutate_name,
)  # fmt: skip


class BodyFactory:
    """The bodies of one load-generating process; not shared between processes."""

    def __init__(
        self, run_id: str, offset: int, process: int, processes: int, mix: Mix, seed: int
    ) -> None:
        self._run_id = run_id
        self._offset = offset
        self._process = process
        self._processes = processes
        self._mix = mix
        self._random = random.Random(seed * 1_000_003 + process)
        self._sent = 0
        # Recently accepted bodies' unique values, for the duplicates; bounded on purpose.
        self._accepted: deque[Claim] = deque(maxlen=1024)
        self._encode = msgspec.json.Encoder().encode
        # Valid bodies made before the clock starts (``prepare``), taken in order.
        self._prepared: deque[tuple[str, bytes, Claim]] = deque()

    def prepare(self, count: int) -> None:
        """Make the next ``count`` valid bodies now, before the measurement starts.

        A body costs ~13 us to make (the check digits, a dozen random draws, the encoding).
        On a machine the generator shares with the server, that time is taken from the
        server it measures; made beforehand, the run spends it only on the bodies that
        depend on what was accepted (duplicates) and on bodies past the prepared ones. The
        bodies are the ones ``next`` would have made: the same kinds in the same shares,
        each index used once.
        """
        for _ in range(count):
            self._prepared.append(self._new_valid())

    def next(self) -> tuple[str, bytes, Claim | None]:
        """The kind of the next body, its JSON encoding, and the values a valid one claims.

        Pass the claim to :meth:`accepted` when the body got ``202``: duplicates only reuse
        values already accepted, so a duplicate can never win a race against its original
        and every 409 on a valid body (or 202 on a duplicate) in the report is a real finding.
        """
        roll = self._random.random()
        if roll < self._mix.invalid:
            body = self._valid(PF)
            self._random.choice(_MUTATIONS)(body)
            return INVALID, self._encode(body), None
        roll -= self._mix.invalid
        if roll < self._mix.duplicates and self._accepted:
            return DUPLICATE, self._encode(self._duplicate()), None
        if self._prepared:
            return self._prepared.popleft()
        return self._new_valid()

    def _new_valid(self) -> tuple[str, bytes, Claim]:
        kind = PF
        if self._random.random() < self._mix.pj:
            # Half of the PJ signups use the alphanumeric CNPJ format (July 2026).
            kind = PJ_ALPHANUMERIC if self._random.random() < 0.5 else PJ_NUMERIC
        body = self._valid(kind)
        return kind, self._encode(body), (body["email"], body["cpf"], body["cnpj"])

    def accepted(self, claim: Claim) -> None:
        self._accepted.append(claim)

    def _duplicate(self) -> dict[str, Any]:
        email, cpf, cnpj = self._random.choice(self._accepted)
        if cnpj is not None:
            # A PJ: the CNPJ is the unique value (its CPF may repeat), so reuse the CNPJ or email.
            body = self._valid(PJ_NUMERIC)
            if self._random.random() < 0.5:
                body["cnpj"] = cnpj
            else:
                body["email"] = body["email_confirmation"] = email
            return body
        body = self._valid(PF)
        if self._random.random() < 0.5:
            body["cpf"] = cpf
        else:
            body["email"] = body["email_confirmation"] = email
        return body

    def _valid(self, kind: str) -> dict[str, Any]:
        n = self._sent
        self._sent += 1
        index = self._offset + self._process + n * self._processes
        rand = self._random
        name = f"{rand.choice(_FIRST_NAMES)} {rand.choice(_LAST_NAMES)}"
        cnpj = None
        if kind != PF:
            cnpj = make_cnpj(index, alphanumeric=kind == PJ_ALPHANUMERIC)
            cnpj = mask_cnpj(cnpj) if rand.random() < 0.7 else cnpj
            name = f"{name} {rand.choice(_COMPANY_SUFFIXES)}"
        cpf = make_cpf(index)
        email = f"bench-{self._run_id}-{self._process}-{n}@example.com"
        city, state, cep_low, cep_high = rand.choice(_CITIES)
        cep = f"{rand.randint(cep_low, cep_high):08d}"
        return {
            "person_type": "PF" if kind == PF else "PJ",
            # Masked and unmasked, as real forms send both.
            "cpf": mask_cpf(cpf) if rand.random() < 0.7 else cpf,
            "cnpj": cnpj,
            "name": name,
            "mobile_phone": _mobile(rand),
            "phone": _landline(rand) if rand.random() < 0.4 else None,
            "email": email,
            "email_confirmation": email,
            "address": {
                "cep": f"{cep[:5]}-{cep[5:]}" if rand.random() < 0.7 else cep,
                "street": rand.choice(_STREETS),
                "number": str(rand.randint(1, 4000)) if rand.random() < 0.95 else "S/N",
                "complement": rand.choice(_COMPLEMENTS),
                "neighborhood": rand.choice(_NEIGHBOURHOODS),
                "city": city,
                "state": state if rand.random() < 0.9 else state.lower(),
            },
            "accepted_terms": True,
        }


def _four_digits(rand: random.Random) -> str:
    return f"{rand.randrange(10_000):04d}"


def _mobile(rand: random.Random) -> str:
    """``(11) 9XXXX-XXXX``; never nine equal digits, which some validators reject."""
    while True:
        first, second = _four_digits(rand), _four_digits(rand)
        if len(set(first + second)) > 1:
            return f"(11) 9{first}-{second}"


def _landline(rand: random.Random) -> str:
    return f"(11) {rand.choice('2345')}{rand.randrange(1000):03d}-{_four_digits(rand)}"
