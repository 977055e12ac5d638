"""The load balancer's certificate, made as the compose file's `certs` service makes it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.servers import ROOT

SCRIPT = ROOT / "infrastructure" / "deploy" / "haproxy" / "make_certificate.py"
# Where the shipped haproxy.cfg reads it (the compose file mounts it there).
CERTIFICATE_IN_LB = "/usr/local/etc/haproxy/certs/signup.pem"


def make_certificate(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
