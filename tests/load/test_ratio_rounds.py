"""The throughput goal's measure, repeated: rounds of a fresh `signup up` and `signup bench
--baseline` at the bench's defaults (30 s, 64 in flight), all three rate limits on (100,000
client addresses), each round's ratio printed and then their mean, lowest and highest.

One run lands anywhere within about ±10 % of the mean on a shared two-core VM (a slow spell
makes the API's CPU a signup 10-15 % dearer while the bare endpoint barely moves), so a verdict
wants several rounds on a quiet machine. Run with ``make ratio`` (``SIGNUP_RATIO_ROUNDS``, 5 by
default there); skipped otherwise, as a round takes about 75 s.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, bench_load_env, free_port, signup_process

ROUNDS = int(os.environ.get("SIGNUP_RATIO_ROUNDS", "0") or 0)
GOAL = 0.35


@pytest.mark.skipif(ROUNDS < 1, reason="set SIGNUP_RATIO_ROUNDS (make ratio): ~75 s a round")
@pytest.mark.timeout(ROUNDS * 300 + 60)
def test_rounds_of_the_bench_against_a_fresh_signup_up_give_the_ratio_and_its_spread(
    tmp_path: Path,
) -> None:
    ratios: list[float] = []
    for round_number in range(1, ROUNDS + 1):
        # A fresh store each round, as a person trying `signup up` then `signup bench` has.
        data_dir = tmp_path / f"round-{round_number}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        up = ["up", "--port", str(port), "--data-dir", str(data_dir)]
        report = tmp_path / f"round-{round_number}.json"
        with signup_process(up, bench_load_env(), url, tmp_path / f"up-{round_number}.log"):
            command = [sys.executable, "-m", "interfaces.cli", "bench", "--url", url]
            command += ["--baseline", "--client-addresses", "100000"]
            command += ["--report", str(report), "--plot", str(tmp_path / "plot.png")]
            bench = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert bench.returncode == 0, bench.stderr[-4000:]
        document = json.loads(report.read_text())
        target = document["target"]
        assert target["accepted"] > 0 and target["server_errors_5xx"] == 0
        assert "429" not in target["status_counts"], "rate-limited: the ratio would mean nothing"
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
