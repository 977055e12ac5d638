"""The read side's parts, wired: engines, projectors, the process manager, rebuilds."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Collection, Coroutine, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from application.error_text import describe
from application.process_manager import ProcessManager
from application.projection_progress import ProjectionProgress
from application.retry_policy import RetryPolicy
from domain.verification import verification_key
from infrastructure import metrics
from infrastructure.event_source import EventSource, event_mapper
from infrastructure.failures import MAILER, FailureLog
from infrastructure.mailer import Mailer, SmtpRelay
from infrastructure.postgres_outages import is_unavailable
from infrastructure.projector import (
    Projector,
    StatusProjector,
    run_forever,
    sleep_unless_stopped,
)
from infrastructure.read_store import (
    DEAD,
    RETRYING,
    ProjectionStore,
    active_positions,
    main_catalog,
    make_engine,
)
from infrastructure.settings import Settings
from infrastructure.subject_keys import SubjectVault
from infrastructure.verifications import ChallengeIssuer, Verifications, start_epoch
from infrastructure.wakeups import Wakeups
from projections.email_lookup import email_lookup
from projections.model import Projection
from projections.registration_status import registration_status
from projections.shards import ShardMap
from projections.users import users

log = structlog.get_logger(__name__)


class RebuildInProgress(Exception):
    """Another process is rebuilding this projection."""


@dataclass
class ReadSide:
    settings: Settings
    events_engine: AsyncEngine
    read_engine: AsyncEngine
    shard_engines: list[AsyncEngine]
    source: EventSource
    failures: FailureLog
    projectors: dict[str, Projector]
    status: StatusProjector
    verifications: Verifications
    mailer: Mailer
    process_manager: ProcessManager = field(init=False)

    def __post_init__(self) -> None:
        self.process_manager = ProcessManager(self.failures, self)  # type: ignore[arg-type]

    @classmethod
    def open(
        cls,
        settings: Settings,
        customise: Callable[[Projection], Projection] | None = None,
    ) -> ReadSide:
        """``customise`` lets a test wrap a projection (to make it fail on an event)."""
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
        failures = FailureLog(read_engine, policy, issuer)
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
        read_side = cls(
            settings,
            events_engine,
            read_engine,
            shard_engines,
            source,
            failures,
            projectors,
            status,
            Verifications(read_engine),
            mailer,
        )
        status.gate = read_side.slowest_position
        return read_side

    @property
    def all_projectors(self) -> list[Projector]:
        return [*self.projectors.values(), self.status]

    def projector(self, name: str) -> Projector:
        for projector in self.all_projectors:
            if projector.name == name:
                return projector
        raise KeyError(name)

    async def migrate(self) -> None:
        async with self.read_engine.begin() as conn:
            await conn.run_sync(main_catalog.create_all)
        await start_epoch(self.read_engine)
        for projector in self.all_projectors:
            await projector.store.ensure()

    async def slowest_position(self) -> int:
        return min([await projector.live_position() for projector in self.projectors.values()])

    async def replay(self, projection: str, notification_id: int) -> None:
        if projection == MAILER:
            # A parked message: ``notification_id`` is its outbox row.
            await self.mailer.send_one(notification_id)
            return
        note = await self.source.read_one(notification_id)
        if note is None:
            raise LookupError(f"no event {notification_id} in the event store")
        await self.projector(projection).apply(note)

    def transient(self, error: BaseException) -> bool:
        return is_unavailable(error)

    async def lag(self) -> dict[str, tuple[int, int]]:
        """Each projection's position and how many notifications it is behind."""
        # One statement per database, not two per projection: the API processes read this
        # every second (it was ~3 % of their time under load).
        positions: dict[str, int] = {}
        by_engine: dict[int, list[Projector]] = {}
        for projector in self.all_projectors:
            by_engine.setdefault(id(projector.store.engine), []).append(projector)
        for projectors in by_engine.values():
            found = await active_positions(projectors[0].store.engine)
            positions.update({p.name: found.get(p.name, 0) for p in projectors})
        # The head after the positions: read before, it could be passed by them meanwhile.
        head = await self.source.head()
        return {name: (position, max(0, head - position)) for name, position in positions.items()}

    async def publish_gauges(
        self, stop: asyncio.Event, progress: ProjectionProgress, every: float = 1.0
    ) -> None:
        """Lag, positions, stalls and failure counts, read from the databases once a second."""
        reported: set[str] = set()  # stalled, as last logged
        while not stop.is_set():
            try:
                lags = await self.lag()
                now = time.monotonic()
                for name, (position, lag) in lags.items():
                    metrics.PROJECTION_POSITION.labels(name).set(position)
                    metrics.PROJECTION_LAG.labels(name).set(lag)
                    progress.observe(name, position, lag, now)
                stalled = set(progress.stalled(now))
                for name in lags:
                    metrics.PROJECTION_STALLED.labels(name).set(int(name in stalled))
                for name in sorted(stalled - reported):
                    log.error("projection_stalled", projection=name, lag=lags[name][1])
                for name in sorted(reported - stalled):
                    log.info("projection_moving_again", projection=name)
                reported = stalled
                counts = await self.failures.count()
                for state in (RETRYING, DEAD):
                    metrics.PROJECTION_FAILURES.labels(state).set(counts.get(state, 0))
            except Exception as error:
                log.debug("metrics_refresh_failed", error=describe(error))
            await sleep_unless_stopped(stop, every)

    async def run(
        self,
        stop: asyncio.Event,
        retry_every: float = 0.5,
        only: Collection[str] | None = None,
        beside_status: Sequence[Callable[[asyncio.Event], Coroutine[Any, Any, None]]] = (),
        mail: bool = True,
    ) -> None:
        """The projectors (``only`` those named, to spread them over processes and cores) and
        the process manager, until ``stop`` is set.

        The process manager runs beside the status projector, so that exactly one process
        retries parked events however the projectors are spread; so do the mailer (unless
        ``mail`` is off: then a ``signup mailer --shard 0`` sends shard 0) and
        ``beside_status`` (the verification expiry sweep).
        """
        chosen = [p for p in self.all_projectors if only is None or p.name in only]
        unknown = set(only or ()) - {p.name for p in self.all_projectors}
        if unknown:
            raise ValueError(f"unknown projections: {', '.join(sorted(unknown))}")
        wakeups = Wakeups(self.settings.database_url or self.settings.read_url, self.source.table)
        status_wake = wakeups.subscribe()

        def others_moved() -> None:
            status_wake.set()

        fill = self.settings.projection_fill_ms / 1000
        tasks = [
            asyncio.create_task(
                # The status projector follows the others: their progress wakes it, and a
                # fill wait of its own would only add to every registration's latency.
                run_forever(p, stop, wake=status_wake, fill=0)
                if p is self.status
                else run_forever(p, stop, wake=wakeups.subscribe(), moved=others_moved, fill=fill)
            )
            for p in chosen
        ]
        tasks.append(asyncio.create_task(wakeups.listen(stop)))
        if self.status in chosen:
            tasks.append(asyncio.create_task(self._retry_loop(stop, retry_every)))
            if mail:
                tasks.append(asyncio.create_task(self.mailer.run(stop)))
            tasks.extend(asyncio.create_task(loop(stop)) for loop in beside_status)
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _retry_loop(self, stop: asyncio.Event, every: float) -> None:
        while not stop.is_set():
            try:
                await self.process_manager.retry_due()
            except Exception as error:
                log.warning("process_manager_unavailable", error=describe(error))
            await sleep_unless_stopped(stop, every)

    async def rebuild(
        self, name: str, progress: Callable[[int, int], None] | None = None
    ) -> tuple[str, str]:
        """Replay every event into a new table beside the live one, then switch atomically.

        Returns (old table, new table). Queries read the old table until the switch. One
        rebuild of a projection at a time (``RebuildInProgress`` otherwise); it first drops
        what a killed rebuild left behind.
        """
        projector = self.projector(name)
        store = projector.store
        async with store.engine.connect() as conn:
            # A session lock, on a connection outside any transaction: held for as long as the
            # rebuild runs without keeping a transaction open (which would hold back vacuum),
            # and released by PostgreSQL if this process dies.
            held = await conn.execution_options(isolation_level="AUTOCOMMIT")
            key = {"key": f"signup_rebuild:{name}"}
            taken = await held.execute(text("SELECT pg_try_advisory_lock(hashtext(:key))"), key)
            if not taken.scalar_one():
                raise RebuildInProgress(name)
            try:
                await self._drop_leftovers(projector)
                return await self._rebuild(projector, progress)
            finally:
                await held.execute(text("SELECT pg_advisory_unlock(hashtext(:key))"), key)

    async def _drop_leftovers(self, projector: Projector) -> None:
        # Under the rebuild lock, a table that is neither active nor being filled by this
        # rebuild is a killed rebuild's half-filled table.
        store = projector.store
        active = await store.active_table()
        async with store.engine.connect() as conn:
            tables = await store.tables(conn)
        for table in tables:
            if table != active:
                log.info("dropping_leftover_table", projection=projector.name, table=table)
                await store.drop(table)

    async def _rebuild(
        self, projector: Projector, progress: Callable[[int, int], None] | None
    ) -> tuple[str, str]:
        store = projector.store
        # Milliseconds: two rebuilds within one second must not pick the live table's name.
        new_table = f"{projector.projection.table_version}_r{time.time_ns() // 1_000_000}"
        if new_table == await store.active_table():
            raise RebuildInProgress(projector.name)
        async with store.engine.begin() as conn:
            await store.create_table(conn, new_table)
        head = await self.source.head()
        while await projector.step(new_table) > 0:
            if progress is not None:
                progress(await store.position(new_table), head)
            head = max(head, await self.source.head())
        # The switch: lock the catalog row (live batches wait), catch up the last events,
        # and point the view at the new table, in one transaction.
        async with store.engine.begin() as conn:
            await store.lock_catalog(conn)
            while True:
                moved = await projector.step(new_table)
                if moved == 0:
                    break
            old_table = await store.switch(conn, new_table)
        projector.stop_reading_ahead()
        await store.drop(old_table)
        if progress is not None:
            progress(await store.position(new_table), await self.source.head())
        return old_table, new_table

    async def forget(self, registration_id: uuid.UUID) -> list[str]:
        """Delete a registration's rows from every table of every projection (a rebuild's too)
        and keep them out from now on, and its failures; the projections it was in.

        Call it once its key is shredded. A batch that opened the event before may still be
        writing it: each projection's deletion holds its tables' tracking rows, which every
        write holds too, so that batch either committed before (its rows are deleted here) or
        writes after, and then skips the registration (``erased_registrations``), however
        long it was held in between. Nothing waits for the projectors.
        """
        removed = set()
        for projector in self.all_projectors:
            async with projector.store.engine.begin() as conn:
                if await projector.store.erase(conn, registration_id):
                    removed.add(projector.name)
        await self.failures.forget(registration_id)
        return sorted(removed)

    async def drop_personal(self, registration_id: uuid.UUID) -> list[str]:
        """An expired registration: its rows deleted from every read model that holds
        personal data, and kept out of them (a rebuild that opened its event before its key
        was shredded skips it, as it skips the erased); its failures (their texts may quote
        it) and its unsent mail. The status read model keeps it, as ``expired``."""
        removed = set()
        for projector in self.projectors.values():
            async with projector.store.engine.begin() as conn:
                if await projector.store.expire(conn, registration_id):
                    removed.add(projector.name)
        await self.failures.forget(registration_id)
        if await self.verifications.drop_mail(registration_id, "recipient_expired"):
            removed.add("mail_outbox")
        return sorted(removed)

    async def close(self) -> None:
        for engine in {self.events_engine, self.read_engine, *self.shard_engines}:
            await engine.dispose()
