"""The ``signup`` command."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

import structlog
import uvicorn

from infrastructure.container import build_app, migrate
from infrastructure.embedded import embedded_servers
from infrastructure.logging import configure_logging
from infrastructure.settings import Settings

log = structlog.get_logger("signup")


def _stop_on_sigterm() -> None:
    # A plain SIGTERM would kill the process without running the clean-up that stops the
    # embedded servers; make it unwind like Ctrl-C does.
    def handler(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


@contextlib.contextmanager
def _servers(settings: Settings, data_dir: Path) -> Iterator[Settings]:
    """The configured servers, or embedded ones under ``data_dir`` for whichever is unset."""
    if settings.database_url and settings.redis_url:
        yield settings
        return
    with embedded_servers(data_dir) as urls:
        yield settings.with_servers(
            settings.database_url or urls.database_url, settings.redis_url or urls.redis_url
        )


def _serve(settings: Settings, host: str, port: int) -> None:
    config = uvicorn.Config(
        build_app(settings),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()


def up(args: argparse.Namespace, settings: Settings) -> None:
    with _servers(settings, Path(args.data_dir)) as running:
        migrate(running)
        log.info(
            "signup_up",
            url=f"http://{args.host}:{args.port}",
            docs=f"http://{args.host}:{args.port}/schema",
        )
        _serve(running, args.host, args.port)


def api(args: argparse.Namespace, settings: Settings) -> None:
    if not (settings.database_url and settings.redis_url):
        sys.exit("signup api needs DATABASE_URL and REDIS_URL (signup up runs embedded servers)")
    if args.workers > 1:
        uvicorn.run(
            "infrastructure.container:build_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_config=None,
            access_log=False,
        )
    else:
        _serve(settings, args.host, args.port)


def migrate_command(args: argparse.Namespace, settings: Settings) -> None:
    if not settings.database_url:
        sys.exit("signup migrate needs DATABASE_URL")
    migrate(settings)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="signup", description=__doc__)
    commands = root.add_subparsers(dest="command", required=True)

    run_up = commands.add_parser(
        "up", help="the whole system, on embedded servers when no URLs are set"
    )
    run_up.add_argument("--host", default="127.0.0.1")
    run_up.add_argument("--port", type=int, default=8000)
    run_up.add_argument("--data-dir", default="./.signup")
    run_up.set_defaults(run=up)

    run_api = commands.add_parser("api", help="the API alone (needs DATABASE_URL and REDIS_URL)")
    run_api.add_argument("--host", default="127.0.0.1")
    run_api.add_argument("--port", type=int, default=8000)
    run_api.add_argument("--workers", type=int, default=1)
    run_api.set_defaults(run=api)

    run_migrate = commands.add_parser("migrate", help="create or upgrade every schema")
    run_migrate.set_defaults(run=migrate_command)
    return root


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    settings = Settings.from_env()
    configure_logging(settings.log_format, settings.log_level)
    _stop_on_sigterm()
    try:
        args.run(args, settings)
    except KeyboardInterrupt:
        log.info("stopped")


if __name__ == "__main__":
    main()
