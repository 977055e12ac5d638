"""VerifyEmail, ResendVerification and ExpireRegistrations on in-memory fakes of their ports,
with a clock the tests set."""

from __future__ import annotations

import dataclasses
import hmac
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from application.status import RegistrationStatus
from application.verification import (
    ExpireRegistrations,
    ResendVerification,
    VerifyEmail,
)
from domain.registration import EmailVerified, RegistrationExpired
from domain.statuses import EXPIRED, VERIFIED
from domain.verification import (
    AlreadyVerified,
    Challenge,
    ResendRefused,
    TooManyVerificationAttempts,
    VerificationCodeExpired,
    VerificationCodeInvalid,
    VerificationPolicy,
    code_for,
    matches,
    normalise_offer,
    token_for,
)
from domain.verification import RegistrationExpired as Expired

KEY = b"k" * 32
RID = uuid.UUID("6f1c2a52-3d4e-4f60-8a71-92b3c4d5e6f7")
T0 = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
POLICY = VerificationPolicy()


class Clock:
    def __init__(self) -> None:
        self.now = T0 + timedelta(seconds=5)

    def __call__(self) -> datetime:
        return self.now


class Challenges:
    """One challenge per registration, changed as the database would (atomically)."""

    def __init__(self, steps: list[str]) -> None:
        self.rows: dict[uuid.UUID, Challenge] = {}
        self.steps = steps
        self.queued: list[bytes] = []

    def issue(self, rid: uuid.UUID = RID, nonce: bytes = b"n" * 16) -> Challenge:
        self.rows[rid] = Challenge(
            rid,
            nonce,
            requested_at=T0,
            code_expires_at=POLICY.code_expiry(T0, T0),
            expires_at=POLICY.deadline(T0),
            attempts=0,
            sends=1,
            last_sent_at=T0,
        )
        return self.rows[rid]

    async def find(self, registration_id: uuid.UUID) -> Challenge | None:
        return self.rows.get(registration_id)

    async def count_wrong(self, registration_id: uuid.UUID, nonce: bytes, most: int) -> int | None:
        row = self.rows[registration_id]
        if row.nonce != nonce or row.attempts >= most:
            return None
        self.rows[registration_id] = dataclasses.replace(row, attempts=row.attempts + 1)
        return row.attempts + 1

    async def verified(self, registration_id: uuid.UUID, at: datetime) -> None:
        self.steps.append("mark_verified")
        self.rows[registration_id] = dataclasses.replace(self.rows[registration_id], verified_at=at)

    async def renew(
        self, registration_id: uuid.UUID, nonce: bytes, now: datetime, policy: VerificationPolicy
    ) -> Challenge | None:
        row = self.rows[registration_id]
        if not policy.may_resend(row, now) or row.verified_at or row.expired_at:
            return None
        self.rows[registration_id] = dataclasses.replace(
            row,
            nonce=nonce,
            attempts=0,
            sends=row.sends + 1,
            last_sent_at=now,
            code_expires_at=policy.code_expiry(now, row.requested_at),
        )
        self.queued.append(nonce)
        return self.rows[registration_id]

    async def overdue(self, now: datetime, limit: int) -> Sequence[Challenge]:
        return [
            row
            for row in self.rows.values()
            if row.verified_at is None and row.expired_at is None and row.expires_at <= now
        ][:limit]

    async def expired(self, registration_ids: Sequence[uuid.UUID], at: datetime) -> None:
        self.steps.append("mark_expired")
        for registration_id in registration_ids:
            self.rows[registration_id] = dataclasses.replace(
                self.rows[registration_id], expired_at=at
            )


class Verdicts:
    def __init__(self, steps: list[str]) -> None:
        self.events: dict[uuid.UUID, Any] = {}
        self.steps = steps

    async def record(self, event: Any) -> str | None:
        self.steps.append(f"record_{type(event).__name__}")
        before = self.events.get(event.originator_id)
        if before is not None:
            return VERIFIED if isinstance(before, EmailVerified) else EXPIRED
        self.events[event.originator_id] = event
        return None

    async def record_all(self, events: Sequence[Any]) -> Sequence[str | None]:
        return [await self.record(event) for event in events]


class Statuses:
    def __init__(self, steps: list[str]) -> None:
        self.status: dict[uuid.UUID, str] = {RID: "completed"}
        self.steps = steps

    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        found = self.status.get(registration_id)
        return None if found is None else RegistrationStatus(registration_id, found, T0, T0)

    async def settle(self, registration_id: uuid.UUID, status: str) -> RegistrationStatus | None:
        self.steps.append(f"settle_{status}")
        self.status[registration_id] = status
        return await self.find(registration_id)

    async def settle_all(self, registration_ids: Sequence[uuid.UUID], status: str) -> None:
        self.steps.append(f"settle_{status}")
        for registration_id in registration_ids:
            self.status[registration_id] = status


class Subjects:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    async def shred_all(self, registration_ids: Sequence[uuid.UUID]) -> int:
        self.steps.append("shred")
        return len(registration_ids)

    async def release_all(self, registration_ids: Sequence[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        self.steps.append("release")
        return {registration_id: 2 for registration_id in registration_ids}


class Copies:
    def __init__(self, steps: list[str]) -> None:
        self.steps = steps

    async def drop(self, registration_ids: Sequence[uuid.UUID]) -> Sequence[str]:
        self.steps.append("drop")
        return ["users_shard0"]


@dataclasses.dataclass
class World:
    steps: list[str]
    challenges: Challenges
    verdicts: Verdicts
    statuses: Statuses
    clock: Clock

    def verify(self) -> VerifyEmail:
        return VerifyEmail(
            self.challenges, self.verdicts, self.statuses, KEY, POLICY, clock=self.clock
        )

    def resend(self) -> ResendVerification:
        nonces = iter(bytes([n]) * 16 for n in range(1, 100))
        return ResendVerification(
            self.challenges, self.statuses, POLICY, clock=self.clock, new_nonce=lambda: next(nonces)
        )

    def expire(self) -> ExpireRegistrations:
        steps = self.steps
        return ExpireRegistrations(
            self.challenges,
            self.verdicts,
            Subjects(steps),
            Copies(steps),
            self.statuses,
            POLICY,
            clock=self.clock,
        )


@pytest.fixture
def world() -> World:
    steps: list[str] = []
    world = World(steps, Challenges(steps), Verdicts(steps), Statuses(steps), Clock())
    world.challenges.issue()
    return world


def _code(world: World) -> str:
    return code_for(KEY, RID, world.challenges.rows[RID].nonce)


def _wrong(world: World) -> str:
    return f"{(int(_code(world)) + 1) % 1_000_000:06d}"


def test_a_code_is_six_digits_made_from_its_nonce_and_a_token_is_43_characters() -> None:
    code = code_for(KEY, RID, b"n" * 16)
    assert len(code) == 6 and code.isdigit()
    assert code == code_for(KEY, RID, b"n" * 16)  # written again after a crash: the same
    assert len({code_for(KEY, RID, bytes([n]) * 16) for n in range(50)}) > 40
    assert len(token_for(KEY, RID, b"n" * 16)) == 43


@pytest.mark.parametrize("offered", ["wrong", "code", "token"])
def test_an_offer_is_compared_in_constant_time_with_both_the_code_and_the_token(
    offered: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The README's promise: no comparison that stops at the first differing character (its
    # time would tell how much of a guess was right), and no early exit that would tell a code
    # from a token. Timing itself cannot be asserted on a shared machine; the mechanism can.
    nonce = b"n" * 16
    code, token = code_for(KEY, RID, nonce), token_for(KEY, RID, nonce)
    offer = {"wrong": f"{(int(code) + 1) % 1_000_000:06d}", "code": code, "token": token}[offered]
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def recording(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr("domain.verification.hmac.compare_digest", recording)

    assert matches(KEY, RID, nonce, offer) is (offered != "wrong")
    assert sorted(expected for _, expected in compared) == sorted([code.encode(), token.encode()])
    assert all(given == offer.encode() for given, _ in compared)


@pytest.mark.parametrize(
    ("typed", "read"),
    [("123456", "123456"), (" 123 456 ", "123456"), ("123-456", "123456"), ("12345", None)],
)
def test_a_code_is_read_as_people_type_it(typed: str, read: str | None) -> None:
    assert normalise_offer(typed) == read


async def test_the_right_code_records_the_verdict_and_settles_the_status(world: World) -> None:
    status = await world.verify()(str(RID), _code(world))

    assert status is not None and status.status == "verified"
    assert isinstance(world.verdicts.events[RID], EmailVerified)
    assert world.verdicts.events[RID].originator_version == 2
    assert world.verdicts.events[RID].requested_at == T0
    assert world.steps == ["record_EmailVerified", "mark_verified", "settle_verified"]


async def test_the_links_token_verifies_as_the_code_does(world: World) -> None:
    token = token_for(KEY, RID, world.challenges.rows[RID].nonce)
    status = await world.verify()(str(RID), token)
    assert status is not None and status.status == "verified"


async def test_a_verified_registration_answers_again_without_a_second_event(world: World) -> None:
    await world.verify()(str(RID), _code(world))
    world.steps.clear()
    status = await world.verify()(str(RID), _wrong(world))
    assert status is not None and status.status == "verified"
    assert world.steps == []


async def test_wrong_codes_spend_the_attempts_then_even_the_right_one_is_refused(
    world: World,
) -> None:
    lefts = []
    for _ in range(POLICY.max_attempts):
        with pytest.raises(VerificationCodeInvalid) as wrong:
            await world.verify()(str(RID), _wrong(world))
        lefts.append(wrong.value.attempts_left)
    assert lefts == [4, 3, 2, 1, 0]
    with pytest.raises(TooManyVerificationAttempts) as spent:
        await world.verify()(str(RID), _code(world))
    assert spent.value.retry_after >= 1
    assert world.verdicts.events == {}


async def test_something_that_cannot_be_a_code_costs_no_attempt(world: World) -> None:
    for typed in ("abc", "12345", "x" * 200):
        with pytest.raises(VerificationCodeInvalid):
            await world.verify()(str(RID), typed)
    assert world.challenges.rows[RID].attempts == 0


async def test_an_expired_code_gets_expired_and_so_does_an_expired_registration(
    world: World,
) -> None:
    world.clock.now = T0 + POLICY.code_ttl
    with pytest.raises(VerificationCodeExpired) as code:
        await world.verify()(str(RID), _code(world))
    assert not code.value.registration_expired
    world.clock.now = T0 + POLICY.ttl
    with pytest.raises(VerificationCodeExpired) as registration:
        await world.verify()(str(RID), _code(world))
    assert registration.value.registration_expired


async def test_a_verification_that_loses_the_race_to_the_expiry_is_told_it_expired(
    world: World,
) -> None:
    world.verdicts.events[RID] = RegistrationExpired(  # type: ignore[call-arg]
        originator_id=RID, originator_version=2, timestamp=T0, requested_at=T0
    )
    with pytest.raises(VerificationCodeExpired) as lost:
        await world.verify()(str(RID), _code(world))
    assert lost.value.registration_expired
    assert "mark_verified" not in world.steps


@pytest.mark.parametrize(
    "subject", ["not-a-uuid", "0a1b2c3d-4e5f-4061-8273-849506a7b8c9"], ids=["malformed", "unknown"]
)
async def test_an_unknown_or_malformed_id_is_none(world: World, subject: str) -> None:
    assert await world.verify()(subject, "123456") is None
    assert await world.resend()(subject) is None


async def test_a_new_code_waits_its_interval_resets_the_attempts_and_retires_the_old(
    world: World,
) -> None:
    old = _code(world)
    with pytest.raises(VerificationCodeInvalid):
        await world.verify()(str(RID), _wrong(world))
    with pytest.raises(ResendRefused) as too_soon:
        await world.resend()(str(RID))
    assert too_soon.value.retry_after == 55  # a minute after the first message, 5 s in

    world.clock.now = T0 + POLICY.resend_every
    assert await world.resend()(str(RID)) == RID

    renewed = world.challenges.rows[RID]
    assert (renewed.sends, renewed.attempts) == (2, 0)
    assert world.challenges.queued == [renewed.nonce]
    if old != _code(world):
        with pytest.raises(VerificationCodeInvalid):
            await world.verify()(str(RID), old)
    assert await world.verify()(str(RID), _code(world)) is not None


async def test_once_every_message_is_spent_no_new_code_until_the_registrations_end(
    world: World,
) -> None:
    for n in range(1, POLICY.max_sends):
        world.clock.now = T0 + POLICY.resend_every * n
        await world.resend()(str(RID))
    world.clock.now += POLICY.resend_every
    with pytest.raises(ResendRefused) as spent:
        await world.resend()(str(RID))
    assert spent.value.retry_after == int((POLICY.deadline(T0) - world.clock.now).total_seconds())


async def test_a_verified_or_expired_registration_gets_no_new_code(world: World) -> None:
    await world.verify()(str(RID), _code(world))
    with pytest.raises(AlreadyVerified):
        await world.resend()(str(RID))
    world.challenges.issue(rid := uuid.uuid4())
    world.clock.now = T0 + POLICY.ttl
    with pytest.raises(Expired):
        await world.resend()(str(rid))


async def test_an_overdue_registration_is_said_expired_only_once_its_values_are_free(
    world: World,
) -> None:
    world.clock.now = T0 + POLICY.ttl
    [expiry] = await world.expire().sweep()

    assert expiry.recorded and expiry.released == 2
    assert world.steps == [
        "record_RegistrationExpired",
        "shred",
        "drop",
        "release",
        "settle_expired",
        "mark_expired",
    ]
    assert await world.expire().sweep() == []  # done: nothing overdue any more


async def test_a_registration_verified_just_before_its_sweep_keeps_everything(
    world: World,
) -> None:
    # Verified (its event recorded), but its verifier stopped before marking the challenge.
    await world.verdicts.record(
        EmailVerified(  # type: ignore[call-arg]
            originator_id=RID, originator_version=2, timestamp=T0, requested_at=T0
        )
    )
    world.steps.clear()
    world.clock.now = T0 + POLICY.ttl

    [expiry] = await world.expire().sweep()

    assert not expiry.recorded
    assert "shred" not in world.steps and "release" not in world.steps
    assert world.statuses.status[RID] == "verified"


async def test_a_sweep_expires_its_registrations_together_each_through_every_step_in_order(
    world: World,
) -> None:
    others = [uuid.uuid4(), uuid.uuid4()]
    for rid in others:
        world.challenges.issue(rid)
    world.clock.now = T0 + POLICY.ttl

    expiries = await world.expire().sweep()

    assert {expiry.registration_id for expiry in expiries} == {RID, *others}
    assert all(expiry.recorded and expiry.released == 2 for expiry in expiries)
    # Each step in one call for the three (the verdicts' fake records one by one); each is shredded
    # before the copies go, and released before it is said expired.
    assert world.steps == [
        *["record_RegistrationExpired"] * 3,
        "shred",
        "drop",
        "release",
        "settle_expired",
        "mark_expired",
    ]
    assert all(world.statuses.status[rid] == "expired" for rid in (RID, *others))
    assert await world.expire().sweep() == []
