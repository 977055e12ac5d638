"""The process manager: retries projections that failed on an event, with backoff, and
dead-letters the ones that keep failing (the policy is ``RetryPolicy``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from application.error_text import describe


class FailedProjection(Protocol):
    @property
    def id(self) -> int: ...

    @property
    def projection(self) -> str: ...

    @property
    def notification_id(self) -> int: ...

    @property
    def attempts(self) -> int: ...


# The failure log's own record type: it is given back the failures it handed out, so a log
# whose methods take its concrete record (not any ``FailedProjection``) still fits.
F = TypeVar("F", bound=FailedProjection)


class FailureLog(Protocol[F]):
    async def due(self, limit: int = 100) -> Sequence[F]: ...

    async def resolve(self, failure: F) -> None: ...

    async def attempt_failed(self, failure: F, error: str) -> F: ...


class Replayer(Protocol):
    async def replay(self, projection: str, notification_id: int) -> None:
        """Project that one event again; raises what the projection raises."""

    def transient(self, error: BaseException) -> bool:
        """Whether the error is an outage (not the event's fault), so it costs no attempt."""


@dataclass
class ProcessManager(Generic[F]):
    failures: FailureLog[F]
    replayer: Replayer

    async def retry(self, failure: F) -> bool:
        """One attempt; True when the event is now projected."""
        try:
            await self.replayer.replay(failure.projection, failure.notification_id)
        except Exception as error:
            if self.replayer.transient(error):
                raise
            await self.failures.attempt_failed(failure, describe(error))
            return False
        await self.failures.resolve(failure)
        return True

    async def retry_due(self, limit: int = 100) -> int:
        """Retry every failure whose time has come; returns how many were retried."""
        due = await self.failures.due(limit)
        for failure in due:
            await self.retry(failure)
        return len(due)
