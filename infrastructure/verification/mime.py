"""A message's bytes for the common case, written directly instead of by the email package.

Composing a verification message with ``email.mime`` and flattening it (as aiosmtplib's
``send_message`` does) cost the mailer ~0.3 ms of CPU a message, a fifth of its work, for a
shape that never changes: a few headers and two base64 parts of ``multipart/alternative``.
``alternative`` writes the same bytes itself when every header is plain (printable ASCII
words, short enough that the email package would not fold it) and returns None otherwise, so
the caller falls back to the package. ``library_alternative`` is that package's way, kept for
the fallback and for ``tests/unit/test_mime.py``, which holds the two to the same bytes.
"""

from __future__ import annotations

import io
import random
import re
import sys
from collections.abc import Sequence
from email import policy
from email.base64mime import body_encode
from email.generator import BytesGenerator
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText

# The email package leaves such a header as it is: printable ASCII words, single spaces, and
# a line ("Name: value") within its 78 characters.
_PLAIN = re.compile(r"[!-~]+(?: [!-~]+)*")
_MAX_LINE = 78

# The package's own boundaries: fifteen '=', a random number of sys.maxsize's width, '=='.
_WIDTH = len(repr(sys.maxsize - 1))


def new_boundary() -> str:
    """A boundary as the email package makes one (``Generator._make_boundary``). It cannot
    occur in a base64 body, whose alphabet has no '-' (the package's check is for text)."""
    return "=" * 15 + f"{random.randrange(sys.maxsize):0{_WIDTH}d}" + "=="


def _part(subtype: str, text: str) -> str:
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\n'
        "MIME-Version: 1.0\n"
        "Content-Transfer-Encoding: base64\n"
        "\n" + body_encode(text.encode("utf-8"))
    )


def alternative(
    headers: Sequence[tuple[str, str]], text: str, html: str, boundary: str
) -> bytes | None:
    """The message ``library_alternative`` would write, with LF line ends (the SMTP client
    sends CRLF), or None when a header is not plain."""
    lines = [f'Content-Type: multipart/alternative;\n boundary="{boundary}"\nMIME-Version: 1.0\n']
    for name, value in headers:
        if len(name) + 2 + len(value) > _MAX_LINE or not _PLAIN.fullmatch(value):
            return None
        lines.append(f"{name}: {value}\n")
    lines.append(
        f"\n--{boundary}\n{_part('plain', text)}\n--{boundary}\n{_part('html', html)}"
        f"\n--{boundary}--\n"
    )
    return "".join(lines).encode("ascii")


def library_message(
    headers: Sequence[tuple[str, str]], text: str, html: str, boundary: str | None = None
) -> MIMEMultipart:
    """The message as the email package composes it (its classic API)."""
    message = MIMEMultipart("alternative", boundary=boundary)
    for name, value in headers:
        message[name] = value
    message.attach(MIMEText(text, "plain", "utf-8"))
    message.attach(MIMEText(html, "html", "utf-8"))
    return message


def library_alternative(
    headers: Sequence[tuple[str, str]], text: str, html: str, boundary: str
) -> bytes:
    """Its bytes as aiosmtplib's ``send_message`` flattens a classic message."""
    out = io.BytesIO()
    BytesGenerator(out, policy=policy.compat32).flatten(
        library_message(headers, text, html, boundary)
    )
    return out.getvalue()
