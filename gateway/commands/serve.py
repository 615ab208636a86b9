"""``credgate serve``: run the gateway, in this process or as a supervisor of several workers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from credgate.gateway.commands.common import EXIT_OK, command, setup_logging


def cmd_serve(args: argparse.Namespace) -> int:
    """One gateway in this process, or with several workers a supervisor of that many
    (``gateway.workers``): ``--workers 1`` is exactly the single process it always was."""
    import dataclasses

    from credgate.gateway.config import MAX_WORKERS, ConfigError, load_config

    config = load_config(Path(args.config))
    setup_logging(args.verbose, config.telemetry.log_format, config.telemetry.service_name)
    settings = config.gateway
    if args.insecure_dev:
        settings = dataclasses.replace(settings, insecure_dev=True)
    if args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}, got {args.workers}")
        settings = dataclasses.replace(settings, workers=args.workers)
    config = dataclasses.replace(config, gateway=settings)
    if settings.workers > 1:
        from credgate.gateway.workers import run_workers

        return run_workers(config, verbose=args.verbose)
    from credgate.gateway.app import serve
    from credgate.gateway.server import run_until_stopped

    run_until_stopped(serve(config), event_loop=settings.event_loop)
    return EXIT_OK


def register(subparsers: Any) -> None:
    """Add ``serve`` to ``credgate``'s subcommands."""
    p = command(
        subparsers,
        "serve",
        help="run the gateway until SIGTERM/SIGINT, then drain gracefully",
        examples=[
            "credgate serve --config /etc/credgate/gateway.toml",
            "credgate serve --config var/demo/gateway.toml --insecure-dev",
            "credgate serve --config /etc/credgate/gateway.toml --workers 4",
        ],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext, no client certificates: local development only",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="gateway processes sharing the port (SO_REUSEPORT), e.g. one per core; "
        "overrides [gateway] workers (default 1: this process serves)",
    )
    p.set_defaults(func=cmd_serve)
