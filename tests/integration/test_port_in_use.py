"""A port already taken stops `signup up` and `signup api` before anything starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import ROOT, TEST_RESERVATION_KEY


@pytest.mark.parametrize("command", ["up", "api"])
def test_a_port_in_use_is_said_in_one_line_and_nothing_is_started(
    command: str, tmp_path: Path
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "interfaces.cli", command, "--port", str(port)]
            + (["--data-dir", str(tmp_path / "data")] if command == "up" else []),
            cwd=ROOT,
            env={
                "PATH": "/usr/bin:/bin",
                # For `api`: servers nobody answers at; it must not get as far as them.
                "DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none" if command == "api" else "",
                "REDIS_URL": "redis://127.0.0.1:1" if command == "api" else "",
                "SIGNUP_RESERVATION_KEY": TEST_RESERVATION_KEY,
            },
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [
        f"signup: cannot listen on 127.0.0.1:{port}: Address already in use"
    ]
    assert not (tmp_path / "data").exists()  # no embedded server was started
