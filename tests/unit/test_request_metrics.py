"""Request metrics are tallied in memory and added to Prometheus' values in one go: what a
scrape reads must be what observing every request one by one would have given."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.samples import Sample

from interfaces.http.observability import (
    ERRORS,
    REQUEST_SECONDS,
    REQUESTS,
    _Series,
)

# On the bounds and between them, below the first and past the last.
DURATIONS = [0.0001, 0.005, 0.0051, 0.2, 0.25, 7.5, 10.0, 100.0]


def _samples(histogram: Histogram, path: str | None = None) -> dict[tuple[str, str], float]:
    """A histogram's samples by name suffix and bucket bound, for one path's labels."""
    found: dict[tuple[str, str], float] = {}
    for metric in histogram.collect():
        for sample in metric.samples:
            assert isinstance(sample, Sample)
            if path is not None and sample.labels.get("path") != path:
                continue
            if sample.name.endswith("_created"):
                continue
            suffix = sample.name.rsplit("_", 1)[-1]
            found[(suffix, sample.labels.get("le", ""))] = sample.value
    return found


def _count(counter: object, path: str) -> float:
    for metric in counter.collect():  # type: ignore[attr-defined]
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels.get("path") == path:
                return float(sample.value)
    return 0.0


def test_a_flushed_tally_reads_as_prometheus_own_observations_would() -> None:
    reference = Histogram("reference_seconds", "one by one", registry=CollectorRegistry())
    series = _Series(("POST", "/tally-test", "202", "signup"))
    for seconds in DURATIONS:
        reference.observe(seconds)
        series.observe(seconds)

    series.flush()

    assert _samples(REQUEST_SECONDS, "/tally-test") == _samples(reference)
    assert _count(REQUESTS, "/tally-test") == len(DURATIONS)


def test_nothing_tallied_is_counted_twice_and_nothing_before_its_flush() -> None:
    series = _Series(("GET", "/tally-twice", "503", "signup"))
    series.observe(0.01)
    assert _count(REQUESTS, "/tally-twice") == 0

    series.flush()
    series.flush()
    series.observe(0.02)
    series.flush()

    assert _count(REQUESTS, "/tally-twice") == 2
    assert _count(ERRORS, "/tally-twice") == 2
    assert _samples(REQUEST_SECONDS, "/tally-twice")[("sum", "")] == 0.03
