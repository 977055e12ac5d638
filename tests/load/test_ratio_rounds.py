"""The throughput goal's measure, repeated: rounds of a fresh `signup up` and `signup bench
--baseline` at the bench's defaults (30 s, 64 in flight), all three rate limits on (100,000
client addresses), each round's ratio printed and then their mean, lowest and highest.

One run lands anywhere within about ±10 % of the mean on a shared two-core VM (a slow spell
makes the API's CPU a signup 10-15 % dearer while the bare endpoint barely moves), so a verdict
wants several rounds on a quiet machine. Run with ``make ratio`` (``SIGNUP_RATIO_ROUNDS``, 5 by
default there); skipped otherwise, as a round takes about 75 s.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path

import pytest

from tests.servers import bench_round

ROUNDS = int(os.environ.get("SIGNUP_RATIO_ROUNDS", "0") or 0)
GOAL = 0.35


@pytest.mark.skipif(ROUNDS < 1, reason="set SIGNUP_RATIO_ROUNDS (make ratio): ~75 s a round")
@pytest.mark.timeout(ROUNDS * 300 + 60)
def test_rounds_of_the_bench_against_a_fresh_signup_up_give_the_ratio_and_its_spread(
    tmp_path: Path,
) -> None:
    ratios: list[float] = []
    for round_number in range(1, ROUNDS + 1):
        document = bench_round(tmp_path, f"round-{round_number}")
        target = document["target"]
        ratio = document["target_over_baseline"]["accepted_per_s"]
        ratios.append(ratio)
        api = target.get("api_cpu_ms_per_accepted")
        print(
            f"round {round_number}: ratio {ratio:.3f}, {target['accepted_per_s']['mean']:,.0f}"
            f" accepted/s against {document['baseline']['accepted_per_s']['mean']:,.0f}/s,"
            f" API {'n/a' if api is None else f'{api:.3f}'} ms a signup, slowest second"
            f" {target['accepted_per_s']['slowest_second']}",
            flush=True,
        )
    at_goal = sum(ratio >= GOAL for ratio in ratios)
    print(
        f"{len(ratios)} rounds: mean {statistics.mean(ratios):.3f}, lowest {min(ratios):.3f},"
        f" highest {max(ratios):.3f}; {at_goal} at {GOAL} or more"
    )
