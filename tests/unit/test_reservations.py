"""A reservation's life: held, released when its holder is erased, reclaimed by someone new."""

from __future__ import annotations

import uuid

from domain.reservations import Claim, Reservation, holder, reclaim, release

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
