"""docs/sync.md's onboarding walk, followed out of tree: a tax bureau from certificate to its
first acknowledged update, with nothing but what the page says.

The commands, the ``[[providers]]`` entry and the script are taken from the page's marked
blocks (``<!-- walk:NAME -->``), so the page cannot drift from this test. They run in a
directory outside the repository, as subprocesses of the installed ``credgate`` (the project
venv's ``credgate`` and ``python``: the script imports only credgate's public client side),
against a real ``credgate serve`` this test starts with the page's entry appended to its
configuration. Then the facts are read back through the gateway (``credgate query``, the
page's last step) and from its database.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from credgate.core.storage.database import Database
from credgate.gateway.protection.keyring import Keyring
from tests.fixtures.pki import DevPki
from tests.sync_process import GatewayProcess, toml_document
from tests.sync_support import ensure_provider_certs, index_state, sync_document

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "sync.md"
BLOCK = re.compile(
    r"<!-- walk:(?P<name>[\w-]+)(?: (?P<file>\S+))? -->\n```(?P<lang>\w+)\n(?P<body>.*?)```", re.S
)
DOC_TARGET = "127.0.0.1:50051"
TAX_SOURCE = "tax-shenzhen"
TAXPAYER = "440304198001010017"


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    file: str | None


def walk_blocks() -> dict[str, Block]:
    """The page's marked blocks, by name."""
    text = DOC.read_text(encoding="utf-8")
    return {m["name"]: Block(m["lang"], m["body"], m["file"]) for m in BLOCK.finditer(text)}


@dataclass
class Shell:
    """Runs the page's shell lines in the bureau's directory, against the test's gateway."""

    cwd: Path
    target: str = DOC_TARGET

    def run(self, script: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
        env.pop("PYTHONPATH", None)  # the installed credgate only, never the checkout
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
        return subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace(DOC_TARGET, self.target)],
            cwd=self.cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, script: str) -> str:
        done = self.run(script)
        assert done.returncode == 0, f"{script}\nstdout: {done.stdout}\nstderr: {done.stderr}"
        return done.stdout


def test_the_walk_is_complete_and_in_order() -> None:
    """Every step the test follows is on the page, in the order a provider meets them."""
    text = DOC.read_text(encoding="utf-8")
    names = [m["name"] for m in BLOCK.finditer(text)]
    assert names == [
        "certificate", "signing-key", "register", "script", "first-push", "next-push", "query"
    ]  # fmt: skip
    blocks = walk_blocks()
    assert blocks["script"].file == "tax_bureau_push.py"
    assert blocks["script"].lang == "python"
    assert "credgate.gateway" not in blocks["script"].body  # the client side only
    assert "tests" not in blocks["script"].body


async def test_a_tax_bureau_onboards_from_the_docs_alone(
    dev_pki: DevPki, tmp_path: Path, database_url: str
) -> None:
    blocks = walk_blocks()
    bureau = tmp_path / "bureau"
    assert not bureau.resolve().is_relative_to(REPO)  # out of tree
    shutil.copytree(dev_pki.paths.directory, bureau / "var" / "demo" / "pki")
    shell = Shell(bureau)

    # 1-2: the certificate, then the signing key (the block prints the public half).
    shell.ok(blocks["certificate"].body)
    assert (bureau / "var/demo/pki/provider-tax-shenzhen.pem").exists()
    public_key = shell.ok(blocks["signing-key"].body).strip().splitlines()[-1]

    # 3: the operator pastes the page's entry, with that line, and (re)starts the gateway.
    entry = blocks["register"].body.replace("<the line step 2 printed>", public_key)
    assert tomllib.loads(entry)["providers"][0]["public_key"] == public_key
    ensure_provider_certs(dev_pki)
    gateway_dir = tmp_path / "gateway"
    gateway_dir.mkdir()
    config = gateway_dir / "gateway.toml"
    document = toml_document(sync_document(dev_pki, gateway_dir, database_url))
    config.write_text(document + "\n" + entry, encoding="utf-8")
    gateway = GatewayProcess(config, gateway_dir / "gateway.log")
    await gateway.start()
    try:
        shell.target = f"127.0.0.1:{gateway.port}"
        # 4: the script, written where the bureau keeps it.
        script = blocks["script"]
        assert script.file is not None
        (bureau / script.file).write_text(script.body, encoding="utf-8")

        # 5: the first update is acknowledged.
        first = shell.ok(blocks["first-push"].body)
        assert "acknowledged: the gateway holds every update through sequence 1" in first

        # 6: only the next update, then the same again, then numbers that do not fit.
        next_push = blocks["next-push"].body
        assert "through sequence 2" in shell.ok(next_push)
        assert "already held it: nothing sent" in shell.ok(next_push)
        other = shell.run(next_push.replace("T16:30:00", "T17:45:00"))
        ahead = shell.run(next_push.replace("--sequence 2", "--sequence 4"))
        behind = shell.run(next_push.replace("--sequence 2", "--sequence 1"))

        # 7: the facts, through the gateway.
        answer = json.loads(shell.ok(blocks["query"].body))
    finally:
        await gateway.stop()

    text = DOC.read_text(encoding="utf-8")
    assert other.returncode == 1
    assert (
        "not pushed: AckMismatchError: the gateway resumes after sequence 2, but applied "
        "another update under it" in other.stderr
    )
    assert ahead.returncode == 1
    assert "not pushed: SequenceGapError" in ahead.stderr
    assert "(expected 3, got 4)" in ahead.stderr
    assert "(expected 3, got 4)" in text  # what the page says it prints
    assert behind.returncode == 1
    assert "AckMismatchError" in behind.stderr
    assert "(expected 1, got 2)" in behind.stderr
    assert "(expected 1, got 2)" in text

    report = answer.get("report", answer)
    tax = [s for s in report["sources"] if s["sourceId"] == TAX_SOURCE]
    assert len(tax) == 1, report
    (record,) = tax[0]["records"]
    assert record["kind"] == "RECORD_KIND_TAX_ARREARS"
    assert record["resolvedOn"] == {"year": 2026, "month": 6, "day": 30}
    assert tax[0]["provenance"]["signature"] == "SIGNATURE_STATUS_VERIFIED"

    database = Database.from_url(database_url)
    try:
        state = await index_state(database, Keyring.load(gateway_dir / "keyring.json"), TAX_SOURCE)
    finally:
        await database.dispose()
    assert state.cursor == 2
    assert state.journal == {"APPLIED": 2}  # the re-run and the refused numbers sent nothing
    assert len(state.facts) == 1
