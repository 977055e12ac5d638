"""The read side's composition: the projectors, the process manager, the mailer and the
expiry sweep wired to their engines and clients, and the worker that runs them."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from application.error_text import describe
from application.process_manager import ProcessManager
from application.retry_policy import RetryPolicy
from application.verification import ExpireRegistrations
from domain.verification import verification_key
from infrastructure import heap, metrics
from infrastructure.erasure import EventStoreSubjects, ExpiredCopies
from infrastructure.event_store import key_checks
from infrastructure.event_store.store import SignupEvents, open_event_store
from infrastructure.event_store.subject_keys import SubjectVault
from infrastructure.metrics import serve_worker_metrics
from infrastructure.postgres_outages import once_reachable
from infrastructure.read_side import runner as projection_runner
from infrastructure.read_side.event_source import EventSource, event_mapper
from infrastructure.read_side.failures import FailureLog
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.projector import Projector, StatusProjector
from infrastructure.read_side.read_store import (
    ProjectionStore,
    make_engine,
)
from infrastructure.read_side.replay import Replays
from infrastructure.read_side.status_cache import Settlements
from infrastructure.read_side.wakeups import Wakeups
from infrastructure.settings import Settings
from infrastructure.stopping import sleep_unless_stopped
from infrastructure.verification.challenges import (
    ChallengeIssuer,
    EventStoreVerdicts,
    VerdictStatuses,
    Verifications,
)
from infrastructure.verification.mailer import Mailer, SmtpRelay
from projections.email_lookup import email_lookup
from projections.model import Projection
from projections.registration_status import registration_status
from projections.shards import ShardMap
from projections.users import users

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
        # A pool of its own: each of its connections to the relay keeps one for the batch's
        # marks, which in the worker would leave the projections waiting behind a slow relay.
        make_engine(settings.read_url, pool_size=settings.mail_sessions + 1),
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
        sessions=settings.mail_sessions,
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
    # Before anything is read: a worker with other keys than the store's could open none of
    # its events.
    if not await keys_verified(settings, stop, waiting="worker_waiting_for_postgres"):
        return  # stopped before PostgreSQL answered
    read_side = open_read_side(settings)
    metrics.WORKER_RESTARTS.inc(restarts)
    serve_worker_metrics(settings.worker_metrics_port, settings.worker_metrics_host)
    names = [p.name for p in read_side.all_projectors if only is None or p.name in only]
    # The expiry sweep runs beside the status projector, as the mailer does.
    expiry = None
    if read_side.status.name in names:
        # The event store connects as it is opened, and a worker that died of a slow or absent
        # server at its start (as one did on a loaded machine: no connection within the pool's
        # 2 s) projected nothing until somebody started it again; once running, a worker
        # waits outages out.
        expiry = await once_reachable(
            lambda: expiry_sweep(settings, read_side),
            stop,
            waiting="worker_waiting_for_postgres",
            url=settings.database_url,
        )
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


async def keys_verified(settings: Settings, stop: asyncio.Event, *, waiting: str) -> bool:
    """Once PostgreSQL answers, whether this process's keys are those its event store was
    written with (``KeysDoNotMatch`` if not, see ``key_checks``); False if ``stop`` is set
    first."""
    verified = await once_reachable(
        lambda: asyncio.to_thread(_verify_keys, settings),
        stop,
        waiting=waiting,
        url=settings.database_url,
    )
    return verified is not None


def _verify_keys(settings: Settings) -> bool:
    assert settings.database_url
    events = open_event_store(settings.database_url, 1, cipher_key=settings.event_cipher_key)
    try:
        key_checks.verify(events, settings.reservation_key, settings.event_cipher_key)
    finally:
        events.close()
    return True


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
