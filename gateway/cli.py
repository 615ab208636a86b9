"""The ``credgate`` command line: set up, run, and query the gateway and the mock sources.

Every subcommand is added with ``command()``, so ``--help`` always ends with examples, and the
exit codes below are the same everywhere (``--help`` of any command lists them). Commands that
print data take ``--json``; long work shows progress on stderr (``gateway.progress``; only on a
terminal unless ``--progress``). Commands registered from other modules (``bench``, ``audit``)
follow the same rules; ``tests/test_cli.py`` checks every command's ``--help``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DENIED = 3

EXIT_CODES_HELP = """exit codes:
  0  success
  1  failure: the work could not be done (unreachable gateway or source, not serving,
     a tampered audit log, a database behind the code's schema)
  2  usage or configuration error (bad arguments, invalid config file, missing files)
  3  refused by the gateway (the status code and ErrorInfo reason are printed)"""

# gRPC status codes that mean "the gateway looked at the request and said no" (exit 3); any
# other failure of a call (unreachable, deadline, internal error) is exit 1.
_REFUSALS = frozenset(
    {
        "INVALID_ARGUMENT",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "UNAUTHENTICATED",
        "FAILED_PRECONDITION",
        "RESOURCE_EXHAUSTED",
        "OUT_OF_RANGE",
    }
)


def _log_level(verbose: bool) -> int:
    return logging.DEBUG if verbose else logging.INFO


def _setup_logging(verbose: bool, log_format: str = "text", service_name: str = "credgate") -> None:
    """Logging for this process: ``text`` for a terminal, ``json`` (``[telemetry] log_format``)
    for a log pipeline; both carry trace and request ids and mask identity numbers."""
    from gateway.telemetry.logs import configure_logging

    configure_logging(log_format, level=_log_level(verbose), service_name=service_name)


def _print_json(value: Any) -> None:
    print(json.dumps(value, ensure_ascii=False, indent=2))


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


def _finish_help(parser: argparse.ArgumentParser) -> None:
    """Append the exit codes to every command's ``--help``, keeping epilog line breaks."""
    for _, child in iter_commands(parser):
        child.formatter_class = argparse.RawDescriptionHelpFormatter
        if EXIT_CODES_HELP not in (child.epilog or ""):
            child.epilog = (child.epilog + "\n\n" if child.epilog else "") + EXIT_CODES_HELP


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.workspace import init_workspace

    workspace = init_workspace(
        Path(args.dir), listen=args.listen, mock_base_port=args.mock_base_port, force=args.force
    )
    if args.json:
        _print_json(
            {
                "directory": str(workspace.directory),
                "config": str(workspace.config_path),
                "pki_dir": str(workspace.pki_dir),
            }
        )
    else:
        print(f"initialized {workspace.directory}: config {workspace.config_path}")
    return EXIT_OK


def cmd_pki_init(args: argparse.Namespace) -> int:
    from gateway.pki import write_dev_pki

    paths = write_dev_pki(Path(args.dir), force=args.force)
    if args.json:
        _print_json(
            {
                "directory": str(paths.directory),
                "ca": str(paths.ca_cert),
                "crl": str(paths.crl),
                "institutions": {
                    institution_id: {"cert": str(files.cert), "key": str(files.key)}
                    for institution_id, files in paths.institutions.items()
                },
            }
        )
        return EXIT_OK
    print(f"dev CA and certificates written to {paths.directory}")
    for institution_id in paths.institutions:
        print(f"  {institution_id}")
    return EXIT_OK


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from gateway.institution import Institution, role_from_name
    from gateway.pki import add_institution

    institution = Institution(args.institution, role_from_name(args.role), args.name or "")
    paths = add_institution(Path(args.dir), institution, valid_days=args.days, force=args.force)
    if args.json:
        _print_json(
            {"institution": args.institution, "cert": str(paths.cert), "key": str(paths.key)}
        )
    else:
        print(f"issued {paths.cert} and {paths.key}")
    return EXIT_OK


REVOCATION_REASONS = (
    "key_compromise",
    "ca_compromise",
    "affiliation_changed",
    "superseded",
    "cessation_of_operation",
    "certificate_hold",
    "privilege_withdrawn",
    "aa_compromise",
)


def cmd_pki_revoke(args: argparse.Namespace) -> int:
    from cryptography import x509

    from gateway.pki import revoke_certificate, revoke_institution

    reason = x509.ReasonFlags[args.reason] if args.reason else None
    directory = Path(args.dir)
    if args.cert:
        try:
            cert = x509.load_pem_x509_certificate(Path(args.cert).read_bytes())
        except OSError as exc:
            raise FileNotFoundError(f"cannot read {args.cert}: {exc.strerror}") from None
        done = revoke_certificate(directory, cert, reason=reason, valid_days=args.days)
        who = args.cert
    else:
        done = revoke_institution(directory, args.institution, reason=reason, valid_days=args.days)
        who = args.institution
    if args.json:
        _print_json(
            {
                "revoked": who,
                "serial_number": f"{done.serial_number:x}",
                "crl": str(done.crl),
                "crl_number": done.crl_number,
                "revoked_count": done.revoked_count,
                "already_revoked": done.already_revoked,
            }
        )
        return EXIT_OK
    state = "was already revoked; CRL re-signed" if done.already_revoked else "revoked"
    print(
        f"{who} (serial {done.serial_number:x}) {state}: {done.crl} is CRL #{done.crl_number} "
        f"with {done.revoked_count} revoked certificate(s). Gateways whose "
        "[tls] revocation_list is this file refuse it from their next call."
    )
    return EXIT_OK


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.protection.keyring import Keyring

    keyring = Keyring.generate(Path(args.path))
    if args.json:
        _print_json({"keyring": str(keyring.path), "primary_key_id": keyring.primary_key_id})
    else:
        print(f"keyring written to {keyring.path} (primary data key {keyring.primary_key_id})")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.keys import rotate_keys
    from gateway.progress import Progress

    config = load_config(Path(args.config))
    with Progress("re-encrypting", enabled=args.progress, unit="records") as progress:
        key_id, count = asyncio.run(rotate_keys(config, progress=progress))
    if args.json:
        _print_json({"primary_key_id": key_id, "reencrypted": count})
    else:
        print(f"new primary data key {key_id}; re-encrypted {count} records")
    return EXIT_OK


def cmd_keys_add(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.keys import add_data_key

    key_id = add_data_key(load_config(Path(args.config)), primary=args.primary)
    if args.json:
        _print_json({"key_id": key_id, "primary": args.primary})
    elif args.primary:
        print(f"new primary data key {key_id}; run credgate keys reencrypt")
    else:
        print(
            f"new data key {key_id}, not yet primary: give every replica this keyring, restart "
            f"them, then run credgate keys promote {key_id}"
        )
    return EXIT_OK


def cmd_keys_promote(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.keys import promote_data_key
    from gateway.protection.keyring import UnknownKeyError

    try:
        promote_data_key(load_config(Path(args.config)), args.key_id)
    except UnknownKeyError as error:
        raise ValueError(str(error)) from None  # a mistyped id: a usage error
    if args.json:
        _print_json({"primary_key_id": args.key_id})
    else:
        print(
            f"{args.key_id} is the primary data key: give every replica this keyring, restart "
            "them, then run credgate keys reencrypt"
        )
    return EXIT_OK


def cmd_keys_reencrypt(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.keys import reencrypt_records
    from gateway.progress import Progress

    config = load_config(Path(args.config))
    with Progress("re-encrypting", enabled=args.progress, unit="records") as progress:
        count = asyncio.run(reencrypt_records(config, progress=progress))
    if args.json:
        _print_json({"reencrypted": count})
    else:
        print(f"re-encrypted {count} records" + ("" if count else "; nothing is left to move"))
    return EXIT_OK


def cmd_keys_rotate_signing(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.signing_keys import FILE_NAME, load_or_create_signing_keys, rotate_signing_key

    config = load_config(Path(args.config))
    path = config.storage.data_dir / FILE_NAME
    created = not path.exists()
    if created:  # the first key: what the first gateway start would create, made ahead of it
        key_id = load_or_create_signing_keys(path).current_key_id
    else:
        key_id = rotate_signing_key(path)
    if args.json:
        _print_json({"key_id": key_id, "created": created, "file": str(path)})
    elif created:
        print(f"created {path} with report-signing key {key_id}")
    else:
        print(f"new report-signing key {key_id}; old keys stay published for verification")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.storage.migrate import current_revision, upgrade_to_head

    url = load_config(Path(args.config)).storage.url
    upgrade_to_head(url)
    revision = current_revision(url)
    if args.json:
        _print_json({"revision": revision})
    else:
        print(f"database at revision {revision}")
    return EXIT_OK


def cmd_db_status(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.storage.migrate import current_revision, head_revision

    url = load_config(Path(args.config)).storage.url
    revision, head = current_revision(url), head_revision()
    if args.json:
        _print_json({"revision": revision, "head": head, "at_head": revision == head})
    elif revision == head:
        print(f"database at revision {revision} (head)")
    else:
        print(f"database at revision {revision}; this code expects {head}: run credgate db upgrade")
    return EXIT_OK if revision == head else EXIT_FAILURE


def cmd_serve(args: argparse.Namespace) -> int:
    """One gateway in this process, or with several workers a supervisor of that many
    (``gateway.workers``): ``--workers 1`` is exactly the single process it always was."""
    import dataclasses

    from gateway.config import MAX_WORKERS, ConfigError, load_config

    config = load_config(Path(args.config))
    _setup_logging(args.verbose, config.telemetry.log_format, config.telemetry.service_name)
    settings = config.gateway
    if args.insecure_dev:
        settings = dataclasses.replace(settings, insecure_dev=True)
    if args.workers is not None:
        if not 1 <= args.workers <= MAX_WORKERS:
            raise ConfigError(f"--workers must be 1 to {MAX_WORKERS}, got {args.workers}")
        settings = dataclasses.replace(settings, workers=args.workers)
    config = dataclasses.replace(config, gateway=settings)
    if settings.workers > 1:
        from gateway.workers import run_workers

        return run_workers(config, verbose=args.verbose)
    from gateway.app import serve

    asyncio.run(serve(config))
    return EXIT_OK


def _local_target(listen: str) -> str:
    """Where a probe on the same host reaches a gateway listening on ``listen``."""
    host, _, port = listen.rpartition(":")
    if host in {"", "0.0.0.0", "::", "[::]"}:  # noqa: S104 - reading, not binding
        host = "127.0.0.1"
    return f"{host}:{port}"


def _probe_files(
    args: argparse.Namespace, config_ca: Path | None, insecure: bool
) -> tuple[Path, Path, Path]:
    """The CA, client certificate and key ``credgate health`` connects with."""
    pki = Path(args.pki_dir) if args.pki_dir else None
    ca = Path(args.ca) if args.ca else (pki / "ca.pem" if pki else config_ca)
    cert = Path(args.cert) if args.cert else (pki / f"{args.institution}.pem" if pki else None)
    key = Path(args.key) if args.key else (pki / f"{args.institution}.key" if pki else None)
    if ca is None or cert is None or key is None:
        if insecure:
            return Path(), Path(), Path()
        raise ValueError(
            "mutual TLS needs the CA (--ca, --config or --pki-dir) and a probe certificate "
            "issued by it (--cert and --key, or --pki-dir and --institution)"
        )
    return ca, cert, key


def cmd_health(args: argparse.Namespace) -> int:
    import time

    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from gateway.channel import client_channel
    from gateway.config import load_config

    config = load_config(Path(args.config)) if args.config else None
    target = args.target or (_local_target(config.gateway.listen) if config else "127.0.0.1:50051")
    insecure = args.insecure or (config is not None and config.gateway.insecure_dev)
    ca, cert, key = _probe_files(args, config.tls.ca if config else None, insecure)

    async def check(channel: grpc.aio.Channel) -> str:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=args.service)
        try:
            reply = await stub.Check(request, timeout=args.timeout)
        except grpc.aio.AioRpcError as error:
            return "UNKNOWN_SERVICE" if error.code() == grpc.StatusCode.NOT_FOUND else "UNREACHABLE"
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status))

    async def run() -> str:
        if insecure:
            channel = grpc.aio.insecure_channel(target)
        else:
            channel = client_channel(target, ca, cert, key, server_name=args.server_name or None)
        deadline = time.monotonic() + args.wait
        async with channel:
            while True:
                status = await check(channel)
                if status == "SERVING" or time.monotonic() >= deadline:
                    return status
                await asyncio.sleep(0.5)

    status = asyncio.run(run())
    if args.json:
        _print_json({"target": target, "service": args.service, "status": status})
    else:
        print(f"{target} {args.service or '(server)'}: {status}")
    return EXIT_OK if status == "SERVING" else EXIT_FAILURE


def cmd_mocks(args: argparse.Namespace) -> int:
    from adapters.mocks.serve import MockRunSettings, parse_fault, run_mocks

    if args.push:
        from adapters.mocks.providers import push

        return asyncio.run(
            push(
                args.push,
                Path(args.pki_dir),
                size=args.size,
                seed=args.seed,
                resolve_lag=args.resolve_lag,
            )
        )
    faults = dict(parse_fault(text) for text in args.fault)
    settings = MockRunSettings(
        host=args.host,
        base_port=args.base_port,
        control_port=args.control_port,
        size=args.size,
        seed=args.seed,
    )
    asyncio.run(run_mocks(settings, faults))
    return EXIT_OK


def cmd_scenarios(args: argparse.Namespace) -> int:
    from adapters.mocks.population import build_population

    scenarios = build_population(size=0).scenarios
    if args.json:
        _print_json(
            [
                {
                    "scenario": name,
                    "identity_number": subject.person.identity_number,
                    "truth": subject.state.value,
                }
                for name, subject in scenarios.items()
            ]
        )
        return EXIT_OK
    for name, subject in scenarios.items():
        print(f"{name:<28} {subject.person.identity_number}  truth: {subject.state.value}")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from gateway.client import CredgateClient, CredgateError, category_from_name, purpose_from_name
    from gateway.render import report_to_json, report_to_text
    from gateway.report_signing import ReportVerificationError

    purpose = purpose_from_name(args.purpose)
    categories = [category_from_name(c) for c in args.category]

    async def run() -> int:
        async with CredgateClient.from_pki_dir(
            args.target, Path(args.pki_dir), args.institution
        ) as client:
            try:
                report = await client.get_repair_status(
                    args.identity_number,
                    purpose=purpose,
                    categories=categories,
                    consent_id=args.consent_id,
                    case_reference=args.case_reference,
                    timeout=args.timeout,
                )
            except CredgateError as error:
                refused = error.code.name in _REFUSALS
                print(
                    f"{'refused' if refused else 'failed'}: {error.code.name} {error.reason}: "
                    f"{error.message}",
                    file=sys.stderr,
                )
                for field, description in error.field_violations:
                    print(f"  {field}: {description}", file=sys.stderr)
                if error.request_id:
                    print(f"  request id: {error.request_id}", file=sys.stderr)
                return EXIT_DENIED if refused else EXIT_FAILURE
            except ReportVerificationError as error:
                print(f"the gateway's answer failed verification: {error}", file=sys.stderr)
                return EXIT_FAILURE
        print(report_to_json(report) if args.json else report_to_text(report))
        return EXIT_OK

    return asyncio.run(run())


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(Path(args.dir), serve_after=args.serve)


def _json_flag(p: argparse.ArgumentParser, what: str = "the result") -> None:
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = command(
        sub,
        "init",
        help="create a dev workspace: PKI, keyring, gateway.toml for the mock sources",
        examples=["credgate init --dir var/demo", "credgate init --dir /tmp/cg --force --json"],
    )
    p.add_argument("--dir", default="var/demo", help="workspace directory (default var/demo)")
    p.add_argument("--listen", default="127.0.0.1:50051", help="the gateway's host:port")
    p.add_argument("--mock-base-port", type=int, default=7801, help="first mock source port")
    p.add_argument("--force", action="store_true", help="replace an existing workspace")
    _json_flag(p, "the paths written")
    p.set_defaults(func=cmd_init)

    pki = command(
        sub,
        "pki",
        help="development certificate authority: CA, certificates, revocation",
        examples=[
            "credgate pki init --dir var/demo/pki",
            "credgate pki issue --dir var/demo/pki --institution bank-futian "
            "--role financial_institution",
            "credgate pki revoke --dir var/demo/pki --institution bank-futian",
        ],
    ).add_subparsers(dest="pki_command", required=True, metavar="COMMAND")
    p = command(
        pki,
        "init",
        help="create a CA, its (empty) CRL, a server certificate and the dev institutions",
        examples=["credgate pki init --dir var/demo/pki", "credgate pki init --dir pki --force"],
    )
    p.add_argument("--dir", required=True, help="directory to write (created if missing)")
    p.add_argument("--force", action="store_true", help="replace an existing CA")
    _json_flag(p, "the files written")
    p.set_defaults(func=cmd_pki_init)
    p = command(
        pki,
        "issue",
        help="issue one more institution certificate",
        examples=[
            "credgate pki issue --dir var/demo/pki --institution bank-futian "
            "--role financial_institution --name 'Futian Bank'",
            "credgate pki issue --dir var/demo/pki --institution probe --role data_provider",
        ],
    )
    p.add_argument("--dir", required=True, help="PKI directory holding ca.pem and ca.key")
    p.add_argument("--institution", required=True, help="institution id (the URI SAN)")
    p.add_argument("--role", required=True, help="e.g. financial_institution, judicial_organ")
    p.add_argument("--name", default="", help="display name (the certificate's O)")
    p.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    p.add_argument("--force", action="store_true", help="replace an existing certificate")
    _json_flag(p, "the files written")
    p.set_defaults(func=cmd_pki_issue)
    p = command(
        pki,
        "revoke",
        help="revoke a certificate: add it to the CA's crl.pem (gateways reload it at once)",
        examples=[
            "credgate pki revoke --dir var/demo/pki --institution bank-demo",
            "credgate pki revoke --dir var/demo/pki --cert lost.pem --reason key_compromise",
        ],
    )
    p.add_argument("--dir", required=True, help="PKI directory holding ca.pem, ca.key, crl.pem")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--institution", help="revoke <dir>/<institution>.pem")
    which.add_argument("--cert", help="revoke this PEM certificate file")
    p.add_argument(
        "--reason",
        choices=REVOCATION_REASONS,
        metavar="REASON",
        help="CRL reason code: " + ", ".join(REVOCATION_REASONS),
    )
    p.add_argument(
        "--days", type=int, default=30, help="the CRL's validity (next update) in days (30)"
    )
    _json_flag(p)
    p.set_defaults(func=cmd_pki_revoke)

    keys = command(
        sub,
        "keys",
        help="data-encryption and report-signing keys",
        examples=[
            "credgate keys rotate --config /etc/credgate/gateway.toml",
            "credgate keys rotate-signing --config /etc/credgate/gateway.toml",
        ],
    ).add_subparsers(dest="keys_command", required=True, metavar="COMMAND")
    p = command(
        keys,
        "init",
        help="create a keyring file (data keys and the subject-token key)",
        examples=["credgate keys init --path /etc/credgate/keyring.json"],
    )
    p.add_argument("--path", required=True, help="keyring file to create")
    _json_flag(p)
    p.set_defaults(func=cmd_keys_init)
    from gateway.progress import add_progress_argument

    p = command(
        keys,
        "rotate",
        help="new primary data key; re-encrypt every record under it (one node)",
        examples=[
            "credgate keys rotate --config var/demo/gateway.toml",
            "credgate keys rotate --config /etc/credgate/gateway.toml --progress --json",
        ],
        description="Add a new primary data key and re-encrypt every record under it, in one "
        "go. With several replicas use keys add, promote and reencrypt instead, so every "
        "replica can read a key before any writes with it (docs/deployment.md).",
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    add_progress_argument(p)
    _json_flag(p)
    p.set_defaults(func=cmd_keys_rotate)
    p = command(
        keys,
        "add",
        help="add a data key to the keyring, not yet primary (rotation step 1 of 3)",
        examples=["credgate keys add --config /etc/credgate/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    p.add_argument("--primary", action="store_true", help="make it the primary at once")
    _json_flag(p)
    p.set_defaults(func=cmd_keys_add)
    p = command(
        keys,
        "promote",
        help="make a data key the primary (rotation step 2 of 3)",
        examples=["credgate keys promote --config /etc/credgate/gateway.toml dek_0123456789ab"],
    )
    p.add_argument("key_id", help="a data key id in the keyring (from credgate keys add)")
    p.add_argument("--config", required=True, help="the gateway's config file")
    _json_flag(p)
    p.set_defaults(func=cmd_keys_promote)
    p = command(
        keys,
        "reencrypt",
        help="re-encrypt every record under the primary data key (rotation step 3 of 3)",
        examples=["credgate keys reencrypt --config /etc/credgate/gateway.toml --progress"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    add_progress_argument(p)
    _json_flag(p)
    p.set_defaults(func=cmd_keys_reencrypt)
    p = command(
        keys,
        "rotate-signing",
        help="new report-signing key (old public keys stay published); creates the first",
        examples=["credgate keys rotate-signing --config var/demo/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    _json_flag(p)
    p.set_defaults(func=cmd_keys_rotate_signing)

    db = command(
        sub,
        "db",
        help="database schema (Alembic migrations)",
        examples=[
            "credgate db upgrade --config /etc/credgate/gateway.toml",
            "credgate db status --config /etc/credgate/gateway.toml",
        ],
    ).add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    p = command(
        db,
        "upgrade",
        help="migrate the database to the latest schema (safe with replicas running)",
        examples=["credgate db upgrade --config /etc/credgate/gateway.toml"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    _json_flag(p)
    p.set_defaults(func=cmd_db_upgrade)
    p = command(
        db,
        "status",
        help="the database's schema revision; exit 1 if it is behind this code",
        examples=["credgate db status --config /etc/credgate/gateway.toml --json"],
    )
    p.add_argument("--config", required=True, help="the gateway's config file")
    _json_flag(p)
    p.set_defaults(func=cmd_db_status)

    p = command(
        sub,
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

    p = command(
        sub,
        "health",
        help="ask a gateway's gRPC health service over mutual TLS; exit 0 only if SERVING",
        examples=[
            "credgate health --pki-dir var/demo/pki --institution court-demo",
            "credgate health --config /etc/credgate/gateway.toml "
            "--cert /etc/credgate/tls/probe.pem --key /etc/credgate/tls/probe.key",
            "credgate health --target gw1.internal:50051 --ca ca.pem --cert probe.pem "
            "--key probe.key --wait 30",
        ],
    )
    p.add_argument("--config", help="take the target (from listen) and the CA from this config")
    p.add_argument("--target", help="host:port (default: from --config, else 127.0.0.1:50051)")
    p.add_argument("--pki-dir", help="a dev PKI directory: ca.pem and <institution>.pem/.key")
    p.add_argument("--institution", default="court-demo", help="whose certificate (--pki-dir)")
    p.add_argument("--ca", help="CA bundle the server certificate chains to")
    p.add_argument(
        "--cert",
        default=os.environ.get("CREDGATE_HEALTH_CERT"),
        help="probe client certificate (env CREDGATE_HEALTH_CERT)",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("CREDGATE_HEALTH_KEY"),
        help="its private key (env CREDGATE_HEALTH_KEY)",
    )
    p.add_argument(
        "--server-name",
        default=os.environ.get("CREDGATE_HEALTH_SERVER_NAME", ""),
        help="name to verify the server certificate against, if not the target host "
        "(env CREDGATE_HEALTH_SERVER_NAME)",
    )
    p.add_argument("--service", default="", help="one service's status (default: the server)")
    p.add_argument("--insecure", action="store_true", help="plaintext (an --insecure-dev gateway)")
    p.add_argument("--timeout", type=float, default=3.0, help="seconds per check (default 3)")
    p.add_argument(
        "--wait", type=float, default=0.0, help="keep asking up to this many seconds for SERVING"
    )
    _json_flag(p, "the status")
    p.set_defaults(func=cmd_health)

    p = command(
        sub,
        "mocks",
        help="run every mock source on loopback (or push provider update streams)",
        examples=[
            "credgate mocks",
            "credgate mocks --fault bank-qianhai:latency_ms=300,error_rate=0.1",
            "credgate mocks --push 127.0.0.1:50051 --pki-dir var/demo/pki",
        ],
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    p.add_argument("--base-port", type=int, default=7801, help="first source port (7801)")
    p.add_argument("--control-port", type=int, default=7900, help="fault control port (7900)")
    p.add_argument("--size", type=int, default=10_000, help="population size")
    p.add_argument("--seed", type=int, default=20210301, help="population seed")
    p.add_argument(
        "--push",
        metavar="GATEWAY",
        default="",
        help="instead of serving, push the scripted provider update streams to a gateway",
    )
    p.add_argument("--pki-dir", default="var/demo/pki", help="provider certificates (--push)")
    p.add_argument(
        "--resolve-lag",
        action="store_true",
        help="(--push) end with the registry catching up, clearing the lag contradiction",
    )
    p.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="SOURCE:name=value,...",
        help="initial fault settings",
    )
    p.set_defaults(func=cmd_mocks)

    p = command(
        sub,
        "scenarios",
        help="list the named scenario subjects of the mock world",
        examples=["credgate scenarios", "credgate scenarios --json"],
    )
    _json_flag(p, "the list")
    p.set_defaults(func=cmd_scenarios)

    p = command(
        sub,
        "query",
        help="ask the gateway for a subject's repair status (exit 3 if refused)",
        examples=[
            "credgate query 440304198511030421 --purpose judicial_investigation "
            "--case-reference '(2026)粤03执1号'",
            "credgate query 440304198511030421 --purpose credit_application_review "
            "--institution bank-demo --consent-id cg_... --json",
        ],
    )
    p.add_argument("identity_number", help="18-character resident identity number")
    p.add_argument(
        "--purpose", required=True, help="e.g. judicial_investigation, credit_application_review"
    )
    p.add_argument(
        "--category",
        action="append",
        default=[],
        help="data category wanted (repeatable); default: all the purpose allows",
    )
    p.add_argument("--consent-id", default="", help="the subject's consent grant, if needed")
    p.add_argument("--case-reference", default="", help="case reference, for investigations")
    p.add_argument("--target", default="127.0.0.1:50051", help="gateway host:port")
    p.add_argument("--pki-dir", default="var/demo/pki", help="directory of certificates")
    p.add_argument("--institution", default="court-demo", help="whose certificate to use")
    p.add_argument("--timeout", type=float, default=10.0, help="deadline in seconds")
    _json_flag(p, "the report")
    p.set_defaults(func=cmd_query)

    p = command(
        sub,
        "demo",
        help="mock sources + gateway + sample queries, end to end",
        examples=["credgate demo", "credgate demo --serve"],
    )
    p.add_argument("--dir", default="var/demo", help="workspace directory (default var/demo)")
    p.add_argument("--serve", action="store_true", help="keep running after the sample queries")
    p.set_defaults(func=cmd_demo)
    from bench.cli import register as register_bench  # benchmark suite (docs/benchmarks.md)

    register_bench(sub)
    from audit.cli import add_audit_commands  # credgate audit query|export|... (docs/audit.md)

    add_audit_commands(sub)
    from gateway.workflows.cli import add_workflow_commands  # credgate objections|applications

    add_workflow_commands(sub)
    from gateway.reconciliation.cli import add_reconcile_command  # (docs/sync.md)

    add_reconcile_command(sub)
    # Register further commands above this line: every command's --help gets the exit codes.
    _finish_help(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        # ConfigError is a ValueError: a bad config file is a usage error too.
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
