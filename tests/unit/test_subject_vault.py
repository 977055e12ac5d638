"""Sealing personal data with a per-subject key: only that key, for that registration, opens it."""

from __future__ import annotations

import uuid

import pytest
from cryptography.exceptions import InvalidTag
from eventsourcing.cryptography import AESCipher

from domain.form import parse_registration_form
from infrastructure.event_store.subject_keys import SubjectVault
from tests.factories import valid_address, valid_form, valid_pj_form

DETAILS = parse_registration_form(valid_form(name="Maria Sigilosa"))
COMPANY = parse_registration_form(valid_pj_form(phone=None, address=valid_address(complement=None)))


@pytest.mark.parametrize(
    "master_key", [None, AESCipher.create_key(32)], ids=["unwrapped", "wrapped by a master key"]
)
def test_sealed_details_open_with_their_key_to_what_was_submitted(master_key: str | None) -> None:
    vault = SubjectVault(master_key)
    registration_id = uuid.uuid4()

    sealed = vault.seal(registration_id, DETAILS)

    assert b"Maria" not in sealed.personal_data and DETAILS.cpf.encode() not in sealed.personal_data
    assert vault.open(registration_id, sealed.personal_data, sealed.key) == DETAILS


def test_a_company_without_phone_or_complement_opens_to_what_was_submitted() -> None:
    vault = SubjectVault()
    registration_id = uuid.uuid4()
    sealed = vault.seal(registration_id, COMPANY)
    assert COMPANY.phone is None and COMPANY.address.complement is None
    assert vault.open(registration_id, sealed.personal_data, sealed.key) == COMPANY


def test_every_registration_gets_a_key_of_its_own() -> None:
    vault = SubjectVault()
    first, second = vault.seal(uuid.uuid4(), DETAILS), vault.seal(uuid.uuid4(), DETAILS)
    assert first.key != second.key


def test_another_registrations_key_does_not_open_the_data() -> None:
    vault = SubjectVault()
    registration_id = uuid.uuid4()
    sealed = vault.seal(registration_id, DETAILS)
    other = vault.seal(registration_id, DETAILS)
    with pytest.raises(InvalidTag):
        vault.open(registration_id, sealed.personal_data, other.key)


def test_sealed_data_moved_to_another_registration_does_not_open() -> None:
    vault = SubjectVault()
    sealed = vault.seal(uuid.uuid4(), DETAILS)
    with pytest.raises(InvalidTag):
        vault.open(uuid.uuid4(), sealed.personal_data, sealed.key)


def test_a_stored_key_is_useless_without_the_master_key() -> None:
    registration_id = uuid.uuid4()
    sealed = SubjectVault(AESCipher.create_key(32)).seal(registration_id, DETAILS)
    stranger = SubjectVault(AESCipher.create_key(32))
    with pytest.raises(InvalidTag):
        stranger.open(registration_id, sealed.personal_data, sealed.key)
