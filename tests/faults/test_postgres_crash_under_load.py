"""PostgreSQL crashes (``pg_ctl stop -m immediate``) in the middle of a load of signups.

Two ``signup api`` processes and a ``signup worker`` run against a PostgreSQL server of the
test's own. Clients sign people up without pause; the server is killed, left down for a few
seconds, and started again. Then what the clients were told is compared with what is stored:
every ``202`` is in the event store and becomes a completed user; nothing is there twice;
while the server was down every answer was ``503`` with ``Retry-After``; and the processes
recovered without being restarted.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from infrastructure.composition.read_side import open_read_side
from infrastructure.read_side.parts import ReadSide
from tests.clients import separate_clients
from tests.faults.harness import (
    Processes,
    Told,
    migrated_settings,
    person,
    server_env,
    start_postgres,
    stop_postgres_immediately,
    told,
)
from tests.read_models import eventually, replayed_rows, table_rows

CLIENTS = 16
# Longer than a request waits for a connection (2 s per step of a batch), so some answers
# come while the server is still down.
DOWN_SECONDS = 10.0
# An impatient client: it waits this long after a 503 instead of the full Retry-After, so
# the outage sees many requests.
PAUSE_AFTER_503 = 0.25


async def _events_stored(read_side: ReadSide, ids: list[str]) -> set[str]:
    async with read_side.events_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT DISTINCT originator_id::text FROM signup_events"
                " WHERE originator_id = ANY(CAST(:ids AS uuid[]))"
                " AND topic LIKE '%UserRegistrationRequested'"
            ),
            {"ids": ids},
        )
        return {row[0] for row in rows}


async def _completed(read_side: ReadSide, ids: list[str]) -> int:
    async with read_side.read_engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT count(*) FROM registration_status"
                " WHERE status = 'completed' AND registration_id = ANY(CAST(:ids AS uuid[]))"
            ),
            {"ids": ids},
        )
        return int(result.scalar_one())


async def _statuses(read_side: ReadSide, ids: list[str]) -> dict[str, int]:
    """How many of ``ids`` have each status, and how many none yet."""
    async with read_side.read_engine.connect() as conn:
        rows = await conn.execute(
            text(
                "SELECT status, count(*) FROM registration_status"
                " WHERE registration_id = ANY(CAST(:ids AS uuid[])) GROUP BY status"
            ),
            {"ids": ids},
        )
        counts = {str(status): int(count) for status, count in rows}
    counts["none"] = len(ids) - sum(counts.values())
    return counts


async def _users_by_email(read_side: ReadSide) -> Counter[str]:
    emails: Counter[str] = Counter()
    for engine in read_side.shard_engines:
        async with engine.connect() as conn:
            emails.update(row[0] for row in await conn.execute(text("SELECT email FROM users")))
    return emails


async def test_every_202_given_around_a_postgres_crash_is_stored_and_completed_and_the_outage_gets_503s(  # noqa: E501
    breakable_postgres: Any, redis_url: str, tmp_path: Path, scale: int
) -> None:
    settings = await migrated_settings(breakable_postgres, redis_url)
    target = 400 * scale  # registrations accepted before the crash, and again after it
    tag = f"pgcrash{random.randrange(1 << 30)}"
    rng = random.Random(tag)
    answers: dict[int, list[Told]] = {}
    numbers = itertools.count()
    state = {"sending": True}
    times: dict[str, float] = {}

    with Processes(tmp_path / "logs", server_env(settings)) as processes:
        apis = processes.apis("api-a", "api-b")
        urls = [url for url, _ in apis]
        # One attempt per event: an outage must not spend any (the worker waits it out), so
        # a worker that counted the outage as failures would dead-letter at once.
        worker = processes.worker(SIGNUP_RETRY_MAX_ATTEMPTS="1")
        async with separate_clients(CLIENTS, connections=len(urls), timeout=60) as https:

            async def submit(n: int, http: httpx.AsyncClient) -> Told:
                sent = time.monotonic()
                response = await http.post(f"{rng.choice(urls)}/registrations", json=person(n, tag))
                answer = told(sent, response)
                answers.setdefault(n, []).append(answer)
                return answer

            async def client(http: httpx.AsyncClient) -> None:
                while state["sending"]:
                    answer = await submit(next(numbers), http)
                    if answer.status == 503:
                        await asyncio.sleep(PAUSE_AFTER_503)

            def accepted_after(moment: float) -> int:
                return sum(
                    1 for told_ in itertools.chain(*answers.values())
                    if told_.status == 202 and told_.sent >= moment
                )  # fmt: skip

            async def until_accepted(count: int, since: float, timeout: float) -> None:
                deadline = time.monotonic() + timeout
                while accepted_after(since) < count:
                    assert time.monotonic() < deadline, f"fewer than {count} 202s in {timeout}s"
                    await asyncio.sleep(0.05)

            clients = [asyncio.create_task(client(http)) for http in https]
            try:
                times["load"] = time.monotonic()
                await until_accepted(target, times["load"], timeout=60 * scale)
                await asyncio.to_thread(stop_postgres_immediately, breakable_postgres)
                times["down"] = time.monotonic()
                await asyncio.sleep(DOWN_SECONDS)
                times["starting"] = time.monotonic()
                await asyncio.to_thread(start_postgres, breakable_postgres)
                times["up"] = time.monotonic()
                await until_accepted(target, times["up"], timeout=60 * scale)
            finally:
                state["sending"] = False
                await asyncio.gather(*clients, return_exceptions=True)
            times["stopped"] = time.monotonic()

            # Whoever heard 503 retries now, as Retry-After invites them to.
            retried = [n for n, told_ in answers.items() if told_[-1].status == 503]
            for n in retried:
                deadline = time.monotonic() + 30
                while (await submit(n, https[0])).status == 503 and time.monotonic() < deadline:
                    await asyncio.sleep(0.5)

            everything = [told_ for told_list in answers.values() for told_ in told_list]
            accepted = {
                told_.registration_id: n
                for n, told_list in answers.items()
                for told_ in told_list
                if told_.status == 202 and told_.registration_id
            }
            ids = sorted(rid for rid in accepted if rid)
            read_side = open_read_side(settings)
            try:
                stored = await _events_stored(read_side, ids)
                started_waiting = time.monotonic()

                async def all_completed() -> bool:
                    # A failure recorded now can only end in `failed`: say so at once, with
                    # what it was, rather than wait out the timeout.
                    failed = await read_side.failures.list(state=None)
                    assert not failed, f"the outage was counted as failures: {failed[:5]}"
                    assert worker.poll() is None, processes.log_tail("worker")
                    return await _completed(read_side, ids) == len(ids)

                try:
                    await eventually(all_completed, timeout=120)
                except AssertionError as timeout:
                    statuses_seen = await _statuses(read_side, ids)
                    raise AssertionError(f"{timeout}; statuses: {statuses_seen}") from None
                worker_caught_up = time.monotonic() - started_waiting
                failures = await read_side.failures.list(state=None)

                # On the load's clients, idle while the worker caught up: they drop a
                # connection idle for KEEPALIVE_SECONDS, before uvicorn closes it under them.
                async def statuses_of(
                    some: list[str], http: httpx.AsyncClient
                ) -> list[httpx.Response]:
                    return [
                        await http.get(f"{rng.choice(urls)}/registrations/{rid}") for rid in some
                    ]

                statuses = [
                    answer
                    for answers_ in await asyncio.gather(
                        *(statuses_of(ids[k :: len(https)], http) for k, http in enumerate(https))
                    )
                    for answer in answers_
                ]
                users = await _users_by_email(read_side)
                rows = await table_rows(read_side)
                expected = await replayed_rows(read_side)
            finally:
                await read_side.close()
        # Recovered by themselves: the same processes, never restarted, still running.
        assert worker.poll() is None, "the worker died instead of waiting for PostgreSQL"
        assert all(api.poll() is None for _, api in apis), "an API process died"

    codes = Counter(told_.status for told_ in everything)
    # Sent and answered while no PostgreSQL was running: nothing can have been recorded.
    # Sent after the kill, not only read after it: a test process short of CPU can read a
    # 202 the API sent before the kill only once the kill is over (seen on a loaded VM);
    # whether every 202 was stored is asserted below, whenever it was read.
    answered_while_down = [
        told_
        for told_ in everything
        if times["down"] <= told_.sent and told_.answered <= times["starting"]
    ]
    sent_while_down = Counter(
        told_.status for told_ in everything if times["down"] <= told_.sent < times["starting"]
    )
    unavailable = [told_ for told_ in everything if told_.status == 503]
    first_202_after = min(
        told_.answered for told_ in everything if told_.status == 202 and told_.sent >= times["up"]
    )
    # People never told 202 but recorded all the same: the commit reached the server, its
    # reply was lost in the crash, and the API answered 503, or 409 for their own email
    # (the bug test_lost_commit_acknowledgement.py pins down). They must exist once.
    recorded_without_202 = sorted(
        n for n, told_list in answers.items()
        if any(t.status == 409 for t in told_list) and not any(t.status == 202 for t in told_list)
    )  # fmt: skip
    still_503 = [n for n, told_list in answers.items() if told_list[-1].status == 503]
    slowest_503 = max((t.seconds for t in unavailable), default=0.0)
    recovery = first_202_after - times["up"]
    figures = {
        "requests": len(everything),
        "codes": dict(codes),
        "accepted": len(accepted),
        "answered_while_down": len(answered_while_down),
        "sent_while_down": dict(sent_while_down),
        "retried_after_503": len(retried),
        "recorded_without_202": len(recorded_without_202),
        "slowest_503_s": round(slowest_503, 3),
        "first_202_after_restart_s": round(recovery, 3),
        "worker_caught_up_s": round(worker_caught_up, 1),
        "load_s": round(times["stopped"] - times["load"], 1),
    }
    print(f"\npostgres crash under load: {figures}")

    assert set(codes) <= {202, 409, 503}, figures
    assert not still_503, f"people still refused after PostgreSQL came back: {still_503[:10]}"
    assert {t.body.get("code") for t in everything if t.status == 409} <= {
        "email_already_registered",
        "cpf_already_registered",
    }, figures
    assert len(answered_while_down) >= CLIENTS // 2, f"too few answers in the outage: {figures}"
    assert {told_.status for told_ in answered_while_down} == {503}, figures
    for told_ in unavailable:
        assert told_.body.get("code") == "service_unavailable", told_
        assert int(told_.headers["retry-after"]) > 0, told_
        assert told_.headers["content-type"].startswith("application/problem+json"), told_
    # How long the 503s and the recovery took is printed above, not asserted: the deadline
    # that bounds a 503 is tested in test_group_commit.py; that everyone got through after
    # the restart is asserted just above (nobody's last answer is a 503).
    assert failures == [], f"the outage was counted as projection failures: {failures[:5]}"
    assert stored == set(ids), f"{len(set(ids) - stored)} accepted but not stored"
    assert [s.status_code for s in statuses] == [200] * len(ids)
    assert {s.json()["status"] for s in statuses} == {"completed"}
    expected_emails = {person(n, tag)["email"] for n in [*accepted.values(), *recorded_without_202]}
    assert set(users) == expected_emails
    assert max(users.values()) == 1, "a person was made a user twice"
    assert len(accepted) == len(set(accepted.values())), "a person got two 202s"
    assert rows == expected, "the read models differ from a fresh replay of the event store"
