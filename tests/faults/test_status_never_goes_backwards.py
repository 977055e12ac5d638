"""A registration's status never goes backwards, whatever happens to the read side.

Clients sign people up against a ``signup api`` process and poll their registrations
concurrently (each registration polled by one poller, so its polls are ordered), while the
``signup worker`` is SIGKILLed and restarted again and again, a rebuild of
``registration_status`` is SIGKILLed half-way, and another rebuild runs to its switch. The
API's status cache keeps a ``completed`` for only 1 second here, so most polls reach the
read model and the event store rather than Redis. Afterwards: every poll was answered 200,
no registration went from ``completed`` back to ``pending``, every one completed, nothing was
lost or duplicated, and the read models equal a fresh replay of the event store.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import httpx
from sqlalchemy import text

from infrastructure.composition.read_side import open_read_side
from infrastructure.read_side.gauges import lag
from infrastructure.read_side.parts import ReadSide
from infrastructure.settings import Settings
from tests.clients import separate_clients
from tests.faults.harness import Processes, person, server_env
from tests.read_models import eventually, replayed_rows, table_rows

SUBMITTERS = 8
POLLERS = 16
# Signups go on until both their number and this many worker kills are reached, so that the
# kills do not depend on how fast the clients happen to send.
KILLS = 5
REBUILD = ["projections", "rebuild", "registration_status"]


async def _rebuild_progress(read_side: ReadSide) -> int:
    """How far any rebuild table of registration_status has come."""
    async with read_side.read_engine.connect() as conn:
        result = await conn.execute(
            text(
                "SELECT coalesce(max(position), 0) FROM projection_tracking"
                " WHERE table_name LIKE 'registration\\_status\\_v1\\_r%'"
            )
        )
        return int(result.scalar_one())


async def _started(processes: Processes, times: int, timeout: float = 60) -> None:
    """Until the worker's log says it started ``times`` times."""
    deadline = time.monotonic() + timeout
    while processes.log_tail("worker", 10**9).count('"worker_started"') < times:
        assert time.monotonic() < deadline, processes.log_tail("worker")
        await asyncio.sleep(0.05)


def _went_back(statuses: list[str]) -> bool:
    """Whether ``pending`` (or anything else) follows a ``completed``."""
    if "completed" not in statuses:
        return False
    return any(status != "completed" for status in statuses[statuses.index("completed") :])


async def test_no_status_goes_back_from_completed_to_pending_across_worker_kills_and_rebuilds(
    settings: Settings, tmp_path: Path, scale: int
) -> None:
    registrations = 1000 * scale
    polls_wanted = 10_000 * scale
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    tag = f"backwards{seed}"
    env = {**server_env(settings), "SIGNUP_PROJECTION_BATCH_SIZE": "200"}
    numbers = itertools.count()
    accepted: list[str] = []
    owned: list[list[str]] = [[] for _ in range(POLLERS)]
    seen: dict[str, list[tuple[float, int, str]]] = {}
    polls = Counter[str]()
    flags = {"chaos": True, "polling": True}
    events: dict[str, float | int] = {}
    kills = 0
    windows: dict[int, tuple[float, float]] = {}  # each full rebuild's start and end

    with Processes(tmp_path / "logs", env) as processes:
        url, _ = processes.api(SIGNUP_STATUS_CACHE_SECONDS="1")
        worker = processes.worker()
        read_side = open_read_side(settings)
        try:
            async with separate_clients(SUBMITTERS + POLLERS, base_url=url, timeout=60) as https:

                async def submit(http: httpx.AsyncClient) -> None:
                    while len(accepted) < registrations or (
                        kills < KILLS and len(accepted) < 4 * registrations  # bounded
                    ):
                        response = await http.post(
                            "/registrations", json=person(next(numbers), tag)
                        )
                        assert response.status_code == 202, response.text
                        rid = response.json()["registration_id"]
                        owned[len(accepted) % POLLERS].append(rid)
                        accepted.append(rid)

                async def poll(http: httpx.AsyncClient, rid: str) -> str:
                    sent = time.monotonic()
                    response = await http.get(f"/registrations/{rid}")
                    status = (
                        response.json()["status"]
                        if response.status_code == 200
                        else f"http {response.status_code}"
                    )
                    seen.setdefault(rid, []).append((sent, response.status_code, status))
                    polls[status] += 1
                    return status

                def last_status(rid: str) -> str:
                    return seen[rid][-1][2] if rid in seen else ""

                async def poller(http: httpx.AsyncClient, mine: list[str]) -> None:
                    turn = 0
                    while flags["polling"]:
                        pending = [rid for rid in mine if last_status(rid) != "completed"]
                        done = [rid for rid in mine if last_status(rid) == "completed"]
                        # Every registration not yet completed, and as many completed ones
                        # (taken in turn), to catch one going back.
                        again = (
                            [done[(turn + k) % len(done)] for k in range(max(5, len(pending)))]
                            if done
                            else []
                        )
                        turn += len(again)
                        if not pending and not again:
                            await asyncio.sleep(0.01)
                        for rid in pending + again:
                            await poll(http, rid)

                async def projected() -> int:
                    # The projections no rebuild here switches: they move with the worker only.
                    lags = await lag(read_side)
                    return sum(p for name, (p, _) in lags.items() if name != REBUILD[-1])

                async def chaos() -> None:
                    nonlocal worker, kills
                    while flags["chaos"]:
                        # Killed on progress, not on a timer: once it has projected something
                        # since it started (a timer killed a worker still starting up on a
                        # slow machine), then at a random point of its batches.
                        await _started(processes, kills + 1)
                        at_start = await projected()
                        while flags["chaos"] and await projected() == at_start:
                            await asyncio.sleep(0.02)
                        if not flags["chaos"]:
                            break
                        await asyncio.sleep(rng.uniform(0.0, 0.3))  # somewhere in its work
                        await asyncio.to_thread(processes.kill, worker)
                        kills += 1
                        worker = processes.worker()

                async def rebuilds() -> None:
                    while len(accepted) < registrations // 3:
                        await asyncio.sleep(0.05)
                    # A rebuild killed half-way: batches of 20 make it slow enough to catch.
                    # (One that found nothing to do yet, behind a lagging worker, is retried.)
                    for attempt in range(10):
                        doomed = processes.start(
                            f"rebuild-killed-{attempt}", REBUILD, SIGNUP_PROJECTION_BATCH_SIZE="20"
                        )
                        while doomed.poll() is None and await _rebuild_progress(read_side) == 0:
                            await asyncio.sleep(0.02)
                        events["killed_rebuild_at"] = await _rebuild_progress(read_side)
                        await asyncio.to_thread(processes.kill, doomed)
                        events["killed_rebuild_rc"] = doomed.returncode
                        if doomed.returncode == -signal.SIGKILL:
                            break
                    for k in range(scale):
                        windows[k] = (time.monotonic(), time.monotonic())
                        rebuild = processes.start(f"rebuild-{k}", REBUILD)
                        try:
                            rc = await asyncio.to_thread(rebuild.wait, 120)
                        except subprocess.TimeoutExpired:
                            rc = -1
                        events[f"rebuild_{k}_rc"] = rc
                        windows[k] = (windows[k][0], time.monotonic())
                        events[f"rebuild_{k}_s"] = round(windows[k][1] - windows[k][0], 1)

                started = time.monotonic()
                submitting, polling = https[:SUBMITTERS], https[SUBMITTERS:]
                pollers = [
                    asyncio.create_task(poller(http, mine))
                    for http, mine in zip(polling, owned, strict=True)
                ]
                chaos_task = asyncio.create_task(chaos())
                try:
                    await asyncio.wait_for(
                        asyncio.gather(*(submit(http) for http in submitting), rebuilds()),
                        timeout=180 * scale,
                    )
                    events["submitted_s"] = round(time.monotonic() - started, 1)
                    flags["chaos"] = False
                    await chaos_task

                    async def everything_seen_completed() -> bool:
                        return sum(polls.values()) >= polls_wanted and all(
                            last_status(rid) == "completed" for rid in accepted
                        )

                    try:
                        await eventually(everything_seen_completed, timeout=120 * scale)
                    except AssertionError:
                        # Which half failed, and how: a timeout alone does not tell.
                        behind = [rid for rid in accepted if last_status(rid) != "completed"]
                        raise AssertionError(
                            f"after {120 * scale}s: {sum(polls.values())} polls of {polls_wanted};"
                            f" {len(behind)} of {len(accepted)} not last seen completed, e.g."
                            f" {[(rid, last_status(rid)) for rid in behind[:5]]}; {events}"
                        ) from None
                finally:
                    flags["chaos"] = flags["polling"] = False
                    await asyncio.gather(chaos_task, *pollers, return_exceptions=True)
                events["polled_s"] = round(time.monotonic() - started, 1)
            rows = await table_rows(read_side)
            expected = await replayed_rows(read_side)
        finally:
            await read_side.close()

    statuses = {rid: [status for _, _, status in history] for rid, history in seen.items()}
    backwards = {rid: found for rid, found in statuses.items() if _went_back(found)}
    transitions = sum(1 for found in statuses.values() if found[0] == "pending")
    during_rebuilds = sum(
        1
        for history in seen.values()
        for sent, _, _ in history
        if any(start <= sent <= end for start, end in windows.values())
    )
    shard_users = [
        user for name, found in rows.items() if name.startswith("users_shard") for user in found
    ]
    figures = {
        "seed": seed,
        "registrations": len(accepted),
        "polls": sum(polls.values()),
        "poll_answers": dict(polls),
        "seen_pending_then_completed": transitions,
        "polls_during_rebuilds": during_rebuilds,
        "kills": kills,
        **events,
    }
    print(f"\nstatus never backwards: {figures}")

    assert set(polls) <= {"pending", "completed"}, figures
    assert not backwards, f"went back to pending: {list(backwards.items())[:3]} {figures}"
    assert sum(polls.values()) >= polls_wanted, figures
    assert transitions >= len(accepted) // 20, f"too few pending polls to prove anything: {figures}"
    assert kills >= KILLS, figures
    assert events["killed_rebuild_rc"] == -signal.SIGKILL, f"no rebuild killed: {figures}"
    assert all(events[f"rebuild_{k}_rc"] == 0 for k in range(scale)), figures
    assert during_rebuilds > 0, figures
    assert len(shard_users) == len(accepted), figures
    assert len({dict(user)["user_id"] for user in shard_users}) == len(accepted), figures
    assert rows == expected, f"read models differ from a fresh replay; {figures}"
