"""The ``credgate`` command line: set up, run, and query the gateway and the mock sources.

Every subcommand is added with ``command()``, so ``--help`` always ends with examples, and the
exit codes below are the same everywhere (``--help`` of any command lists them). Commands that
print data take ``--json``; long work shows progress on stderr (``gateway.progress``; only on a
terminal unless ``--progress``). Commands registered from other modules (``bench``, ``audit``)
follow the same rules; ``tests/test_cli.py`` checks every command's ``--help``.

The commands live in ``gateway.commands``, one module per group, each with its ``register``;
this module puts them together, in the order ``credgate --help`` lists them, and runs one.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import metadata

from credgate.gateway.commands import (
    audit,
    certificate,
    consent,
    console,
    database,
    demo,
    health,
    keys,
    pki,
    query,
    reconcile,
    serve,
    sources,
    witness,
    workflows,
    workspace,
)
from credgate.gateway.commands.common import (
    EXIT_CODES_HELP,
    EXIT_DENIED,
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_USAGE,
    command,
    configuration_errors,
    finish_help,
    iter_commands,
)
from credgate.gateway.commands.common import setup_logging as _setup_logging

# Importable from here as before: other modules register their commands with ``command``, and
# ``main`` sets up logging through ``_setup_logging``, which tests replace or call.
__all__ = [
    "EXIT_CODES_HELP",
    "EXIT_DENIED",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "_setup_logging",
    "build_parser",
    "command",
    "installed_version",
    "iter_commands",
    "main",
]


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's, via its metadata), so the number
    a bug report quotes is the one pip installed, not a constant someone forgot to bump."""
    try:
        return metadata.version("credgate")
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credgate",
        description="Federated gateway for personal-bankruptcy credit-repair status.",
        epilog="examples:\n"
        "  credgate demo\n"
        "  credgate init --dir var/demo && credgate serve --config var/demo/gateway.toml\n"
        "  credgate query 44030519780512031X --purpose judicial_investigation "
        "--case-reference '(2026)粤03执1号'\n"
        "  credgate COMMAND --help        examples for one command\n\n" + EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--version",
        action="version",
        version=f"%(prog)s {installed_version()}",
        help="print the installed credgate version and exit",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    workspace.register(sub)
    pki.register(sub)
    keys.register(sub)
    database.register(sub)
    serve.register(sub)
    health.register(sub)
    sources.register(sub)
    query.register(sub)
    consent.register(sub)  # the subject's side: receipts, pause, resume, withdraw
    certificate.register(sub)  # credgate certificate issue|status, verify-certificate
    demo.register(sub)
    audit.register(sub)  # credgate audit query|export|... (docs/audit.md)
    workflows.register(sub)  # credgate objections|applications
    reconcile.register(sub)  # (docs/sync.md)
    witness.register(sub)  # credgate witness keygen|serve|show (docs/audit.md, "Witnesses")
    console.register(sub)  # credgate console: the browser console (docs/console.md)
    # Register further commands above this line: every command's --help gets the exit codes.
    finish_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    status = _run(args)
    # Only a command that served has imported the server (and only a failed serve sets it).
    server = sys.modules.get("credgate.gateway.server")
    if server is not None:
        server.exit_now_if_failed_serve_abandoned_work(status)
    return status


def _run(args: argparse.Namespace) -> int:
    """The command's exit status; its error printed without a stack trace (unless -v)."""
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except configuration_errors() as error:
        print(f"credgate: {error}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as error:
        if args.verbose:
            raise
        print(f"credgate: {type(error).__name__}: {error} (-v shows where)", file=sys.stderr)
        return EXIT_FAILURE
    return result


if __name__ == "__main__":
    sys.exit(main())
