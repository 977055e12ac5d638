"""The command side's fast path: the email lookup read model, asked before the event store."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import asyncpg
import structlog

from application.error_text import describe
from infrastructure.read_side.read_store import asyncpg_dsn
from projections.email_lookup import VIEW

log = structlog.get_logger(__name__)

_REGISTERED = f"SELECT 1 FROM {VIEW} WHERE email = $1"


@dataclass
class EmailIndex:
    """Asks with asyncpg directly: one prepared statement, no ORM layer, on every request."""

    read_url: str
    pool_size: int = 8
    _pool: asyncpg.Pool | None = field(default=None, init=False)
    _opening: asyncio.Lock = field(default_factory=asyncio.Lock, init=False)

    async def registered(self, email: str) -> bool:
        try:
            pool = await self._open()
            found = await pool.fetchval(_REGISTERED, email)
            return found is not None
        except Exception as error:
            # Only a shortcut: without it the event store's reservations still decide.
            log.warning("email_index_unavailable", error=describe(error))
            return False

    async def _open(self) -> asyncpg.Pool:
        async with self._opening:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    asyncpg_dsn(self.read_url), min_size=1, max_size=self.pool_size, timeout=2
                )
            return self._pool

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
