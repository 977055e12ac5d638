"""Domain errors. Each carries a stable machine-readable code; the HTTP layer maps them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldError:
    """One invalid field: a dotted path (``address.cep``), a stable code and a message."""

    field: str
    code: str
    message: str


class DomainError(Exception):
    code: str = "domain_error"


class InvalidRegistration(DomainError):
    """The form has one or more invalid fields; ``errors`` lists every one of them."""

    code = "validation_failed"

    def __init__(self, errors: list[FieldError]) -> None:
        super().__init__(f"{len(errors)} invalid field(s)")
        self.errors = errors


class AlreadyRegistered(DomainError):
    """A uniqueness rule is violated: someone already holds this email, CPF or CNPJ."""

    field: str = ""

    def __init__(self) -> None:
        super().__init__(f"{self.field} is already registered")


class EmailAlreadyRegistered(AlreadyRegistered):
    code = "email_already_registered"
    field = "email"


class CpfAlreadyRegistered(AlreadyRegistered):
    code = "cpf_already_registered"
    field = "cpf"


class CnpjAlreadyRegistered(AlreadyRegistered):
    code = "cnpj_already_registered"
    field = "cnpj"
