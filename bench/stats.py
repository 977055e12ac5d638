"""What the load-generating processes measure, in a form that is cheap to merge.

Latencies go into log-scale histograms (2 % wide buckets) rather than lists: a process sends
its parent a few hundred counters per second whatever the rate, and percentiles over any set
of seconds or processes are a merge of counters away. The 2 % bucket width is the error bound
of every percentile reported (the maximum is kept exactly). Both classes travel between
processes by pickle.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Final

_SCALE: Final = 1 / math.log(1.02)


class Histogram:
    """Latencies in seconds, kept as counts of 2 %-wide buckets."""

    __slots__ = ("buckets", "count", "max")

    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        # Microsecond floor: anything faster lands in one bucket, and log(0) never happens.
        self.buckets[int(math.log(max(seconds, 1e-6) * 1e6) * _SCALE)] += 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, share: float) -> float | None:
        """The latency (seconds) below which ``share`` of the samples fall; None when empty."""
        if not self.count:
            return None
        rank = share * self.count
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                # The bucket's geometric middle, but never above the exact maximum.
                return min(math.exp((bucket + 0.5) / _SCALE) / 1e6, self.max)
        return self.max


@dataclass
class Second:
    """One second of the run: requests started in it (``sent``), and everything else that
    finished in it (answers, errors, latencies, completions)."""

    sent: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    by_kind: dict[str, Counter[int]] = field(default_factory=dict)
    accept_latency: Histogram = field(default_factory=Histogram)
    completion: Histogram = field(default_factory=Histogram)
    completion_outcomes: Counter[str] = field(default_factory=Counter)
    launch_delay: Histogram = field(default_factory=Histogram)
    """Open loop: how late after its scheduled time each request was started. Latency counts
    from the schedule, so a starved generator inflates it; this says by how much."""

    def merge(self, other: Second) -> None:
        self.sent += other.sent
        self.statuses.update(other.statuses)
        self.errors.update(other.errors)
        for kind, statuses in other.by_kind.items():
            self.by_kind.setdefault(kind, Counter()).update(statuses)
        self.accept_latency.merge(other.accept_latency)
        self.completion.merge(other.completion)
        self.completion_outcomes.update(other.completion_outcomes)
        self.launch_delay.merge(other.launch_delay)

    @property
    def accepted(self) -> int:
        return self.statuses[202]
