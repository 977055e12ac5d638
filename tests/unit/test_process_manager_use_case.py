"""The process manager on in-memory fakes: a retry that works resolves the failure, one that
fails costs an attempt, and an outage costs none."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from application.process_manager import FailedProjection, ProcessManager


@dataclass(frozen=True)
class Failure:
    id: int
    projection: str
    notification_id: int
    attempts: int = 1


class Outage(Exception):
    pass


class Failures:
    def __init__(self, *failures: Failure) -> None:
        self.open: dict[int, FailedProjection] = {f.id: f for f in failures}
        self.resolved: list[int] = []
        self.errors: dict[int, list[str]] = {}

    async def due(self, limit: int = 100) -> list[FailedProjection]:
        return list(self.open.values())[:limit]

    async def resolve(self, failure: FailedProjection) -> None:
        del self.open[failure.id]
        self.resolved.append(failure.id)

    async def attempt_failed(self, failure: FailedProjection, error: str) -> FailedProjection:
        self.errors.setdefault(failure.id, []).append(error)
        self.open[failure.id] = Failure(
            failure.id, failure.projection, failure.notification_id, failure.attempts + 1
        )
        return self.open[failure.id]


class Replayer:
    """Replays by notification id: those in ``broken`` raise the event's own error, those in
    ``unreachable`` an outage."""

    def __init__(
        self, broken: frozenset[int] = frozenset(), unreachable: frozenset[int] = frozenset()
    ) -> None:
        self.broken, self.unreachable = broken, unreachable
        self.replayed: list[tuple[str, int]] = []

    async def replay(self, projection: str, notification_id: int) -> None:
        self.replayed.append((projection, notification_id))
        if notification_id in self.unreachable:
            raise Outage("the database went away")
        if notification_id in self.broken:
            raise ValueError("the shard rejected the row")

    def transient(self, error: BaseException) -> bool:
        return isinstance(error, Outage)


async def test_a_retry_that_projects_the_event_resolves_the_failure() -> None:
    failures = Failures(Failure(1, "users_shard0", 42))
    replayer = Replayer()
    assert await ProcessManager(failures, replayer).retry(failures.open[1]) is True
    assert replayer.replayed == [("users_shard0", 42)]
    assert (failures.resolved, failures.open, failures.errors) == ([1], {}, {})


async def test_a_retry_that_fails_again_costs_an_attempt_and_says_why() -> None:
    failures = Failures(Failure(1, "email_lookup", 7))
    manager = ProcessManager(failures, Replayer(broken=frozenset({7})))
    assert await manager.retry(failures.open[1]) is False
    assert failures.open[1].attempts == 2
    assert "the shard rejected the row" in failures.errors[1][0]
    assert failures.resolved == []


async def test_an_outage_costs_no_attempt_and_reaches_the_caller() -> None:
    # The caller waits the outage out; counting it would dead-letter good events.
    failures = Failures(Failure(1, "users_shard1", 9))
    manager = ProcessManager(failures, Replayer(unreachable=frozenset({9})))
    with pytest.raises(Outage):
        await manager.retry(failures.open[1])
    assert (failures.open[1].attempts, failures.errors, failures.resolved) == (1, {}, [])


async def test_every_due_failure_is_retried_and_one_that_fails_does_not_stop_the_others() -> None:
    failures = Failures(*(Failure(i, "users_shard0", 100 + i) for i in range(1, 5)))
    manager = ProcessManager(failures, Replayer(broken=frozenset({102})))
    assert await manager.retry_due() == 4
    assert failures.resolved == [1, 3, 4]
    assert list(failures.open) == [2]
