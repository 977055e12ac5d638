"""An SMTP sink for a laptop and the tests: every message it is given becomes a file.

``signup up`` runs one when ``SMTP_URL`` is unset, storing under ``<data dir>/mail/``, and
``signup mail list|show`` reads the files, so a person can verify an email with no mail
server. A real SMTP server (aiosmtpd), on loopback: the worker talks SMTP to it exactly as it
would to a relay. Messages are kept as received (``.eml``), each written whole before the
sink answers ``250``, under a name that sorts in arrival order.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import uvloop
from aiosmtpd.controller import Controller

from infrastructure.priority import make_background

# Called with each message's bytes before it is stored and after (the tests stop a worker
# there); whatever it raises, the client is told the message was not accepted.
Hook = Callable[[bytes], None]


class _Keep:
    def __init__(self, directory: Path, before: Hook | None, after: Hook | None) -> None:
        self.directory = directory
        self.before = before
        self.after = after
        self._sequence = itertools.count()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        content: bytes = envelope.original_content or envelope.content
        if self.before is not None:
            self.before(content)
        name = f"{time.time_ns():020d}-{next(self._sequence):06d}.eml"
        partial = self.directory / f".{name}.partial"
        partial.write_bytes(content)
        os.replace(partial, self.directory / name)  # whole, or not there at all
        if self.after is not None:
            self.after(content)
        return "250 Message accepted for delivery"


async def _background() -> None:
    make_background()  # the calling thread: the sink's


def _free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class MailSink:
    """``start()`` listens on ``host`` (a free port unless one is given) in a thread of its
    own; ``url`` is what ``SMTP_URL`` should say; ``stop()`` closes it."""

    def __init__(
        self,
        directory: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        before_store: Hook | None = None,
        after_store: Hook | None = None,
        background: bool = False,
    ) -> None:
        self.directory = directory
        self.background = background
        self.host = host
        self.port = port or _free_port(host)
        directory.mkdir(parents=True, exist_ok=True)
        # aiosmtpd logs every sender and recipient at INFO: addresses are personal data, and
        # the messages themselves are on disk for whoever needs them.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        self._controller = Controller(
            _Keep(directory, before_store, after_store),
            hostname=host,
            port=self.port,
            # Normalised addresses may hold any letter: accept them as written.
            enable_SMTPUTF8=True,
            loop=uvloop.new_event_loop(),
        )

    @property
    def url(self) -> str:
        return f"smtp://{self.host}:{self.port}"

    def start(self) -> MailSink:
        self._controller.start()
        if self.background:
            # Its thread alone (Linux sets a thread's priority): it stands in for a relay on
            # another machine, and at full priority it spent ~0.8 ms of a peak's CPU a message.
            asyncio.run_coroutine_threadsafe(_background(), self._controller.loop).result(
                timeout=10
            )
        return self

    def stop(self) -> None:
        self._controller.stop()

    def __enter__(self) -> MailSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str  # the file's name without .eml: sortable by arrival
    path: Path

    def parsed(self) -> EmailMessage:
        message = BytesParser(policy=policy.default).parsebytes(self.path.read_bytes())
        assert isinstance(message, EmailMessage)
        return message

    def text(self) -> str:
        """The plain-text part."""
        body = self.parsed().get_body(preferencelist=("plain",))
        return body.get_content() if body is not None else ""


def stored_messages(directory: Path) -> list[StoredMessage]:
    """The messages a sink stored in ``directory``, oldest first."""
    if not directory.is_dir():
        return []
    return [StoredMessage(path.stem, path) for path in sorted(directory.glob("*.eml"))]
