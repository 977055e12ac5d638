"""The read models' reducers, against rows written out by hand, and users pinned to shards.

``tests/read_models.py`` compares the tables with a replay through these same reducers and
shard map, which a bug in either would pass; these tests state the expected rows literally.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from domain.address import Address
from domain.form import RegistrationDetails
from projections.email_lookup import email_lookup
from projections.model import SIGNUP_ATTEMPTED, Projection, RequestedRegistration
from projections.registration_status import given_failures, registration_status
from projections.shards import ShardMap, logical_shard, user_id_for
from projections.users import users

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FIRST = uuid.UUID("00000000-0000-4000-8000-000000000001")
OTHER = uuid.UUID("3f2b8c1e-7d4a-4e6b-9a0c-1d2e3f4a5b6c")
ADDRESS = Address("01310100", "Avenida Paulista", "1000", None, "Bela Vista", "São Paulo", "SP")
PERSON = RegistrationDetails(
    person_type="PF",
    cpf="52998224725",
    cnpj=None,
    name="Maria da Silva",
    mobile_phone="+5511987654321",
    phone=None,
    email="maria@example.com",
    address=ADDRESS,
)
TWO_SHARDS = ShardMap(64, ["shard-0", "shard-1"])


def _requested(
    registration_id: uuid.UUID, details: RegistrationDetails | None = PERSON
) -> RequestedRegistration:
    return RequestedRegistration(registration_id, AT, details)


def test_known_registrations_have_these_user_ids_and_shards_for_good() -> None:
    # A change here moves users between shards and gives them new ids: a rebuild of every
    # shard, and every client's user id changes. Pinned on purpose.
    assert user_id_for(FIRST) == uuid.UUID("93733a68-dae0-5e9d-9408-f4a89c0fed9d")
    assert logical_shard(user_id_for(FIRST), 64) == 49
    assert TWO_SHARDS.locate(FIRST)[1:] == (49, 1)
    assert user_id_for(OTHER) == uuid.UUID("deb76af3-c51e-5091-885b-a266f387bc1e")
    assert TWO_SHARDS.locate(OTHER)[1:] == (56, 0)


def test_a_user_is_written_whole_to_its_own_shard_only() -> None:
    row = {
        "user_id": uuid.UUID("93733a68-dae0-5e9d-9408-f4a89c0fed9d"),
        "registration_id": FIRST,
        "logical_shard": 49,
        "person_type": "PF",
        "cpf": "52998224725",
        "cnpj": None,
        "name": "Maria da Silva",
        "mobile_phone": "+5511987654321",
        "phone": None,
        "email": "maria@example.com",
        "address": {
            "cep": "01310100",
            "street": "Avenida Paulista",
            "number": "1000",
            "complement": None,
            "neighborhood": "Bela Vista",
            "city": "São Paulo",
            "state": "SP",
        },
        "created_at": AT,
    }
    assert users(TWO_SHARDS, 1).reduce(_requested(FIRST)) == [row]
    assert users(TWO_SHARDS, 0).reduce(_requested(FIRST)) == []


def test_the_email_lookup_names_the_registration_and_its_logical_shard() -> None:
    assert email_lookup(64).reduce(_requested(OTHER)) == [
        {
            "email": "maria@example.com",
            "registration_id": OTHER,
            "shard": 56,
            "registered_at": AT,
        }
    ]


def test_a_status_row_is_completed_with_the_user_id_and_no_reason() -> None:
    assert registration_status().reduce(_requested(FIRST)) == [
        {
            "registration_id": FIRST,
            "status": "completed",
            "user_id": uuid.UUID("93733a68-dae0-5e9d-9408-f4a89c0fed9d"),
            "reason": None,
            "requested_at": AT,
        }
    ]


def test_a_status_row_is_failed_once_an_event_is_dead_lettered_and_pending_while_one_waits() -> (
    None
):
    (row,) = registration_status().reduce(_requested(FIRST))
    user = row["user_id"]
    assert given_failures(row, dead_lettered=True, waiting=True) == {
        "registration_id": FIRST,
        "status": "failed",
        "user_id": None,
        "reason": "The registration could not be completed; an operator has been notified.",
        "requested_at": AT,
    }
    assert given_failures(row, dead_lettered=False, waiting=True) == {
        "registration_id": FIRST,
        "status": "pending",
        "user_id": None,
        "reason": None,
        "requested_at": AT,
    }
    assert given_failures(row, dead_lettered=False, waiting=False)["user_id"] == user


def test_an_erased_registration_gives_no_row_in_any_read_model() -> None:
    erased = _requested(FIRST, details=None)
    for projection in (
        users(TWO_SHARDS, 0),
        users(TWO_SHARDS, 1),
        email_lookup(64),
        registration_status(),
    ):
        assert projection.reduce(erased) == [], projection.name


def test_a_duplicate_attempt_completes_like_a_registration_and_is_no_one_elses_business() -> None:
    attempt = RequestedRegistration(OTHER, AT, None, attempt=True)
    assert registration_status().reduce(attempt) == [
        {
            "registration_id": OTHER,
            "status": "completed",
            "user_id": user_id_for(OTHER),
            "reason": None,
            "requested_at": AT,
        }
    ]
    # Only the status projection reads attempts; the others' topics leave them out.
    assert [p.name for p in _all_projections() if SIGNUP_ATTEMPTED in p.topics] == [
        "registration_status"
    ]


def _all_projections() -> list[Projection]:
    return [users(TWO_SHARDS, 0), users(TWO_SHARDS, 1), email_lookup(64), registration_status()]


def test_each_read_model_declares_the_columns_its_rows_fill_and_a_registration_id() -> None:
    decoy = RequestedRegistration(OTHER, AT, None, attempt=True)
    for projection, registration in (
        (users(TWO_SHARDS, 1), _requested(FIRST)),
        (email_lookup(64), _requested(FIRST)),
        (registration_status(), _requested(FIRST)),
        (registration_status(), decoy),
    ):
        (row,) = projection.reduce(registration)
        columns = projection.layout.columns
        # The time a row is written is the database's, never the reducer's.
        assert set(row) == {c.name for c in columns if not c.written_at}, projection.name
        assert "registration_id" in row, projection.name


def test_the_read_models_are_read_through_these_views() -> None:
    assert [p.layout.view for p in (users(TWO_SHARDS, 0), users(TWO_SHARDS, 1))] == [
        "users",
        "users",
    ]
    assert email_lookup(64).layout.view == "email_lookup"
    assert registration_status().layout.view == "registration_status"


def test_only_the_status_read_model_keeps_expired_registrations_and_replaces_rows() -> None:
    status = registration_status().layout
    assert (status.personal, users(TWO_SHARDS, 0).layout.personal) == (False, True)
    assert email_lookup(64).layout.personal
    assert status.replaced_by is not None
    assert status.replaced_by.values == ("verified", "expired")
    assert users(TWO_SHARDS, 0).layout.replaced_by is None
    assert email_lookup(64).layout.replaced_by is None
