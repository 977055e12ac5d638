"""Settings, read from the environment once by the entry point and passed down."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import overload

from domain.verification import VerificationPolicy

# Only for a laptop: production sets SIGNUP_RESERVATION_KEY, or anyone could recompute ids.
DEVELOPMENT_RESERVATION_KEY = "signup-development-key-change-me"
# An HMAC key shorter than its hash's output (SHA-256) is guessable sooner than the hash.
SHORTEST_RESERVATION_KEY = 32


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str | None = None
    redis_url: str | None = None
    # The read models' database (email lookup, status, dead letters); the event store's if unset.
    read_database_url: str | None = None
    # A streaming replica of the read database for status queries; the read database if unset.
    read_replica_url: str | None = None
    # One DSN per physical users shard; the read database alone if unset.
    shard_database_urls: tuple[str, ...] = ()
    # Fixed once: changing it moves users between shards (a rebuild of every shard).
    logical_shards: int = 64
    projection_batch_size: int = 1000
    # After a partial batch, how long a projector lets the next one fill before it steps
    # again (to the next multiple of it on the machine's clock, so the projectors step
    # together). Every step pays six queries and a commit in its database: at 50 ms, under a peak,
    # the worker and PostgreSQL cost 0.29-0.37 and 0.38-0.50 ms a signup; at 200 ms 0.20-0.21
    # and 0.34-0.38 (docs/performance.md). The status projector does not wait: the others'
    # progress wakes it, so a registration waits for one fill, not two.
    projection_fill_ms: float = 200.0
    retry_max_attempts: int = 5
    retry_base_seconds: float = 1.0
    retry_max_seconds: float = 300.0
    status_cache_seconds: int = 3600
    # How long a just-recorded registration's pending note answers its polls (see
    # infrastructure/read_side/status_cache.py); its row's writers settle it before.
    status_pending_seconds: int = 10
    # /health/ready fails (and signup_projection_stalled says which) once a projection has had
    # events waiting without moving for this long: its worker is dead, hung or cut off.
    projection_stall_seconds: float = 30.0
    # Ask the email lookup read model before appending. Off by default: the group commit
    # already rejects known values with one indexed query per batch on the event store, and
    # the per-request lookup measured 917 -> 572 accepted/s (docs/performance.md).
    fast_reject: bool = False
    # Answer a duplicate email/CPF/CNPJ with the same 202 as a new signup and notify the
    # holder through an outbox, instead of the contract's 409 (which tells anyone whether an
    # email or document is registered). Off by default.
    enumeration_resistant: bool = False
    # The worker serves its own /metrics here (off when unset: the API's /metrics has the lag).
    worker_metrics_port: int | None = None
    # Where it listens: loopback unless a Prometheus elsewhere must reach it (compose: 0.0.0.0).
    worker_metrics_host: str = "127.0.0.1"
    # Rates in the `limits` notation ("1200/minute"); empty turns a limit off. One address can
    # hide many people (carrier NAT), so the per-client limit is generous.
    rate_limit_per_client: str = "1200/minute"
    rate_limit_per_email: str = "10/hour"
    rate_limit_per_cpf: str = "10/hour"
    # Status polls per client address: a person polls for a few seconds, but many people can
    # share an address; a flood of random ids is refused before it reaches a database.
    rate_limit_status_per_client: str = "2400/minute"
    # Peers (addresses or CIDRs) whose X-Forwarded-For names the real client.
    trusted_proxies: tuple[str, ...] = ()
    reservation_key: str = DEVELOPMENT_RESERVATION_KEY
    # AES key (base64, 16/24/32 bytes) that encrypts every event at rest; unset: plaintext.
    event_cipher_key: str | None = None
    batch_max_size: int = 500
    batch_max_wait_ms: float = 1.0
    append_concurrency: int = 2
    # The longest a signup waits for its batch's commit before it is told 503: a batch is
    # tried up to five times through an outage (infrastructure/event_store/batch_append.py);
    # should it commit after all, the Idempotency-Key retry is given its 202.
    append_timeout_seconds: float = 7.0
    # The longest the API waits for any Redis answer. Every signup waits for the rate
    # limiter's call (and, with an Idempotency-Key, for two more): a Redis that hangs instead
    # of refusing (stopped, or packets dropped) held each of them for redis-py's default 5 s
    # before the API failed open. A busy server answers in milliseconds; a second is beyond
    # any answer worth waiting for on one network, not across a continent.
    redis_timeout_seconds: float = 1.0
    db_pool_size: int = 8
    idempotency_ttl_seconds: int = 25 * 3600
    idempotency_in_flight_seconds: int = 30
    log_format: str = "auto"
    log_level: str = "INFO"
    # Email verification. The relay the worker sends through (smtp://user:pass@host:port,
    # smtps:// for TLS from the start); unset, `signup up` runs a sink of its own and any
    # other worker keeps its messages in the outbox, unsent, until one is set.
    smtp_url: str | None = None
    mail_from: str = "Cadastro <nao-responda@signup.localhost>"
    # Where people open the signup page: the base of the links in the messages.
    public_url: str = "http://127.0.0.1:8000"
    # How long a registration may wait for its verification, from its request: past it, it
    # expires (its values are released, its personal data shredded).
    verification_ttl_seconds: float = 48 * 3600.0
    # How long one code (and its link) works; a resend makes a new one.
    verification_code_ttl_seconds: float = 24 * 3600.0
    verification_max_attempts: int = 5
    verification_max_sends: int = 5
    verification_resend_seconds: float = 60.0
    # Mail is sent by this many processes, each the messages whose outbox id modulo this is
    # its shard: the status worker sends shard 0, `signup mailer --shard I` the others (a
    # message costs a mailer ~0.8 ms of CPU: one process sends ~1,000 a second at most).
    mail_shards: int = 1
    # Connections to the relay each of them sends over at once: a message is four round trips.
    mail_sessions: int = 4
    # The terms of use the page links to: a file of the operator's (HTML, or plain text);
    # unset, the text shipped in interfaces/web/terms.html.
    terms_file: str | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            database_url=env.get("DATABASE_URL") or None,
            redis_url=env.get("REDIS_URL") or None,
            read_database_url=env.get("READ_DATABASE_URL") or None,
            read_replica_url=env.get("READ_REPLICA_URL") or None,
            shard_database_urls=tuple(
                url.strip() for url in env.get("SHARD_DATABASE_URLS", "").split(",") if url.strip()
            ),
            logical_shards=_whole(env, "SIGNUP_LOGICAL_SHARDS", defaults.logical_shards, least=1),
            projection_batch_size=_whole(
                env, "SIGNUP_PROJECTION_BATCH_SIZE", defaults.projection_batch_size, least=1
            ),
            projection_fill_ms=_number(
                env, "SIGNUP_PROJECTION_FILL_MS", defaults.projection_fill_ms, least=0
            ),
            retry_max_attempts=_whole(
                env, "SIGNUP_RETRY_MAX_ATTEMPTS", defaults.retry_max_attempts, least=1
            ),
            retry_base_seconds=_number(
                env, "SIGNUP_RETRY_BASE_SECONDS", defaults.retry_base_seconds, least=0
            ),
            retry_max_seconds=_number(
                env, "SIGNUP_RETRY_MAX_SECONDS", defaults.retry_max_seconds, least=0
            ),
            status_cache_seconds=_whole(
                env, "SIGNUP_STATUS_CACHE_SECONDS", defaults.status_cache_seconds, least=1
            ),
            status_pending_seconds=_whole(
                env, "SIGNUP_STATUS_PENDING_SECONDS", defaults.status_pending_seconds, least=1
            ),
            projection_stall_seconds=_number(
                env, "SIGNUP_PROJECTION_STALL_SECONDS", defaults.projection_stall_seconds, above=0
            ),
            reservation_key=env.get("SIGNUP_RESERVATION_KEY", defaults.reservation_key),
            event_cipher_key=env.get("SIGNUP_EVENT_CIPHER_KEY") or None,
            batch_max_size=_whole(env, "SIGNUP_BATCH_MAX_SIZE", defaults.batch_max_size, least=1),
            batch_max_wait_ms=_number(
                env, "SIGNUP_BATCH_MAX_WAIT_MS", defaults.batch_max_wait_ms, least=0
            ),
            append_concurrency=_whole(
                env, "SIGNUP_APPEND_CONCURRENCY", defaults.append_concurrency, least=1
            ),
            append_timeout_seconds=_number(
                env, "SIGNUP_APPEND_TIMEOUT_SECONDS", defaults.append_timeout_seconds, above=0
            ),
            redis_timeout_seconds=_number(
                env, "SIGNUP_REDIS_TIMEOUT_SECONDS", defaults.redis_timeout_seconds, above=0
            ),
            db_pool_size=_whole(env, "SIGNUP_DB_POOL_SIZE", defaults.db_pool_size, least=1),
            idempotency_ttl_seconds=_whole(
                env, "SIGNUP_IDEMPOTENCY_TTL_SECONDS", defaults.idempotency_ttl_seconds, least=1
            ),
            fast_reject=_flag(env.get("SIGNUP_FAST_REJECT")),
            enumeration_resistant=_flag(env.get("SIGNUP_ENUMERATION_RESISTANT")),
            worker_metrics_host=env.get("SIGNUP_WORKER_METRICS_HOST", defaults.worker_metrics_host),
            worker_metrics_port=_whole(
                env, "SIGNUP_WORKER_METRICS_PORT", None, least=1, most=65535
            ),
            rate_limit_per_client=env.get(
                "SIGNUP_RATE_LIMIT_PER_CLIENT", defaults.rate_limit_per_client
            ),
            rate_limit_per_email=env.get(
                "SIGNUP_RATE_LIMIT_PER_EMAIL", defaults.rate_limit_per_email
            ),
            rate_limit_per_cpf=env.get("SIGNUP_RATE_LIMIT_PER_CPF", defaults.rate_limit_per_cpf),
            rate_limit_status_per_client=env.get(
                "SIGNUP_RATE_LIMIT_STATUS_PER_CLIENT", defaults.rate_limit_status_per_client
            ),
            trusted_proxies=tuple(
                p.strip() for p in env.get("SIGNUP_TRUSTED_PROXIES", "").split(",") if p.strip()
            ),
            log_format=env.get("SIGNUP_LOG_FORMAT", defaults.log_format),
            log_level=env.get("SIGNUP_LOG_LEVEL", defaults.log_level),
            smtp_url=env.get("SMTP_URL") or None,
            mail_from=env.get("SIGNUP_MAIL_FROM") or defaults.mail_from,
            public_url=(env.get("SIGNUP_PUBLIC_URL") or defaults.public_url).rstrip("/"),
            verification_ttl_seconds=duration(
                env, "SIGNUP_VERIFICATION_TTL", defaults.verification_ttl_seconds
            ),
            verification_code_ttl_seconds=duration(
                env, "SIGNUP_VERIFICATION_CODE_TTL", defaults.verification_code_ttl_seconds
            ),
            verification_max_attempts=_whole(
                env, "SIGNUP_VERIFICATION_MAX_ATTEMPTS", defaults.verification_max_attempts, least=1
            ),
            verification_max_sends=_whole(
                env, "SIGNUP_VERIFICATION_MAX_SENDS", defaults.verification_max_sends, least=1
            ),
            verification_resend_seconds=duration(
                env, "SIGNUP_VERIFICATION_RESEND_INTERVAL", defaults.verification_resend_seconds
            ),
            terms_file=env.get("SIGNUP_TERMS_FILE") or None,
            mail_shards=_whole(env, "SIGNUP_MAIL_SHARDS", defaults.mail_shards, least=1),
            mail_sessions=_whole(
                env, "SIGNUP_MAIL_SESSIONS", defaults.mail_sessions, least=1, most=64
            ),
        )

    def with_servers(
        self, database_url: str, redis_url: str, shard_database_urls: tuple[str, ...] = ()
    ) -> Settings:
        return replace(
            self,
            database_url=database_url,
            redis_url=redis_url,
            shard_database_urls=self.shard_database_urls or shard_database_urls,
        )

    def secrets_problem(self) -> str | None:
        """Why these settings must not serve real people, or None: a default, empty or short
        reservation key would let anyone recompute which email or CPF a claim is."""
        key = self.reservation_key
        if not key or key == DEVELOPMENT_RESERVATION_KEY:
            return (
                "SIGNUP_RESERVATION_KEY is unset or the public development key: set a secret of "
                f"at least {SHORTEST_RESERVATION_KEY} characters (and never change it)"
            )
        if len(key) < SHORTEST_RESERVATION_KEY:
            return (
                f"SIGNUP_RESERVATION_KEY is {len(key)} characters: use at least "
                f"{SHORTEST_RESERVATION_KEY}"
            )
        return None

    def server_env(self) -> dict[str, str]:
        """The environment a child `signup` process needs to find the same servers and read
        the same events: the inverse of `from_env` for those settings."""
        return {
            "DATABASE_URL": self.database_url or "",
            "REDIS_URL": self.redis_url or "",
            "SHARD_DATABASE_URLS": ",".join(self.shard_database_urls),
            "SIGNUP_EVENT_CIPHER_KEY": self.event_cipher_key or "",
            "SIGNUP_RESERVATION_KEY": self.reservation_key,
            "SMTP_URL": self.smtp_url or "",
            "SIGNUP_PUBLIC_URL": self.public_url,
        }

    def verification_policy(self) -> VerificationPolicy:
        return VerificationPolicy(
            ttl=timedelta(seconds=self.verification_ttl_seconds),
            code_ttl=timedelta(seconds=self.verification_code_ttl_seconds),
            max_attempts=self.verification_max_attempts,
            max_sends=self.verification_max_sends,
            resend_every=timedelta(seconds=self.verification_resend_seconds),
        )

    @property
    def read_url(self) -> str:
        url = self.read_database_url or self.database_url
        assert url, "DATABASE_URL is not set"
        return url

    @property
    def shard_urls(self) -> tuple[str, ...]:
        return self.shard_database_urls or (self.read_url,)


class InvalidSetting(ValueError):
    """A setting the service cannot run with: the message names the variable and why, and
    the process refuses to start rather than run on a guess."""


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(env: Mapping[str, str], name: str, default: float) -> float:
    """Seconds, from "90", "90s", "30m", "48h" or "2d"; unset or empty: ``default``."""
    value = env.get(name)
    if not value or not value.strip():
        return default
    text = value.strip().lower()
    unit = _UNITS.get(text[-1])
    if unit is not None:
        text = text[:-1]
    try:
        seconds = float(text) * (unit or 1.0)
    except ValueError:
        raise InvalidSetting(
            f'{name} must be a duration such as "90s", "30m", "48h" or "2d", not {value!r}'
        ) from None
    if not math.isfinite(seconds) or seconds < 0:
        raise InvalidSetting(f"{name} must be a duration of zero or more, not {value!r}")
    return seconds


@overload
def _whole(
    env: Mapping[str, str], name: str, default: int, *, least: int, most: int | None = None
) -> int: ...
@overload
def _whole(
    env: Mapping[str, str], name: str, default: None, *, least: int, most: int | None = None
) -> int | None: ...
def _whole(
    env: Mapping[str, str],
    name: str,
    default: int | None,
    *,
    least: int,
    most: int | None = None,
) -> int | None:
    """A whole number from ``name``; unset or empty: ``default``."""
    value = env.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = int(value.strip())
    except ValueError:
        raise InvalidSetting(f"{name} must be a whole number, not {value!r}") from None
    if number < least or (most is not None and number > most):
        limits = f"from {least} to {most}" if most is not None else f"{least} or more"
        raise InvalidSetting(f"{name} must be {limits}, not {value!r}")
    return number


def _number(
    env: Mapping[str, str],
    name: str,
    default: float,
    *,
    least: float = 0,
    above: float | None = None,
) -> float:
    """A number from ``name`` (at least ``least``, or more than ``above``); unset or empty:
    ``default``."""
    value = env.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = float(value.strip())
    except ValueError:
        raise InvalidSetting(f"{name} must be a number, not {value!r}") from None
    if not math.isfinite(number) or number < least or (above is not None and number <= above):
        limits = f"more than {above:g}" if above is not None else f"{least:g} or more"
        raise InvalidSetting(f"{name} must be {limits}, not {value!r}")
    return number


def _flag(value: str | None) -> bool:
    return (value or "false").lower() in {"1", "true", "yes"}
