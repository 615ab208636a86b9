"""What every ``credgate`` subcommand shares: ``command()``, the exit codes, ``--json``, logging.

Every subcommand is added with ``command()``, so ``--help`` always ends with examples, and the
exit codes below are the same everywhere (``finish_help`` appends them to every command's
``--help``). Only the standard library is imported here, so building the parser stays cheap.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DENIED = 3


def configuration_errors() -> tuple[type[BaseException], ...]:
    """Every exception that means "fix the configuration" and exits 2 — in ``credgate`` and in
    each worker alike, so systemd (``RestartPreventExitStatus=2``) never restarts into the same
    mistake: a bad config file (ConfigError is a ValueError), a secret file that is missing,
    unreadable or readable by others (keyring, signing keys, audit key, TLS key), a database
    newer than this release, an audit log rolled back behind what this node signed or an
    unreadable record of it (``audit.signed_size``: ValueErrors, acknowledged with
    ``credgate audit acknowledge-rollback``)."""
    from credgate.gateway.protection.keyring import KeyringError
    from credgate.gateway.report_signing_keys import ReportSigningKeyError

    return (ValueError, FileNotFoundError, FileExistsError, KeyringError, ReportSigningKeyError)


EXIT_CODES_HELP = """exit codes:
  0  success
  1  failure: the work could not be done (unreachable gateway or source, not serving,
     a tampered audit log, a database behind the code's schema)
  2  usage or configuration error (bad arguments, invalid config file, missing files,
     an audit log rolled back: credgate audit acknowledge-rollback)
  3  refused by the gateway (the status code and ErrorInfo reason are printed)"""


def _log_level(verbose: bool) -> int:
    return logging.DEBUG if verbose else logging.INFO


def setup_logging(verbose: bool, log_format: str = "text", service_name: str = "credgate") -> None:
    """Logging for this process: ``text`` for a terminal, ``json`` (``[telemetry] log_format``)
    for a log pipeline; both carry trace and request ids and mask identity numbers."""
    from credgate.gateway.telemetry.logs import configure_logging

    configure_logging(log_format, level=_log_level(verbose), service_name=service_name)


def print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


def json_flag(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def command(
    subparsers: Any,
    name: str,
    *,
    help: str,
    examples: Sequence[str],
    description: str = "",
) -> argparse.ArgumentParser:
    """Add a subcommand whose ``--help`` shows ``examples`` (and, once built, the exit codes).

    Use it for every ``credgate`` subcommand, including those registered by other modules::

        p = command(sub, "reconcile", help="...", examples=["credgate reconcile --config F"])
    """
    if not examples:
        raise ValueError(f"command {name!r} needs at least one example")
    epilog = "examples:\n" + "\n".join(f"  {example}" for example in examples)
    return subparsers.add_parser(  # type: ignore[no-any-return]
        name,
        help=help,
        description=description or help[:1].upper() + help[1:] + ".",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def iter_commands(
    parser: argparse.ArgumentParser, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], argparse.ArgumentParser]]:
    """Every (sub)command parser under ``parser`` with its words, e.g. ``("pki", "issue")``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield (*path, name), child
                yield from iter_commands(child, (*path, name))


def finish_help(parser: argparse.ArgumentParser) -> None:
    """Append the exit codes to every command's ``--help``, keeping epilog line breaks."""
    for _, child in iter_commands(parser):
        child.formatter_class = argparse.RawDescriptionHelpFormatter
        if EXIT_CODES_HELP not in (child.epilog or ""):
            child.epilog = (child.epilog + "\n\n" if child.epilog else "") + EXIT_CODES_HELP
