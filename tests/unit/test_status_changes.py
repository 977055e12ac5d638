"""The status model's changes to a row already written (projections/registration_status.py),
as given rows → the rows they become, written out by hand; no database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from projections.registration_status import DEAD_LETTERED, retried, settled

AT = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FIRST = uuid.UUID("00000000-0000-4000-8000-000000000001")
# user_id_for(FIRST), pinned in test_reducers.py.
USER = uuid.UUID("93733a68-dae0-5e9d-9408-f4a89c0fed9d")
REASON = "The registration could not be completed; an operator has been notified."


def _row(status: str, user_id: uuid.UUID | None = None, reason: str | None = None) -> Any:
    return {
        "registration_id": FIRST,
        "status": status,
        "user_id": user_id,
        "reason": reason,
        "requested_at": AT,
    }


def test_a_dead_letter_fails_a_pending_or_completed_registration_with_the_reason_told() -> None:
    assert DEAD_LETTERED.apply(_row("pending")) == {
        "registration_id": FIRST,
        "status": "failed",
        "user_id": None,
        "reason": REASON,
        "requested_at": AT,
    }
    # As the UPDATE always did: a completed row keeps the user id it had.
    assert DEAD_LETTERED.apply(_row("completed", USER)) == {
        "registration_id": FIRST,
        "status": "failed",
        "user_id": USER,
        "reason": REASON,
        "requested_at": AT,
    }


def test_a_dead_letter_leaves_a_failed_registration_and_a_verdict_as_they_are() -> None:
    for status in ("failed", "verified", "expired"):
        assert DEAD_LETTERED.apply(_row(status, USER)) is None, status


def test_a_retry_that_projects_the_last_failure_completes_the_registration_with_its_user() -> None:
    for status, reason in (("pending", None), ("failed", REASON)):
        assert retried(FIRST).apply(_row(status, reason=reason)) == {
            "registration_id": FIRST,
            "status": "completed",
            "user_id": USER,
            "reason": None,
            "requested_at": AT,
        }


def test_a_retry_changes_neither_a_completed_registration_nor_a_verdict() -> None:
    for status in ("completed", "verified", "expired"):
        assert retried(FIRST).apply(_row(status, USER)) is None, status


def test_a_verified_email_settles_a_completed_registration_and_keeps_its_user() -> None:
    assert settled("verified").apply(_row("completed", USER)) == {
        "registration_id": FIRST,
        "status": "verified",
        "user_id": USER,
        "reason": None,
        "requested_at": AT,
    }


def test_an_expiry_settles_a_completed_registration_without_its_user() -> None:
    assert settled("expired").apply(_row("completed", USER)) == {
        "registration_id": FIRST,
        "status": "expired",
        "user_id": None,
        "reason": None,
        "requested_at": AT,
    }


def test_a_verdict_told_again_finds_the_row_and_the_other_verdict_finds_none() -> None:
    assert settled("verified").apply(_row("verified", USER)) == _row("verified", USER)
    assert settled("expired").apply(_row("expired")) == _row("expired")
    assert settled("expired").apply(_row("verified", USER)) is None
    assert settled("verified").apply(_row("expired")) is None


def test_a_registration_not_completed_has_no_verdict_to_settle() -> None:
    for status in ("pending", "failed"):
        assert settled("verified").apply(_row(status)) is None, status
        assert settled("expired").apply(_row(status)) is None, status
