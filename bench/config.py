"""The bench's options, as parsed from the command line."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

from bench.client import CLIENTS

DEFAULT_DURATION = 30.0
GENERATOR_POLICIES = ("batch", "normal")
RATE_MODE_CONNECTIONS = 256
"""Open loop: connections shared by the processes unless ``--connections`` says otherwise."""


@dataclass(frozen=True, slots=True)
class BenchConfig:
    url: str
    rate: float | None
    concurrency: int
    connections: int
    duration: float | None
    count: int | None
    duplicates: float
    invalid: float
    pj: float
    processes: int
    client: str
    report: str
    plot: str
    poll_completion: float
    poll_timeout: float
    timeout: float
    seed: int
    baseline: bool
    client_addresses: int
    generator_policy: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_args(cls, args: argparse.Namespace, seed: int) -> BenchConfig:
        duration = args.duration
        if duration is None and args.count is None:
            duration = DEFAULT_DURATION
        connections = args.connections
        if connections is None:
            connections = args.concurrency if args.rate is None else RATE_MODE_CONNECTIONS
        return cls(
            url=args.url.rstrip("/"),
            rate=args.rate,
            concurrency=args.concurrency,
            connections=max(connections, args.processes),
            duration=duration,
            count=args.count,
            duplicates=args.duplicates,
            invalid=args.invalid,
            pj=args.pj,
            processes=args.processes,
            client=args.client,
            report=args.report,
            plot=args.plot,
            poll_completion=args.poll_completion,
            poll_timeout=args.poll_timeout,
            timeout=args.timeout,
            seed=seed,
            baseline=args.baseline,
            client_addresses=args.client_addresses,
            generator_policy=args.generator_policy,
        )


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not between 0 and 1")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not positive")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the target's base URL")
    load = parser.add_mutually_exclusive_group()
    load.add_argument(
        "--rate", type=_positive_float, help="fixed arrival rate in requests/s (open loop)"
    )
    load.add_argument(
        "--concurrency",
        type=_positive_int,
        default=64,
        help="requests in flight at once, over all processes (closed loop; default 64)",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--duration", type=_positive_float, help=f"seconds (default {DEFAULT_DURATION:g})"
    )
    length.add_argument("--count", type=_positive_int, help="requests to send in all")
    parser.add_argument(
        "--duplicates",
        type=_fraction,
        default=0.01,
        help="share of bodies reusing an email/CPF/CNPJ already sent (default 0.01)",
    )
    parser.add_argument(
        "--invalid", type=_fraction, default=0.01, help="share of invalid bodies (default 0.01)"
    )
    parser.add_argument(
        "--pj",
        type=_fraction,
        default=0.2,
        help="share of PJ signups, half with an alphanumeric CNPJ (default 0.2)",
    )
    parser.add_argument(
        "--processes",
        type=_positive_int,
        default=2,
        help="load-generating processes (default 2)",
    )
    parser.add_argument(
        "--connections",
        type=_positive_int,
        help="keep-alive connections over all processes (default: the concurrency, or "
        f"{RATE_MODE_CONNECTIONS} with --rate)",
    )
    parser.add_argument(
        "--client",
        choices=CLIENTS,
        default="raw",
        help="HTTP client: raw asyncio streams (default; cheapest) or httpx",
    )
    parser.add_argument("--report", default="bench-report.json", help="JSON report path")
    parser.add_argument("--plot", default="bench-report.png", help="PNG plot path")
    parser.add_argument(
        "--poll-completion",
        type=_fraction,
        default=0.02,
        help="share of 202s whose status is polled until completed (default 0.02)",
    )
    parser.add_argument(
        "--poll-timeout",
        type=_positive_float,
        default=30.0,
        help="longest a registration's status is polled, seconds (default 30)",
    )
    parser.add_argument(
        "--timeout", type=_positive_float, default=30.0, help="per-request timeout, seconds"
    )
    parser.add_argument(
        "--client-addresses",
        type=int,
        default=0,
        metavar="N",
        help="name N distinct clients (in 100.64.0.0/10) in X-Forwarded-For, as a load "
        "balancer would; only a server that trusts 127.0.0.1 as a proxy uses it, e.g. so that "
        "a per-client rate limit sees many clients (default 0: no header)",
    )
    parser.add_argument(
        "--generator-policy",
        choices=GENERATOR_POLICIES,
        default="batch",
        help="the load-generating processes' scheduling policy: batch (default; the kernel's "
        "SCHED_BATCH: an answer that wakes one does not preempt the server it came from, as a "
        "client on another machine would not) or normal (as earlier figures were measured)",
    )
    parser.add_argument("--seed", type=int, help="seed of the body mix (default: random)")
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first measure a bare Litestar app on the same server stack, then compare",
    )
