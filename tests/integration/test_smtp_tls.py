"""SMTP_URL: `smtp://` upgrades to TLS with STARTTLS when the relay offers it, `smtps://` speaks
TLS from the first byte. The relay here is a real SMTP server (aiosmtpd) on loopback with the
self-signed certificate the load balancer uses on a laptop, trusted through SSL_CERT_FILE as
an operator trusts a private CA."""

from __future__ import annotations

import dataclasses
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from email import message_from_bytes
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient

from infrastructure.settings import Settings
from interfaces.http.app import build_app
from tests.certificates import make_certificate
from tests.factories import make_cpf, valid_form
from tests.read_models import eventually, running_worker
from tests.servers import free_port


@dataclasses.dataclass
class Delivered:
    registration_id: str
    tls_version: str | None  # None: the message came in the clear


class _Relay:
    """Keeps every message with the TLS version of the connection that carried it."""

    def __init__(self) -> None:
        self.delivered: list[Delivered] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        ssl_object = server.transport.get_extra_info("ssl_object")
        message = message_from_bytes(envelope.original_content or envelope.content)
        self.delivered.append(
            Delivered(
                str(message["X-Signup-Registration"]),
                ssl_object.version() if ssl_object is not None else None,
            )
        )
        return "250 Message accepted for delivery"


@contextmanager
def tls_relay(certificate: Path, scheme: str) -> Iterator[tuple[_Relay, str]]:
    """A relay that takes mail only over TLS: after STARTTLS (it refuses MAIL before it) for
    `smtp`, on a TLS socket for `smtps`. Yields it and the SMTP_URL that names it."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate)
    relay = _Relay()
    port = free_port()
    if scheme == "smtp":
        controller = Controller(
            relay, hostname="127.0.0.1", port=port, tls_context=context, require_starttls=True
        )
    else:
        controller = Controller(relay, hostname="127.0.0.1", port=port, ssl_context=context)
    controller.start()
    try:
        yield relay, f"{scheme}://127.0.0.1:{port}"
    finally:
        controller.stop()


@pytest.mark.parametrize("scheme", ["smtp", "smtps"], ids=["starttls", "implicit_tls"])
async def test_the_verification_message_reaches_a_tls_relay_over_tls_for_smtp_and_smtps_urls(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, scheme: str
) -> None:
    certificate = tmp_path / "relay.pem"
    make_certificate(certificate)
    # The relay's certificate is verified against the default trust store: point it at this
    # one, as an operator with a private CA would.
    monkeypatch.setenv("SSL_CERT_FILE", str(certificate))
    email = f"tls.{scheme}@example.com"
    form = valid_form(cpf=make_cpf(82_000), email=email, email_confirmation=email)
    with tls_relay(certificate, scheme) as (relay, url):
        mailing = dataclasses.replace(settings, smtp_url=url)
        async with AsyncTestClient(app=build_app(mailing)) as api:
            answer = await api.post("/registrations", json=form)
            assert answer.status_code == 202, answer.text
            registration_id = answer.json()["registration_id"]

            async def delivered() -> bool:
                return any(d.registration_id == registration_id for d in relay.delivered)

            async with running_worker(mailing):
                await eventually(delivered)

    [message] = [d for d in relay.delivered if d.registration_id == registration_id]
    assert message.tls_version in {"TLSv1.2", "TLSv1.3"}
