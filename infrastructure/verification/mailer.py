"""The mailer: sends what the mail outbox holds over SMTP, once, from the worker.

Each message is a row of ``mail_outbox`` (``infrastructure/verification/challenges.py``)
written before anything is sent: a verification by the transaction that completes its
registration, a new code by the resend's, an owner notice imported from the
enumeration-resistant mode's table.
A row is sent, then marked sent. So a worker killed between the write and the send sends it
after its restart (nothing is lost), and one killed between the relay's acceptance and the
mark sends it again: the one duplicate SMTP leaves no way to avoid (the relay cannot be asked
whether it already has a message), recognisable by its Message-ID, the same in both copies. A
PostgreSQL crash may likewise lose the last marks (they commit without waiting for the WAL's
flush: ``_MARK_SENT``), and those messages go again.

A relay that cannot be reached is an outage: the loop backs off and tries again, spending no
attempt. A message the relay refuses (or that fails to render) is parked in the failure log
as the ``mailer``'s: the process manager retries it with the projections' backoff and makes
it a dead letter after the last attempt (``signup dead-letters``); it never changes the
registration's status. Addresses and codes are never logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import html
import ssl
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import Header
from email.headerregistry import Address
from email.message import EmailMessage, Message
from email.utils import format_datetime, formataddr, parseaddr
from functools import cache, cached_property, lru_cache
from pathlib import Path
from string import Template
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

import aiosmtplib
import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from application.error_text import describe
from domain.statuses import FAILED, PENDING
from domain.verification import code_for, token_for
from infrastructure import metrics
from infrastructure.event_store.owner_notifications import TABLE as NOTICES
from infrastructure.postgres_outages import is_unavailable
from infrastructure.read_side.event_source import EventSource
from infrastructure.read_side.failures import MAILER, FailureLog
from infrastructure.read_side.read_store import asyncpg_connection, reading
from infrastructure.stopping import sleep_unless_stopped
from infrastructure.verification.challenges import OWNER_NOTICE, VERIFICATION_MAIL
from infrastructure.verification.mime import alternative, library_message, new_boundary
from projections.model import RequestedRegistration
from projections.registration_status import VIEW as STATUS_VIEW

log = structlog.get_logger(__name__)

TEMPLATES = Path(__file__).resolve().parent / "mail_templates"

# What an owner notice says was used, by the kind of value.
_WHAT = {"email": "o seu e-mail", "cpf": "o seu CPF", "cnpj": "o CNPJ da sua empresa"}


class RelayUnavailable(Exception):
    """The SMTP relay cannot be reached (or hung up): an outage, not the message's fault. A
    hang-up after the message's last line may have lost only the relay's answer: the message
    is sent again (see the module's docstring)."""


def relay_unavailable(error: BaseException) -> bool:
    return isinstance(
        error,
        RelayUnavailable
        | aiosmtplib.SMTPConnectError
        | aiosmtplib.SMTPServerDisconnected
        | aiosmtplib.SMTPTimeoutError
        | OSError,
    )


@dataclass(frozen=True, slots=True)
class SmtpRelay:
    """Where messages go: ``smtp://[user:password@]host[:port]`` (STARTTLS when the relay
    offers it) or ``smtps://`` (TLS from the first byte)."""

    hostname: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False
    timeout: float = 30.0

    @classmethod
    def from_url(cls, url: str) -> SmtpRelay:
        parts = urlsplit(url)
        if parts.scheme not in {"smtp", "smtps"}:
            raise ValueError(f"SMTP_URL must be smtp:// or smtps://, not {parts.scheme}://")
        tls = parts.scheme == "smtps"
        return cls(
            hostname=parts.hostname or "localhost",
            port=parts.port or (465 if tls else 25),
            username=unquote(parts.username) if parts.username else None,
            password=unquote(parts.password) if parts.password else None,
            use_tls=tls,
        )

    @contextlib.asynccontextmanager
    async def session(self) -> AsyncIterator[Callable[[Outgoing | Message], Awaitable[None]]]:
        """One connection for many messages (a batch): a connection per message was most of
        a message's cost. Yields the function that sends one; a refused message leaves the
        connection usable for the next."""
        client = aiosmtplib.SMTP(
            hostname=self.hostname,
            port=self.port,
            username=self.username,
            password=self.password,
            use_tls=self.use_tls,
            # STARTTLS when offered; a relay on loopback (the sink) offers none.
            start_tls=None if not self.use_tls else False,
            tls_context=ssl.create_default_context() if self.use_tls else None,
            timeout=self.timeout,
        )

        async def send(message: Outgoing | Message) -> None:
            try:
                if isinstance(message, Outgoing):
                    await client.sendmail(message.sender, [message.recipient], message.content)
                else:
                    await client.send_message(message)
            except Exception as error:
                if relay_unavailable(error):
                    raise RelayUnavailable(type(error).__name__) from error
                raise

        try:
            await client.connect()
        except Exception as error:
            if relay_unavailable(error):
                raise RelayUnavailable(type(error).__name__) from error
            raise
        try:
            yield send
        finally:
            with contextlib.suppress(Exception):
                await client.quit()

    async def send(self, message: Outgoing | Message) -> None:
        async with self.session() as send:
            await send(message)


@lru_cache(maxsize=64)
def _encoded_subject(subject: str) -> str:
    """A subject as an RFC 2047 header value; the templates' few subjects, encoded once."""
    return Header(subject, "utf-8").encode()


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message already written (``mime.alternative``): its envelope and its bytes."""

    sender: str
    recipient: str
    content: bytes


@cache
def _template(name: str) -> Template:
    return Template((TEMPLATES / name).read_text(encoding="utf-8"))


def _hours(seconds: float) -> str:
    if seconds >= 2 * 3600:
        return f"{round(seconds / 3600)} horas"
    minutes = max(1, round(seconds / 60))
    return "1 minuto" if minutes == 1 else f"{minutes} minutos"


@dataclass(frozen=True, slots=True)
class Letter:
    """A message's words: its subject and its two parts, before addressing."""

    subject: str
    text: str
    html: str


def verification_letter(
    code: str, link: str, valid_for: timedelta, registration_ttl: timedelta
) -> Letter:
    """The verification message (pt-BR): the code, the link, how long they work. Nothing the
    person typed is in it (their name could be anyone's words, mailed from our address)."""
    values = {
        "code": code,
        "link": link,
        "valid_for": _hours(valid_for.total_seconds()),
        "registration_ttl": _hours(registration_ttl.total_seconds()),
    }
    escaped = {key: html.escape(value) for key, value in values.items()}
    return Letter(
        _template("verification.subject").template.strip(),
        _template("verification.txt").substitute(values),
        _template("verification.html").substitute(escaped),
    )


def owner_notice_letter(kind: str) -> Letter:
    what = _WHAT.get(kind, "os seus dados")
    return Letter(
        _template("owner_notice.subject").template.strip(),
        _template("owner_notice.txt").substitute(what=what),
        _template("owner_notice.html").substitute(what=html.escape(what)),
    )


def verification_link(public_url: str, registration_id: uuid.UUID, token: str) -> str:
    """The signup page with the registration's id and token in the fragment: never sent to
    a server (not in access logs, nor in a Referer), read by the page's script."""
    return f"{public_url.rstrip('/')}/#verificar={registration_id}.{token}"


@dataclass(frozen=True, slots=True)
class _Row:
    id: int
    registration_id: uuid.UUID
    kind: str
    nonce: bytes | None
    reference: uuid.UUID | None
    detail: str | None
    created_at: datetime


_COLUMNS = "id, registration_id, kind, nonce, reference, detail, created_at"


def _row(found: Any) -> _Row:
    values = dict(found._mapping)
    if values["nonce"] is not None:
        values["nonce"] = bytes(values["nonce"])
    return _Row(**values)


# The mark of a sent message, committed without waiting for its WAL flush (a transaction-local
# ``synchronous_commit = off``, set inside the statement's own implicit transaction): the flush
# cost PostgreSQL ~50 us of CPU a message (110-123 us a mark with it, 67-70 without) and the
# mailer a wait for the disk. A PostgreSQL crash may lose the marks of its last fraction of a
# second; those messages then go again, the duplicate a mailer killed before its mark already
# makes, and nothing is lost.
# Asked on the engine's asyncpg connection: SQLAlchemy's statement layer cost the mailer more
# than the statement.
_MARK_SENT = (
    "UPDATE mail_outbox SET sent_at = now()"
    " FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
    " WHERE id = $1"
)


class Room(Protocol):
    async def wait(self, stop: asyncio.Event) -> None:
        """Return when the machine has room for another batch (or ``stop`` is set)."""
        ...


@dataclass
class Mailer:
    engine: AsyncEngine  # the read database: the outbox and the challenges
    events_engine: AsyncEngine  # the event store's database: the owner notices
    source: EventSource  # the recipient's address, opened with their key
    failures: FailureLog
    relay: SmtpRelay | None  # None: nothing is sent (the outbox keeps every message)
    key: bytes  # the verification key: the codes and tokens
    public_url: str
    mail_from: str
    code_ttl: timedelta = timedelta(hours=24)
    registration_ttl: timedelta = timedelta(hours=48)
    batch: int = 50
    # Connections to the relay a batch goes over at once (``SIGNUP_MAIL_SESSIONS``).
    sessions: int = 4
    # This process sends the messages whose outbox id modulo ``shards`` is ``shard``; shard 0
    # also imports the owner notices.
    shard: int = 0
    shards: int = 1
    # Asked between full batches when the mail is background work (``signup mailer
    # --background``, as ``signup up`` runs it): it rests while the cores are saturated.
    room: Room | None = None
    _warned: bool = field(default=False, init=False)

    async def run(self, stop: asyncio.Event, every: float = 0.5, longest: float = 30.0) -> None:
        """Import the owner notices and send what is due, until ``stop``; back off (doubling
        up to ``longest``) while the relay or a database is out of reach."""
        wait = every
        while not stop.is_set():
            try:
                await self.import_notices()
                sent = await self.send_due()
                wait = every
                if sent >= self.batch:
                    if self.room is not None:
                        await self.room.wait(stop)
                    continue  # more are waiting
            except Exception as error:
                if not (relay_unavailable(error) or is_unavailable(error)):
                    log.error("mailer_failed", error=describe(error))
                else:
                    log.warning("mailer_unavailable", error=describe(error), retry_in=wait)
                await sleep_unless_stopped(stop, wait)
                wait = min(longest, wait * 2)
                continue
            await sleep_unless_stopped(stop, every)

    async def send_due(self) -> int:
        """Send the messages due (not parked for a retry); how many were tried."""
        if self.relay is None:
            if not self._warned:
                log.warning("mailer_has_no_relay", hint="set SMTP_URL; messages stay queued")
                self._warned = True
            return 0
        async with reading(self.engine) as conn:
            rows = [
                _row(found)
                for found in await conn.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM mail_outbox o"
                        " WHERE o.sent_at IS NULL AND o.dropped IS NULL AND o.due_at <= now()"
                        " AND o.id % :shards = :shard"
                        " AND NOT EXISTS (SELECT 1 FROM projection_failures f"
                        "  WHERE f.projection = :mailer AND f.notification_id = o.id)"
                        " ORDER BY o.due_at, o.id LIMIT :limit"
                    ),
                    {
                        "mailer": MAILER,
                        "limit": self.batch,
                        "shards": self.shards,
                        "shard": self.shard,
                    },
                )
            ]
        if not rows:
            return 0
        # Every recipient of the batch in one query.
        recipients = await self.source.requested([row.registration_id for row in rows])
        # The batch over a few connections at once: a message is four commands, each a round
        # trip to the relay, so one connection sent ~90 messages a second to a relay 3 ms away
        # whatever the CPU. An outage stops every lane after its current message (none is cut
        # between its send and its mark), then the batch is given up and waited out.
        outage: list[BaseException] = []
        relay = self.relay

        async def lane(part: list[_Row]) -> None:
            async with relay.session() as send, asyncpg_connection(self.engine) as marks:
                for row in part:
                    if outage:
                        return
                    try:
                        await self._deliver(row, send, recipients, marks)
                    except Exception as error:
                        if relay_unavailable(error) or is_unavailable(error):
                            outage.append(error)
                            return
                        log.warning(
                            "mail_failed", outbox_id=row.id, kind=row.kind, error=describe(error)
                        )
                        metrics.MAIL_FAILED.labels(row.kind).inc()
                        await self.failures.park_send(
                            row.id, row.registration_id, row.kind, describe(error)
                        )

        lanes = [rows[start :: self.sessions] for start in range(min(self.sessions, len(rows)))]
        for ended in await asyncio.gather(*map(lane, lanes), return_exceptions=True):
            if isinstance(ended, BaseException):
                outage.append(ended)
        if outage:
            raise outage[0]
        return len(rows)

    async def send_one(self, outbox_id: int) -> None:
        """Send one message now, whatever its due time (the process manager's retry, an
        operator's ``signup dead-letters retry``); raises what the send raised."""
        if self.relay is None:
            raise RelayUnavailable("SMTP_URL is not set")
        async with reading(self.engine) as conn:
            found = (
                await conn.execute(
                    text(
                        f"SELECT {_COLUMNS} FROM mail_outbox"
                        " WHERE id = :id AND sent_at IS NULL AND dropped IS NULL"
                    ),
                    {"id": outbox_id},
                )
            ).first()
        if found is not None:
            row = _row(found)
            recipients = await self.source.requested([row.registration_id])
            async with asyncpg_connection(self.engine) as marks:
                await self._deliver(row, self.relay.send, recipients, marks)

    async def _deliver(
        self,
        row: _Row,
        send: Callable[[Outgoing | Message], Awaitable[None]],
        recipients: dict[uuid.UUID, RequestedRegistration],
        marks: Any,  # an asyncpg connection (read_store.asyncpg_connection)
    ) -> None:
        message = await self._compose(row, recipients.get(row.registration_id))
        if message is None:
            return
        await send(message)
        # Only now, and for this message alone (one statement, its own transaction): a worker
        # killed before this line sends this one message again at its restart.
        await marks.execute(_MARK_SENT, row.id)
        metrics.MAIL_SENT.labels(row.kind).inc()
        log.info(
            "mail_sent", outbox_id=row.id, kind=row.kind, registration_id=str(row.registration_id)
        )

    async def _compose(
        self, row: _Row, registration: RequestedRegistration | None
    ) -> Outgoing | Message | None:
        """The message, or None when it must not go (then the row says why)."""
        if registration is None or registration.details is None:
            await self._drop(row, "recipient_erased")
            return None
        if row.kind == VERIFICATION_MAIL:
            assert row.nonce is not None
            letter = verification_letter(
                code_for(self.key, row.registration_id, row.nonce),
                verification_link(
                    self.public_url,
                    row.registration_id,
                    token_for(self.key, row.registration_id, row.nonce),
                ),
                self.code_ttl,
                self.registration_ttl,
            )
        elif row.kind == OWNER_NOTICE:
            if not await self._holder_verified(row):
                return None
            letter = owner_notice_letter(row.detail or "")
        else:
            raise ValueError(f"unknown kind of mail {row.kind!r}")
        return self._outgoing(row, registration.details.email, letter)

    async def _holder_verified(self, row: _Row) -> bool:
        """Owner notices go to verified holders only: one still waiting for its verification
        waits (its verification makes the notice due again), one that will never be verified
        (expired, or from before verification) is dropped.

        The holder's verification row is read FOR SHARE and the notice deferred in the same
        transaction: a verification committing between a plain read and the deferral would
        have its "due now" overwritten by the deferral, and the notice would wait for the
        holder's deadline instead (seen under load). With the lock, a verification either
        commits first (and is read here) or waits for the deferral, then makes it due."""
        async with self.engine.begin() as conn:
            found = (
                await conn.execute(
                    text(
                        "SELECT verified_at, expired_at, expires_at FROM email_verifications"
                        " WHERE registration_id = :id FOR SHARE"
                    ),
                    {"id": row.registration_id},
                )
            ).first()
            status = (
                await conn.execute(
                    text(f"SELECT status FROM {STATUS_VIEW} WHERE registration_id = :id"),
                    {"id": row.registration_id},
                )
            ).scalar()
            if found is not None and found.verified_at is not None:
                return True
            later = None
            if found is not None and found.expired_at is None:
                # Again at its deadline (its verification makes it due at once); past it,
                # soon: the sweep is deciding it (its expiry drops what is unsent by then).
                now = datetime.now(UTC)
                later = found.expires_at if found.expires_at > now else now + timedelta(seconds=5)
            elif found is None and status in (None, PENDING, FAILED):
                later = datetime.now(UTC) + timedelta(minutes=5)
            if later is not None:
                await self._defer(row, later, conn)
                return False
        await self._drop(row, "holder_not_verified")
        return False

    @cached_property
    def _sender(self) -> tuple[str, str]:
        """``mail_from``'s name and address: read once, not three times a message."""
        return parseaddr(self.mail_from)

    def _outgoing(self, row: _Row, to: str, letter: Letter) -> Outgoing | Message:
        """The message to send: its bytes written directly when its headers are plain (as
        every verification to an ASCII address is), else the email package's message."""
        if to.isascii():
            content = alternative(
                self._headers(row, to, letter), letter.text, letter.html, new_boundary()
            )
            if content is not None:
                return Outgoing(self._sender[1], to, content)
        return self._message(row, to, letter)

    def _message(self, row: _Row, to: str, letter: Letter) -> Message:
        if to.isascii():
            # The classic API: the modern EmailMessage spent 4 ms of CPU a message on its
            # header objects, most of the mailer's cost; this one 0.6 ms, the same bytes' worth.
            return library_message(self._headers(row, to, letter), letter.text, letter.html)
        # An internationalised address: the modern API writes it for SMTPUTF8.
        name, sender = self._sender
        modern = EmailMessage()
        modern["From"] = Address(display_name=name, addr_spec=sender) if name else sender
        modern["To"] = to
        modern["Subject"] = letter.subject
        modern.set_content(letter.text)
        modern.add_alternative(letter.html, subtype="html")
        for header, value in self._identity(row):
            modern[header] = value
        return modern

    def _headers(self, row: _Row, to: str, letter: Letter) -> list[tuple[str, str]]:
        """A classic message's headers, in order, as their values are written."""
        name, sender = self._sender
        return [
            ("From", formataddr((name, sender), charset="utf-8") if name else sender),
            ("To", to),
            ("Subject", _encoded_subject(letter.subject)),
            *self._identity(row),
        ]

    def _identity(self, row: _Row) -> list[tuple[str, str]]:
        domain = self._sender[1].rpartition("@")[2] or "signup.localhost"
        return [
            ("Date", format_datetime(datetime.now(UTC))),
            # The same in every copy of this row's message: a duplicate (see the module's
            # docstring) is recognisable as one.
            ("Message-ID", f"<signup-mail-{row.id}-{row.created_at:%Y%m%d%H%M%S}@{domain}>"),
            # Random ids only: which registration a message is for (support, tests), no data.
            ("X-Signup-Registration", str(row.registration_id)),
            ("X-Signup-Mail", row.kind),
            ("Auto-Submitted", "auto-generated"),
        ]

    async def _drop(self, row: _Row, reason: str) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                text("UPDATE mail_outbox SET dropped = :reason WHERE id = :id"),
                {"id": row.id, "reason": reason},
            )
        log.info("mail_dropped", outbox_id=row.id, kind=row.kind, reason=reason)

    async def _defer(self, row: _Row, until: datetime, conn: AsyncConnection) -> None:
        await conn.execute(
            text("UPDATE mail_outbox SET due_at = :until WHERE id = :id"),
            {"id": row.id, "until": until},
        )

    async def import_notices(self) -> int:
        """The enumeration-resistant mode's notices (written by the API in the event
        store's database) become outbox rows, each once: the attempt id is unique there,
        so an import interrupted between the two databases is simply run again. Shard 0's."""
        if self.shard != 0:
            return 0
        async with reading(self.events_engine) as conn:
            notices = (
                await conn.execute(
                    text(
                        f"SELECT attempt_id, registration_id, kind FROM {NOTICES}"
                        " WHERE queued_at IS NULL ORDER BY created_at LIMIT :limit"
                    ),
                    {"limit": self.batch},
                )
            ).all()
        if not notices:
            return 0
        async with self.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO mail_outbox (registration_id, kind, reference, detail)"
                    " SELECT * FROM unnest(CAST(:holders AS uuid[]), CAST(:kinds AS text[]),"
                    "  CAST(:attempts AS uuid[]), CAST(:details AS text[]))"
                    " ON CONFLICT (reference) DO NOTHING"
                ),
                {
                    "holders": [n.registration_id for n in notices],
                    "kinds": [OWNER_NOTICE] * len(notices),
                    "attempts": [n.attempt_id for n in notices],
                    "details": [n.kind for n in notices],
                },
            )
        async with self.events_engine.begin() as conn:
            await conn.execute(
                text(f"UPDATE {NOTICES} SET queued_at = now() WHERE attempt_id = ANY(:ids)"),
                {"ids": [n.attempt_id for n in notices]},
            )
        return len(notices)
