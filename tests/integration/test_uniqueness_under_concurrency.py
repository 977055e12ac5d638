"""Uniqueness holds under concurrent identical submissions across several API processes."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import httpx

from infrastructure.settings import Settings
from tests.factories import make_cpf, valid_form
from tests.servers import free_port, signup_process


def _spellings(email: str, n: int) -> str:
    """The same address, differently cased and padded, as people really type it."""
    local, domain = email.split("@")
    variants = [email, email.upper(), f"  {email} ", f"{local.capitalize()}@{domain.upper()}\t"]
    return variants[n % len(variants)]


async def test_two_hundred_concurrent_submissions_over_twenty_emails_give_twenty_accepted(
    settings: Settings, tmp_path: Path
) -> None:
    env = {"DATABASE_URL": settings.database_url or "", "REDIS_URL": settings.redis_url or ""}
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{port}" for port in ports]
    with (
        signup_process(["api", "--port", str(ports[0])], env, urls[0], tmp_path / "api0.log"),
        signup_process(["api", "--port", str(ports[1])], env, urls[1], tmp_path / "api1.log"),
    ):
        forms = []
        for n in range(200):
            email = _spellings(f"person{n % 20}@example.com", n // 20)
            forms.append(valid_form(cpf=make_cpf(1000 + n), email=email, email_confirmation=email))
        async with httpx.AsyncClient(timeout=60) as client:
            answers = await asyncio.gather(
                *(
                    client.post(f"{urls[n % 2]}/registrations", json=form)
                    for n, form in enumerate(forms)
                )
            )

    statuses = Counter(answer.status_code for answer in answers)
    assert statuses == {202: 20, 409: 180}
    conflicts = [answer.json() for answer in answers if answer.status_code == 409]
    assert {(c["code"], c["field"]) for c in conflicts} == {("email_already_registered", "email")}
    accepted_ids = {
        answer.json()["registration_id"] for answer in answers if answer.status_code == 202
    }
    assert len(accepted_ids) == 20
