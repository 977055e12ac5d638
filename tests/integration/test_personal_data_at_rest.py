"""Personal data at rest: the event store's raw rows hold no email, CPF, CNPJ or name, and
Redis (rate-limit counters, stored answers, cached statuses) no email or CPF."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from typing import Any

import psycopg
import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.cryptography import AESCipher
from litestar.testing import AsyncTestClient
from redis.asyncio import Redis

from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.databases import with_cipher_key
from tests.factories import make_cnpj, make_cpf, mask_cnpj, mask_cpf, valid_form, valid_pj_form
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
    encrypted = with_cipher_key(settings, AESCipher.create_key(32))
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


async def test_with_a_cipher_key_every_event_is_sealed_whole_and_the_subject_key_is_stored_wrapped(
    settings: Settings,
) -> None:
    """README: with SIGNUP_EVENT_CIPHER_KEY set, every event's state is AES-GCM at rest and the
    per-person key is wrapped with it. The test above would pass without the cipher (the
    per-person sealing alone hides the values it looks for): here the rows themselves are
    read, and opened only the way the code says they open."""
    cipher_key = AESCipher.create_key(32)
    encrypted = with_cipher_key(settings, cipher_key)
    master = AESGCM(base64.b64decode(cipher_key))
    email = "cifrado.inteiro@example.com"
    form = valid_form(cpf=make_cpf(88_201), email=email, email_confirmation=email)
    async with AsyncTestClient(app=build_app(encrypted)) as client:
        response = await client.post("/registrations", json=form)
        assert response.status_code == 202, response.text
        registration_id = uuid.UUID(response.json()["registration_id"])

    assert encrypted.database_url
    with psycopg.connect(encrypted.database_url) as conn:
        events = conn.execute("SELECT originator_id, topic, state FROM signup_events").fetchall()
        [(stored_key,)] = conn.execute(
            "SELECT key FROM signup_subject_keys WHERE registration_id = %s", (registration_id,)
        ).fetchall()
    assert [(originator, topic.rsplit(".", 1)[-1]) for originator, topic, _ in events] == [
        (registration_id, "UserRegistrationRequested")
    ]
    state = bytes(events[0][2])
    # No JSON document, field name or transcoding marker is on disk. (Not "does not start
    # with '{'": a random nonce's first byte is one in 256 times, and a full run met it.)
    with pytest.raises(ValueError):
        json.loads(state)
    for clear in (b'"personal_data"', b"personal_data", b"_type_", b"_data_", b"bytes_b64"):
        assert clear not in state, f"{clear!r} is readable in the stored event"
    # It opens as eventsourcing's AES-GCM layout (nonce, tag, ciphertext) under the cipher key,
    # and nothing else: the JSON document is inside.
    nonce, tag, body = state[:12], state[12:28], state[28:]
    document = json.loads(master.decrypt(nonce, body + tag, None))
    sealed = base64.b64decode(document["personal_data"]["_data_"])

    # The subject key as stored is not a key: 12 bytes of nonce, the 32-byte key sealed, a
    # 16-byte tag; alone it opens nothing.
    stored_key = bytes(stored_key)
    assert len(stored_key) == 12 + 32 + 16
    with pytest.raises(ValueError):  # AES takes 16, 24 or 32 bytes: this is no AES key
        AESGCM(stored_key)
    for guess in (stored_key[:32], stored_key[-32:], stored_key[12:44]):
        with pytest.raises(InvalidTag):
            AESGCM(guess).decrypt(sealed[:12], sealed[12:], registration_id.bytes)
    # Unwrapped with the cipher key (bound to the registration id), it opens the person's data.
    person_key = master.decrypt(stored_key[:12], stored_key[12:], registration_id.bytes)
    opened = AESGCM(person_key).decrypt(sealed[:12], sealed[12:], registration_id.bytes)
    assert json.loads(opened)["email"] == email


async def _everything_in_redis(redis: Redis) -> bytes:
    """Every key of the tests' Redis and every value under it, whatever its type."""
    found = []
    async for key in redis.scan_iter(count=1000):
        kind = (await redis.type(key)).decode()
        value: Any = {
            "string": redis.get,
            "hash": redis.hgetall,
            "list": lambda k: redis.lrange(k, 0, -1),
            "set": redis.smembers,
            "zset": lambda k: redis.zrange(k, 0, -1, withscores=True),
        }[kind](key)
        found.append(b"%s %r" % (key, await value))
    return b"\n".join(found)


async def test_a_signup_leaves_no_email_or_cpf_in_redis_counters_stored_answers_or_cache(
    settings: Settings,
) -> None:
    """The README promises that Redis never holds an email or CPF: the limits are keyed by
    the claims' HMACs, the stored answers and the cached status name only ids and codes."""
    limited = dataclasses.replace(
        settings,
        rate_limit_per_client="1000/minute",
        rate_limit_per_email="1000/minute",
        rate_limit_per_cpf="1000/minute",
        rate_limit_status_per_client="1000/minute",
    )
    cpf = make_cpf(88_101)
    email = "Reservado.Pessoal@Example.com"
    form = valid_form(cpf=mask_cpf(cpf), email=email, email_confirmation=email)
    same_cpf = valid_form(
        cpf=mask_cpf(cpf),
        email="outra.pessoa@example.com",
        email_confirmation="outra.pessoa@example.com",
    )
    wrong = {**form, "address": {**form["address"], "cep": "1"}}
    async with AsyncTestClient(app=build_app(limited)) as client:
        accepted = await client.post(
            "/registrations", json=form, headers={"Idempotency-Key": "em-redis-1"}
        )
        assert accepted.status_code == 202, accepted.text
        registration_id = accepted.json()["registration_id"]
        # Answers kept for a retry: a refusal naming the email and CPF, and one naming a field.
        taken = await client.post(
            "/registrations", json=same_cpf, headers={"Idempotency-Key": "em-redis-2"}
        )
        assert taken.status_code == 409, taken.text
        invalid = await client.post(
            "/registrations", json=wrong, headers={"Idempotency-Key": "em-redis-3"}
        )
        assert invalid.status_code == 422, invalid.text
        async with running_worker(limited):
            await eventually(lambda: all_have_status(client, [registration_id], "completed"))
        await client.get(f"/registrations/{registration_id}")  # and now cached

    assert limited.redis_url
    async with Redis.from_url(limited.redis_url) as redis:
        keys = await redis.keys(f"*{registration_id}*")
        stored = await _everything_in_redis(redis)
    assert keys, "the completed status is not cached: the test would prove nothing"
    assert b"em-redis-1" in stored and b"em-redis-3" in stored  # the answers were kept
    for secret in (email, email.lower(), cpf, mask_cpf(cpf), "reservado.pessoal"):
        assert secret.encode() not in stored, f"{secret!r} is in Redis"
