"""``credgate audit query|export|verify|witnesses|report|checkpoint|acknowledge-rollback``: the
log for operators and regulators.

These commands work on the database directly (the gateway's config names it and the data
directory holding the log key), so they also serve when the gateway is down; regulators
elsewhere use the RegulatorService. ``gateway/cli.py`` registers them with one call::

    audit.register(sub)  # sub = the top-level subparsers

Every command prints a readable table, or JSON with ``--json``; ``export`` and ``verify``
report progress on stderr (``gateway.progress``: only on a terminal unless ``--progress``).
``verify`` exits 1 when it finds tampering, and can also check an export file offline
(``--export FILE``) with only the log's public key.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import datetime as dt
import json
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TextIO

from google.protobuf import json_format

from credgate.api.credit_repair.v1 import audit_pb2, regulator_service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.checkpoints import make_checkpoint
from credgate.audit.log_signing_key import (
    KEY_FILE_NAME,
    load_or_create_signer,
    load_signer,
    load_verifier,
)
from credgate.audit.note import NoteSigner, NoteVerifier
from credgate.audit.offline import check_export, export_lines
from credgate.audit.queries import EntryFilter, iter_entries, list_entries
from credgate.audit.signed_size import SignedSizeGuard, state_path
from credgate.audit.tamper_findings import VerificationResult
from credgate.audit.unusual import Window, unusual_access_report
from credgate.audit.verify import verify_log
from credgate.core.storage.database import Database
from credgate.gateway.progress import Progress, add_progress_argument
from credgate.gateway.witness.anchor import (
    WitnessCheckFailed,
    describe_witnessed,
    witness_endpoints,
    witnessed_checkpoints,
)
from credgate.gateway.witness.status import status_json, witness_statuses

EXIT_OK, EXIT_TAMPERED = 0, 1
_OUTCOMES = {"allowed": audit_pb2.AUDIT_OUTCOME_ALLOWED, "denied": audit_pb2.AUDIT_OUTCOME_DENIED}


def _time(text: str) -> dt.datetime:
    value = dt.datetime.fromisoformat(text)
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _target(args: argparse.Namespace) -> tuple[str, Path]:
    """The database URL and the log key path, from --config (or --database-url / --key)."""
    url, key = args.database_url, args.key
    if args.config:
        from credgate.gateway.config import load_config

        config = load_config(Path(args.config))
        url = url or config.storage.url
        key = key or str(config.storage.data_dir / KEY_FILE_NAME)
    if not url or not key:
        raise ValueError("give --config, or --database-url and --key")
    return url, Path(key)


def _run(url: str, body: Callable[[Database], Awaitable[int]]) -> int:
    """Run ``body`` on a database opened from ``url``, disposing of it afterwards."""

    async def main() -> int:
        database = Database.from_url(url)
        try:
            return await body(database)
        finally:
            await database.dispose()

    return asyncio.run(main())


def _filter(args: argparse.Namespace) -> EntryFilter:
    return EntryFilter(
        institution_id=args.institution or "",
        subject_token=args.subject_token or "",
        purpose=vocab.Purpose.Value("PURPOSE_" + args.purpose.upper()) if args.purpose else 0,
        outcome=_OUTCOMES[args.outcome] if args.outcome else 0,
        start_time=_time(args.since) if args.since else None,
        end_time=_time(args.until) if args.until else None,
    )


def _label(enum: Any, value: int, prefix: str) -> str:
    name: str = enum.Name(value) if value in enum.values() else str(value)
    return name.removeprefix(prefix).lower()


def _row(entry: audit_pb2.AuditEntry) -> list[str]:
    return [
        str(entry.index),
        entry.decision_time.ToDatetime(dt.UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        entry.institution_id,
        _label(vocab.InstitutionRole, entry.role, "INSTITUTION_ROLE_"),
        _label(vocab.Purpose, entry.purpose, "PURPOSE_"),
        _label(audit_pb2.AuditOutcome, entry.outcome, "AUDIT_OUTCOME_"),
        entry.reason,
        entry.subject_token or "-",
    ]


def print_table(header: Sequence[str], rows: Sequence[Sequence[str]], out: TextIO) -> None:
    """Columns padded to their widest cell."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=True)]
    for line in (header, *rows):
        print(
            "  ".join(str(c).ljust(w) for c, w in zip(line, widths, strict=True)).rstrip(), file=out
        )


def _progress(what: str, total: int | None, args: argparse.Namespace) -> Progress:
    """Entries done on stderr: drawn only on a terminal, or as plain lines with --progress."""
    return Progress(what, total, enabled=args.progress, unit="entries")


def cmd_query(args: argparse.Namespace) -> int:
    """``credgate audit query``."""
    url, _ = _target(args)

    async def body(database: Database) -> int:
        records, _resume = await list_entries(database, _filter(args), limit=args.limit)
        if args.json:  # one JSON array, like every --json (export is the JSON Lines format)
            entries = [
                json_format.MessageToDict(record.entry, preserving_proto_field_name=True)
                for record in records
            ]
            print(json.dumps(entries, ensure_ascii=False))
        else:
            header = ["INDEX", "TIME", "INSTITUTION", "ROLE", "PURPOSE", "OUTCOME", "REASON"]
            print_table([*header, "SUBJECT"], [_row(r.entry) for r in records], sys.stdout)
        return EXIT_OK

    return _run(url, body)


def cmd_export(args: argparse.Namespace) -> int:
    """``credgate audit export``: JSON Lines, checkpoint first (see ``audit/offline.py``)."""
    url, key = _target(args)
    signer = load_or_create_signer(key)
    with contextlib.ExitStack() as stack:
        out: TextIO = (
            stack.enter_context(Path(args.output).open("w", encoding="utf-8"))
            if args.output
            else sys.stdout
        )

        async def body(database: Database) -> int:
            signed = await make_checkpoint(database, signer, guard=_guard(key, signer))
            print(next(export_lines(signed, [])), file=out)
            size = signed.checkpoint.tree_size
            with _progress("export", size, args) as progress:
                async for batch in iter_entries(database, _filter(args), below=size):
                    for line in list(export_lines(signed, batch))[1:]:
                        print(line, file=out)
                    progress.advance(len(batch))
            return EXIT_OK

        return _run(url, body)


def _verifiers(args: argparse.Namespace, key: Path | None) -> list[NoteVerifier]:
    """The keys to trust: --trusted-key, else the public half of the local log key."""
    trusted = [load_verifier(text) for text in args.trusted_key]
    if trusted or key is None:
        return trusted
    if not key.exists():
        raise ValueError(f"no log key at {key}; pass --trusted-key")
    return [load_or_create_signer(key).verifier]


def _print_findings(report: VerificationResult, out: TextIO) -> None:
    rows = [
        [str(f.kind), "-" if f.index is None else str(f.index), f.detail] for f in report.findings
    ]
    if rows:
        print_table(["FINDING", "ENTRY", "DETAIL"], rows, out)


def _verify_export(args: argparse.Namespace) -> int:
    lines = Path(args.export).read_text(encoding="utf-8").splitlines()
    check = check_export(lines, _verifiers(args, None))
    if args.json:
        print(json.dumps({"ok": check.ok, "entries": check.entries, "problems": check.problems}))
    else:
        print(f"export {args.export}: {check.entries} entries, {'OK' if check.ok else 'FAILED'}")
        for problem in check.problems:
            print(f"  {problem}")
    return EXIT_OK if check.ok else EXIT_TAMPERED


def cmd_verify(args: argparse.Namespace) -> int:
    """``credgate audit verify``: exit 0 if intact, 1 if tampering was found."""
    if args.export:
        return _verify_export(args)
    url, key = _target(args)
    verifiers = _verifiers(args, key)
    external = [(path, Path(path).read_text(encoding="utf-8")) for path in args.checkpoint]
    witnesses = witness_endpoints(args.witness_key, args.witness_url, args.witness_ca)

    async def body(database: Database) -> int:
        try:
            witnessed = await witnessed_checkpoints(witnesses, verifiers)
        except WitnessCheckFailed as exc:
            print(f"WITNESS CHECK FAILED: {exc}", file=sys.stderr)
            return EXIT_TAMPERED
        external.extend((w.label, w.note) for w in witnessed)
        with _progress("verify", None, args) as progress:
            timed = await verify_log(
                database,
                verifiers,
                external_checkpoints=external,
                progress=progress,
                thorough=args.thorough,
            )
        report = timed.report
        if args.json:
            witness_json = [
                {"witness": w.witness, "url": w.url, "cosigned_size": w.tree_size}
                for w in witnessed
            ]
            print(
                json.dumps(
                    {
                        **report.to_json(),
                        "seconds": round(timed.seconds, 3),
                        "witnesses": witness_json,
                    }
                )
            )
        else:
            state = "OK" if report.ok else "TAMPERING DETECTED"
            print(
                f"{state}: {report.entries} entries, {report.authenticated_size} authenticated, "
                f"{report.checkpoints_valid}/{report.checkpoints_checked} checkpoints valid "
                f"({timed.entries_per_second:,.0f} entries/s)"
            )
            _print_findings(report, sys.stdout)
            for w in witnessed:
                print(describe_witnessed(w, report.entries))
        return EXIT_OK if report.ok else EXIT_TAMPERED

    return _run(url, body)


def cmd_witnesses(args: argparse.Namespace) -> int:
    """``credgate audit witnesses``: each witness's status; exit 1 if any raises an alert."""
    url, _ = _target(args)

    async def body(database: Database) -> int:
        statuses = await witness_statuses(database)
        if args.json:
            print(json.dumps([status_json(s) for s in statuses]))
        else:
            rows = [
                [
                    s.witness,
                    s.outcome,
                    "-" if s.cosigned_size is None else str(s.cosigned_size),
                    str(s.log_size),
                    s.attempted_at.isoformat(),
                    s.alert or "ok",
                ]
                for s in statuses
            ]
            if rows:
                print_table(
                    ["WITNESS", "LAST", "COSIGNED", "LOG", "ATTEMPTED", "ALERT"], rows, sys.stdout
                )
            else:
                print("no witness has been submitted to ([audit] witnesses in the config)")
        return EXIT_TAMPERED if any(s.alert for s in statuses) else EXIT_OK

    return _run(url, body)


def cmd_report(args: argparse.Namespace) -> int:
    """``credgate audit report``: unusual access in a window."""
    url, _ = _target(args)
    end = _time(args.until) if args.until else dt.datetime.now(dt.UTC)
    start = _time(args.since) if args.since else end - dt.timedelta(hours=24)

    async def body(database: Database) -> int:
        window = Window(start, end, args.baseline_windows)
        findings = await unusual_access_report(database, window)
        if args.json:
            items = [
                json_format.MessageToDict(f, preserving_proto_field_name=True) for f in findings
            ]
            print(json.dumps(items, ensure_ascii=False))
            return EXIT_OK
        print(f"unusual access {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC: ", end="")
        print(f"{len(findings)} finding(s)")
        kinds = regulator_service_pb2.UnusualAccessKind
        rows = [
            [f.institution_id, _label(kinds, f.kind, "UNUSUAL_ACCESS_KIND_"), f.explanation]
            for f in findings
        ]
        if rows:
            print_table(["INSTITUTION", "KIND", "EXPLANATION"], rows, sys.stdout)
        return EXIT_OK

    return _run(url, body)


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """``credgate audit checkpoint``: sign one now, print the note (and the verifier key).

    With ``--json``, one object: the checkpoint's fields (root hash in base64, as in the note),
    the signed note verbatim under ``note`` (what ``verify --checkpoint`` takes), and the key."""
    url, key = _target(args)
    signer: NoteSigner = load_or_create_signer(key)

    async def body(database: Database) -> int:
        signed = await make_checkpoint(database, signer, guard=_guard(key, signer))
        verifier_key = signer.verifier.to_vkey()
        if args.json:
            checkpoint = signed.checkpoint
            document = {
                "origin": checkpoint.origin,
                "size": checkpoint.tree_size,
                "root_hash": base64.b64encode(checkpoint.root_hash).decode(),
                "time": checkpoint.time.isoformat() if checkpoint.time else None,
                "note": signed.note,
                "verifier_key": verifier_key,
            }
            print(json.dumps(document, ensure_ascii=False))
            return EXIT_OK
        print(signed.note, end="")
        print(f"verifier key: {verifier_key}", file=sys.stderr)
        return EXIT_OK

    return _run(url, body)


def _guard(key: Path, signer: NoteSigner) -> SignedSizeGuard:
    """The check every signing command makes: nothing is signed over a rolled-back log
    (AuditRollbackError, exit 2), and what is signed is remembered beside the key."""
    return SignedSizeGuard(state_path(key), signer.name)


def cmd_acknowledge_rollback(args: argparse.Namespace) -> int:
    """``credgate audit acknowledge-rollback``: accept the database's head as the new base."""
    from credgate.audit.acknowledge import acknowledge_rollback

    url, key = _target(args)
    signer = load_signer(key)

    async def body(database: Database) -> int:
        result = await acknowledge_rollback(database, signer, state_path(key), dry_run=args.dry_run)
        if args.json:
            print(json.dumps(result.to_json()))
            return EXIT_OK
        if not result.problem:
            print(
                f"nothing to acknowledge: the log ({result.found_size} entries) extends every "
                f"tree this node has signed (record: {state_path(key)})"
            )
            return EXIT_OK
        print(f"found: {result.problem}")
        remembered = "unknown" if result.remembered_size is None else result.remembered_size
        print(f"remembered tree size: {remembered}; found in the database: {result.found_size}")
        if result.entries_lost:
            print(
                f"lost for good: {result.entries_lost} signed entries (indices "
                f"{result.found_size}..{result.found_size + result.entries_lost - 1}); their "
                "decisions are not in this log and only copies held elsewhere show them"
            )
        if not result.recorded:
            print("dry run: nothing recorded; run again without --dry-run to acknowledge")
            return EXIT_OK
        print(
            f"acknowledged: new base {result.found_size} entries; recorded as audit entry "
            f"{result.entry_index} (action ACKNOWLEDGE_AUDIT_ROLLBACK) under checkpoint size "
            f"{result.checkpoint_size}. Re-apply what the restore lost (docs/deployment.md "
            "'Restoring a backup'), then start the gateway again."
        )
        return EXIT_OK

    return _run(url, body)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="gateway config (names the database and data directory)")
    p.add_argument("--database-url", help="database URL instead of --config")
    p.add_argument("--key", help="log key file (default <data_dir>/audit-log.key)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _filters(p: argparse.ArgumentParser) -> None:
    p.add_argument("--institution", help="only this calling institution")
    p.add_argument("--subject-token", help="only this subject (st_...)")
    p.add_argument("--purpose", help="only this purpose, e.g. credit_application_review")
    p.add_argument("--outcome", choices=sorted(_OUTCOMES), help="only allowed or denied")
    p.add_argument("--since", help="only decisions at or after this ISO time (UTC if no zone)")
    p.add_argument("--until", help="only decisions before this ISO time")


def register(subparsers: Any) -> None:
    """Register ``audit`` and its subcommands on the top-level ``add_subparsers()`` object."""
    audit = subparsers.add_parser(
        "audit",
        help="the tamper-evident audit log",
        epilog="examples:\n  credgate audit verify --config var/demo/gateway.toml\n"
        "  credgate audit query --config var/demo/gateway.toml --institution bank-demo "
        "--outcome denied",
    ).add_subparsers(dest="audit_command", required=True)
    p = audit.add_parser(
        "query",
        help="list entries (table or --json)",
        epilog="examples:\n  credgate audit query --config var/demo/gateway.toml "
        "--institution bank-demo --since 2026-01-01 --json",
    )
    _common(p)
    _filters(p)
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_query)
    p = audit.add_parser(
        "export",
        help="write entries as JSON Lines after a fresh checkpoint",
        epilog="examples:\n  credgate audit export --config var/demo/gateway.toml "
        "--since 2026-01-01 --output audit.jsonl",
    )
    _common(p)
    _filters(p)
    p.add_argument("--output", help="file to write (default stdout)")
    add_progress_argument(p)
    p.set_defaults(func=cmd_export)
    p = audit.add_parser(
        "verify",
        help="recompute the log and report any tampering (exit 1)",
        epilog="examples:\n  credgate audit verify --config var/demo/gateway.toml --thorough\n"
        "  credgate audit verify --export audit.jsonl --trusted-key audit-log.pub\n"
        "  credgate audit verify --config var/demo/gateway.toml --witness-key witness.pub "
        "--witness-url https://witness.regulator.example:8443",
    )
    _common(p)
    p.add_argument("--trusted-key", action="append", default=[], help="verifier key or file")
    p.add_argument("--checkpoint", action="append", default=[], help="a checkpoint kept elsewhere")
    p.add_argument(
        "--witness-key",
        action="append",
        default=[],
        help="a witness's cosigner verifier key (or file); with --witness-url, its latest "
        "cosigned checkpoint is fetched and checked against the log",
    )
    p.add_argument(
        "--witness-url", action="append", default=[], help="that witness's base URL (in order)"
    )
    p.add_argument("--witness-ca", help="CA bundle for https witness URLs")
    p.add_argument("--export", help="check an export file offline instead of the database")
    p.add_argument("--thorough", action="store_true", help="also check every tree-head signature")
    add_progress_argument(p)
    p.set_defaults(func=cmd_verify)
    p = audit.add_parser(
        "witnesses",
        help="each witness's last answer and any alert (exit 1 on an alert)",
        epilog="examples:\n  credgate audit witnesses --config var/demo/gateway.toml --json",
    )
    _common(p)
    p.set_defaults(func=cmd_witnesses)
    p = audit.add_parser(
        "report",
        help="unusual access in a window",
        epilog="examples:\n  credgate audit report --config var/demo/gateway.toml "
        "--since 2026-03-01 --until 2026-03-08",
    )
    _common(p)
    p.add_argument("--since", help="window start (default: 24 hours before --until)")
    p.add_argument("--until", help="window end (default: now)")
    p.add_argument("--baseline-windows", type=int, default=7)
    p.set_defaults(func=cmd_report)
    p = audit.add_parser(
        "checkpoint",
        help="sign a checkpoint now and print it",
        epilog="examples:\n  credgate audit checkpoint --config var/demo/gateway.toml",
    )
    _common(p)
    p.set_defaults(func=cmd_checkpoint)
    p = audit.add_parser(
        "acknowledge-rollback",
        help="after restoring a backup: accept the database's log as the new base and say "
        "what was lost (the gateway refuses to sign until then)",
        epilog="examples:\n"
        "  credgate audit acknowledge-rollback --config /etc/credgate/gateway.toml --dry-run\n"
        "  credgate audit acknowledge-rollback --config /etc/credgate/gateway.toml",
    )
    _common(p)
    p.add_argument("--dry-run", action="store_true", help="report what was lost; record nothing")
    p.set_defaults(func=cmd_acknowledge_rollback)
