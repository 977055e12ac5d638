"""Uniqueness claims: one id per value, and the holder of a value in a store of old."""

from __future__ import annotations

import hashlib
import hmac
import uuid

from hypothesis import given
from hypothesis import strategies as st

from domain.errors import CnpjAlreadyRegistered, CpfAlreadyRegistered, EmailAlreadyRegistered
from domain.registration import Registration, requested
from domain.reservations import Claim, Reservation, holder

KEY = b"test-key"


def test_the_same_value_always_names_the_same_claim_and_another_key_another() -> None:
    claim = Claim("email", "maria@example.com")
    assert claim.reservation_id(KEY) == Claim("email", "maria@example.com").reservation_id(KEY)
    assert claim.reservation_id(KEY) != claim.reservation_id(b"other-key")
    assert claim.reservation_id(KEY) != Claim("cpf", "maria@example.com").reservation_id(KEY)


@given(
    st.sampled_from(["email", "cpf", "cnpj"]),
    st.text(max_size=80),
    st.sampled_from([KEY, b"other-key", bytes(range(32)), b"k" * 100]),
)
def test_a_claims_id_is_the_first_half_of_its_values_hmac_as_stores_already_hold_it(
    kind: str, value: str, key: bytes
) -> None:
    # Stores hold claims by these ids: a different derivation would let a value be claimed twice.
    digest = hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).digest()

    assert Claim(kind, value).reservation_id(key) == uuid.UUID(bytes=digest[:16], version=5)


def test_a_clash_names_the_field_of_the_value_someone_holds() -> None:
    assert isinstance(Claim("email", "a@b.com").conflict(), EmailAlreadyRegistered)
    assert isinstance(Claim("cpf", "52998224725").conflict(), CpfAlreadyRegistered)
    assert isinstance(Claim("cnpj", "11222333000181").conflict(), CnpjAlreadyRegistered)


def test_in_a_store_of_old_a_value_is_held_by_its_last_reservation_event() -> None:
    claim_id, first, second = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    [reserved] = Reservation(
        claim_id=claim_id, registration_id=first, kind="email"
    ).collect_events()
    released = Reservation.Released(
        originator_id=claim_id,
        originator_version=2,
        timestamp=Reservation.Released.create_timestamp(),
    )
    reclaimed = Reservation.Reclaimed(  # type: ignore[call-arg]
        originator_id=claim_id,
        originator_version=3,
        timestamp=Reservation.Reclaimed.create_timestamp(),
        registration_id=second,
    )

    assert [holder(e) for e in (reserved, released, reclaimed)] == [first, None, second]


def _without_timestamp(event: object) -> dict[str, object]:
    return {k: v for k, v in vars(event).items() if k != "timestamp"}


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
