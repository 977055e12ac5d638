"""Reads the event store's notification log for the projectors, in batches, asynchronously."""

from __future__ import annotations

import asyncio
import math
import uuid
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from eventsourcing.persistence import Mapper, StoredEvent
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
from infrastructure.event_store.subject_keys import shreds_table, subject_keys_table
from infrastructure.read_side.read_store import records
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
    # The notifications' headers (id, topic, whether the key was there) of one stretch of the
    # log, (_scanned_from, _scanned_to], every one in it: ids commit in order under the events
    # table's lock, so a stretch once scanned never gains one. The projectors of a worker walk
    # the same stretch a few batches apart; each scanned all of it, with a key lookup per
    # event, four times over (pg_stat_statements: 10.6 us of PostgreSQL a signup). Now each
    # header is scanned once between them, while the stretch is young (``headers_seconds``)
    # and no key has been shredded since it was scanned (the store's count of shreds, bumped
    # in each shred's own transaction, is what it was): an event read after its person's
    # erasure is never opened from a header read before it.
    headers_size: int = 16384
    headers_seconds: float = 1.0
    _ids: list[int] = field(default_factory=list, init=False, repr=False)
    _headers: list[tuple[int, str, bool]] = field(default_factory=list, init=False, repr=False)
    _scanned_from: int = field(default=0, init=False, repr=False)
    _scanned_to: int = field(default=0, init=False, repr=False)
    _scanned_at: float = field(default=0.0, init=False, repr=False)
    _stretch: int = field(default=0, init=False, repr=False)  # which stretch, as it restarts
    _shreds: int = field(default=0, init=False, repr=False)  # the count when it was scanned
    # Whether the store counts its shreds (None until asked): one not migrated since does
    # not, and its headers are then read by every projector, as before.
    _counted: bool | None = field(default=None, init=False, repr=False)
    _scanning: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

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
        headers (read once for all the worker's projectors: ``_headers_after``) name the
        events and whether their person's key is still there; only the
        wanted events not decoded already (by another projector of this worker) bring their
        payload over the wire, in a second read, and one that another projector is fetching
        now is waited for. Each projector asked for every payload before, so each event
        crossed the wire once a projection; then, without the wait, about twice under load
        (the projectors read at the same moments).
        """
        headers = await self._headers_after(after, limit, up_to)
        reached = headers[-1][0] if headers else after
        chosen = set(topics)
        wanted = [(nid, keyed) for nid, topic, keyed in headers if topic in chosen]
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

    async def _headers_after(
        self, after: int, limit: int, up_to: int | None
    ) -> list[tuple[int, str, bool]]:
        """The headers of the first ``limit`` notifications after ``after`` (none past
        ``up_to``): from the stretch scanned already while it is young, the rest read now.

        A header's "keyed" is as of its scan: it is reused only while the store's count of
        shreds is what that scan saw, checked in a statement of its own when the read begins,
        so an event is never opened from a header read before a shred that read could see.
        """
        if self._counted is None:
            self._counted = await self._counts_shreds()
        if not self._counted:
            headers, _ = await self._scan(after, limit, up_to)
            return headers
        cached = self._cached(after, limit, up_to)
        # Only headers about to be reused are checked: at the stretch's front (nothing cached
        # past ``after``) the scan that extends it brings the count along.
        if cached and await self._shredded_since():
            self._scanned_at = -math.inf  # aged: the next read starts a stretch anew
            cached = None
        if cached is not None and self._complete(cached, limit, up_to):
            return cached
        if cached is None and self._young():
            # Far from the young stretch (a projector far behind, a rebuild): its own scan.
            headers, _ = await self._scan(after, limit, up_to)
            return headers
        # At the stretch's front, or no young stretch: one projector reads and extends or
        # starts it, and whoever comes meanwhile waits and takes what it read.
        async with self._scanning:
            cached = self._cached(after, limit, up_to)
            if cached is None:
                fresh, shreds = await self._scan(after, limit, up_to)
                if not self._young():
                    self._stretch += 1
                    self._ids, self._headers = [], []
                    self._scanned_from = self._scanned_to = after
                    self._scanned_at = asyncio.get_running_loop().time()
                    self._shreds = shreds or 0  # no headers came: nothing is kept
                    self._keep(fresh)
                return fresh
            if self._complete(cached, limit, up_to):
                return cached
            start, stretch = self._scanned_to, self._stretch
            fresh, shreds = await self._scan(start, limit - len(cached), up_to)
            if (self._stretch, self._scanned_to) == (stretch, start):
                if shreds is None or shreds == self._shreds:
                    self._keep(fresh)
                else:
                    # A key was shredded since the stretch was read (the part returned here
                    # was found unshredded when this read began): the next read starts anew.
                    self._scanned_at = -math.inf
            return cached + fresh

    async def _counts_shreds(self) -> bool:
        rows = await self._records(
            "SELECT to_regclass($1) IS NOT NULL AS counted", self._shreds_name
        )
        return bool(rows[0]["counted"])

    async def _shredded_since(self) -> bool:
        """Whether a key has been shredded since the stretch was scanned."""
        rows = await self._records(f'SELECT shredded FROM "{self._shreds_name}"')
        return not rows or int(rows[0]["shredded"]) != self._shreds

    @property
    def _shreds_name(self) -> str:
        return shreds_table(self.table)

    def _complete(self, cached: list[tuple[int, str, bool]], limit: int, up_to: int | None) -> bool:
        return len(cached) == limit or (up_to is not None and self._scanned_to >= up_to)

    def _young(self) -> bool:
        return (
            asyncio.get_running_loop().time() - self._scanned_at <= self.headers_seconds
            and self._scanned_to > self._scanned_from
        )

    def _cached(
        self, after: int, limit: int, up_to: int | None
    ) -> list[tuple[int, str, bool]] | None:
        """The stretch's headers after ``after`` (at most ``limit``, none past ``up_to``),
        or None when ``after`` is not within a young stretch."""
        if not (self._young() and self._scanned_from <= after <= self._scanned_to):
            return None
        start = bisect_right(self._ids, after)
        end = len(self._ids) if up_to is None else bisect_right(self._ids, up_to)
        return self._headers[start : min(end, start + limit)]

    def _keep(self, headers: list[tuple[int, str, bool]]) -> None:
        """Extend the stretch by ``headers``, the whole of (its end, their last id]."""
        if not headers:
            return
        self._ids += [nid for nid, _, _ in headers]
        self._headers += headers
        self._scanned_to = headers[-1][0]
        if len(self._ids) > self.headers_size:
            drop = len(self._ids) - self.headers_size
            self._scanned_from = self._ids[drop - 1]
            del self._ids[:drop], self._headers[:drop]

    async def _scan(
        self, after: int, limit: int, up_to: int | None
    ) -> tuple[list[tuple[int, str, bool]], int | None]:
        """The headers, and the store's count of shreds as the scan saw it (None where the
        store keeps no count, or no header came)."""
        counted = (
            f', (SELECT shredded FROM "{self._shreds_name}") AS shreds' if self._counted else ""
        )
        statement = (
            f"SELECT notification_id, topic, {self._key} IS NOT NULL AS keyed{counted}"
            f" {self._from} WHERE notification_id > $1"
            + (" AND notification_id <= $3" if up_to is not None else "")
            + " ORDER BY notification_id LIMIT $2"
        )
        arguments: list[Any] = [after, limit]
        if up_to is not None:
            arguments.append(up_to)
        rows = await self._records(statement, *arguments)
        shreds = int(rows[0]["shreds"]) if rows and self._counted else None
        return [(row["notification_id"], row["topic"], row["keyed"]) for row in rows], shreds

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
        rows = await self._records(f'SELECT max(notification_id) AS head FROM "{self.table}"')
        return int(rows[0]["head"] or 0)

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
