"""Reads the event store's notification log for the projectors, in batches, asynchronously."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from application.personal_data import PersonalDataVault
from domain.registration import (
    EmailVerified,
    RegistrationExpired,
    SignupAttempted,
    UserRegistrationRequested,
)
from domain.statuses import EXPIRED, VERIFIED
from infrastructure.event_store.store import SignupEvents, cipher_env
from infrastructure.event_store.subject_keys import subject_keys_table
from infrastructure.read_side.read_store import reading, records
from projections.model import RequestedRegistration


@dataclass(frozen=True, slots=True)
class Notification:
    id: int
    registration_id: uuid.UUID
    topic: str
    # Decoded only for the topics the reader asked for, with the person's details opened.
    registration: RequestedRegistration


def event_mapper(cipher_key: str | None = None) -> Mapper[uuid.UUID]:
    """The same transcoding (and cipher) the event store writes with, without a connection."""
    env = {"PERSISTENCE_MODULE": "eventsourcing.popo", **cipher_env(cipher_key)}
    return SignupEvents(env=env).mapper


@dataclass
class EventSource:
    engine: AsyncEngine
    mapper: Mapper[uuid.UUID]
    vault: PersonalDataVault
    table: str = "signup_events"
    # The projectors of one worker read the same events at about the same time: each event
    # is decoded and opened once for all of them. Keyed by whether its key was still there,
    # so an event read after its person's erasure is never served from before it.
    recent_size: int = 8192
    _recent: OrderedDict[tuple[int, bool], Notification] = field(
        default_factory=OrderedDict, init=False, repr=False
    )
    # Events being fetched now, and the fetch's end (see ``read``).
    _fetching: dict[int, asyncio.Future[None]] = field(default_factory=dict, init=False, repr=False)

    @property
    def _from(self) -> str:
        return f'FROM "{self.table}" e'

    @property
    def _key(self) -> str:
        """The key that opens an event, in the same query. A subquery, not a join: for a
        few hundred events the planner hashed the whole keys table (one row per person ever
        registered) on every read, 12 ms at 20,000 people and growing with the store; a
        subquery is an index lookup per event, whatever the table's size."""
        return (
            f'(SELECT k.key FROM "{subject_keys_table(self.table)}" k'
            " WHERE k.registration_id = e.originator_id)"
        )

    async def read(
        self, after: int, limit: int, topics: Sequence[str], up_to: int | None = None
    ) -> tuple[list[Notification], int]:
        """Events of ``topics`` after ``after``, and the position the read reached.

        Every notification is scanned so the position passes events of other topics too. The
        first read names the events and whether their person's key is still there; only the
        wanted events not decoded already (by another projector of this worker) bring their
        payload over the wire, in a second read, and one that another projector is fetching
        now is waited for. Each projector asked for every payload before, so each event
        crossed the wire once a projection; then, without the wait, about twice under load
        (the projectors read at the same moments).
        """
        statement = (
            "SELECT notification_id, topic = ANY($1::text[]) AS wanted,"
            f" {self._key} IS NOT NULL AS keyed {self._from} WHERE notification_id > $2"
            + (" AND notification_id <= $4" if up_to is not None else "")
            + " ORDER BY notification_id LIMIT $3"
        )
        arguments: list[Any] = [list(topics), after, limit]
        if up_to is not None:
            arguments.append(up_to)
        rows = await self._records(statement, *arguments)
        reached = rows[-1]["notification_id"] if rows else after
        wanted = [(row["notification_id"], row["keyed"]) for row in rows if row["wanted"]]
        missing = [nid for nid, keyed in wanted if (nid, keyed) not in self._recent]
        # Another projector of this worker may be fetching some of them now (they read the
        # same events at about the same time): wait for its fetch rather than fetch them again.
        elsewhere = {nid: self._fetching[nid] for nid in missing if nid in self._fetching}
        await self._fetch([nid for nid in missing if nid not in elsewhere])
        if elsewhere:
            await asyncio.wait(set(elsewhere.values()))
        notes = []
        late = []
        for nid, keyed in wanted:
            note = self._recent.get((nid, keyed))
            if note is None:
                # Dropped from the memory meanwhile (a huge batch), or the other fetch failed
                # or found the key in another state: read it (once for all such events).
                late.append(nid)
            notes.append(note)
        if late:
            again = {note.id: note for note in await self._fetch(late, keep=False)}
            notes = [
                again.get(nid) if note is None else note
                for (nid, _), note in zip(wanted, notes, strict=True)
            ]
        return [note for note in notes if note is not None], reached

    async def _fetch(self, ids: list[int], *, keep: bool = True) -> list[Notification]:
        """Fetch and open these events (keyed as read now: a key shredded since the first
        read is read as gone), remembering them for the other projectors unless ``keep`` is
        false."""
        if not ids:
            return []
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if keep:
            self._fetching.update(dict.fromkeys(ids, done))
        try:
            fetched = await self._records(
                "SELECT notification_id, originator_id, originator_version, topic,"
                f" state, {self._key} AS key {self._from}"
                " WHERE notification_id = ANY($1::bigint[])",
                ids,
            )
            return [self._decode(row) if keep else self._open(row) for row in fetched]
        finally:
            if keep:
                for nid in ids:
                    if self._fetching.get(nid) is done:
                        del self._fetching[nid]
            done.set_result(None)

    async def read_one(self, notification_id: int) -> Notification | None:
        rows = await self._records(
            "SELECT notification_id, originator_id, originator_version, topic, state,"
            f" {self._key} AS key {self._from} WHERE notification_id = $1",
            notification_id,
        )
        return self._decode(rows[0]) if rows else None

    async def requested(
        self, registration_ids: Sequence[uuid.UUID]
    ) -> dict[uuid.UUID, RequestedRegistration]:
        """These registrations' requests, opened with their keys (no details once a key is
        shredded), in one query; an id that is no registration's is left out."""
        rows = await self._records(
            "SELECT notification_id, originator_id, originator_version, topic, state,"
            f" {self._key} AS key {self._from}"
            " WHERE e.originator_id = ANY($1::uuid[]) AND e.originator_version = 1",
            list(set(registration_ids)),
        )
        found = {}
        for row in rows:
            registration = self._open(row).registration
            if registration.outcome is None and not registration.attempt:
                found[registration.registration_id] = registration
        return found

    async def head(self) -> int:
        async with reading(self.engine) as conn:
            result = await conn.execute(text(f'SELECT max(notification_id) FROM "{self.table}"'))
            return int(result.scalar_one_or_none() or 0)

    async def _records(self, statement: str, *arguments: Any) -> list[Any]:
        return await records(self.engine, statement, *arguments)

    def _decode(self, row: Any) -> Notification:
        recent_key = (row["notification_id"], row["key"] is not None)
        found = self._recent.get(recent_key)
        if found is None:
            found = self._recent[recent_key] = self._open(row)
            if len(self._recent) > self.recent_size:
                self._recent.popitem(last=False)
        return found

    def _open(self, row: Any) -> Notification:
        nid, registration_id, topic = row["notification_id"], row["originator_id"], row["topic"]
        event = self.mapper.to_domain_event(
            StoredEvent(registration_id, row["originator_version"], topic, bytes(row["state"]))
        )
        if isinstance(event, SignupAttempted):
            attempt = RequestedRegistration(
                event.originator_id, event.timestamp, None, attempt=True
            )
            return Notification(nid, registration_id, topic, attempt)
        if isinstance(event, EmailVerified | RegistrationExpired):
            outcome = VERIFIED if isinstance(event, EmailVerified) else EXPIRED
            verdict = RequestedRegistration(
                event.originator_id, event.requested_at, None, outcome=outcome
            )
            return Notification(nid, registration_id, topic, verdict)
        assert isinstance(event, UserRegistrationRequested), topic
        details = None
        if row["key"] is not None:
            details = self.vault.open(event.originator_id, event.personal_data, bytes(row["key"]))
        registration = RequestedRegistration(event.originator_id, event.timestamp, details)
        return Notification(nid, registration_id, topic, registration)
