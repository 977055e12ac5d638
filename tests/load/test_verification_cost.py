"""What email verification adds to the worker, per registration: measured, not asserted.

Not part of the default run (``uv run pytest tests/load/test_verification_cost.py -s``). The
same registrations are projected twice into fresh copies of one store: once as before
verification (no challenge issuer) and once with it (a challenge and an outbox row in the
status projection's transaction); then the mailer sends their messages to an SMTP sink. CPU
seconds of this process (``time.process_time``) per registration, median of the rounds.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

from litestar.testing import AsyncTestClient

from infrastructure.composition.read_side import open_read_side
from infrastructure.settings import Settings
from infrastructure.verification.mail_sink import MailSink, stored_messages
from interfaces.http.app import build_app
from tests.factories import make_cpf, valid_form
from tests.read_models import catch_up
from tests.servers import create_database

REGISTRATIONS = 2000
ROUNDS = 3


async def _project(settings: Settings, *, verification: bool) -> float:
    """CPU seconds to project every registration, the status last, with or without the
    verification's challenges and outbox rows."""
    read_side = open_read_side(settings)
    if not verification:
        read_side.status.issuer = None
        read_side.failures.issuer = None
    try:
        started = time.process_time()
        for projector in read_side.all_projectors:
            await catch_up(projector)
        return time.process_time() - started
    finally:
        await read_side.close()


async def test_the_workers_added_cost_per_registration(
    settings: Settings, postgres_url: str, tmp_path: Path
) -> None:
    assert settings.database_url
    async with AsyncTestClient(app=build_app(settings)) as api:
        for n in range(REGISTRATIONS):
            email = f"custo{n}@example.com"
            form = valid_form(cpf=make_cpf(200_000 + n), email=email, email_confirmation=email)
            assert (await api.post("/registrations", json=form)).status_code == 202

    def copy() -> Settings:
        main = create_database(postgres_url, template=settings.database_url)
        shards = tuple(create_database(postgres_url, template=url) for url in settings.shard_urls)
        return dataclasses.replace(settings, database_url=main, shard_database_urls=shards)

    without, with_ = [], []
    for _ in range(ROUNDS):
        without.append(await _project(copy(), verification=False))
        with_.append(await _project(copy(), verification=True))

    with MailSink(tmp_path / "mail") as sink:
        mailing = dataclasses.replace(copy(), smtp_url=sink.url)
        await _project(mailing, verification=True)
        read_side = open_read_side(mailing)
        try:
            started, wall = time.process_time(), time.monotonic()
            while await read_side.mailer.send_due() > 0:
                pass
            mail_cpu, mail_wall = time.process_time() - started, time.monotonic() - wall
        finally:
            await read_side.close()
        sent = len(stored_messages(sink.directory))
    assert sent == REGISTRATIONS

    base, verified = statistics.median(without), statistics.median(with_)
    print(
        {
            "registrations": REGISTRATIONS,
            "project_cpu_ms_per_registration_without": round(1000 * base / REGISTRATIONS, 3),
            "project_cpu_ms_per_registration_with": round(1000 * verified / REGISTRATIONS, 3),
            "added_project_cpu_ms": round(1000 * (verified - base) / REGISTRATIONS, 3),
            # Includes the sink's own CPU (same process): an upper bound of the mailer's.
            "mail_cpu_ms_per_message": round(1000 * mail_cpu / sent, 3),
            "mail_wall_ms_per_message": round(1000 * mail_wall / sent, 3),
        }
    )
