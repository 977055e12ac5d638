"""What the bench's report says about a run's seconds."""

from __future__ import annotations

import io

from bench.report import NOT_APPLICABLE, _slowest_second, print_table


def test_a_second_where_the_system_stalled_is_reported_as_the_runs_slowest() -> None:
    # A minute into a run a vacuum held the appends for a second: 2 % off a 30 s mean, and a
    # quarter of the rate in that second.
    seconds = [2_900, 3_500, 3_480, 3_520, 840, 2_500, 3_490, 3_510]

    assert _slowest_second(seconds) == (840, 4)


def test_the_first_second_which_holds_the_ramp_up_is_not_the_slowest() -> None:
    assert _slowest_second([1_200, 3_500, 3_400, 3_450]) == (3_400, 2)
    assert _slowest_second([1_200]) == (None, None)


def test_the_table_shows_each_runs_slowest_second_and_when() -> None:
    def summary(label: str, slowest: int, at: int) -> dict[str, object]:
        return {
            "label": label,
            "duration_s": 30.0,
            "sent": 1,
            "accepted": 1,
            "accepted_per_s": {
                "mean": 1.0,
                "best_window": 1.0,
                "slowest_second": slowest,
                "slowest_second_t": at,
            },
            "accept_latency_ms": dict.fromkeys(("p50", "p95", "p99", "max")),
            "status_counts": {},
            "unexpected_answers": None,
            "transport_errors": {},
            "completion_ms": {"status": NOT_APPLICABLE},
            "projection_lag": {"status": NOT_APPLICABLE},
            "event_store_batch_size": {"status": NOT_APPLICABLE},
            "generator_launch_delay_ms": NOT_APPLICABLE,
            "cpu": {},
        }

    out = io.StringIO()
    print_table([summary("baseline", 9_012, 7), summary("target", 841, 23)], None, out)

    [row] = [line for line in out.getvalue().splitlines() if "slowest second" in line]
    assert "9,012 (t 7)" in row and "841 (t 23)" in row
