"""The shipped HAProxy configuration, run for real in front of a stand-in replica.

Only what Docker and a production host provide is swapped (Docker's DNS resolver and the
replica's name, the ports, the connection limit): the frontend's rules are the shipped ones.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.servers import ROOT, free_port

SHIPPED = ROOT / "infrastructure" / "deploy" / "haproxy" / "haproxy.cfg"

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed: `make test-tools` (as root) installs it",
)


class _Replica(BaseHTTPRequestHandler):
    """Answers every request with the path it saw: what reached the API."""

    def do_GET(self) -> None:
        body = f"replica saw {self.path}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _local(config: str, public: int, stats: int, replica: int) -> str:
    config = re.sub(r"(?ms)^resolvers docker\n.*?\n\n", "", config)
    # A test machine's file descriptor limit is below what 50,000 connections need.
    config = re.sub(r"(?m)^(\s*maxconn) \d+$", r"\1 1000", config)
    config = re.sub(r"(?m)^(\s*default-server) .*$", r"\1 check inter 100ms fall 3 rise 1", config)
    config = re.sub(
        r"(?m)^(\s*)server-template .*$", rf"\1server api-0 127.0.0.1:{replica}", config
    )
    config = re.sub(r"(?m)^(\s*bind) :80\b", rf"\1 127.0.0.1:{public}", config)
    return re.sub(r"(?m)^(\s*bind) :8404\b", rf"\1 127.0.0.1:{stats}", config)


@pytest.fixture
def load_balancer(tmp_path: Path) -> Iterator[str]:
    replica = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    public, stats = free_port(), free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(_local(SHIPPED.read_text(), public, stats, replica.server_address[1]))
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{public}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"{url}/health/live", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "HAProxy did not route to the replica"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)
        replica.shutdown()


def test_the_public_entrance_does_not_route_the_metrics(load_balancer: str) -> None:
    for path in ("/metrics", "/metrics/", "/metrics?x=1"):
        answer = httpx.get(f"{load_balancer}{path}")
        assert answer.status_code == 404, path
        assert "replica saw" not in answer.text
    assert httpx.get(f"{load_balancer}/registrations/x").text == "replica saw /registrations/x"
