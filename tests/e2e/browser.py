"""Driving the signup page in Debian's headless Chromium (Playwright, no downloaded browser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Browser, Page, Playwright

from tests.factories import mask_cpf
from tests.servers import ROOT

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SCREENSHOTS = ROOT / "artifacts" / "screenshots"


def launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{name}.png", full_page=True)


@dataclass
class Person:
    """What a person types, unmasked where the page is expected to add the mask."""

    cpf: str
    email: str
    name: str = "Maria da Silva"
    cnpj: str | None = None
    mobile_phone: str = "11912345678"
    phone: str = "1131234567"
    email_confirmation: str | None = None
    address: dict[str, str] = field(
        default_factory=lambda: {
            "cep": "01310100",
            "street": "Avenida Paulista",
            "number": "1578",
            "complement": "apto 12",
            "neighborhood": "Bela Vista",
            "city": "São Paulo",
            "state": "SP",
        }
    )

    def api_body(self) -> dict[str, object]:
        """The same person as a POST /registrations body, as the page would send it."""
        return {
            "person_type": "PJ" if self.cnpj else "PF",
            "cpf": mask_cpf(self.cpf),
            "cnpj": self.cnpj,
            "name": self.name,
            "mobile_phone": self.mobile_phone,
            "phone": self.phone,
            "email": self.email,
            "email_confirmation": self.email_confirmation or self.email,
            "address": self.address,
            "accepted_terms": True,
        }


def fill(page: Page, person: Person) -> None:
    """Fill the form through its labels, the way assistive technology finds the fields."""
    if person.cnpj is not None:
        page.get_by_label("Pessoa jurídica").check()
        page.get_by_label("CNPJ").fill(person.cnpj)
    page.get_by_label("CPF do responsável" if person.cnpj else "CPF", exact=True).fill(person.cpf)
    page.get_by_label("Razão social" if person.cnpj else "Nome completo").fill(person.name)
    page.get_by_label("Celular").fill(person.mobile_phone)
    page.get_by_label("Telefone fixo").fill(person.phone)
    page.get_by_label("E-mail", exact=True).fill(person.email)
    page.get_by_label("Confirme o e-mail").fill(person.email_confirmation or person.email)
    address = person.address
    page.get_by_label("CEP").fill(address["cep"])
    page.get_by_label("Estado (UF)").select_option(address["state"])
    page.get_by_label("Logradouro").fill(address["street"])
    page.get_by_label("Número").fill(address["number"])
    page.get_by_label("Complemento").fill(address["complement"])
    page.get_by_label("Bairro").fill(address["neighborhood"])
    page.get_by_label("Cidade", exact=True).fill(address["city"])
    page.get_by_label("Li e aceito os termos").check()


def submit(page: Page) -> None:
    page.get_by_role("button", name="Cadastrar").click()


def error_of(page: Page, label: str, *, exact: bool = False) -> str:
    """The text of the messages a field's aria-describedby points at (hint and error)."""
    described_by = page.get_by_label(label, exact=exact).get_attribute("aria-describedby") or ""
    return " ".join(page.locator(f"#{ref}").inner_text() for ref in described_by.split())
