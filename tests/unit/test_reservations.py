"""A reservation's life: held, released when its holder is erased, reclaimed by someone new."""

from __future__ import annotations

import uuid

from domain.registration import Registration, requested
from domain.reservations import Claim, Reservation, holder, reclaim, release, reserve

KEY = b"test-key"


def test_the_same_value_always_names_the_same_reservation_and_another_key_another() -> None:
    claim = Claim("email", "maria@example.com")
    assert claim.reservation_id(KEY) == Claim("email", "maria@example.com").reservation_id(KEY)
    assert claim.reservation_id(KEY) != claim.reservation_id(b"other-key")
    assert claim.reservation_id(KEY) != Claim("cpf", "maria@example.com").reservation_id(KEY)


def test_a_value_is_held_by_its_registration_until_released_and_then_by_whoever_reclaims_it() -> (
    None
):
    claim_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    reserved = Reservation(claim_id=claim_id, registration_id=first, kind="email")
    [created] = reserved.collect_events()

    released = release(claim_id, created.originator_version)
    reclaimed = reclaim(claim_id, released.originator_version, second)

    assert holder(created) == first
    assert holder(released) is None
    assert holder(reclaimed) == second
    # Each step takes the next version: two racing for the same step meet the primary key.
    assert [e.originator_version for e in (created, released, reclaimed)] == [1, 2, 3]
    assert {e.originator_id for e in (created, released, reclaimed)} == {claim_id}


def _without_timestamp(event: object) -> dict[str, object]:
    return {k: v for k, v in vars(event).items() if k != "timestamp"}


def test_a_reservation_made_directly_is_the_event_the_aggregate_records() -> None:
    claim_id, registration_id = uuid.uuid4(), uuid.uuid4()
    [recorded] = Reservation(
        claim_id=claim_id, registration_id=registration_id, kind="cpf"
    ).collect_events()

    made = reserve(claim_id, registration_id, "cpf")

    assert type(made) is type(recorded)
    assert _without_timestamp(made) == _without_timestamp(recorded)
    assert holder(made) == registration_id


def test_a_request_made_directly_is_the_event_the_registration_aggregate_records() -> None:
    registration_id = uuid.uuid4()
    [recorded] = Registration.request(registration_id, b"sealed").collect_events()

    made = requested(registration_id, b"sealed")

    assert type(made) is type(recorded)
    assert _without_timestamp(made) == _without_timestamp(recorded)
    # And eventsourcing rebuilds the same aggregate from it.
    rebuilt = made.mutate(None)
    assert isinstance(rebuilt, Registration)
    assert (rebuilt.id, rebuilt.version, rebuilt.personal_data) == (registration_id, 1, b"sealed")
