"""`signup bench` against a live `signup up`: a three-second smoke run, not a benchmark."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT, free_port, signup_process


def test_bench_runs_against_signup_up_and_reports_what_it_got(
    data_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    report, plot = tmp_path / "bench.json", tmp_path / "bench.png"
    # `signup up` must start its own servers, whatever the developer's shell has set; it
    # trusts the bench as a proxy, so the per-client rate limit sees many clients, not one.
    env = {"DATABASE_URL": "", "REDIS_URL": "", "SIGNUP_TRUSTED_PROXIES": "127.0.0.1"}
    up = ["up", "--port", str(port), "--data-dir", str(data_dir)]

    with signup_process(up, env, url, tmp_path / "signup.log"):
        command = [sys.executable, "-m", "interfaces.cli", "bench", "--url", url]
        command += ["--duration", "3", "--concurrency", "8", "--processes", "1"]
        command += ["--client-addresses", "10000"]
        # A large invalid share, so a three-second run surely sends some.
        command += ["--invalid", "0.2", "--report", str(report), "--plot", str(plot)]
        bench = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert bench.returncode == 0, bench.stderr[-4000:]
    target = json.loads(report.read_text())["target"]
    assert target["accepted"] > 0
    assert target["server_errors_5xx"] == 0
    assert not [code for code in target["status_counts"] if code.startswith("5")]
    assert target["status_counts"]["202"] > 0
    assert target["status_counts"]["422"] > 0
    # Valid bodies got 202, invalid ones 422, duplicates 409: nothing else.
    assert target["unexpected_answers"] == {}
    assert "status 202" in bench.stdout
    assert "status 422" in bench.stdout
