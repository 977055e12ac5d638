"""The API process's composition: its engines, clients and use cases; ``start`` builds,
``stop`` closes."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import asyncpg
import structlog
from redis.asyncio import Redis

from application.projection_progress import ProjectionProgress
from application.registering import RegisterUser
from application.services import Services, trusted_networks
from application.status import STATUS_CLIENT_LIMIT, GetRegistrationStatus
from application.verification import ResendVerification, VerifyEmail
from domain.verification import verification_key
from infrastructure import heap
from infrastructure.composition.read_side import open_read_side
from infrastructure.event_store import key_checks
from infrastructure.event_store.batch_append import BatchAppender
from infrastructure.event_store.group_commit import GroupCommit
from infrastructure.event_store.owner_notifications import OwnerNotifications
from infrastructure.event_store.store import SignupEvents, open_event_store
from infrastructure.event_store.subject_keys import SubjectVault
from infrastructure.postgres_outages import once_reachable, open_pool
from infrastructure.read_side.email_index import EmailIndex
from infrastructure.read_side.gauges import publish_gauges
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.read_store import (
    asyncpg_dsn,
)
from infrastructure.read_side.status_cache import PendingNotes, PollCaches
from infrastructure.read_side.status_queries import StatusQueries
from infrastructure.redis_store.idempotency import RedisIdempotencyStore
from infrastructure.redis_store.rate_limits import RedisRateLimiter
from infrastructure.settings import Settings
from infrastructure.verification.challenges import (
    EventStoreVerdicts,
    VerdictStatuses,
    Verifications,
)

log = structlog.get_logger(__name__)


@dataclass
class Container:
    """The API process's engines, clients and use cases; ``start`` builds, ``stop`` closes."""

    settings: Settings
    events: SignupEvents
    appender: BatchAppender
    # Status queries' own connections: a flood of them cannot starve the appends.
    status_read_pool: asyncpg.Pool
    status_events_pool: asyncpg.Pool
    redis: Redis
    group_commit: GroupCommit
    email_index: EmailIndex | None
    # Projection lag and dead letters on the API's /metrics, where operators and the bench
    # look; every API process reports the same figures.
    read_side: ReadSide
    stop_gauges: asyncio.Event = field(default_factory=asyncio.Event)
    gauges: asyncio.Task[None] | None = None
    # Fed by the gauges: whether the projections move, for /health/ready.
    progress: ProjectionProgress = field(init=False)
    # Each registration recorded here, noted pending in the status cache for its first polls.
    pending: PendingNotes = field(init=False)
    # What polls found in the read model, cached for the polls after them.
    poll_caches: PollCaches = field(init=False)

    def __post_init__(self) -> None:
        self.progress = ProjectionProgress(self.settings.projection_stall_seconds)
        self.pending = PendingNotes.to(self.redis, self.settings.status_pending_seconds)
        self.poll_caches = PollCaches.to(self.redis, self.settings.status_cache_seconds)

    @classmethod
    async def start(cls, settings: Settings) -> Container | None:
        """The API's clients, once PostgreSQL answers; None if the process is told to stop
        (SIGTERM, Ctrl-C) before it does."""
        assert settings.database_url and settings.redis_url, "database and Redis URLs must be set"
        # Opening the event store connects. An API started before its database used to die of
        # it within 2 s, each process printing a 90-line traceback, and with several processes
        # the command then exited with status 0. It waits instead, as the worker does, and
        # does not listen meanwhile, so it is not ready. A stop signal ends the wait: the
        # server, whose own handler still runs, then stops without serving.
        stop = asyncio.Event()
        with _setting_on_stop_signals(stop):
            events = await once_reachable(
                functools.partial(
                    asyncio.to_thread,
                    open_event_store,
                    settings.database_url,
                    settings.db_pool_size,
                    cipher_key=settings.event_cipher_key,
                ),
                stop,
                waiting="api_waiting_for_postgres",
                url=settings.database_url,
            )
        if events is None:
            log.info("api_stopped_while_waiting_for_postgres")
            return None
        # Other keys than the store's would break uniqueness or write unreadable events.
        await key_checks.verify_or_close(
            events, settings.reservation_key, settings.event_cipher_key
        )
        appender = await BatchAppender.open(
            settings.database_url, events, connections=settings.append_concurrency + 1
        )
        # Status queries and the email lookup tolerate a replica's lag: a registration it has
        # not seen yet is found in the event store and answered as pending.
        read_url = settings.read_replica_url or settings.read_url
        status_read_pool = await open_pool(asyncpg_dsn(read_url), settings.db_pool_size)
        # One pool when both are one database: a status query then asks both in one trip.
        status_events_pool = (
            status_read_pool
            if asyncpg_dsn(read_url) == asyncpg_dsn(settings.database_url)
            else await open_pool(asyncpg_dsn(settings.database_url), settings.db_pool_size)
        )
        container = cls(
            settings=settings,
            events=events,
            appender=appender,
            status_read_pool=status_read_pool,
            status_events_pool=status_events_pool,
            redis=Redis.from_url(
                settings.redis_url,
                socket_timeout=settings.redis_timeout_seconds,
                socket_connect_timeout=settings.redis_timeout_seconds,
            ),
            group_commit=GroupCommit(
                appender,
                max_size=settings.batch_max_size,
                max_wait=settings.batch_max_wait_ms / 1000,
                concurrency=settings.append_concurrency,
                answer_within=settings.append_timeout_seconds,
            ),
            email_index=EmailIndex(read_url, settings.db_pool_size)
            if settings.fast_reject
            else None,
            read_side=open_read_side(settings),
        )
        container.group_commit.start()
        container.gauges = asyncio.create_task(
            publish_gauges(container.read_side, container.stop_gauges, container.progress)
        )
        heap.settle()
        return container

    def services(self) -> Services:
        """The use cases the entry points call, wired to this container's clients."""
        settings = self.settings
        # One limiter for both routes: one call a loop turn counts whatever both asked for.
        limiter = RedisRateLimiter(
            self.redis,
            {
                "client": settings.rate_limit_per_client,
                "email": settings.rate_limit_per_email,
                "cpf": settings.rate_limit_per_cpf,
                STATUS_CLIENT_LIMIT: settings.rate_limit_status_per_client,
            },
        )
        status_queries = StatusQueries(
            self.status_read_pool,
            self.status_events_pool,
            self.events.mapper,
            self.poll_caches,
            events_table=self.appender.events_table,
            keys_table=self.appender.keys_table,
            reader=limiter.read,
        )
        # Verification writes to the read database itself (never its replica), on the read
        # side's engine: off the signup path, it needs no pool of its own.
        challenges = Verifications(self.read_side.read_engine)
        statuses = VerdictStatuses(
            status_queries, self.read_side.read_engine, self.redis, settings.status_cache_seconds
        )
        policy = settings.verification_policy()
        return Services(
            register_user=RegisterUser(
                self.group_commit,
                settings.reservation_key.encode(),
                SubjectVault(settings.event_cipher_key),
                self.email_index,
                limiter,
                owners=OwnerNotifications(self.events) if settings.enumeration_resistant else None,
                pending=self.pending,
            ),
            idempotency=RedisIdempotencyStore(
                self.redis,
                ttl_seconds=settings.idempotency_ttl_seconds,
                in_flight_seconds=settings.idempotency_in_flight_seconds,
            ),
            get_status=GetRegistrationStatus(status_queries, limiter),
            readiness=self.readiness,
            verify_email=VerifyEmail(
                challenges,
                EventStoreVerdicts(self.events),
                statuses,
                verification_key(settings.reservation_key.encode()),
                policy,
                limiter,
            ),
            resend_verification=ResendVerification(challenges, statuses, policy, limiter),
            trusted_proxies=trusted_networks(settings.trusted_proxies),
        )

    async def stop(self) -> None:
        self.stop_gauges.set()
        if self.gauges is not None:
            await self.gauges
        await self.read_side.close()
        await self.group_commit.stop()
        await self.pending.writes.flush()
        await self.poll_caches.writes.flush()
        await self.appender.close()
        if self.email_index is not None:
            await self.email_index.close()
        await self.redis.aclose()
        await self.status_read_pool.close()
        if self.status_events_pool is not self.status_read_pool:
            await self.status_events_pool.close()
        await asyncio.to_thread(self.events.close)

    async def readiness(self) -> dict[str, bool]:
        """Whether each server answers, checked concurrently, and whether the projections
        move (a dead worker leaves every server answering and every registration pending)."""

        def postgres() -> bool:
            try:
                with self.events.recorder.datastore.get_connection() as conn:  # type: ignore[attr-defined]
                    conn.execute("SELECT 1")
                return True
            except Exception:
                return False

        async def postgres_in_time() -> bool:
            try:
                return await asyncio.wait_for(asyncio.to_thread(postgres), timeout=3)
            except TimeoutError:
                return False

        async def redis() -> bool:
            try:
                return bool(await asyncio.wait_for(self.redis.ping(), timeout=2))
            except Exception:
                return False

        pg_ok, redis_ok = await asyncio.gather(postgres_in_time(), redis())
        moving = not self.progress.stalled(time.monotonic())
        return {"postgres": pg_ok, "redis": redis_ok, "projections": moving}


@contextlib.asynccontextmanager
async def running_services(settings: Settings) -> AsyncIterator[Services | None]:
    container = await Container.start(settings)
    if container is None:  # told to stop while waiting: nothing was opened, nothing served
        yield None
        return
    try:
        yield container.services()
    finally:
        await container.stop()


@contextlib.contextmanager
def _setting_on_stop_signals(stop: asyncio.Event) -> Iterator[None]:
    """``stop`` is set on SIGTERM or SIGINT, and whoever handled them before (uvicorn, which
    stops its server once start-up returns) still does."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only: an app run by a test client's thread
        return
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {
        sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)
    }

    def handle(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(stop.set)
        chained = previous[signum]
        if callable(chained):
            chained(signum, frame)

    for sig in previous:
        signal.signal(sig, handle)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
