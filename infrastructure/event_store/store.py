"""The event store: eventsourcing's application and recorder on PostgreSQL.

Registrations are appended in batches by ``infrastructure.event_store.batch_append``, in this
store's format (its mapper makes the rows); everything else (status queries, erasure, replay) goes
through eventsourcing itself.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import threading
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from eventsourcing.application import Application
from eventsourcing.cryptography import AESCipher
from eventsourcing.persistence import JSONTranscoder, Transcoder, Transcoding
from eventsourcing.utils import Environment


class BytesAsBase64(Transcoding):
    """Sealed personal data is bytes; JSON has no bytes."""

    type = bytes
    name = "bytes_b64"

    def encode(self, obj: bytes) -> str:
        return binascii.b2a_base64(obj, newline=False).decode()

    def decode(self, data: str) -> bytes:
        return base64.b64decode(data)


_PLAIN = (str, int, float, bool, type(None))


class FastJSONTranscoder(JSONTranscoder):
    """eventsourcing's JSON transcoding, encoded by msgspec in C.

    The same document as ``JSONTranscoder`` writes (``{"_type_": ..., "_data_": ...}`` for
    each registered type), so stores written by either are read by either; decoding is the
    library's own. Event states are flat, so one pass over the top level wraps the values;
    anything nested is left to the library's encoder.
    """

    _encode = msgspec.json.Encoder().encode
    _wrap: dict[type, tuple[str, Callable[[Any], Any]]]

    def register(self, transcoding: Transcoding) -> None:
        super().register(transcoding)
        self._wrap = {kind: (t.name, t.encode) for kind, t in self.types.items()}

    def encode(self, obj: Any) -> bytes:
        if type(obj) is dict:
            wrapped: dict[str, Any] = {}
            for key, value in obj.items():
                kind = type(value)
                if kind is str or kind is int or value is None or kind in _PLAIN:
                    wrapped[key] = value
                elif (found := self._wrap.get(kind)) is not None:
                    wrapped[key] = {"_type_": found[0], "_data_": found[1](value)}
                else:
                    return super().encode(obj)
            return self._encode(wrapped)
        return super().encode(obj)


class ReusedAESCipher(AESCipher):
    """eventsourcing's AES-GCM cipher and format, with its key schedule made once instead
    of for every event (AESGCM objects are stateless: safe to share between threads)."""

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self._aesgcm = AESGCM(self.key)

    def encrypt(self, plaintext: bytes) -> bytes:
        nonce = AESCipher.random_bytes(12)
        sealed = self._aesgcm.encrypt(nonce, plaintext, None)
        # The library's layout: nonce, then the tag, then the ciphertext.
        return nonce + sealed[-16:] + sealed[:-16]

    def decrypt(self, ciphertext: bytes) -> bytes:
        nonce, tag, encrypted = ciphertext[:12], ciphertext[12:28], ciphertext[28:]
        if len(nonce) != 12 or len(tag) != 16:
            raise ValueError("Damaged cipher text: invalid nonce or tag length")
        try:
            return self._aesgcm.decrypt(nonce, encrypted + tag, None)
        except InvalidTag as error:  # reported as the library reports it
            raise ValueError("Invalid cipher tag") from error


class SignupEvents(Application[uuid.UUID]):
    """The application whose recorder holds every registration and reservation event."""

    name = "signup"

    def __init__(self, env: Any = None) -> None:
        try:
            super().__init__(env=env)
        except BaseException:
            # Opening failed part-way (PostgreSQL out of reach, or starting up, as the recorder
            # connects). Left to the collector, the half-built application was closed in
            # whichever thread collected it, once in a thread of its own pool, which cannot
            # join itself: "Exception ignored in Application.__del__ ... cannot join current
            # thread" in an API's log. Closed now, in a thread of its own: closing waits up to
            # 5 s for each pool thread still connecting (15 s against a silent server), and the
            # caller is about to try again.
            threading.Thread(
                target=self._close_quietly, name="close-failed-open", daemon=True
            ).start()
            raise

    def _close_quietly(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def construct_transcoder(self) -> Transcoder:
        transcoder = FastJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        super().register_transcodings(transcoder)
        transcoder.register(BytesAsBase64())

    def holder_of(self, claim_id: uuid.UUID) -> uuid.UUID | None:
        """The registration holding a claimed value (``event_store.claims``), if any."""
        holder: uuid.UUID | None = self.recorder.holder_of(claim_id)  # type: ignore[attr-defined]
        return holder


CIPHER_TOPIC = "infrastructure.event_store.store:ReusedAESCipher"


def cipher_env(cipher_key: str | None) -> dict[str, str]:
    """AES-GCM over each stored event's state: names, documents and emails are never on
    disk in the clear (the reservation ids are HMACs, see domain/reservations.py)."""
    return {"CIPHER_TOPIC": CIPHER_TOPIC, "CIPHER_KEY": cipher_key} if cipher_key else {}


def postgres_env(
    database_url: str, pool_size: int, *, create_table: bool, cipher_key: str | None = None
) -> dict[str, str]:
    """eventsourcing is configured by environment-style keys, not by a DSN."""
    parts = urlsplit(database_url)
    query = parse_qs(parts.query)
    host = query.get("host", [parts.hostname or "localhost"])[0]
    return {
        "PERSISTENCE_MODULE": "eventsourcing.postgres",
        "POSTGRES_DBNAME": unquote(parts.path.lstrip("/")) or "postgres",
        "POSTGRES_HOST": host,
        "POSTGRES_PORT": str(parts.port or 5432),
        "POSTGRES_USER": unquote(parts.username or "postgres"),
        "POSTGRES_PASSWORD": unquote(parts.password or ""),
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(pool_size),
        # A round trip per batch (not per request), so that after a database restart the
        # first appends do not meet the pool's dead connections.
        "POSTGRES_PRE_PING": "y",
        # Also how long a request waits for a pooled connection: when the database is down,
        # the client hears 503 within seconds instead of half a minute.
        "POSTGRES_CONNECT_TIMEOUT": "2",
        "CREATE_TABLE": "y" if create_table else "n",
        # Writes each registration's subject key in the transaction of its events.
        "APPLICATION_RECORDER_TOPIC": "infrastructure.event_store.subject_keys:SignupRecorder",
        **cipher_env(cipher_key),
    }


def open_event_store(
    database_url: str,
    pool_size: int = 8,
    *,
    create_table: bool = False,
    cipher_key: str | None = None,
) -> SignupEvents:
    return SignupEvents(
        env=postgres_env(database_url, pool_size, create_table=create_table, cipher_key=cipher_key)
    )
