"""Email verification's storage: challenges and the mail outbox in the read database, the
verdicts in the event store, the status read model and its cache told of a verdict at once.

Both tables live beside the status read model because a registration's challenge and its
first message are written in the status projection's transaction, the one that completes it:
a registration is completed with its message queued, or neither (a worker killed between the
two cannot lose the message). Rows hold ids, times and a nonce; never an address or a code.
"""

from __future__ import annotations

import asyncio
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from eventsourcing.persistence import IntegrityError
from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    func,
    text,
    true,
)
from sqlalchemy.dialects.postgresql import UUID
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from application.outages import StoreUnavailable
from application.status import RegistrationStatus
from domain.statuses import EXPIRED, VERIFIED
from domain.verification import NONCE_BYTES, Challenge, VerificationPolicy
from infrastructure.event_store.store import SignupEvents
from infrastructure.postgres_outages import EVENT_STORE_UNAVAILABLE
from infrastructure.read_side.read_store import main_catalog, reading
from infrastructure.read_side.status_cache import cache_status
from infrastructure.read_side.status_changes import apply_change
from infrastructure.read_side.status_queries import StatusQueries
from projections.model import EMAIL_VERIFIED
from projections.registration_status import settled

log = structlog.get_logger(__name__)

email_verifications = Table(
    "email_verifications",
    main_catalog,
    Column("registration_id", UUID(as_uuid=True), primary_key=True),
    # The current code's nonce: with the verification key it makes the code and the token.
    Column("nonce", LargeBinary, nullable=False),
    Column("requested_at", DateTime(timezone=True), nullable=False),
    Column("code_expires_at", DateTime(timezone=True), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("attempts", Integer, nullable=False, server_default="0"),
    Column("sends", Integer, nullable=False, server_default="1"),
    Column("last_sent_at", DateTime(timezone=True), nullable=False),
    Column("verified_at", DateTime(timezone=True)),
    Column("expired_at", DateTime(timezone=True)),
)
# The expiry sweep reads the undecided ones by deadline.
Index(
    "email_verifications_undecided",
    email_verifications.c.expires_at,
    postgresql_where=email_verifications.c.verified_at.is_(None)
    & email_verifications.c.expired_at.is_(None),
)

VERIFICATION_MAIL = "verification"
OWNER_NOTICE = "owner_notice"

mail_outbox = Table(
    "mail_outbox",
    main_catalog,
    Column("id", BigInteger, primary_key=True, autoincrement=True),
    Column("registration_id", UUID(as_uuid=True), nullable=False, index=True),
    Column("kind", String(20), nullable=False),
    # A verification message: the nonce of the code it carries (a resend is a new row).
    Column("nonce", LargeBinary),
    # An owner notice: the duplicate attempt's id (imported once) and the kind of value.
    Column("reference", UUID(as_uuid=True), unique=True),
    Column("detail", String(10)),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    # Not before: a notice waits for its holder's verification.
    Column("due_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("sent_at", DateTime(timezone=True)),
    # Why it will never be sent (its recipient was erased or expired, or is not verified).
    Column("dropped", Text),
)
Index(
    "mail_outbox_unsent",
    mail_outbox.c.due_at,
    mail_outbox.c.id,
    postgresql_where=mail_outbox.c.sent_at.is_(None) & mail_outbox.c.dropped.is_(None),
)

# When verification began: registrations requested before it are not asked to verify (a
# rebuild of the status read model must not mail, and then expire, every older user).
verification_epoch = Table(
    "verification_epoch",
    main_catalog,
    Column("id", Boolean, primary_key=True, server_default=true()),
    Column("since", DateTime(timezone=True), nullable=False, server_default=func.now()),
)


async def start_epoch(engine: AsyncEngine) -> None:
    """``signup migrate``: verification applies from the first migration that knows it."""
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO verification_epoch DEFAULT VALUES ON CONFLICT DO NOTHING")
        )


# The deadlines are worked out here from the request times: three columns of timestamps
# fewer to encode a batch (asyncpg encodes each element on its own), the same values as
# ``VerificationPolicy.deadline`` and ``code_expiry`` give, the spans given in seconds so
# that no session time zone's day can be 23 or 25 hours long.
_NEW_CHALLENGES = (
    "INSERT INTO email_verifications (registration_id, nonce, requested_at, code_expires_at,"
    "  expires_at, last_sent_at)"
    " SELECT c.id, c.nonce, c.requested,"
    "  LEAST(CAST(:now AS timestamptz) + make_interval(secs => :code_ttl),"
    "   c.requested + make_interval(secs => :ttl)),"
    "  c.requested + make_interval(secs => :ttl), CAST(:now AS timestamptz)"
    " FROM unnest(CAST(:ids AS uuid[]), CAST(:nonces AS bytea[]),"
    "  CAST(:requested AS timestamptz[])) AS c(id, nonce, requested)"
    " ON CONFLICT (registration_id) DO NOTHING"
)

_ISSUE_SILENTLY = text(_NEW_CHALLENGES)

_ISSUE = text(
    f"WITH new AS ({_NEW_CHALLENGES} RETURNING registration_id, nonce)"
    " INSERT INTO mail_outbox (registration_id, kind, nonce)"
    " SELECT registration_id, :kind, nonce FROM new"
)


@dataclass
class ChallengeIssuer:
    """Writes a completed registration's challenge and first message, in the caller's
    transaction (the status projection's, or the process manager's when a retry completes
    it). Once per registration, whoever completes it and however often (a rebuild replays
    every event): the challenge's primary key decides, and only a new challenge queues mail."""

    policy: VerificationPolicy
    _since: datetime | None = None

    async def issue(
        self,
        conn: AsyncConnection,
        completed: Sequence[tuple[uuid.UUID, datetime]],
        *,
        unmailed: bool = False,
    ) -> None:
        """``completed``: (registration id, requested at) of registrations just completed.
        ``unmailed``: they have no address (the enumeration-resistant mode's decoys): a
        challenge without a message, so that they expire as a real registration does (a
        decoy still ``completed`` after the deadline would tell a registered email apart)."""
        if not completed:
            return
        since = await self._epoch(conn)
        due = [(rid, at) for rid, at in completed if at >= since]
        if not due:
            return
        nonces = secrets.token_bytes(NONCE_BYTES * len(due))
        await conn.execute(
            _ISSUE_SILENTLY if unmailed else _ISSUE,
            {
                "ids": [rid for rid, _ in due],
                "nonces": [
                    nonces[start : start + NONCE_BYTES]
                    for start in range(0, len(nonces), NONCE_BYTES)
                ],
                "requested": [at for _, at in due],
                "now": datetime.now(UTC),
                "ttl": self.policy.ttl.total_seconds(),
                "code_ttl": self.policy.code_ttl.total_seconds(),
                **({} if unmailed else {"kind": VERIFICATION_MAIL}),
            },
        )

    async def _epoch(self, conn: AsyncConnection) -> datetime:
        if self._since is None:
            found = (await conn.execute(text("SELECT since FROM verification_epoch"))).scalar()
            # Not migrated yet for verification: nothing is older than now.
            self._since = found if found is not None else datetime.now(UTC)
        return self._since


def _challenge(row: Any) -> Challenge:
    values = dict(row._mapping)
    values["nonce"] = bytes(values["nonce"])
    return Challenge(**values)


_CHALLENGE_COLUMNS = (
    "registration_id, nonce, requested_at, code_expires_at, expires_at, attempts, sends,"
    " last_sent_at, verified_at, expired_at"
)


@dataclass
class Verifications:
    """The challenges (``application.verification.Challenges``) on the read database."""

    engine: AsyncEngine

    async def find(self, registration_id: uuid.UUID) -> Challenge | None:
        async with reading(self.engine) as conn:
            row = (
                await conn.execute(
                    text(
                        f"SELECT {_CHALLENGE_COLUMNS} FROM email_verifications"
                        " WHERE registration_id = :id"
                    ),
                    {"id": registration_id},
                )
            ).first()
        return _challenge(row) if row is not None else None

    async def count_wrong(self, registration_id: uuid.UUID, nonce: bytes, most: int) -> int | None:
        async with self.engine.begin() as conn:
            spent = (
                await conn.execute(
                    text(
                        "UPDATE email_verifications SET attempts = attempts + 1"
                        " WHERE registration_id = :id AND nonce = :nonce AND attempts < :most"
                        " AND verified_at IS NULL RETURNING attempts"
                    ),
                    {"id": registration_id, "nonce": nonce, "most": most},
                )
            ).scalar()
        return int(spent) if spent is not None else None

    async def verified(self, registration_id: uuid.UUID, at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE email_verifications SET verified_at = :at"
                    " WHERE registration_id = :id AND verified_at IS NULL"
                ),
                {"id": registration_id, "at": at},
            )
            # The notices to this holder waited for it (verified holders only hear of them).
            await conn.execute(
                text(
                    "UPDATE mail_outbox SET due_at = now() WHERE registration_id = :id"
                    " AND kind = :kind AND sent_at IS NULL AND dropped IS NULL"
                ),
                {"id": registration_id, "kind": OWNER_NOTICE},
            )

    async def renew(
        self, registration_id: uuid.UUID, nonce: bytes, now: datetime, policy: VerificationPolicy
    ) -> Challenge | None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    text(
                        "UPDATE email_verifications SET nonce = :nonce, attempts = 0,"
                        " sends = sends + 1, last_sent_at = :now,"
                        " code_expires_at = LEAST(CAST(:now AS timestamptz)"
                        "  + make_interval(secs => :code_ttl), expires_at)"
                        " WHERE registration_id = :id AND verified_at IS NULL"
                        " AND expired_at IS NULL AND expires_at > :now AND sends < :most"
                        " AND last_sent_at <= CAST(:now AS timestamptz)"
                        "  - make_interval(secs => :every)"
                        f" RETURNING {_CHALLENGE_COLUMNS}"
                    ),
                    {
                        "id": registration_id,
                        "nonce": nonce,
                        "now": now,
                        # Spans in seconds, as ``_NEW_CHALLENGES`` has them: a day-long
                        # ``interval`` is 23 or 25 hours across a daylight saving change in a
                        # session whose time zone keeps one.
                        "code_ttl": policy.code_ttl.total_seconds(),
                        "most": policy.max_sends,
                        "every": policy.resend_every.total_seconds(),
                    },
                )
            ).first()
            if row is None:
                return None
            await conn.execute(
                mail_outbox.insert().values(
                    registration_id=registration_id, kind=VERIFICATION_MAIL, nonce=nonce
                )
            )
        return _challenge(row)

    async def overdue(self, now: datetime, limit: int) -> Sequence[Challenge]:
        async with reading(self.engine) as conn:
            rows = await conn.execute(
                text(
                    f"SELECT {_CHALLENGE_COLUMNS} FROM email_verifications"
                    " WHERE verified_at IS NULL AND expired_at IS NULL AND expires_at <= :now"
                    " ORDER BY expires_at LIMIT :limit"
                ),
                {"now": now, "limit": limit},
            )
            return [_challenge(row) for row in rows]

    async def expired(self, registration_ids: Sequence[uuid.UUID], at: datetime) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "UPDATE email_verifications SET expired_at = :at"
                    " WHERE registration_id = ANY(CAST(:ids AS uuid[])) AND expired_at IS NULL"
                ),
                {"ids": list(registration_ids), "at": at},
            )

    async def drop_mail(self, registration_ids: Sequence[uuid.UUID], reason: str) -> int:
        """Unsent mail to these registrations will never go (their addresses are gone)."""
        async with self.engine.begin() as conn:
            result = await conn.execute(
                text(
                    "UPDATE mail_outbox SET dropped = :reason"
                    " WHERE registration_id = ANY(CAST(:ids AS uuid[]))"
                    " AND sent_at IS NULL AND dropped IS NULL"
                ),
                {"ids": list(registration_ids), "reason": reason},
            )
            return int(result.rowcount)

    async def forget(self, registration_id: uuid.UUID) -> int:
        """An erased person: their challenge and every message to them, sent or not."""
        async with self.engine.begin() as conn:
            mail = await conn.execute(
                mail_outbox.delete().where(mail_outbox.c.registration_id == registration_id)
            )
            challenge = await conn.execute(
                email_verifications.delete().where(
                    email_verifications.c.registration_id == registration_id
                )
            )
            return int(mail.rowcount) + int(challenge.rowcount)


@dataclass
class VerdictStatuses:
    """``application.verification.Statuses``: the status queries (the cache, the read model
    or its replica, the event store), and the verdicts written to the read model's primary
    and the cache at once."""

    queries: StatusQueries | None  # None where nobody asks (the worker's expiry sweep)
    engine: AsyncEngine  # the read database itself, never its replica
    redis: Redis | None
    cache_seconds: int

    async def find(self, registration_id: uuid.UUID) -> RegistrationStatus | None:
        return await self.queries.find(registration_id) if self.queries is not None else None

    async def settle(self, registration_id: uuid.UUID, status: str) -> RegistrationStatus | None:
        verdicts = await self._settle(registration_id, status)
        return verdicts[0] if verdicts else None

    async def settle_all(self, registration_ids: Sequence[uuid.UUID], status: str) -> None:
        await self._settle(registration_ids, status)

    async def _settle(
        self, registration_ids: uuid.UUID | Sequence[uuid.UUID], status: str
    ) -> list[RegistrationStatus]:
        async with self.engine.begin() as conn:
            rows = await apply_change(
                conn,
                registration_ids,
                settled(status),
                returning=(
                    "registration_id",
                    "status",
                    "requested_at",
                    "updated_at",
                    "user_id",
                    "reason",
                ),
            )
        verdicts = [RegistrationStatus(**row) for row in rows]
        if self.redis is not None and verdicts:
            try:
                # Unconditionally: a poll that read ``completed`` just before may have cached
                # it; polls cache only where nothing is or over the settlement they read
                # (``PollCaches``). One round trip for a sweep's.
                async with self.redis.pipeline(transaction=False) as pipe:
                    for verdict in verdicts:
                        await cache_status(pipe, verdict, self.cache_seconds)
                    await pipe.execute()
            except RedisError as error:
                log.warning("status_cache_unavailable", error=type(error).__name__)
        return verdicts


@dataclass
class EventStoreVerdicts:
    """``application.verification.Verdicts``: a verdict appended through eventsourcing (its
    mapper, its cipher, the append lock and NOTIFY), on a worker thread."""

    events: SignupEvents

    async def record(self, event: Any) -> str | None:
        stored = self.events.mapper.to_stored_event(event)
        try:
            await asyncio.to_thread(self.events.recorder.insert_events, [stored])
        except IntegrityError:
            # Its second event is there already: which verdict won.
            return await asyncio.to_thread(self._verdict_of, event.originator_id)
        except EVENT_STORE_UNAVAILABLE as error:
            raise StoreUnavailable(str(error)) from error
        return None

    async def record_all(self, events: Sequence[Any]) -> list[str | None]:
        """``record`` for each, in one append when none meets a verdict recorded before (a
        sweep's usual case); otherwise one at a time, so each learns which verdict won."""
        stored = [self.events.mapper.to_stored_event(event) for event in events]
        try:
            await asyncio.to_thread(self.events.recorder.insert_events, stored)
        except IntegrityError:
            return [await self.record(event) for event in events]
        except EVENT_STORE_UNAVAILABLE as error:
            raise StoreUnavailable(str(error)) from error
        return [None] * len(events)

    def _verdict_of(self, registration_id: uuid.UUID) -> str:
        recorder: Any = self.events.recorder
        with recorder.datastore.get_connection() as conn:
            row = conn.execute(
                f'SELECT topic FROM "{recorder.events_table_name}"'
                " WHERE originator_id = %s AND originator_version = 2",
                (registration_id,),
            ).fetchone()
        return VERIFIED if row is not None and row["topic"] == EMAIL_VERIFIED else EXPIRED
