"""The command side's fast path: the email lookup read model, asked before the event store."""

from __future__ import annotations

from dataclasses import dataclass

import structlog
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

log = structlog.get_logger(__name__)


@dataclass
class EmailIndex:
    read_engine: AsyncEngine

    async def registered(self, email: str) -> bool:
        try:
            # Autocommit: one round trip, instead of BEGIN, SELECT and ROLLBACK.
            async with self.read_engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                result = await conn.execute(
                    text("SELECT 1 FROM email_lookup WHERE email = :email"), {"email": email}
                )
                return result.first() is not None
        except Exception as error:
            # Only a shortcut: without it the event store's reservations still decide.
            log.warning("email_index_unavailable", error=repr(error))
            return False
