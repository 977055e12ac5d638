"""The baseline: a bare Litestar app on the same server stack, to put the target in context.

It takes the same body shape (decoded and type-checked by msgspec, nothing else) and answers
``202`` at once, so the ratio target/baseline says how much of the HTTP stack's capacity the
project's own work (validation, group commit, PostgreSQL, Redis) leaves. It is served as a
bare Litestar app is: stock uvicorn, one worker, uvloop, httptools (uvicorn's "auto" picks
those two when they are installed, as they are with ``uvicorn[standard]``). The project
serves itself on the same uvicorn with one change of its own, each answer written to the
socket once (``interfaces/http/server.py``); that is part of what is measured against this.

Run as ``python -m bench.baseline --port N``; :func:`serving` does that in a
subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import msgspec
from litestar import Litestar, Response, get, post

from bench.probe import wait_until_answering

_ROOT = Path(__file__).resolve().parents[1]  # the checkout, where `bench` is importable


class Address(msgspec.Struct, forbid_unknown_fields=True):
    cep: str
    street: str
    number: str
    neighborhood: str
    city: str
    state: str
    complement: str | None = None


class RegistrationForm(msgspec.Struct, forbid_unknown_fields=True):
    person_type: str
    cpf: str
    name: str
    mobile_phone: str
    email: str
    email_confirmation: str
    address: Address
    accepted_terms: bool
    cnpj: str | None = None
    phone: str | None = None


class Accepted(msgspec.Struct):
    registration_id: uuid.UUID
    status: str


_encode = msgspec.json.Encoder().encode


@post("/registrations", status_code=202)
async def register(data: RegistrationForm) -> Response[bytes]:
    registration_id = uuid.uuid4()
    return Response(
        _encode(Accepted(registration_id, "pending")),
        status_code=202,
        media_type="application/json",
        headers={"location": f"/registrations/{registration_id}"},
    )


@get("/health/live")
async def live() -> dict[str, str]:
    return {"status": "ok"}


def create_app() -> Litestar:
    return Litestar(route_handlers=[register, live], openapi_config=None, debug=False)


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="bare Litestar baseline for signup bench")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvicorn.run(
        create_app(),
        host=args.host,
        port=args.port,
        workers=1,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


@contextlib.contextmanager
def serving(port: int, log_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The baseline app on ``127.0.0.1:port`` until the block ends; its URL and process."""
    url = f"http://127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "bench.baseline", "--port", str(port)],
            cwd=_ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until_answering(url, timeout=30)
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


if __name__ == "__main__":
    main()
