"""`signup mail list|show`: what an SMTP sink stored under a data dir, read back."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from infrastructure.verification.mail_sink import MailSink
from infrastructure.verification.mailer import (
    Mailer,
    SmtpRelay,
    _Row,
    verification_letter,
    verification_link,
)
from tests.servers import ROOT

RID = uuid.UUID("6f1c2a52-3d4e-4f60-8a71-92b3c4d5e6f7")


def _signup(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "interfaces.cli", *args],
        cwd=ROOT,
        env=os.environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_signup_mail_lists_what_the_sink_received_and_shows_a_message(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "data"
    mailer = Mailer.__new__(Mailer)
    mailer.mail_from = "Cadastro <nao-responda@signup.localhost>"
    link = verification_link("http://127.0.0.1:8000", RID, "t" * 43)
    letter = verification_letter("012345", link, timedelta(hours=24), timedelta(hours=48))
    row = _Row(1, RID, "verification", b"n" * 16, None, None, datetime.now(UTC))
    with MailSink(data_dir / "mail") as sink:
        await SmtpRelay.from_url(sink.url).send(mailer._message(row, "maria@example.com", letter))

    listed = _signup("mail", "list", "--data-dir", str(data_dir))
    assert listed.returncode == 0, listed.stderr
    [header, line] = listed.stdout.splitlines()
    assert "subject" in header
    assert "maria@example.com" in line and "Confirme seu e-mail" in line

    shown = _signup("mail", "show", line.split()[0], "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert "To: maria@example.com" in shown.stdout
    assert "012345" in shown.stdout and link in shown.stdout
    assert _signup("mail", "show", "last", "--data-dir", str(data_dir)).stdout == shown.stdout

    missing = _signup("mail", "show", "nope", "--data-dir", str(data_dir))
    assert missing.returncode != 0 and "no message nope" in missing.stderr


async def test_the_sink_logs_no_address(tmp_path: Path, caplog: Any) -> None:
    mailer = Mailer.__new__(Mailer)
    mailer.mail_from = "nao-responda@signup.localhost"
    letter = verification_letter("012345", "http://x/#v", timedelta(hours=1), timedelta(hours=2))
    row = _Row(2, RID, "verification", b"n" * 16, None, None, datetime.now(UTC))
    with caplog.at_level(logging.DEBUG), MailSink(tmp_path / "mail") as sink:
        await SmtpRelay.from_url(sink.url).send(mailer._message(row, "ana@example.com", letter))
    assert "ana@example.com" not in caplog.text
