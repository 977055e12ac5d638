"""The ``signup`` command."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

import structlog
import uvloop

from application.erasure import UnknownSubject
from infrastructure import heap
from infrastructure.composition.operations import erase, migrate
from infrastructure.composition.read_side import keys_verified, open_read_side, run_worker
from infrastructure.embedded import embedded_servers, local_cipher_key, local_reservation_key
from infrastructure.event_store.key_checks import KeysDoNotMatch
from infrastructure.logging import configure_logging
from infrastructure.priority import MachineRoom, make_background
from infrastructure.read_side.gauges import lag
from infrastructure.read_side.parts import ReadSide
from infrastructure.read_side.rebuild import RebuildInProgress, rebuild
from infrastructure.settings import DEVELOPMENT_RESERVATION_KEY, InvalidSetting, Settings
from infrastructure.verification.mail_sink import MailSink, stored_messages
from interfaces.supervisor import Supervised

log = structlog.get_logger("signup")

# How many times `signup up` has restarted the worker it starts, for the worker's metrics.
RESTARTS_ENV = "SIGNUP_WORKER_RESTARTS"
# Set by `signup up` for the worker and mailer it starts: it has checked the secrets itself
# (a laptop's old data dir keeps the development key its claims were computed with).
STARTED_BY_UP_ENV = "SIGNUP_STARTED_BY_UP"


def _stop_on_signals() -> None:
    # A plain SIGTERM would kill the process without running the clean-up that stops the
    # embedded servers; make it unwind like Ctrl-C does.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)
    # A process started in the background by a shell inherits an ignored SIGINT: take it back,
    # so Ctrl-C (or `kill -INT`) always stops it.
    signal.signal(signal.SIGINT, signal.default_int_handler)


@contextlib.contextmanager
def _servers(settings: Settings, data_dir: Path, *, redis: bool = True) -> Iterator[Settings]:
    """The configured servers, or embedded ones under ``data_dir`` for whichever is unset.

    With a configured event store this is not the laptop: its secrets must be real ones."""
    if settings.database_url:
        _require_secrets(settings)
    if settings.database_url and (settings.redis_url or not redis):
        yield settings
        return
    # Decided before the servers start: the key depends on whether the data dir already
    # holds a store (see local_reservation_key), and starting PostgreSQL makes one.
    reservation_key = (
        local_reservation_key(data_dir)
        if settings.reservation_key == DEVELOPMENT_RESERVATION_KEY
        else settings.reservation_key
    )
    with embedded_servers(data_dir, redis=redis and not settings.redis_url) as urls:
        running = settings.with_servers(
            settings.database_url or urls.database_url,
            settings.redis_url or urls.redis_url or "",
            () if settings.database_url else urls.shard_urls,
        )
        yield dataclasses.replace(
            running,
            event_cipher_key=settings.event_cipher_key or local_cipher_key(data_dir),
            reservation_key=reservation_key,
            # An operator's command (a dead letter's retry) sends through the sink a running
            # `signup up` keeps for this data dir.
            smtp_url=settings.smtp_url or _running_sink(data_dir),
        )


def _mail_dir(data_dir: Path) -> Path:
    return data_dir / "mail"


def _sink_url_file(data_dir: Path) -> Path:
    return data_dir / "smtp.url"


def _running_sink(data_dir: Path) -> str | None:
    found = _sink_url_file(data_dir)
    return found.read_text().strip() if found.exists() else None


@contextlib.contextmanager
def _mail(settings: Settings, args: argparse.Namespace) -> Iterator[Settings]:
    """``signup up``'s mail: the relay of ``SMTP_URL``, or else an SMTP sink of its own that
    keeps every message under the data dir (``signup mail list``); links point at this
    server unless ``SIGNUP_PUBLIC_URL`` says where people reach it."""
    if not os.environ.get("SIGNUP_PUBLIC_URL"):
        settings = dataclasses.replace(settings, public_url=f"http://{args.host}:{args.port}")
    if os.environ.get("SMTP_URL"):
        yield settings
        return
    data_dir = Path(args.data_dir).resolve()
    with MailSink(_mail_dir(data_dir), background=True) as sink:
        url_file = _sink_url_file(data_dir)
        url_file.write_text(sink.url)
        log.info("mail_sink", url=sink.url, directory=str(sink.directory))
        try:
            yield dataclasses.replace(settings, smtp_url=sink.url)
        finally:
            url_file.unlink(missing_ok=True)


@contextlib.contextmanager
def _refusing_other_keys(doing: str) -> Iterator[None]:
    """A store written with other keys than the process's (``key_checks``): one line naming
    the variable, no traceback."""
    try:
        yield
    except KeysDoNotMatch as error:
        sys.exit(f"signup: refusing to {doing}: {error}")


def _require_secrets(settings: Settings) -> None:
    problem = settings.secrets_problem()
    if problem is not None:
        sys.exit(f"signup: refusing to start: {problem}")


def _require_secrets_unless_up(settings: Settings) -> None:
    """A worker or mailer on its own must not run on the public development key either: the
    mailer's codes and the worker's releases are HMACs of it."""
    if os.environ.get(STARTED_BY_UP_ENV) != "1":
        _require_secrets(settings)


def _server_options(host: str, port: int) -> dict[str, Any]:
    """How uvicorn serves the app, whether in one process or several."""
    from interfaces.http.server import OneWriteProtocol

    return {
        "host": host,
        "port": port,
        "log_config": None,
        "access_log": False,
        # The app alone decides whom to believe about the client (SIGNUP_TRUSTED_PROXIES);
        # uvicorn would trust X-Forwarded-For from loopback on its own.
        "proxy_headers": False,
        "http": OneWriteProtocol,
        "timeout_graceful_shutdown": 10,
    }


def _serve(settings: Settings, host: str, port: int) -> None:
    # Imported by the commands that serve HTTP only: every other process (the worker, each
    # restart of it, an operator's command) would pay for Litestar and uvicorn at start-up.
    import uvicorn

    from interfaces.http.app import build_app

    config = uvicorn.Config(build_app(settings), lifespan="on", **_server_options(host, port))
    uvicorn.Server(config).run()


def default_workers() -> int:
    """One API process per core this process may run on: one is one core at most (GIL).

    ``signup up`` too, beside the worker and the databases: on two cores two API processes
    accepted more than one (c64 +8 %, c256 +13 %) once a batch no longer held the events
    table's lock across round trips (see docs/performance.md)."""
    return max(1, len(os.sched_getaffinity(0)))


def _serve_many(settings: Settings, host: str, port: int, workers: int) -> None:
    """``workers`` API processes sharing the port, each with its own group commit and pools."""
    if workers <= 1:
        _serve(settings, host, port)
        return
    import uvicorn  # as in _serve: only the commands that serve HTTP import it

    # The processes read their settings from the environment, as `signup api` does.
    os.environ.update(settings.server_env())
    # Each process keeps its own counters; Prometheus' multiprocess mode adds them up on
    # /metrics, whichever process answers the scrape. A fresh directory: counters of an
    # earlier run must not be added in.
    metrics_dir = None
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        metrics_dir = tempfile.mkdtemp(prefix="signup-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    config = uvicorn.Config(
        "interfaces.http.app:build_app_from_env",
        factory=True,
        workers=workers,
        **_server_options(host, port),
    )
    # What uvicorn.run does for several workers, keeping the supervisor: when a process fails
    # to start (a store written with other keys, say) the supervisor stops them all, and
    # uvicorn.run then returned as from a clean stop, status 0; one process exits with 3.
    supervisor = Multiprocess(config, sockets=[config.bind_socket()])
    try:
        supervisor.run()
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    if any(process.exitcode == STARTUP_FAILURE for process in supervisor.processes):
        log.error("api_failed_to_start", hint="the API processes' log above says why")
        sys.exit(STARTUP_FAILURE)


def _require_free_port(host: str, port: int) -> None:
    """Before anything starts. A port already taken (by another `signup up`, say) let the
    embedded servers, the worker and the mailer start, then uvicorn stop them all, each child
    printing a traceback, the cause one line among them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: a port left in TIME_WAIT by a stopped server is free to use.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            sys.exit(f"signup: cannot listen on {host}:{port}: {error.strerror or error}")


def up(args: argparse.Namespace, settings: Settings) -> None:
    _require_free_port(args.host, args.port)
    with _servers(settings, Path(args.data_dir)) as servers, _mail(servers, args) as running:
        with _refusing_other_keys("start"):
            migrate(running)

        env = {**os.environ, **running.server_env(), STARTED_BY_UP_ENV: "1"}

        # The worker runs as its own process, beside the API processes, restarted when it dies.
        # Each in a process group of its own: a terminal's Ctrl-C signals its whole foreground
        # group, and reached them directly while the API was still stopping. The supervisor
        # logged the worker's exit as a crash and scheduled its restart, and a mailer still
        # importing printed a KeyboardInterrupt traceback. `signup up` alone stops them, in
        # order, once the API has stopped.
        def start_worker(restarts: int) -> subprocess.Popen[bytes]:
            return subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli", "worker", "--no-mail"],
                env={**env, RESTARTS_ENV: str(restarts)},
                process_group=0,
            )

        # The mail goes from a process of its own, in the background (infrastructure/
        # priority.py): under a peak the cores go to the people at the form (and their
        # completion) first; the outbox waits while they are saturated, and the moment they
        # are idle it is sent at full speed. (In the worker it took ~10 % of a peak's machine.)
        def start_mailer(restarts: int) -> subprocess.Popen[bytes]:
            child = subprocess.Popen(
                [sys.executable, "-m", "interfaces.cli", "mailer", "--shard", "0", "--background"],
                env=env,
                process_group=0,
            )
            make_background(child.pid)  # it may have exited already: then it is restarted
            return child

        with Supervised(start_worker), Supervised(start_mailer, name="mailer"):
            url = f"http://{args.host}:{args.port}"
            workers = args.workers or default_workers()
            log.info("signup_up", url=url, docs=f"{url}/schema", api_processes=workers)
            _serve_many(running, args.host, args.port, workers)


def api(args: argparse.Namespace, settings: Settings) -> None:
    if not (settings.database_url and settings.redis_url):
        sys.exit("signup api needs DATABASE_URL and REDIS_URL (signup up runs embedded servers)")
    _require_secrets(settings)
    _require_free_port(args.host, args.port)
    _serve_many(settings, args.host, args.port, args.workers or default_workers())


def worker(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.database_url:
        sys.exit("signup worker needs DATABASE_URL (signup up runs embedded servers)")
    _require_secrets_unless_up(settings)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        only = [n.strip() for n in args.projections.split(",") if n.strip()] or None
        await run_worker(
            settings,
            stop,
            only,
            restarts=int(os.environ.get(RESTARTS_ENV, "0")),
            mail=not args.no_mail,
        )

    # uvloop, as the API runs on: the worker's loop was a quarter of its time on asyncio's.
    with _refusing_other_keys("start"):
        uvloop.run(main())


def mailer(args: argparse.Namespace, settings: Settings) -> None:
    """A mail sender: the messages of shard ``--shard`` of ``SIGNUP_MAIL_SHARDS``. Shard 0 is
    the worker's unless it runs with ``--no-mail`` (as under ``signup up``): one sender a
    shard, or a message could go twice."""
    if not settings.database_url:
        sys.exit("signup mailer needs DATABASE_URL (signup up runs embedded servers)")
    _require_secrets_unless_up(settings)
    if not 0 <= args.shard < settings.mail_shards:
        sys.exit(
            f"--shard must be 0 to {settings.mail_shards - 1} (SIGNUP_MAIL_SHARDS is "
            f"{settings.mail_shards}; shard 0 only when the worker running registration_status "
            "runs with --no-mail)"
        )

    if args.background:
        make_background()  # as signup up already made it, for a mailer started by hand

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        # It opens each recipient's address with the store's keys.
        if not await keys_verified(settings, stop, waiting="mailer_waiting_for_postgres"):
            return
        read_side = open_read_side(settings)
        read_side.mailer.shard = args.shard
        if args.background:
            read_side.mailer.room = MachineRoom()
        heap.settle()
        log.info("mailer_started", shard=args.shard, shards=settings.mail_shards)
        try:
            await read_side.mailer.run(stop)
        finally:
            await read_side.close()

    with _refusing_other_keys("start"):
        uvloop.run(main())


def migrate_command(args: argparse.Namespace, settings: Settings) -> None:
    with (
        _refusing_other_keys("migrate"),
        _servers(settings, Path(args.data_dir), redis=False) as running,
    ):
        migrate(running)


def _with_read_side(
    args: argparse.Namespace, settings: Settings, use: Callable[[ReadSide], Awaitable[int]]
) -> None:
    with _servers(settings, Path(args.data_dir), redis=False) as running:

        async def main() -> int:
            read_side = open_read_side(running)
            try:
                return await use(read_side)
            finally:
                await read_side.close()

        code = asyncio.run(main())
    if code:
        sys.exit(code)


def projections_status(args: argparse.Namespace, settings: Settings) -> None:
    async def show(read_side: ReadSide) -> int:
        lags = await lag(read_side)
        print(f"{'projection':<24} {'position':>12} {'lag':>10}")
        for name, (position, behind) in lags.items():
            print(f"{name:<24} {position:>12} {behind:>10}")
        return 0

    _with_read_side(args, settings, show)


def projections_rebuild(args: argparse.Namespace, settings: Settings) -> None:
    async def rebuild_one(read_side: ReadSide) -> int:
        names = [p.name for p in read_side.all_projectors]
        if args.name not in names:
            print(f"unknown projection {args.name!r}; one of: {', '.join(names)}", file=sys.stderr)
            return 2
        try:
            old, new = await rebuild(read_side.projector(args.name), _progress_bar())
        except RebuildInProgress:
            print(f"{args.name} is being rebuilt by another process", file=sys.stderr)
            return 1
        print(f"\n{args.name}: now reading {new} (was {old})")
        return 0

    _with_read_side(args, settings, rebuild_one)


def _progress_bar() -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        width = 40
        filled = width if total == 0 else min(width, width * done // total)
        percent = 100 if total == 0 else min(100, 100 * done // total)
        print(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {percent:3d}% {done}/{total}",
            end="",
            file=sys.stderr,
            flush=True,
        )

    return show


def dead_letters(args: argparse.Namespace, settings: Settings) -> None:
    async def act(read_side: ReadSide) -> int:
        failures = read_side.failures
        if args.action == "list":
            rows = await failures.list(state=None if args.all else "dead")
            header = f"{'id':>6} {'projection':<20} {'event':>10} {'state':<9} {'tries':>5}"
            print(f"{header}  registration")
            for f in rows:
                print(
                    f"{f.id:>6} {f.projection:<20} {f.notification_id:>10} {f.state:<9}"
                    f" {f.attempts:>5}  {f.registration_id}"
                )
            return 0
        if args.action == "retry" and args.all:
            targets = await failures.list(state="dead")
        else:
            if args.id is None:
                print("give a dead letter id (or --all for retry)", file=sys.stderr)
                return 2
            found = await failures.get(args.id)
            if found is None:
                print(f"no dead letter {args.id}", file=sys.stderr)
                return 1
            targets = [found]
        if args.action == "show":
            for field, value in dataclasses.asdict(targets[0]).items():
                print(f"{field:>16}: {value}")
            return 0
        if args.action == "discard":
            await failures.discard(targets[0].id)
            print(f"discarded {targets[0].id}")
            return 0
        failed = 0
        for target in targets:
            ok = await read_side.process_manager.retry(target)
            print(f"{target.id}: {'projected' if ok else 'failed again'}")
            failed += not ok
        return 1 if failed else 0

    _with_read_side(args, settings, act)


def erase_command(args: argparse.Namespace, settings: Settings) -> None:
    # With Redis: its status cache would otherwise go on answering for the erased
    # registration. On a laptop, the data dir's embedded one (attached to, if running).
    with (
        _refusing_other_keys("erase"),
        _servers(settings, Path(args.data_dir), redis=not settings.database_url) as running,
    ):
        try:
            erased = asyncio.run(erase(running, args.id))
        except UnknownSubject:
            print(f"no user, registration or email {args.id}", file=sys.stderr)
            sys.exit(1)
    key = "key shredded" if erased.key_shredded else "key already shredded"
    removed = ", ".join(erased.removed_from) or "no read model held it"
    print(
        f"erased registration {erased.registration_id}: {key}; removed from: {removed};"
        f" released {erased.released} of its values (email, CPF or CNPJ) for new signups"
    )
    if not running.redis_url:
        print(
            "REDIS_URL is unset: the status cache and the Idempotency-Key record were not"
            " reached; they expire on their own (SIGNUP_STATUS_CACHE_SECONDS,"
            " SIGNUP_IDEMPOTENCY_TTL_SECONDS)",
            file=sys.stderr,
        )


def mail(args: argparse.Namespace, settings: Settings) -> None:
    """What `signup up`'s SMTP sink received (files under the data dir; no server needed)."""
    messages = stored_messages(_mail_dir(Path(args.data_dir).resolve()))
    if args.action == "list":
        print(f"{'id':<27}  {'date':<31}  {'to':<32}  subject")
        for stored in messages:
            parsed = stored.parsed()
            print(
                f"{stored.id:<27}  {parsed['Date']!s:<31}  {parsed['To']!s:<32}"
                f"  {parsed['Subject']}"
            )
        return
    if args.id is None:
        sys.exit("give a message id (from `signup mail list`), or `last`")
    wanted = messages[-1:] if args.id == "last" else [m for m in messages if m.id == args.id]
    if not wanted:
        sys.exit(f"no message {args.id} in {_mail_dir(Path(args.data_dir))}")
    parsed = wanted[0].parsed()
    for header in ("From", "To", "Subject", "Date", "Message-ID"):
        print(f"{header}: {parsed[header]}")
    print()
    print(wanted[0].text())


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="signup", description="The signup service.")
    commands = root.add_subparsers(dest="command", required=True)

    def command(name: str, run: Callable[[argparse.Namespace, Settings], None], **kw: Any) -> Any:
        sub = commands.add_parser(name, **kw)
        sub.set_defaults(run=run)
        return sub

    def data_dir(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--data-dir", default="./.signup", help="embedded servers' data")

    run_up = command("up", up, help="the whole system, on embedded servers when no URLs are set")
    run_up.add_argument("--host", default="127.0.0.1")
    run_up.add_argument("--port", type=int, default=8000)
    run_up.add_argument(
        "--workers",
        type=int,
        default=0,
        help="API processes (default: one per core)",
    )
    data_dir(run_up)

    run_api = command("api", api, help="the API alone (needs DATABASE_URL and REDIS_URL)")
    run_api.add_argument("--host", default="127.0.0.1")
    run_api.add_argument("--port", type=int, default=8000)
    run_api.add_argument(
        "--workers", type=int, default=0, help="API processes (default: one per core)"
    )

    run_worker_ = command(
        "worker",
        worker,
        help="projectors, process manager, mailer and expiry sweep (needs DATABASE_URL)",
    )
    run_worker_.add_argument(
        "--projections",
        default="",
        help="comma-separated projections to run here (default: all); run several workers "
        "with disjoint sets to use more cores; the process manager, the mailer and the "
        "verification expiry sweep run beside registration_status",
    )
    run_worker_.add_argument(
        "--no-mail",
        action="store_true",
        help="send no mail here: a `signup mailer --shard 0` sends shard 0 (signup up does so)",
    )
    mailing_ = command(
        "mailer", mailer, help="a mail sender, for shard --shard of SIGNUP_MAIL_SHARDS"
    )
    mailing_.add_argument("--shard", type=int, required=True)
    mailing_.add_argument(
        "--background",
        action="store_true",
        help="send in the machine's spare time only: at idle priority, resting while its "
        "cores are saturated (signup up runs its mailer so)",
    )
    data_dir(command("migrate", migrate_command, help="create or upgrade every schema"))

    projections = commands.add_parser("projections", help="read models").add_subparsers(
        dest="what", required=True
    )
    status = projections.add_parser("status", help="each projection's position and lag")
    status.set_defaults(run=projections_status)
    data_dir(status)
    rebuild = projections.add_parser("rebuild", help="rebuild a read model from the first event")
    rebuild.add_argument("name")
    rebuild.set_defaults(run=projections_rebuild)
    data_dir(rebuild)

    letters = command("dead-letters", dead_letters, help="events the process manager gave up on")
    letters.add_argument("action", choices=["list", "show", "retry", "discard"])
    letters.add_argument("id", nargs="?", type=int)
    letters.add_argument(
        "--all",
        action="store_true",
        help="retry: every dead letter; list: also those still retrying",
    )
    data_dir(letters)

    erasing = command(
        "erase",
        erase_command,
        help="erase a person (LGPD): shred their key, remove them from every read model",
    )
    erasing.add_argument("id", help="their email, user id, or (before completion) registration id")
    data_dir(erasing)

    mailing = command("mail", mail, help="the messages signup up's SMTP sink received")
    mailing.add_argument("action", choices=["list", "show"])
    mailing.add_argument("id", nargs="?", help="show: a message id from list, or `last`")
    data_dir(mailing)

    try:
        import bench
    except ModuleNotFoundError:
        # An install of the service alone (a wheel, the image) has no load generator: the
        # bench lives in the checkout's bench/, beside the service's packages.
        pass
    else:
        bench.add_parser(commands)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except InvalidSetting as error:
        # Before anything starts: one line naming the variable, no traceback.
        sys.exit(f"signup: {error}")
    configure_logging(settings.log_format, settings.log_level)
    _stop_on_signals()
    try:
        args.run(args, settings)
    except KeyboardInterrupt:
        log.info("stopped")


if __name__ == "__main__":
    main()
