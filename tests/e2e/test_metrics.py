"""GET /metrics: what an operator graphs."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from infrastructure.settings import Settings
from infrastructure.verification.mail_sink import MailSink
from interfaces.http.app import build_app
from tests.e2e.api_client import post_registration, problem
from tests.factories import make_cpf, valid_form
from tests.mail import wait_for_messages
from tests.read_models import eventually, running_worker, status_of

Client = AsyncTestClient  # type: ignore[type-arg]


async def _samples(client: Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


async def test_metrics_count_requests_batches_and_show_projection_lag(client: Client) -> None:
    email = "metrics@example.com"
    form = valid_form(cpf=make_cpf(80_000), email=email, email_confirmation=email)
    assert (await client.post("/registrations", json=form)).status_code == 202
    assert (await client.post("/registrations", json=form)).status_code == 409

    # The lag gauges are read from the databases once a second: wait for the first reading
    # that has seen the event.
    async def lag_seen() -> bool:
        lags = (await _samples(client)).get("signup_projection_lag_events", [])
        return len(lags) == 4 and all(value >= 1 for _, value in lags)

    await eventually(lag_seen, timeout=10)
    samples = await _samples(client)

    requests = {
        (labels["path"], labels["status_code"]): value
        for labels, value in samples["signup_http_requests_total"]
    }
    assert requests[("/registrations", "202")] >= 1
    assert requests[("/registrations", "409")] >= 1
    assert any(v >= 1 for _, v in samples["signup_event_store_batch_size_count"])
    assert any(v >= 1 for _, v in samples["signup_registrations_recorded_total"])
    lag = {labels["projection"]: value for labels, value in samples["signup_projection_lag_events"]}
    # No worker runs in this test: every projection is behind by the event just appended.
    assert set(lag) == {"email_lookup", "users_shard0", "users_shard1", "registration_status"}
    assert all(value >= 1 for value in lag.values())


def _count(name: str, **labels: str) -> float:
    """A counter's value in this process (the API and the worker run in it here): a label
    never counted yet has no sample, which is zero."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_verified_signup_a_rate_limited_one_and_a_replay_are_each_counted_once(
    settings: Settings, tmp_path: Path
) -> None:
    # The counters are process-wide and other tests in this process move them too: each
    # figure is read as the change across this test.
    counters = {
        "verified": ("signup_email_verifications_total", {"outcome": "verified"}),
        "mail_sent": ("signup_mail_sent_total", {"kind": "verification"}),
        "mail_failed": ("signup_mail_failed_total", {"kind": "verification"}),
        "limited": ("signup_rate_limited_total", {"limit": "email"}),
        "replays": ("signup_idempotent_replays_total", {}),
    }
    before = {what: _count(name, **labels) for what, (name, labels) in counters.items()}
    # Unique to this run: the limiter's counts live in the session's one Redis.
    email = f"contada.{uuid.uuid4().hex[:12]}@example.com"
    form = valid_form(cpf=make_cpf(81_000), email=email, email_confirmation=email)
    with MailSink(tmp_path / "mail") as mailbox:
        # One attempt an hour per email: the second attempt for it is the one refused.
        counted = dataclasses.replace(settings, smtp_url=mailbox.url, rate_limit_per_email="1/hour")
        async with AsyncTestClient(app=build_app(counted)) as api:
            key = f"metricas-{uuid.uuid4()}"
            first = await post_registration(api, form, key=key)
            assert first.status_code == 202, first.text
            # The same key again: answered from the stored answer, before any limit counts.
            replay = await post_registration(api, form, key=key)
            assert replay.headers["idempotent-replayed"] == "true"
            # Without a key it is a new attempt for the same email: over its limit.
            refused = problem(await post_registration(api, form), 429)
            assert refused["limit"] == "email"

            registration_id = first.json()["registration_id"]
            async with running_worker(counted):
                [message] = await wait_for_messages(mailbox.directory, registration_id)
                verified = await api.post(
                    f"/registrations/{registration_id}/verification", json={"code": message.code}
                )
                assert verified.status_code == 200, verified.text

                # The mailer counts a message after marking it sent, a moment after the sink
                # has it: let it get there before the worker stops.
                async def sent_counted() -> bool:
                    sent = _count("signup_mail_sent_total", kind="verification")
                    return sent > before["mail_sent"]

                await eventually(sent_counted)
            assert (await status_of(api, registration_id))["status"] == "verified"

    after = {what: _count(name, **labels) for what, (name, labels) in counters.items()}
    assert {what: after[what] - before[what] for what in counters} == {
        "verified": 1,
        "mail_sent": 1,
        "mail_failed": 0,
        "limited": 1,
        "replays": 1,
    }


async def test_a_registration_left_unverified_past_its_deadline_is_counted_as_expired(
    settings: Settings, tmp_path: Path
) -> None:
    before = _count("signup_registrations_expired_total")
    email = "expira.contada@example.com"
    form = valid_form(cpf=make_cpf(81_001), email=email, email_confirmation=email)
    with MailSink(tmp_path / "mail") as mailbox:
        # No time to verify: the registration is overdue as soon as it completes.
        hurried = dataclasses.replace(settings, smtp_url=mailbox.url, verification_ttl_seconds=0)
        async with AsyncTestClient(app=build_app(hurried)) as api:
            answer = await post_registration(api, form)
            assert answer.status_code == 202, answer.text
            registration_id = answer.json()["registration_id"]

            async def expired() -> bool:
                return bool((await status_of(api, registration_id))["status"] == "expired")

            # The sweep counts once it has recorded the expiry, which the status may show a
            # moment before.
            async def counted() -> bool:
                return _count("signup_registrations_expired_total") > before

            async with running_worker(hurried):
                await eventually(expired)
                await eventually(counted)

    assert _count("signup_registrations_expired_total") - before == 1
