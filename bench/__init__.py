"""``signup bench``: the load generator.

Sends realistic signups (valid PF and PJ bodies, plus shares of duplicates and invalid ones)
to ``POST /registrations`` from several processes, at a fixed concurrency or a fixed arrival
rate, and reports accepted/s, status codes, latency, time to completion, projection lag and
event-store batch sizes (JSON, a table on stdout, a PNG). ``--baseline`` first measures a
bare Litestar app on the same server stack with the same settings, for comparison.

Exit status: 0 when the run completed, whatever the target answered; 2 when the target (or
the baseline) could not be reached at all; 3 when a load-generating process failed.
"""

from __future__ import annotations

import argparse
import secrets
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench.config import BenchConfig, add_arguments
from bench.ports import free_port

EXIT_UNREACHABLE = 2
EXIT_GENERATOR_FAILED = 3


def add_parser(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add the ``bench`` sub-command to the ``signup`` parser."""
    bench = commands.add_parser(
        "bench",
        help="the load generator (POST /registrations)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(bench)
    bench.set_defaults(run=run)


def run(args: argparse.Namespace, settings: object = None) -> None:
    """Handler of ``signup bench``; ``settings`` (the server's) is not needed by a client."""
    code = execute(BenchConfig.from_args(args, _seed(args.seed)))
    if code:
        sys.exit(code)


def _seed(given: int | None) -> int:
    # Recorded in the report, so a run's body mix can be reproduced; the CPF/CNPJ block and
    # the emails stay random per run, so a rerun against the same database does not collide.
    return given if given is not None else secrets.randbelow(2**31)


def execute(config: BenchConfig) -> int:
    """Run the whole bench; the exit status."""
    # Imported here: `signup --help` and the other commands should not pay for them.
    from bench import baseline, report
    from bench.probe import Unreachable, get, has_status_endpoint
    from bench.runner import WorkerFailed, measure

    if urlsplit(config.url).scheme != "http":
        print(f"signup bench: only http:// targets are supported: {config.url}", file=sys.stderr)
        return EXIT_UNREACHABLE
    try:
        get(f"{config.url}/health/live", timeout=5.0)
    except Unreachable as error:
        print(f"signup bench: the target does not answer: {error}", file=sys.stderr)
        return EXIT_UNREACHABLE

    summaries: list[dict[str, Any]] = []
    document: dict[str, Any] = {"config": config.to_dict()}
    try:
        if config.baseline:
            log_path = (
                Path(tempfile.gettempdir()) / f"signup-bench-baseline-{secrets.token_hex(4)}.log"
            )
            try:
                with baseline.serving(free_port(), log_path) as (url, _):
                    measured = measure(config, url, "baseline", status_endpoint=False, scrape=False)
            except Unreachable as error:
                print(
                    f"signup bench: the baseline did not start ({log_path}): {error}",
                    file=sys.stderr,
                )
                return EXIT_UNREACHABLE
            summaries.append(report.summarise(measured, config))
            document["baseline"] = summaries[-1]
        status_endpoint = has_status_endpoint(config.url)
        measured = measure(
            config, config.url, "target", status_endpoint=status_endpoint, scrape=True
        )
    except WorkerFailed as error:
        print(f"signup bench: {error}", file=sys.stderr)
        return EXIT_GENERATOR_FAILED
    target = report.summarise(measured, config)
    summaries.append(target)
    document["target"] = target
    ratio = report.ratios(target, summaries[0]) if config.baseline else None
    document["target_over_baseline"] = ratio
    document["plot"] = report.plot(config.plot, target, summaries[0] if config.baseline else None)
    report.write_json(config.report, document)
    report.print_table(summaries, ratio, sys.stdout)
    print(f"report: {config.report}  plot: {config.plot} ({document['plot']})")
    if "429" in target["status_counts"]:
        print(
            "signup bench: the target rate-limited the bench (429): every request comes from "
            "127.0.0.1 unless the target trusts it as a proxy and --client-addresses is set",
            file=sys.stderr,
        )
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench``: the same options as ``signup bench``."""
    parser = argparse.ArgumentParser(prog="signup bench", description=__doc__)
    add_arguments(parser)
    run(parser.parse_args(argv))
