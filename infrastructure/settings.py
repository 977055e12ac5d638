"""Settings, read from the environment once by the entry point and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace

# Only for a laptop: production sets SIGNUP_RESERVATION_KEY, or anyone could recompute ids.
DEVELOPMENT_RESERVATION_KEY = "signup-development-key-change-me"


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    reservation_key: str = DEVELOPMENT_RESERVATION_KEY
    batch_max_size: int = 500
    batch_max_wait_ms: float = 2.0
    append_concurrency: int = 2
    db_pool_size: int = 8
    idempotency_ttl_seconds: int = 25 * 3600
    idempotency_in_flight_seconds: int = 30
    log_format: str = "auto"
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            reservation_key=env.get("SIGNUP_RESERVATION_KEY", defaults.reservation_key),
            batch_max_size=int(env.get("SIGNUP_BATCH_MAX_SIZE", defaults.batch_max_size)),
            batch_max_wait_ms=float(
                env.get("SIGNUP_BATCH_MAX_WAIT_MS", defaults.batch_max_wait_ms)
            ),
            append_concurrency=int(
                env.get("SIGNUP_APPEND_CONCURRENCY", defaults.append_concurrency)
            ),
            db_pool_size=int(env.get("SIGNUP_DB_POOL_SIZE", defaults.db_pool_size)),
            idempotency_ttl_seconds=int(
                env.get("SIGNUP_IDEMPOTENCY_TTL_SECONDS", defaults.idempotency_ttl_seconds)
            ),
            log_format=env.get("SIGNUP_LOG_FORMAT", defaults.log_format),
            log_level=env.get("SIGNUP_LOG_LEVEL", defaults.log_level),
        )

    def with_servers(self, database_url: str, redis_url: str) -> Settings:
        return replace(self, database_url=database_url, redis_url=redis_url)
