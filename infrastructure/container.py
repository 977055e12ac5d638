"""The composition root: the one place that builds engines, clients and use cases."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from eventsourcing.postgres import PostgresApplicationRecorder
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from application.erasure import Erased, EraseUser
from application.error_text import describe
from application.process_manager import ProcessManager
from application.projection_progress import ProjectionProgress
from application.registering import RegisterUser
from application.retry_policy import RetryPolicy
from application.services import Services, trusted_networks
from application.status import STATUS_CLIENT_LIMIT, GetRegistrationStatus
from application.verification import ExpireRegistrations, ResendVerification, VerifyEmail
from domain.verification import verification_key
from infrastructure import heap, metrics
from infrastructure.erasure import EventStoreSubjects, ExpiredCopies, ReadModelsAndCache
from infrastructure.event_store import claims
from infrastructure.event_store.batch_append import BatchAppender
from infrastructure.event_store.group_commit import GroupCommit
from infrastructure.event_store.owner_notifications import OwnerNotifications
from infrastructure.event_store.store import SignupEvents, open_event_store
from infrastructure.event_store.subject_keys import SubjectVault
from infrastructure.metrics import serve_worker_metrics
from infrastructure.postgres_outages import EVENT_STORE_UNAVAILABLE, open_pool
from infrastructure.read_side import runner as projection_runner
from infrastructure.read_side.email_index import EmailIndex
from infrastructure.read_side.event_source import EventSource, event_mapper
from infrastructure.read_side.failures import FailureLog
from infrastructure.read_side.gauges import publish_gauges
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import Projector, StatusProjector, sleep_unless_stopped
from infrastructure.read_side.read_store import (
    ProjectionStore,
    asyncpg_dsn,
    main_catalog,
    make_engine,
)
from infrastructure.read_side.replay import Replays
from infrastructure.read_side.status_cache import PendingNotes, Settlements
from infrastructure.read_side.status_queries import StatusQueries
from infrastructure.read_side.wakeups import Wakeups
from infrastructure.redis_store.idempotency import RedisIdempotencyStore
from infrastructure.redis_store.rate_limits import RedisRateLimiter
from infrastructure.settings import Settings
from infrastructure.verification.challenges import (
    ChallengeIssuer,
    EventStoreVerdicts,
    VerdictStatuses,
    Verifications,
    start_epoch,
)
from infrastructure.verification.mailer import Mailer, SmtpRelay
from projections.email_lookup import email_lookup
from projections.model import Projection
from projections.registration_status import registration_status
from projections.shards import ShardMap
from projections.users import users

# Every signup waits for the rate limiter's Redis call (and, with an Idempotency-Key, for two
# more): a Redis that hangs instead of refusing (stopped, or packets dropped) held each of
# them for redis-py's default 5 s before the API failed open. A busy server answers the
# limiter's call in milliseconds; a second is beyond any answer worth waiting for.
API_REDIS_TIMEOUT_SECONDS = 1.0

log = structlog.get_logger(__name__)


def open_read_side(
    settings: Settings, customise: Callable[[Projection], Projection] | None = None
) -> ReadSide:
    """The read side's engines, failure log, projectors, process manager and mailer.

    ``customise`` lets a test wrap a projection (to make it fail on an event).
    """
    wrap = customise or (lambda projection: projection)
    events_engine = make_engine(settings.database_url or settings.read_url, pool_size=4)
    read_engine = make_engine(settings.read_url, pool_size=4)
    shard_engines = [make_engine(url, pool_size=2) for url in settings.shard_urls]
    source = EventSource(
        events_engine,
        event_mapper(settings.event_cipher_key),
        SubjectVault(settings.event_cipher_key),
    )
    policy = RetryPolicy(
        max_attempts=settings.retry_max_attempts,
        base=timedelta(seconds=settings.retry_base_seconds),
        cap=timedelta(seconds=settings.retry_max_seconds),
    )
    verification = settings.verification_policy()
    issuer = ChallengeIssuer(verification)
    # The worker's settlements of the status cache (see status_cache); the client connects
    # only when one is written, so the commands that write none never do.
    settlements = (
        Settlements.to(
            Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2),
            settings.status_pending_seconds,
        )
        if settings.redis_url
        else None
    )
    settle = settlements.settle if settlements is not None else None
    failures = FailureLog(read_engine, policy, issuer, settle)
    shard_map = ShardMap(settings.logical_shards, settings.shard_urls)
    batch = settings.projection_batch_size

    def projector(projection: Projection, engine: AsyncEngine) -> Projector:
        return Projector(
            wrap(projection), ProjectionStore(projection, engine), source, failures, batch
        )

    projectors = {
        p.name: p
        for p in [
            projector(email_lookup(settings.logical_shards), read_engine),
            *(
                projector(users(shard_map, index), engine)
                for index, engine in enumerate(shard_engines)
            ),
        ]
    }
    status_projection = wrap(registration_status())
    status = StatusProjector(
        status_projection,
        ProjectionStore(status_projection, read_engine),
        source,
        failures,
        batch,
        gate=projection_runner.slowest_position(list(projectors.values())),
        settle=settle,
        issuer=issuer,
    )
    mailer = Mailer(
        read_engine,
        events_engine,
        source,
        failures,
        SmtpRelay.from_url(settings.smtp_url) if settings.smtp_url else None,
        verification_key(settings.reservation_key.encode()),
        settings.public_url,
        settings.mail_from,
        code_ttl=verification.code_ttl,
        registration_ttl=verification.ttl,
        shards=max(1, settings.mail_shards),
    )
    replays = Replays(source, [*projectors.values(), status], mailer)
    return ReadSide(
        events_engine=events_engine,
        read_engine=read_engine,
        shard_engines=shard_engines,
        shard_map=shard_map,
        source=source,
        failures=failures,
        projectors=projectors,
        status=status,
        verifications=Verifications(read_engine),
        mailer=mailer,
        process_manager=ProcessManager(failures, replays),
        settlements=settlements,
    )


async def run_projections(
    settings: Settings,
    read_side: ReadSide,
    stop: asyncio.Event,
    *,
    retry_every: float = 0.5,
    only: Collection[str] | None = None,
    beside_status: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
    mail: bool = True,
) -> None:
    """``projection_runner.run`` for ``read_side``, woken by the event store's appends."""
    await projection_runner.run(
        read_side,
        stop,
        wakeups=Wakeups(settings.database_url or settings.read_url, read_side.source.table),
        fill=settings.projection_fill_ms / 1000,
        retry_every=retry_every,
        only=only,
        beside_status=beside_status,
        mail=mail,
    )


def migrate(settings: Settings) -> None:
    """Create or upgrade every schema this service owns: event store, read models, shards."""
    assert settings.database_url, "DATABASE_URL is required to migrate"
    events = open_event_store(
        settings.database_url, pool_size=1, create_table=True, cipher_key=settings.event_cipher_key
    )
    try:
        OwnerNotifications(events).migrate()
        recorder = events.recorder
        assert isinstance(recorder, PostgresApplicationRecorder)
        # Stores from before claims were rows: their reservation events become rows, once.
        backfilled = claims.backfill(recorder, events.mapper.to_domain_event)
        if backfilled:
            log.info("claims_backfilled", held=backfilled)
    finally:
        events.close()

    async def read_models() -> None:
        read_side = open_read_side(settings)
        try:
            async with read_side.read_engine.begin() as conn:
                await conn.run_sync(main_catalog.create_all)
            await start_epoch(read_side.read_engine)
            for projector in read_side.all_projectors:
                await projector.store.ensure()
        finally:
            await read_side.close()

    asyncio.run(read_models())
    log.info("migrated", shards=len(settings.shard_urls))


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

    def __post_init__(self) -> None:
        self.progress = ProjectionProgress(self.settings.projection_stall_seconds)
        self.pending = PendingNotes.to(self.redis, self.settings.status_pending_seconds)

    @classmethod
    async def start(cls, settings: Settings) -> Container:
        assert settings.database_url and settings.redis_url, "database and Redis URLs must be set"
        events = await asyncio.to_thread(
            functools.partial(
                open_event_store,
                settings.database_url,
                settings.db_pool_size,
                cipher_key=settings.event_cipher_key,
            )
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
                socket_timeout=API_REDIS_TIMEOUT_SECONDS,
                socket_connect_timeout=API_REDIS_TIMEOUT_SECONDS,
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
            self.redis,
            settings.status_cache_seconds,
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
async def running_services(settings: Settings) -> AsyncIterator[Services]:
    container = await Container.start(settings)
    try:
        yield container.services()
    finally:
        await container.stop()


async def erase(settings: Settings, subject: str) -> Erased:
    """``signup erase``: the use case wired to the event store, read models and cache."""
    assert settings.database_url, "DATABASE_URL is required to erase"
    events = await asyncio.to_thread(
        functools.partial(
            open_event_store, settings.database_url, 1, cipher_key=settings.event_cipher_key
        )
    )
    read_side = open_read_side(settings)
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    try:
        use_case = EraseUser(
            EventStoreSubjects(read_side, events, settings.reservation_key.encode()),
            ReadModelsAndCache(
                read_side,
                OwnerNotifications(events),
                redis,
                RedisIdempotencyStore(redis, settings.idempotency_ttl_seconds)
                if redis is not None
                else None,
                settings.status_pending_seconds,
            ),
        )
        return await use_case(subject)
    finally:
        if redis is not None:
            await redis.aclose()
        await read_side.close()
        await asyncio.to_thread(events.close)


async def run_worker(
    settings: Settings,
    stop: asyncio.Event,
    only: Collection[str] | None = None,
    *,
    restarts: int = 0,
    mail: bool = True,
) -> None:
    """Projectors (``only`` those named) and the process manager, until ``stop`` is set;
    ``restarts``: how many times this worker has been restarted (by ``signup up``); ``mail``
    off: the mail of shard 0 is sent by a ``signup mailer --shard 0`` instead."""
    read_side = open_read_side(settings)
    metrics.WORKER_RESTARTS.inc(restarts)
    serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
    names = [p.name for p in read_side.all_projectors if only is None or p.name in only]
    # The expiry sweep runs beside the status projector, as the mailer does.
    expiry = None
    if read_side.status.name in names:
        expiry = await _once_reachable(lambda: expiry_sweep(settings, read_side), stop)
        if expiry is None:  # stopped before PostgreSQL answered
            await read_side.close()
            return
    try:
        heap.settle()
        log.info("worker_started", projections=names, mail=mail and bool(settings.smtp_url))
        await run_projections(
            settings,
            read_side,
            stop,
            only=only,
            beside_status=[expiry.run] if expiry is not None else [],
            mail=mail,
        )
    finally:
        if expiry is not None:
            await expiry.close()
        await read_side.close()


async def _once_reachable(
    open_: Callable[[], Awaitable[ExpirySweep]], stop: asyncio.Event, longest: float = 10.0
) -> ExpirySweep | None:
    """``open_()`` once PostgreSQL answers (None if ``stop`` comes first). The event store
    connects as it is opened, and a worker that died of a slow or absent server at its start
    (as one did on a loaded machine: no connection within the pool's 2 s) projected nothing
    until somebody started it again; once running, a worker waits outages out."""
    wait = 0.5
    while not stop.is_set():
        try:
            return await open_()
        except EVENT_STORE_UNAVAILABLE as error:
            log.warning("worker_waiting_for_postgres", error=describe(error), retry_in=wait)
            await sleep_unless_stopped(stop, wait)
            wait = min(longest, wait * 2)
    return None


@dataclass
class ExpirySweep:
    """The worker's expiry loop: ``ExpireRegistrations`` wired to the event store (its
    verdicts, keys and claims), the read models, the status cache."""

    use_case: ExpireRegistrations
    events: SignupEvents
    redis: Redis | None
    every: float = 1.0

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                expired = await self.use_case.sweep()
                for expiry in expired:
                    if expiry.recorded:
                        metrics.EXPIRATIONS.inc()
                        log.info(
                            "registration_expired",
                            registration_id=str(expiry.registration_id),
                            released=expiry.released,
                        )
                if expired:
                    continue  # more may be due
            except Exception as error:
                log.warning("expiry_unavailable", error=describe(error))
            await sleep_unless_stopped(stop, self.every)

    async def close(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        await asyncio.to_thread(self.events.close)


async def expiry_sweep(settings: Settings, read_side: ReadSide) -> ExpirySweep:
    """The expiry loop for a worker running ``read_side``; ``close`` it after."""
    assert settings.database_url
    events = await asyncio.to_thread(
        functools.partial(
            open_event_store, settings.database_url, 2, cipher_key=settings.event_cipher_key
        )
    )
    redis = Redis.from_url(settings.redis_url) if settings.redis_url else None
    # Only settle() is used here: the worker answers no status query.
    statuses = VerdictStatuses(None, read_side.read_engine, redis, settings.status_cache_seconds)
    use_case = ExpireRegistrations(
        read_side.verifications,
        EventStoreVerdicts(events),
        EventStoreSubjects(read_side, events, settings.reservation_key.encode()),
        ExpiredCopies(read_side),
        statuses,
        settings.verification_policy(),
    )
    return ExpirySweep(use_case, events, redis)
