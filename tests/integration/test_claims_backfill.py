"""A store written when claims were reservation events opens, migrated, with the same holders."""

from __future__ import annotations

import asyncio
import uuid

from litestar.testing import AsyncTestClient

from domain.reservations import Claim, Reservation
from infrastructure.composition.operations import migrate
from infrastructure.event_store.store import open_event_store
from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.e2e.api_client import problem
from tests.factories import make_cpf, valid_form


def _person(n: int, email: str) -> dict[str, object]:
    return valid_form(cpf=make_cpf(70_000 + n), email=email, email_confirmation=email)


def _old_reservation_events(claim: uuid.UUID, *holders: uuid.UUID | None) -> list[object]:
    """What the last version appended for one value: reserved, then released or reclaimed."""
    first = holders[0]
    assert first is not None
    reservation = Reservation(claim_id=claim, registration_id=first, kind="email")
    events: list[object] = list(reservation.collect_events())
    for version, holder in enumerate(holders[1:], start=2):
        if holder is None:
            events.append(
                Reservation.Released(
                    originator_id=claim,
                    originator_version=version,
                    timestamp=Reservation.Released.create_timestamp(),
                )
            )
        else:
            events.append(
                Reservation.Reclaimed(  # type: ignore[call-arg]
                    originator_id=claim,
                    originator_version=version,
                    timestamp=Reservation.Reclaimed.create_timestamp(),
                    registration_id=holder,
                )
            )
    return events


async def test_reservation_events_of_an_old_store_become_claims_held_by_the_same_people(
    settings: Settings,
) -> None:
    assert settings.database_url
    key = settings.reservation_key.encode()
    held, released, reclaimed = (
        Claim("email", f"{name}@example.com").reservation_id(key)
        for name in ("held", "released", "reclaimed")
    )
    first, second, third = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    store = open_event_store(settings.database_url, cipher_key=settings.event_cipher_key)
    try:
        with store.recorder.datastore.transaction(commit=True) as curs:  # type: ignore[attr-defined]
            # As a store of the last version: not migrated to claim rows yet.
            curs.execute("DELETE FROM signup_migrations")
        store.save(
            *_old_reservation_events(held, first),
            *_old_reservation_events(released, second, None),
            *_old_reservation_events(reclaimed, second, None, third),
        )
    finally:
        store.close()

    await asyncio.to_thread(migrate, settings)
    await asyncio.to_thread(migrate, settings)  # a second run changes nothing

    store = open_event_store(settings.database_url, cipher_key=settings.event_cipher_key)
    try:
        holders = [store.holder_of(claim) for claim in (held, released, reclaimed)]
    finally:
        store.close()
    assert holders == [first, None, third]
    async with AsyncTestClient(app=build_app(settings)) as client:
        taken = await client.post("/registrations", json=_person(1, "held@example.com"))
        free = await client.post("/registrations", json=_person(2, "released@example.com"))
    assert problem(taken, 409)["field"] == "email"
    assert free.status_code == 202, free.text
