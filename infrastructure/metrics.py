"""Prometheus metrics. Declaring them connects to nothing; /metrics (API) and the worker's
metrics port expose them."""

from __future__ import annotations

import structlog
from prometheus_client import Counter, Gauge, Histogram, start_http_server

log = structlog.get_logger(__name__)

BATCH_SIZE = Histogram(
    "signup_event_store_batch_size",
    "Registrations appended per event-store transaction (group commit).",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000),
)
APPEND_SECONDS = Histogram(
    "signup_event_store_append_seconds",
    "Time to append one batch to the event store, commit included.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
EVENTS_APPENDED = Counter(
    "signup_events_appended", "Events appended to the event store (registrations and reservations)."
)
APPEND_TIMEOUTS = Counter(
    "signup_append_timeouts",
    "Signups answered 503 because their batch was not confirmed within the append timeout.",
)
REGISTRATIONS_RECORDED = Counter(
    "signup_registrations_recorded", "Registrations durably recorded (answered 202)."
)
IDEMPOTENT_REPLAYS = Counter(
    "signup_idempotent_replays", "Requests answered from a stored Idempotency-Key answer."
)
RATE_LIMITED = Counter("signup_rate_limited", "Requests refused with 429.", ["limit"])
# multiprocess_mode: with `signup api --workers N` every process reports the same figures
# read from the databases; the greatest is the freshest.
PROJECTION_POSITION = Gauge(
    "signup_projection_position",
    "Last notification id a projection has handled.",
    ["projection"],
    multiprocess_mode="max",
)
PROJECTION_LAG = Gauge(
    "signup_projection_lag_events",
    "Notifications in the event store a projection has not handled yet.",
    ["projection"],
    multiprocess_mode="max",
)
PROJECTION_STALLED = Gauge(
    "signup_projection_stalled",
    "1 while a projection has had events waiting without moving for"
    " SIGNUP_PROJECTION_STALL_SECONDS (its worker is dead, hung or cut off), else 0.",
    ["projection"],
    multiprocess_mode="max",
)
WORKER_RESTARTS = Counter(
    "signup_worker_restarts",
    "Times signup up restarted its worker after it exited on its own.",
)
PROJECTION_FAILURES = Gauge(
    "signup_projection_failures",
    "Parked events by state (retrying, dead).",
    ["state"],
    multiprocess_mode="max",
)
PROJECTED = Counter("signup_projected_events", "Events projected, by projection.", ["projection"])
RETRIES = Counter("signup_projection_retries", "Retries of parked events, by outcome.", ["outcome"])

# Email verification. The verification rate is a ratio of these (docs/api.md, the README):
# verified / (verified + expired) over a window.
MAIL_SENT = Counter("signup_mail_sent", "Messages the relay accepted, by kind.", ["kind"])
MAIL_FAILED = Counter(
    "signup_mail_failed",
    "Messages the relay refused (or that failed to render), by kind.",
    ["kind"],
)
VERIFICATIONS = Counter(
    "signup_email_verifications",
    "Codes offered, by outcome (verified, invalid, expired, attempts_exceeded).",
    ["outcome"],
)
EXPIRATIONS = Counter(
    "signup_registrations_expired", "Registrations expired unverified (values released)."
)


def serve_worker_metrics(port: int | None, host: str = "127.0.0.1") -> None:
    """On loopback unless told otherwise: the figures are for the operator's Prometheus,
    not for whoever can reach the machine."""
    if port:
        start_http_server(port, addr=host)
        log.info("worker_metrics", host=host, port=port)
