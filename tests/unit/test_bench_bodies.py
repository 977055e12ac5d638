"""The load generator's bodies: those made before the clock starts are the ones sent."""

from __future__ import annotations

import dataclasses
from collections import Counter

import msgspec

from bench.bodies import DUPLICATE, INVALID, PF, PJ_ALPHANUMERIC, PJ_NUMERIC, BodyFactory, Mix
from bench.generator import WorkerPlan, prepared_bodies

_MIX = Mix(duplicates=0.01, invalid=0.01, pj=0.2)


def _factory(mix: Mix = _MIX) -> BodyFactory:
    return BodyFactory("run", offset=1000, process=1, processes=2, mix=mix, seed=7)


def _send(factory: BodyFactory, n: int) -> list[tuple[str, dict[str, object]]]:
    """``n`` bodies as the generator sends them, every valid one accepted."""
    sent = []
    for _ in range(n):
        kind, body, claim = factory.next()
        if claim is not None:
            factory.accepted(claim)
        sent.append((kind, msgspec.json.decode(body)))
    return sent


def test_prepared_bodies_are_sent_first_and_in_the_order_made() -> None:
    factory = _factory(Mix(duplicates=0.0, invalid=0.0, pj=0.2))
    factory.prepare(50)
    prepared = list(factory._prepared)

    sent = [factory.next() for _ in range(60)]

    assert sent[:50] == prepared
    # Past them, bodies are made as they are asked for, the indices going on where they left.
    assert all(claim is not None for _, _, claim in sent[50:])
    emails = [claim[0] for _, _, claim in sent if claim is not None]
    assert emails[50] == "bench-run-1-50@example.com"


def test_no_unique_value_repeats_between_prepared_and_later_bodies() -> None:
    factory = _factory()
    factory.prepare(3000)

    sent = _send(factory, 6000)

    valid = [body for kind, body in sent if kind in (PF, PJ_NUMERIC, PJ_ALPHANUMERIC)]
    assert len({body["email"] for body in valid}) == len(valid)
    digits = [str(body["cpf"]).replace(".", "").replace("-", "") for body in valid]
    assert len(set(digits)) == len(digits)


def test_a_prepared_run_sends_the_same_mix_of_kinds() -> None:
    factory = _factory()
    factory.prepare(10_000)

    kinds = Counter(kind for kind, _ in _send(factory, 20_000))

    # 1 % each of duplicates and invalid bodies; of the valid, a fifth PJ, half of those
    # alphanumeric (binomial: these bounds are over five standard deviations wide).
    assert 120 <= kinds[DUPLICATE] <= 280 and 120 <= kinds[INVALID] <= 280
    pj = kinds[PJ_NUMERIC] + kinds[PJ_ALPHANUMERIC]
    assert 3_650 <= pj <= 4_250
    assert abs(kinds[PJ_NUMERIC] - kinds[PJ_ALPHANUMERIC]) <= 450


def test_duplicates_reuse_values_accepted_from_prepared_bodies() -> None:
    factory = _factory(Mix(duplicates=0.5, invalid=0.0, pj=0.0))
    factory.prepare(200)

    sent = _send(factory, 400)

    accepted = {body["email"] for kind, body in sent if kind == PF} | {
        body["cpf"] for kind, body in sent if kind == PF
    }
    duplicates = [body for kind, body in sent if kind == DUPLICATE]
    assert len(duplicates) > 100
    assert all(body["email"] in accepted or body["cpf"] in accepted for body in duplicates)


def _plan(**changes: object) -> WorkerPlan:
    plan = WorkerPlan(
        url="http://127.0.0.1:8000",
        process=0,
        processes=2,
        client="raw",
        concurrency=32,
        rate=None,
        connections=32,
        count=None,
        duration=30.0,
        mix=_MIX,
        poll_completion=0.02,
        poll_timeout=10.0,
        timeout=10.0,
        run_id="run",
        offset=0,
        seed=1,
        client_addresses=0,
        policy="normal",
    )
    return dataclasses.replace(plan, **changes)  # type: ignore[arg-type]


def test_a_process_prepares_what_its_share_of_the_run_is_expected_to_send() -> None:
    assert prepared_bodies(_plan(count=1234, duration=None)) == 1234
    assert prepared_bodies(_plan(rate=500.0, duration=10.0)) == 5000
    assert prepared_bodies(_plan(duration=3.0)) == 9000  # closed loop: 3,000 a second
    # Bounded, however long the run.
    assert prepared_bodies(_plan(duration=3600.0)) == 100_000
    assert prepared_bodies(_plan(duration=None)) == 100_000
