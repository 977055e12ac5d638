"""GET /metrics: what an operator graphs."""

from __future__ import annotations

from litestar.testing import AsyncTestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.factories import make_cpf, valid_form
from tests.read_models import eventually

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
