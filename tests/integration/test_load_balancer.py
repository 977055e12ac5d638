"""The shipped HAProxy configuration, run for real in front of a stand-in replica.

Only what Docker and a production host provide is swapped (Docker's DNS resolver and the
replica's name, the ports, the connection limit): the frontend's rules are the shipped ones.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.certificates import CERTIFICATE_IN_LB, make_certificate
from tests.servers import ROOT, free_port

SHIPPED = ROOT / "infrastructure" / "deploy" / "haproxy" / "haproxy.cfg"

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None,
    reason="haproxy is not installed: `make test-tools` (as root) installs it",
)


class _Replica(BaseHTTPRequestHandler):
    """Answers every request with the method, path and forwarded scheme it saw: what reached
    the API."""

    def _answer(self) -> None:
        proto = self.headers.get("x-forwarded-proto")
        body = f"replica saw {self.command} {self.path} over {proto}".encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


def _trusting(certificate: Path) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certificate))


@dataclass
class _Entrance:
    http: str
    https: str
    certificate: Path


def _local(config: str, ports: dict[str, int], replica: int, certificate: Path) -> str:
    config = re.sub(r"(?ms)^resolvers docker\n.*?\n\n", "", config)
    # A test machine's file descriptor limit is below what 50,000 connections need.
    config = re.sub(r"(?m)^(\s*maxconn) \d+$", r"\1 1000", config)
    config = re.sub(r"(?m)^(\s*default-server) .*$", r"\1 check inter 100ms fall 3 rise 1", config)
    config = re.sub(
        r"(?m)^(\s*)server-template .*$", rf"\1server api-0 127.0.0.1:{replica}", config
    )
    config = config.replace(CERTIFICATE_IN_LB, str(certificate))
    for shipped, local in ports.items():
        config = re.sub(rf"(?m)^(\s*bind) :{shipped}\b", rf"\1 127.0.0.1:{local}", config)
    return config


@pytest.fixture
def entrance(tmp_path: Path) -> Iterator[_Entrance]:
    replica = ThreadingHTTPServer(("127.0.0.1", 0), _Replica)
    threading.Thread(target=replica.serve_forever, daemon=True).start()
    ports = {"80": free_port(), "443": free_port(), "8404": free_port()}
    certificate = tmp_path / "signup.pem"
    make_certificate(certificate)
    config = tmp_path / "haproxy.cfg"
    shipped = SHIPPED.read_text()
    config.write_text(_local(shipped, ports, replica.server_address[1], certificate))
    process = subprocess.Popen(
        ["haproxy", "-db", "-f", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SIGNUP_HTTPS_PORT": str(ports["443"])},
    )
    found = _Entrance(
        f"http://127.0.0.1:{ports['80']}", f"https://127.0.0.1:{ports['443']}", certificate
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                live = httpx.get(
                    f"{found.https}/health/live", verify=_trusting(certificate), timeout=1
                )
                if live.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "HAProxy did not route to the replica"
            time.sleep(0.1)
        yield found
    finally:
        process.terminate()
        process.wait(10)
        replica.shutdown()


def test_tls_ends_at_the_entrance_with_hsts_and_the_replica_hears_https(
    entrance: _Entrance,
) -> None:
    with httpx.Client(verify=_trusting(entrance.certificate)) as https:
        answer = https.post(f"{entrance.https}/registrations", content=b"{}")

    assert answer.text == "replica saw POST /registrations over https"
    assert answer.headers["strict-transport-security"] == "max-age=63072000; includeSubDomains"


def test_plain_http_is_sent_to_https_keeping_the_method_and_reaches_no_replica(
    entrance: _Entrance,
) -> None:
    for method in ("GET", "POST"):
        answer = httpx.request(method, f"{entrance.http}/registrations?x=1", content=b"{}")
        assert answer.status_code == 308, method
        assert answer.headers["location"] == f"{entrance.https}/registrations?x=1"
        assert "replica saw" not in answer.text


def test_the_public_entrance_does_not_route_the_metrics(entrance: _Entrance) -> None:
    with httpx.Client(verify=_trusting(entrance.certificate)) as https:
        for path in ("/metrics", "/metrics/", "/metrics?x=1"):
            answer = https.get(f"{entrance.https}{path}")
            assert answer.status_code == 404, path
            assert "replica saw" not in answer.text
        other = https.get(f"{entrance.https}/registrations/x")
    assert other.text == "replica saw GET /registrations/x over https"
