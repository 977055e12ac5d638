"""Personal data at rest: the event store's raw rows hold no email, CPF, CNPJ or name."""

from __future__ import annotations

import asyncio
import dataclasses

import psycopg
from eventsourcing.cryptography import AESCipher
from litestar.testing import AsyncTestClient

from infrastructure.container import migrate
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.factories import make_cnpj, make_cpf, mask_cnpj, valid_pj_form
from tests.read_models import all_have_status, eventually, running_worker


def _raw_event_store(settings: Settings) -> bytes:
    """Every byte of the events table, as the database files would show them."""
    assert settings.database_url
    with psycopg.connect(settings.database_url) as conn:
        rows = conn.execute(
            "SELECT originator_id::text, topic, state FROM signup_events"
        ).fetchall()
    return b"\n".join(b"%s %s %s" % (r[0].encode(), r[1].encode(), bytes(r[2])) for r in rows)


async def test_a_signup_leaves_no_personal_data_readable_in_the_event_store(
    settings: Settings,
) -> None:
    encrypted = dataclasses.replace(settings, event_cipher_key=AESCipher.create_key(32))
    await asyncio.to_thread(migrate, encrypted)
    cpf, cnpj = make_cpf(88_001), make_cnpj(88_002)
    email = "segredo.pessoal@example.com"
    form = valid_pj_form(
        cpf=cpf, cnpj=mask_cnpj(cnpj), email=email, email_confirmation=email, name="Empresa Sigilo"
    )
    async with AsyncTestClient(app=build_app(encrypted)) as client:
        response = await client.post("/registrations", json=form)
        assert response.status_code == 202
        registration_id = response.json()["registration_id"]
        # The read side still reads it: it holds the key.
        async with running_worker(encrypted):
            await eventually(lambda: all_have_status(client, [registration_id], "completed"))

    raw = _raw_event_store(encrypted)
    assert registration_id.encode() in raw  # the row is there...
    for secret in (email, cpf, cnpj, "Empresa Sigilo", "segredo"):
        assert secret.encode() not in raw, f"{secret!r} is readable at rest"
