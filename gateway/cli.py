"""The ``credgate`` command line: set up, run, and query the gateway and the mock sources."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DENIED = 3


def _log_level(verbose: bool) -> int:
    return logging.DEBUG if verbose else logging.INFO


def _setup_logging(verbose: bool, log_format: str = "text", service_name: str = "credgate") -> None:
    """Logging for this process: ``text`` for a terminal, ``json`` (``[telemetry] log_format``)
    for a log pipeline; both carry trace and request ids and mask identity numbers."""
    from gateway.telemetry.logs import configure_logging

    configure_logging(log_format, level=_log_level(verbose), service_name=service_name)


def cmd_init(args: argparse.Namespace) -> int:
    from gateway.workspace import init_workspace

    workspace = init_workspace(
        Path(args.dir), listen=args.listen, mock_base_port=args.mock_base_port, force=args.force
    )
    print(f"initialized {workspace.directory}: config {workspace.config_path}")
    return EXIT_OK


def cmd_pki_init(args: argparse.Namespace) -> int:
    from gateway.pki import write_dev_pki

    paths = write_dev_pki(Path(args.dir), force=args.force)
    print(f"dev CA and certificates written to {paths.directory}")
    for institution_id in paths.institutions:
        print(f"  {institution_id}")
    return EXIT_OK


def cmd_pki_issue(args: argparse.Namespace) -> int:
    from gateway.institution import Institution, role_from_name
    from gateway.pki import add_institution

    institution = Institution(args.institution, role_from_name(args.role), args.name or "")
    paths = add_institution(Path(args.dir), institution, valid_days=args.days, force=args.force)
    print(f"issued {paths.cert} and {paths.key}")
    return EXIT_OK


def cmd_keys_init(args: argparse.Namespace) -> int:
    from gateway.protection.keyring import Keyring

    keyring = Keyring.generate(Path(args.path))
    print(f"keyring written to {keyring.path} (primary data key {keyring.primary_key_id})")
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.keys import rotate_keys

    key_id, count = asyncio.run(rotate_keys(load_config(Path(args.config))))
    print(f"new primary data key {key_id}; re-encrypted {count} records")
    return EXIT_OK


def cmd_keys_rotate_signing(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.signing_keys import FILE_NAME, rotate_signing_key

    config = load_config(Path(args.config))
    key_id = rotate_signing_key(config.storage.data_dir / FILE_NAME)
    print(f"new report-signing key {key_id}; old keys stay published for verification")
    return EXIT_OK


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from gateway.config import load_config
    from gateway.storage.migrate import current_revision, upgrade_to_head

    url = load_config(Path(args.config)).storage.url
    upgrade_to_head(url)
    print(f"database at revision {current_revision(url)}")
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import dataclasses

    from gateway.app import serve
    from gateway.config import load_config

    config = load_config(Path(args.config))
    _setup_logging(args.verbose, config.telemetry.log_format, config.telemetry.service_name)
    if args.insecure_dev:
        config = dataclasses.replace(
            config, gateway=dataclasses.replace(config.gateway, insecure_dev=True)
        )
    asyncio.run(serve(config))
    return EXIT_OK


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


def cmd_scenarios(_: argparse.Namespace) -> int:
    from adapters.mocks.population import build_population

    for name, subject in build_population(size=0).scenarios.items():
        print(f"{name:<28} {subject.person.identity_number}  truth: {subject.state.value}")
    return EXIT_OK


def cmd_query(args: argparse.Namespace) -> int:
    from gateway.client import CredgateClient, CredgateError, category_from_name, purpose_from_name
    from gateway.render import report_to_json, report_to_text
    from gateway.report_signing import ReportVerificationError

    async def run() -> int:
        async with CredgateClient.from_pki_dir(
            args.target, Path(args.pki_dir), args.institution
        ) as client:
            try:
                report = await client.get_repair_status(
                    args.identity_number,
                    purpose=purpose_from_name(args.purpose),
                    categories=[category_from_name(c) for c in args.category],
                    consent_id=args.consent_id,
                    case_reference=args.case_reference,
                    timeout=args.timeout,
                )
            except CredgateError as error:
                print(
                    f"refused: {error.code.name} {error.reason}: {error.message}", file=sys.stderr
                )
                for field, description in error.field_violations:
                    print(f"  {field}: {description}", file=sys.stderr)
                return EXIT_DENIED
            except ReportVerificationError as error:
                print(f"the gateway's answer failed verification: {error}", file=sys.stderr)
                return EXIT_FAILURE
        print(report_to_json(report) if args.json else report_to_text(report))
        return EXIT_OK

    return asyncio.run(run())


def cmd_demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    return run_demo(Path(args.dir), serve_after=args.serve)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="credgate",
        description="Federated gateway for personal-bankruptcy credit-repair status.",
        epilog="Example: credgate demo   |   credgate query 44030519780512031X "
        "--purpose judicial_investigation --case-reference '(2026)粤03执1号'",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("init", help="create a dev workspace: PKI, keyring, gateway.toml")
    p.add_argument("--dir", default="var/demo")
    p.add_argument("--listen", default="127.0.0.1:50051")
    p.add_argument("--mock-base-port", type=int, default=7801)
    p.add_argument("--force", action="store_true", help="replace an existing workspace")
    p.set_defaults(func=cmd_init)

    pki = sub.add_parser("pki", help="development certificate authority").add_subparsers(
        dest="pki_command", required=True
    )
    p = pki.add_parser("init", help="create a CA, a server cert and the dev institutions")
    p.add_argument("--dir", required=True)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_pki_init)
    p = pki.add_parser(
        "issue",
        help="issue one more institution certificate",
        epilog="Example: credgate pki issue --dir var/demo/pki "
        "--institution bank-futian --role financial_institution",
    )
    p.add_argument("--dir", required=True)
    p.add_argument("--institution", required=True)
    p.add_argument("--role", required=True)
    p.add_argument("--name", default="")
    p.add_argument("--days", type=int, default=365)
    p.add_argument("--force", action="store_true")
    p.set_defaults(func=cmd_pki_issue)

    keys = sub.add_parser("keys", help="encryption keys").add_subparsers(
        dest="keys_command", required=True
    )
    p = keys.add_parser("init", help="create a keyring file")
    p.add_argument("--path", required=True)
    p.set_defaults(func=cmd_keys_init)
    p = keys.add_parser("rotate", help="new primary data key; re-encrypt every record")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_keys_rotate)
    p = keys.add_parser("rotate-signing", help="new report-signing key (old ones stay published)")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_keys_rotate_signing)

    db = sub.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True
    )
    p = db.add_parser("upgrade", help="migrate the database to the latest schema")
    p.add_argument("--config", required=True)
    p.set_defaults(func=cmd_db_upgrade)

    p = sub.add_parser("serve", help="run the gateway")
    p.add_argument("--config", required=True)
    p.add_argument(
        "--insecure-dev",
        action="store_true",
        help="plaintext, no client certificates: local development only",
    )
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser(
        "mocks",
        help="run every mock source on loopback",
        epilog="Example: credgate mocks --fault bank-qianhai:latency_ms=300",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--base-port", type=int, default=7801)
    p.add_argument("--control-port", type=int, default=7900)
    p.add_argument("--size", type=int, default=10_000, help="population size")
    p.add_argument("--seed", type=int, default=20210301)
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

    p = sub.add_parser("scenarios", help="list the named scenario subjects of the mock world")
    p.set_defaults(func=cmd_scenarios)

    p = sub.add_parser("query", help="ask the gateway for a subject's repair status")
    p.add_argument("identity_number")
    p.add_argument(
        "--purpose", required=True, help="e.g. judicial_investigation, credit_application_review"
    )
    p.add_argument(
        "--category",
        action="append",
        default=[],
        help="data category wanted (repeatable); default: all the purpose allows",
    )
    p.add_argument("--consent-id", default="")
    p.add_argument("--case-reference", default="")
    p.add_argument("--target", default="127.0.0.1:50051")
    p.add_argument("--pki-dir", default="var/demo/pki")
    p.add_argument("--institution", default="court-demo", help="whose certificate to use")
    p.add_argument("--timeout", type=float, default=10.0)
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("demo", help="mock sources + gateway + sample queries, end to end")
    p.add_argument("--dir", default="var/demo")
    p.add_argument("--serve", action="store_true", help="keep running after the sample queries")
    p.set_defaults(func=cmd_demo)
    from bench.cli import register as register_bench  # benchmark suite (docs/benchmarks.md)

    register_bench(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        result: int = args.func(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except (ValueError, FileExistsError, FileNotFoundError) as error:
        print(f"credgate: {error}", file=sys.stderr)
        return EXIT_USAGE
    return result


if __name__ == "__main__":
    sys.exit(main())
