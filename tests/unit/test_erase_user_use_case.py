"""EraseUser on in-memory fakes of its ports: whom it finds, and the order it erases in."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pytest

from application.erasure import EraseUser, UnknownSubject
from domain.reservations import Claim

REGISTRATION = uuid.UUID("6f1c2a52-3d4e-4f60-8a71-92b3c4d5e6f7")
USER = uuid.UUID("0a1b2c3d-4e5f-4061-8273-849506a7b8c9")


class Subjects:
    """One registration of maria@example.com with its key and two held values; every step
    is written to ``steps`` so the order can be read back."""

    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.keys = {REGISTRATION}
        self.held = {REGISTRATION: [Claim("email", "maria@example.com"), Claim("cpf", "x")]}

    async def registration_of(self, subject_id: uuid.UUID) -> uuid.UUID | None:
        return {USER: REGISTRATION, REGISTRATION: REGISTRATION}.get(subject_id)

    async def registration_holding(self, claim: Claim) -> uuid.UUID | None:
        return next((r for r, claims in self.held.items() if claim in claims), None)

    async def shred(self, registration_id: uuid.UUID) -> bool:
        self.steps.append("shred")
        if registration_id not in self.keys:
            return False
        self.keys.remove(registration_id)
        return True

    async def release(self, registration_id: uuid.UUID) -> int:
        self.steps.append("release")
        return len(self.held.pop(registration_id, []))


class ReadModels:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps
        self.holding = {REGISTRATION: ["email_lookup", "users_shard1", "registration_status"]}

    async def forget(self, registration_id: uuid.UUID) -> Sequence[str]:
        self.steps.append("forget")
        return self.holding.pop(registration_id, [])


def _erase() -> tuple[EraseUser, list[str]]:
    steps: list[str] = []
    return EraseUser(Subjects(steps), ReadModels(steps)), steps


async def test_a_person_is_found_by_their_email_as_they_spell_it_and_erased() -> None:
    erase, _ = _erase()
    erased = await erase("  Maria@Example.COM ")
    assert erased.registration_id == REGISTRATION
    assert erased.key_shredded
    assert erased.removed_from == ["email_lookup", "users_shard1", "registration_status"]
    assert erased.released == 2


@pytest.mark.parametrize("subject", [str(USER), str(REGISTRATION)])
async def test_a_person_is_found_by_their_user_id_or_registration_id(subject: str) -> None:
    erase, _ = _erase()
    assert (await erase(subject)).registration_id == REGISTRATION


async def test_the_key_goes_first_and_the_values_last() -> None:
    # Shredded first, no projector can write the person again; released last, a new signup
    # with the same email cannot reach the lookup before the old row has left it.
    erase, steps = _erase()
    await erase("maria@example.com")
    assert steps == ["shred", "forget", "release"]


async def test_erasing_twice_says_the_key_was_already_shredded_and_frees_nothing_more() -> None:
    erase, _ = _erase()
    await erase(str(REGISTRATION))
    again = await erase(str(REGISTRATION))
    assert (again.key_shredded, again.removed_from, again.released) == (False, [], 0)


@pytest.mark.parametrize(
    "subject",
    ["nobody@example.com", "not an email@", "not-a-uuid", str(uuid.uuid4())],
    ids=["an unknown email", "an invalid email", "neither email nor id", "an unknown id"],
)
async def test_an_unknown_subject_is_refused_and_nothing_is_touched(subject: str) -> None:
    erase, steps = _erase()
    with pytest.raises(UnknownSubject):
        await erase(subject)
    assert steps == []
