"""``credgate audit ...`` through argparse, as ``gateway/cli.py`` registers it, on both backends."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path

import pytest
from sqlalchemy import text

from credgate.audit import ALLOWED, DENIED, AuditLog
from credgate.audit.log_signing_key import load_or_create_signer, public_key_path
from credgate.core.storage.database import Database
from credgate.gateway.commands.audit import register
from tests.test_audit_log import make_entry


def run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="credgate")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


@pytest.fixture
def config(migrated_database_url: str, tmp_path: Path) -> Path:
    """A gateway config naming the database and a data dir holding a log of 25 entries."""
    data_dir = tmp_path / "data"
    path = tmp_path / "gateway.toml"
    path.write_text(
        f'[storage]\nurl = "{migrated_database_url}"\ndata_dir = "{data_dir}"\n', encoding="utf-8"
    )

    async def seed() -> None:
        database = Database.from_url(migrated_database_url)
        log = AuditLog(database, load_or_create_signer(data_dir / "audit-log.key"))
        for i in range(25):
            await log.append(make_entry(i, outcome=DENIED if i % 5 == 0 else ALLOWED))
        await database.dispose()

    asyncio.run(seed())
    return path


def test_query_prints_a_table_or_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["audit", "query", "--config", str(config), "--outcome", "denied"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [
        "INDEX", "TIME", "INSTITUTION", "ROLE", "PURPOSE", "OUTCOME", "REASON", "SUBJECT",
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[1:]] == ["0", "5", "10", "15", "20"]
    assert "CONSENT_MISSING" in lines[1]

    assert run(["audit", "query", "--config", str(config), "--json", "--limit", "3"]) == 0
    entries = json.loads(capsys.readouterr().out)  # one JSON document, not JSON Lines
    assert [e.get("index", "0") for e in entries] == ["0", "1", "2"]


def test_export_verifies_offline_and_detects_an_edited_copy(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    exported = tmp_path / "export.jsonl"
    assert run(["audit", "export", "--config", str(config), "--output", str(exported)]) == 0
    assert capsys.readouterr().err == ""  # stderr is no terminal: no progress unless asked
    argv = ["audit", "export", "--config", str(config), "--output", str(exported), "--progress"]
    assert run(argv) == 0
    err = capsys.readouterr().err
    assert "\r" not in err  # asked for off a terminal: plain lines, no bar drawn in place
    assert err.splitlines()[-1].startswith("export [########################] 100% 25/25 entries")
    key = str(public_key_path(tmp_path / "data" / "audit-log.key"))
    verify = ["audit", "verify", "--export", str(exported), "--trusted-key", key]
    assert run(verify) == 0
    assert "25 entries, OK" in capsys.readouterr().out

    lines = exported.read_text(encoding="utf-8").splitlines()
    original = list(lines)
    # Only the readable half edited: a denial shown as allowed. The hashed bytes still match
    # the signed root, so a bytes-only check said OK.
    record = json.loads(lines[6])
    assert record["entry"]["outcome"] == "AUDIT_OUTCOME_DENIED"
    record["entry"]["outcome"] = "AUDIT_OUTCOME_ALLOWED"
    record["entry"]["reason"] = "ALLOWED"
    lines[6] = json.dumps(record, ensure_ascii=False)
    exported.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(verify) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "entry 5 (line 7): the readable entry differs from its hashed bytes in outcome, " in out

    lines = list(original)
    record = json.loads(lines[7])
    record["entry_bytes"] = record["entry_bytes"][:-4] + "AAAA"
    lines[7] = json.dumps(record)
    exported.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert run(verify) == 1
    assert "FAILED" in capsys.readouterr().out


def test_verify_reports_tampering_with_exit_status_1(
    config: Path, migrated_database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["audit", "verify", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("OK: 25 entries, 25 authenticated")
    assert captured.err == ""  # no progress off a terminal unless asked
    assert run(["audit", "verify", "--config", str(config), "--progress"]) == 0
    err = capsys.readouterr().err
    assert "\r" not in err
    assert err.splitlines()[-1].startswith("verify [########################] 100% 25/25 entries")
    assert run(["audit", "verify", "--config", str(config), "--thorough"]) == 0
    capsys.readouterr()

    async def tamper() -> None:
        database = Database.from_url(migrated_database_url)
        async with database.write() as session:
            await session.execute(text("DELETE FROM audit_entries WHERE entry_index = 12"))
        await database.dispose()

    asyncio.run(tamper())
    assert run(["audit", "verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("TAMPERING DETECTED")
    assert "DELETED" in out
    assert run(["audit", "verify", "--config", str(config), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    assert report["findings"][0] == {
        "kind": "DELETED",
        "index": 12,
        "detail": "entry is missing from the log",
    }


def test_report_and_checkpoint(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["audit", "report", "--config", str(config), "--since", "2026-03-01", "--until"]
    assert run([*argv, "2026-03-03"]) == 0
    assert "0 finding(s)" in capsys.readouterr().out
    assert run([*argv, "2026-03-03", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert run(["audit", "checkpoint", "--config", str(config)]) == 0
    captured = capsys.readouterr()
    assert captured.out.split("\n")[1] == "25"
    assert captured.err.startswith("verifier key: credgate.local/audit-")
    assert run(["audit", "checkpoint", "--config", str(config), "--json"]) == 0
    captured = capsys.readouterr()
    document = json.loads(captured.out)
    assert document["size"] == 25
    assert document["origin"] == document["note"].split("\n")[0]
    assert document["root_hash"] == document["note"].split("\n")[2]
    assert document["verifier_key"].startswith("credgate.local/audit-")
    assert captured.err == ""  # the key is in the document; nothing else to say
