"""The Registration aggregate: a person's request to sign up, recorded once."""

from __future__ import annotations

from typing import Any

from eventsourcing.domain import Aggregate, event

from domain.form import RegistrationDetails
from domain.reservations import Claim


class Registration(Aggregate):
    class UserRegistrationRequested(Aggregate.Created):
        """Everything the person submitted, already validated and normalised."""

        person_type: str
        cpf: str
        cnpj: str | None
        name: str
        mobile_phone: str
        phone: str | None
        email: str
        address: dict[str, Any]

    @event(UserRegistrationRequested)
    def __init__(
        self,
        *,
        person_type: str,
        cpf: str,
        cnpj: str | None,
        name: str,
        mobile_phone: str,
        phone: str | None,
        email: str,
        address: dict[str, Any],
    ) -> None:
        self.person_type = person_type
        self.cpf = cpf
        self.cnpj = cnpj
        self.name = name
        self.mobile_phone = mobile_phone
        self.phone = phone
        self.email = email
        self.address = address

    @classmethod
    def request(cls, details: RegistrationDetails) -> Registration:
        return cls(
            person_type=details.person_type,
            cpf=details.cpf,
            cnpj=details.cnpj,
            name=details.name,
            mobile_phone=details.mobile_phone,
            phone=details.phone,
            email=details.email,
            address=details.address.to_dict(),
        )

    def claims(self) -> list[Claim]:
        """The unique values this registration must hold alone.

        A person may be responsible for several companies, so a PJ claims its CNPJ, not the CPF.
        """
        document = (
            Claim("cpf", self.cpf) if self.person_type == "PF" else Claim("cnpj", self.cnpj or "")
        )
        return [Claim("email", self.email), document]


UserRegistrationRequested = Registration.UserRegistrationRequested
