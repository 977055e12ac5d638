"""The wait a refused client is told, worked out as the ``limits`` library does."""

from __future__ import annotations

from limits import parse

from infrastructure.redis_store.rate_limits import reset_in

MINUTE = parse("2/minute")


def test_a_window_begun_by_the_refused_requests_own_call_waits_a_whole_window() -> None:
    # Read inside the script that made the key: exactly twice the expiry left.
    assert reset_in(MINUTE, 0, 0.0, 2, 120.0) == 60.0


def test_a_window_begun_earlier_waits_until_its_current_half_runs_out() -> None:
    assert reset_in(MINUTE, 0, 0.0, 2, 100.5) == 40.5


def test_a_previous_window_frees_a_place_before_the_current_one_ends() -> None:
    # Two hits left in the previous window expiring in 45 s: one frees every 30 s.
    assert reset_in(MINUTE, 2, 45.0, 1, 110.0) == 15.0


def test_nothing_counted_means_no_wait() -> None:
    assert reset_in(MINUTE, 0, 0.0, 0, 0.0) == 0.0
