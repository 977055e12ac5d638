"""Telling a stalled projection from a busy or an idle one."""

from __future__ import annotations

from application.projection_progress import ProjectionProgress


def test_a_projection_with_events_waiting_and_no_progress_is_stalled_after_the_delay() -> None:
    progress = ProjectionProgress(stall_after=30)
    progress.observe("users", position=10, lag=5, now=0)
    progress.observe("users", position=10, lag=7, now=29)
    assert progress.stalled(now=29) == []
    progress.observe("users", position=10, lag=9, now=30)
    assert progress.stalled(now=30) == ["users"]


def test_a_projection_that_moves_is_not_stalled_however_long_it_lags() -> None:
    progress = ProjectionProgress(stall_after=30)
    for second in range(0, 120, 10):
        progress.observe("users", position=second, lag=1_000, now=second)
    assert progress.stalled(now=120) == []


def test_a_projection_with_nothing_to_do_is_never_stalled() -> None:
    progress = ProjectionProgress(stall_after=30)
    progress.observe("users", position=10, lag=0, now=0)
    progress.observe("users", position=10, lag=0, now=600)
    assert progress.stalled(now=600) == []


def test_the_wait_is_counted_from_when_events_started_waiting_not_from_the_last_move() -> None:
    progress = ProjectionProgress(stall_after=30)
    progress.observe("users", position=10, lag=0, now=0)
    progress.observe("users", position=10, lag=3, now=100)
    assert progress.stalled(now=120) == []
    assert progress.stalled(now=130) == ["users"]


def test_a_stalled_projection_recovers_once_it_moves() -> None:
    progress = ProjectionProgress(stall_after=30)
    progress.observe("users", position=10, lag=5, now=0)
    assert progress.stalled(now=40) == ["users"]
    progress.observe("users", position=15, lag=0, now=41)
    assert progress.stalled(now=41) == []


def test_only_the_stuck_projection_is_named() -> None:
    progress = ProjectionProgress(stall_after=30)
    progress.observe("users", position=10, lag=5, now=0)
    progress.observe("email_lookup", position=10, lag=5, now=0)
    progress.observe("email_lookup", position=15, lag=0, now=35)
    assert progress.stalled(now=35) == ["users"]
