"""Reading what the tests' SMTP sink received: the real sink `signup up` runs, on loopback;
and a verification to write, for the tests of the messages themselves."""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from infrastructure.verification.mail_sink import StoredMessage, stored_messages
from infrastructure.verification.mailer import Letter, Mailer, _Row, verification_letter

_CODE = re.compile(r"^\s+(\d{6})\s*$", re.MULTILINE)
_LINK = re.compile(r"(https?://\S+#verificar=(\S+?)\.(\S+))")


@dataclass(frozen=True, slots=True)
class Received:
    message: StoredMessage
    registration_id: str
    kind: str
    to: str
    subject: str
    message_id: str
    text: str

    @property
    def code(self) -> str:
        found = _CODE.search(self.text)
        assert found is not None, self.text
        return found.group(1)

    @property
    def link(self) -> str:
        found = _LINK.search(self.text)
        assert found is not None, self.text
        return found.group(1)

    @property
    def token(self) -> str:
        found = _LINK.search(self.text)
        assert found is not None, self.text
        return found.group(3)


def received(directory: Path) -> list[Received]:
    found = []
    for stored in stored_messages(directory):
        parsed = stored.parsed()
        found.append(
            Received(
                stored,
                str(parsed["X-Signup-Registration"]),
                str(parsed["X-Signup-Mail"]),
                str(parsed["To"]),
                str(parsed["Subject"]),
                str(parsed["Message-ID"]),
                stored.text(),
            )
        )
    return found


def messages_for(directory: Path, registration_id: str) -> list[Received]:
    return [m for m in received(directory) if m.registration_id == registration_id]


async def wait_for_messages(
    directory: Path, registration_id: str, count: int = 1, timeout: float = 60.0
) -> list[Received]:
    """The messages for a registration, once there are ``count`` of them."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        found = messages_for(directory, registration_id)
        if len(found) >= count:
            return found
        if loop.time() > deadline:
            raise AssertionError(
                f"{len(found)} message(s) for {registration_id} after {timeout}s, not {count}"
            )
        await asyncio.sleep(0.05)


def wait_for_messages_sync(
    directory: Path, registration_id: str, count: int = 1, timeout: float = 60.0
) -> list[Received]:
    """``wait_for_messages`` for synchronous tests (the browser's)."""
    deadline = time.monotonic() + timeout
    while True:
        found = messages_for(directory, registration_id)
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} message(s) for {registration_id}, not {count}")
        time.sleep(0.05)


VERIFIED_RID = uuid.UUID("6f1c2a52-3d4e-4f60-8a71-92b3c4d5e6f7")


def a_verification(mail_from: str, outbox_id: int) -> tuple[Mailer, _Row, Letter]:
    """A mailer sending as ``mail_from`` (nothing else of it is used), an outbox row and its
    letter."""
    mailer = Mailer.__new__(Mailer)
    mailer.mail_from = mail_from
    row = _Row(
        outbox_id,
        VERIFIED_RID,
        "verification",
        b"n" * 16,
        None,
        None,
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    letter = verification_letter("012345", "https://x/#v", timedelta(hours=24), timedelta(hours=48))
    return mailer, row, letter
