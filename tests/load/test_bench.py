"""Benchmark: `signup bench --baseline` for two minutes against a fresh `signup up`.

Not part of the default test run (run it with ``make load`` or ``uv run pytest tests/load -s``).
It asserts only that the run was clean; the figures are the point: they are printed, and the
JSON report and PNG are kept in ``$SIGNUP_BENCH_OUT`` (default: pytest's tmp_path).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, bench_load_env, free_port, signup_process

DURATION_S = 120


@pytest.mark.timeout(3 * DURATION_S + 300)
def test_two_minutes_of_signups_against_signup_up(data_dir: Path, tmp_path: Path) -> None:
    out = Path(os.environ.get("SIGNUP_BENCH_OUT", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    up = ["up", "--port", str(port), "--data-dir", str(data_dir)]

    with signup_process(up, bench_load_env(), url, tmp_path / "up.log"):
        report, plot = out / "bench-report.json", out / "bench-report.png"
        command = [sys.executable, "-m", "interfaces.cli", "bench", "--url", url, "--baseline"]
        command += ["--client-addresses", "100000"]
        command += ["--duration", str(DURATION_S), "--report", str(report), "--plot", str(plot)]
        bench = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=3 * DURATION_S + 240,
        )
    print(bench.stdout)

    assert bench.returncode == 0, bench.stderr[-4000:]
    target = json.loads(report.read_text())["target"]
    assert target["accepted"] > 0
    assert target["server_errors_5xx"] == 0
    assert target["transport_errors"] == {}
    assert target["unexpected_answers"] == {}
    assert "429" not in target["status_counts"], "rate-limited: the figures would mean nothing"
