"""The bench's report: a JSON document, a summary table on stdout, and a PNG."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Any, TextIO

from bench.bodies import EXPECTED_STATUS
from bench.config import BenchConfig
from bench.probe import BATCH_METRIC, LAG_METRIC, UNAVAILABLE, Scraper
from bench.runner import Measurement
from bench.stats import Histogram, Second

BEST_WINDOW_S = 10
_SHEDDING = (429, 503)
NOT_APPLICABLE = "n/a"
"""What the baseline reports for figures only the real system has."""


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def _latency(histogram: Histogram) -> dict[str, float | None]:
    return {
        "p50": _ms(histogram.percentile(0.50)),
        "p95": _ms(histogram.percentile(0.95)),
        "p99": _ms(histogram.percentile(0.99)),
        "max": _ms(histogram.max if histogram.count else None),
    }


def _best_window(per_second: list[int]) -> tuple[float, int]:
    """Highest mean of ``BEST_WINDOW_S`` consecutive whole seconds (fewer if the run is short)."""
    width = min(BEST_WINDOW_S, len(per_second))
    if width == 0:
        return 0.0, 0
    best = total = sum(per_second[:width])
    for i in range(width, len(per_second)):
        total += per_second[i] - per_second[i - width]
        best = max(best, total)
    return best / width, width


def _slowest_second(per_second: list[int]) -> tuple[int | None, int | None]:
    """The fewest accepted in a whole second, and which second (from 0), the first left out
    (it holds the ramp-up): a stall the mean hides (a vacuum holding the appends for a
    second, a minute into a run, read as 2 % off a 30 s mean)."""
    if len(per_second) < 2:
        return None, None
    at = min(range(1, len(per_second)), key=per_second.__getitem__)
    return per_second[at], at


def _lag(scraper: Scraper | None) -> dict[str, Any]:
    if scraper is None:
        return {"status": NOT_APPLICABLE}
    if scraper.status != "measured":
        return {"status": UNAVAILABLE, "reason": "/metrics does not answer 200"}
    series: list[dict[str, Any]] = [
        {"t": round(s.at, 1), "lag": s.lag} for s in scraper.scrapes if s.lag
    ]
    if not series:
        return {"status": UNAVAILABLE, "reason": f"/metrics has no {LAG_METRIC}"}
    projections = sorted({name for point in series for name in point["lag"]})
    return {
        "status": "measured",
        "max": {p: max(point["lag"].get(p, 0.0) for point in series) for p in projections},
        "final": series[-1]["lag"],
        "series": series,
    }


def _batch_sizes(scraper: Scraper | None) -> dict[str, Any]:
    if scraper is None:
        return {"status": NOT_APPLICABLE}
    if scraper.status != "measured":
        return {"status": UNAVAILABLE, "reason": "/metrics does not answer 200"}
    scrapes = [s for s in scraper.scrapes if s.batch_count or s.batch_buckets]
    if not scrapes:
        return {"status": UNAVAILABLE, "reason": f"/metrics has no {BATCH_METRIC}"}
    # The histogram counts since the server started: the run's share is last minus first.
    first, last = scrapes[0], scrapes[-1]
    count = last.batch_count - first.batch_count
    buckets = {
        le: last.batch_buckets.get(le, 0.0) - first.batch_buckets.get(le, 0.0)
        for le in sorted(last.batch_buckets)
    }

    def quantile(share: float) -> float | None:
        # Prometheus buckets only bound a quantile from above: the first "le" reaching it.
        for le, cumulative in buckets.items():
            if count and cumulative >= share * count:
                return le if math.isfinite(le) else None
        return None

    return {
        "status": "measured",
        "batches": int(count),
        "mean": round((last.batch_sum - first.batch_sum) / count, 1) if count else None,
        "p50_at_most": quantile(0.5),
        "p99_at_most": quantile(0.99),
        "cumulative_buckets": {
            ("+Inf" if math.isinf(le) else f"{le:g}"): int(n) for le, n in buckets.items()
        },
    }


def _unexpected(total: Second) -> dict[str, dict[str, int]]:
    """Per kind of body, answers a correct server would not give (load shedding aside)."""
    found: dict[str, dict[str, int]] = {}
    for kind, statuses in sorted(total.by_kind.items()):
        wrong = {
            str(status): n
            for status, n in sorted(statuses.items())
            if status != EXPECTED_STATUS.get(kind) and status not in _SHEDDING
        }
        if wrong:
            found[kind] = wrong
    return found


def summarise(measurement: Measurement, config: BenchConfig) -> dict[str, Any]:
    total = Second()
    last_index = max(measurement.timeline, default=-1)
    timeline: list[dict[str, Any]] = []
    for index in range(last_index + 1):
        second = measurement.timeline.get(index, Second())
        total.merge(second)
        timeline.append(
            {
                "t": index,
                "sent": second.sent,
                "accepted": second.accepted,
                "statuses": {str(k): v for k, v in sorted(second.statuses.items())},
                "errors": dict(second.errors),
                "p50_ms": _ms(second.accept_latency.percentile(0.5)),
                "p99_ms": _ms(second.accept_latency.percentile(0.99)),
            }
        )
    whole_seconds = int(measurement.duration_s)
    per_second = [point["accepted"] for point in timeline[:whole_seconds]]
    best, window = _best_window(per_second)
    slowest, slowest_at = _slowest_second(per_second)
    completion: dict[str, Any]
    if measurement.label == "baseline":
        completion = {"status": NOT_APPLICABLE}
    elif not measurement.status_endpoint:
        completion = {"status": UNAVAILABLE, "reason": "no GET /registrations/{id} in /schema"}
    elif not config.poll_completion:
        completion = {"status": "not_requested"}
    else:
        completion = {
            "status": "measured",
            "p50": _ms(total.completion.percentile(0.5)),
            "p99": _ms(total.completion.percentile(0.99)),
            "max": _ms(total.completion.max if total.completion.count else None),
            "outcomes": dict(total.completion_outcomes),
        }
    return {
        "label": measurement.label,
        "url": measurement.url,
        "run_id": measurement.run_id,
        "duration_s": round(measurement.duration_s, 2),
        "sent": total.sent,
        "answered": sum(total.statuses.values()),
        "accepted": total.accepted,
        "accepted_per_s": {
            "mean": round(total.accepted / measurement.duration_s, 1),
            "best_window": round(best, 1),
            "best_window_s": window,
            "slowest_second": slowest,
            "slowest_second_t": slowest_at,
        },
        "status_counts": {str(k): v for k, v in sorted(total.statuses.items())},
        "status_counts_by_kind": {
            kind: {str(k): v for k, v in sorted(statuses.items())}
            for kind, statuses in sorted(total.by_kind.items())
        },
        # The baseline checks nothing beyond the JSON shape, so it has no "right" answers.
        "unexpected_answers": _unexpected(total) if measurement.label != "baseline" else None,
        "server_errors_5xx": sum(n for status, n in total.statuses.items() if status >= 500),
        "transport_errors": dict(total.errors),
        "accept_latency_ms": _latency(total.accept_latency),
        "completion_ms": completion,
        "generator_launch_delay_ms": (
            _latency(total.launch_delay) if config.rate is not None else NOT_APPLICABLE
        ),
        "projection_lag": _lag(measurement.scraper),
        "event_store_batch_size": _batch_sizes(measurement.scraper),
        "cpu": measurement.cpu,
        "api_cpu_ms_per_accepted": _per_accepted(measurement.cpu.get("api_cpu_s"), total.accepted),
        "timeline": timeline,
    }


def _per_accepted(cpu_seconds: float | None, accepted: int) -> float | None:
    """API CPU milliseconds per accepted signup: what one signup costs the API processes."""
    if cpu_seconds is None or not accepted:
        return None
    return round(1000 * cpu_seconds / accepted, 3)


def ratios(target: dict[str, Any], baseline: dict[str, Any]) -> dict[str, float | None]:
    def ratio(a: float | None, b: float | None) -> float | None:
        return round(a / b, 3) if a is not None and b else None

    return {
        "accepted_per_s": ratio(
            target["accepted_per_s"]["mean"], baseline["accepted_per_s"]["mean"]
        ),
        "accepted_per_s_best_window": ratio(
            target["accepted_per_s"]["best_window"], baseline["accepted_per_s"]["best_window"]
        ),
        "p99_latency": ratio(
            target["accept_latency_ms"]["p99"], baseline["accept_latency_ms"]["p99"]
        ),
        "api_cpu_ms_per_accepted": ratio(
            target.get("api_cpu_ms_per_accepted"), baseline.get("api_cpu_ms_per_accepted")
        ),
    }


def write_json(path: str, document: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")


def _fine(value: float | None) -> str | None:
    """Three decimals: a fraction of a millisecond is the point of this figure."""
    return None if value is None else f"{value:.3f}"


def _number(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _slowest(rate: dict[str, Any]) -> str | None:
    if rate.get("slowest_second") is None:
        return None
    return f"{rate['slowest_second']:,} (t {rate['slowest_second_t']})"


def print_table(summaries: list[dict[str, Any]], ratio: dict[str, Any] | None, out: TextIO) -> None:
    """One column per measurement (baseline first), one row per figure."""
    rows: list[tuple[str, list[object]]] = [
        ("duration s", [s["duration_s"] for s in summaries]),
        ("sent", [s["sent"] for s in summaries]),
        ("accepted (202)", [s["accepted"] for s in summaries]),
        ("accepted/s mean", [s["accepted_per_s"]["mean"] for s in summaries]),
        ("accepted/s best window", [s["accepted_per_s"]["best_window"] for s in summaries]),
        ("accepted slowest second", [_slowest(s["accepted_per_s"]) for s in summaries]),
    ]
    for name in ("p50", "p95", "p99", "max"):
        rows.append((f"202 latency {name} ms", [s["accept_latency_ms"][name] for s in summaries]))
    statuses = sorted({code for s in summaries for code in s["status_counts"]}, key=int)
    for code in statuses:
        rows.append((f"status {code}", [s["status_counts"].get(code, 0) for s in summaries]))
    rows += _unexpected_rows(summaries)
    errors = sorted({kind for s in summaries for kind in s["transport_errors"]})
    for kind in errors:
        rows.append((f"error {kind}", [s["transport_errors"].get(kind, 0) for s in summaries]))
    rows.append(("202→completed p50 ms", [_completion(s, "p50") for s in summaries]))
    rows.append(("202→completed p99 ms", [_completion(s, "p99") for s in summaries]))
    rows += _lag_rows(summaries)
    rows.append(("event-store batches", [_batch(s, "batches") for s in summaries]))
    rows.append(("event-store batch mean", [_batch(s, "mean") for s in summaries]))
    rows.append(("event-store batch p99 ≤", [_batch(s, "p99_at_most") for s in summaries]))
    if any(s["generator_launch_delay_ms"] != NOT_APPLICABLE for s in summaries):
        rows.append(
            ("generator late p99 ms", [s["generator_launch_delay_ms"]["p99"] for s in summaries])
        )
    rows.append(("generator CPU %", [_generator_cpu(s) for s in summaries]))
    rows.append(("server CPU %", [s["cpu"].get("server_percent") for s in summaries]))
    rows.append(("API processes", [s["cpu"].get("api_processes") for s in summaries]))
    rows.append(
        ("API CPU ms / accepted", [_fine(s.get("api_cpu_ms_per_accepted")) for s in summaries])
    )
    rows.append(("machine busy %", [s["cpu"].get("machine_busy_percent") for s in summaries]))

    headers = [s["label"] for s in summaries]
    if ratio is not None:
        headers.append("target/baseline")
    width = max(len(name) for name, _ in rows) + 2
    out.write("".ljust(width) + "".join(h.rjust(18) for h in headers) + "\n")
    ratio_rows = {
        "accepted/s mean": ratio and ratio["accepted_per_s"],
        "accepted/s best window": ratio and ratio["accepted_per_s_best_window"],
        "202 latency p99 ms": ratio and ratio["p99_latency"],
        "API CPU ms / accepted": ratio and ratio["api_cpu_ms_per_accepted"],
    }
    for name, values in rows:
        cells = [_number(v).rjust(18) for v in values]
        if ratio is not None and name in ratio_rows:
            value = ratio_rows[name]
            cells.append(("-" if value is None else f"{value:.3f}").rjust(18))
        out.write(name.ljust(width) + "".join(cells) + "\n")
    out.flush()


def _unexpected_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, list[object]]]:
    """One row per kind of body and wrong status; "none" when every answer was right."""
    found = sorted(
        {
            (kind, status)
            for s in summaries
            for kind, statuses in (s["unexpected_answers"] or {}).items()
            for status in statuses
        }
    )
    if not found:
        return [("unexpected answers", [_unexpected_none(s) for s in summaries])]
    return [
        (
            f"unexpected {kind} → {status}",
            [
                NOT_APPLICABLE
                if s["unexpected_answers"] is None
                else s["unexpected_answers"].get(kind, {}).get(status, 0)
                for s in summaries
            ],
        )
        for kind, status in found
    ]


def _unexpected_none(summary: dict[str, Any]) -> str:
    return NOT_APPLICABLE if summary["unexpected_answers"] is None else "none"


def _completion(summary: dict[str, Any], key: str) -> object:
    completion = summary["completion_ms"]
    return completion.get(key) if completion["status"] == "measured" else completion["status"]


def _lag_rows(summaries: list[dict[str, Any]]) -> list[tuple[str, list[object]]]:
    projections = sorted(
        {
            name
            for s in summaries
            if s["projection_lag"]["status"] == "measured"
            for name in s["projection_lag"]["max"]
        }
    )
    if not projections:
        return [("projection lag max", [s["projection_lag"]["status"] for s in summaries])]
    return [
        (
            f"lag max {name}",
            [
                s["projection_lag"]["max"].get(name)
                if s["projection_lag"]["status"] == "measured"
                else s["projection_lag"]["status"]
                for s in summaries
            ],
        )
        for name in projections
    ]


def _batch(summary: dict[str, Any], key: str) -> object:
    batches = summary["event_store_batch_size"]
    return batches[key] if batches["status"] == "measured" else batches["status"]


def _generator_cpu(summary: dict[str, Any]) -> object:
    per_process = summary["cpu"].get("generator_percent_per_process") or []
    return " + ".join(f"{p:g}" for p in per_process) or None


def plot(path: str, target: dict[str, Any], baseline: dict[str, Any] | None) -> str:
    """Three stacked panels over time; returns ``written`` or why not."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: the bench runs in terminals and CI
        import matplotlib.pyplot as plt
    except ImportError:
        return "unavailable: matplotlib is not installed"

    figure, (throughput, latency, lag) = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    seconds = [p["t"] for p in target["timeline"]]
    throughput.plot(seconds, [p["accepted"] for p in target["timeline"]], label="target")
    if baseline is not None:
        throughput.plot(
            [p["t"] for p in baseline["timeline"]],
            [p["accepted"] for p in baseline["timeline"]],
            linestyle="--",
            label="baseline (bare Litestar)",
        )
    throughput.set_ylabel("accepted/s")
    throughput.set_title(f"signup bench — {target['url']}")
    throughput.legend(loc="lower right")
    throughput.grid(alpha=0.3)

    for key, style in (("p50_ms", "-"), ("p99_ms", "-")):
        points = [(p["t"], p[key]) for p in target["timeline"] if p[key] is not None]
        latency.plot([t for t, _ in points], [v for _, v in points], style, label=key[:3])
    latency.set_ylabel("202 latency, ms")
    latency.set_yscale("log")
    latency.legend(loc="upper right")
    latency.grid(alpha=0.3, which="both")

    lag_data = target["projection_lag"]
    if lag_data["status"] == "measured":
        projections: Counter[str] = Counter()
        for point in lag_data["series"]:
            projections.update(point["lag"].keys())
        for name in sorted(projections):
            series = [(p["t"], p["lag"].get(name)) for p in lag_data["series"]]
            lag.plot(
                [t for t, v in series if v is not None],
                [v for _, v in series if v is not None],
                label=name,
            )
        lag.legend(loc="upper right")
    else:
        lag.text(
            0.5,
            0.5,
            f"projection lag {lag_data['status']}",
            ha="center",
            va="center",
            transform=lag.transAxes,
        )
    lag.set_ylabel("projection lag, events")
    lag.set_xlabel("seconds since start")
    lag.grid(alpha=0.3)

    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return "written"
