"""Start-up tells the operator what to do, with one exit-code rule (issue #18, item 5).

Every configuration or secret problem exits 2 ("fix the configuration"; the systemd unit's
``RestartPreventExitStatus=2`` then stops a restart loop into the same mistake), names the file
or setting, and never starts serving: a missing or world-readable keyring (it exited 1), a
world-readable TLS server key (it was accepted), a database migrated by a newer release (``db
status`` advised ``db upgrade``, the wrong way). Each case runs the real ``credgate`` process
on a fresh workspace.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from credgate.gateway.cli import main

EXIT_USAGE = 2


def _credgate(*argv: str) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("credgate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    return subprocess.run(
        [*command, *argv], capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.fixture
def workspace(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    directory = tmp_path / "ws"
    assert main(["init", "--dir", str(directory)]) == 0
    capsys.readouterr()
    return directory


def _serve(workspace: Path) -> subprocess.CompletedProcess[str]:
    return _credgate("serve", "--config", str(workspace / "gateway.toml"))


def _remove_keyring(workspace: Path) -> str:
    (workspace / "keyring.json").unlink()
    return "keyring"


def _expose_keyring(workspace: Path) -> str:
    (workspace / "keyring.json").chmod(0o644)
    return "keyring"


def _expose_tls_key(workspace: Path) -> str:
    (workspace / "pki" / "server.key").chmod(0o640)
    return "tls.key"


def _remove_tls_key(workspace: Path) -> str:
    (workspace / "pki" / "server.key").unlink()
    return "tls.key"


def _newer_database(workspace: Path) -> str:
    assert main(["db", "upgrade", "--config", str(workspace / "gateway.toml")]) == 0
    database = sqlite3.connect(workspace / "credgate.db")
    with database:
        database.execute("UPDATE alembic_version SET version_num = 'ffff_from_the_future'")
    database.close()
    return "newer than this release"


@pytest.mark.parametrize(
    "break_it",
    [_remove_keyring, _expose_keyring, _expose_tls_key, _remove_tls_key, _newer_database],
    ids=lambda f: f.__name__.lstrip("_"),
)
def test_every_configuration_problem_exits_2_naming_what_to_fix(
    workspace: Path, break_it: Callable[[Path], str], capsys: pytest.CaptureFixture[str]
) -> None:
    named = break_it(workspace)
    capsys.readouterr()
    result = _serve(workspace)
    assert result.returncode == EXIT_USAGE, (result.returncode, result.stderr[-2000:])
    assert named in result.stderr
    assert "Traceback" not in result.stderr
    assert "gateway listening on" not in result.stderr + result.stdout


def test_db_status_says_a_newer_database_needs_a_newer_release_not_an_upgrade(
    workspace: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(workspace / "gateway.toml")
    _newer_database(workspace)
    capsys.readouterr()
    assert main(["db", "status", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "newer than this release" in out
    assert "db upgrade" not in out
    assert main(["db", "status", "--config", config, "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["newer"] is True
    assert main(["db", "upgrade", "--config", config]) == EXIT_USAGE
    assert "upgrade credgate, or restore a backup" in capsys.readouterr().err


_ABANDONING_SERVE = """
import asyncio, sys
from credgate.gateway import server
from credgate.gateway.config import ConfigError

async def serve(fail: bool) -> None:
    # A step of the stop that overruns its bound: the stop abandons it (and its thread).
    await server.bounded_step("a stuck step", asyncio.sleep(30), seconds=0.01)
    if fail:
        raise ConfigError("cannot read tls.key")

try:
    server.run_until_stopped(serve(sys.argv[1] == "fail"))
except ConfigError:
    server.exit_now_if_failed_serve_abandoned_work(2)
sys.exit(99)  # not reached: either way the process ends at once
"""


@pytest.mark.parametrize(("how", "status"), [("fail", EXIT_USAGE), ("stop", 0)])
def test_a_stop_that_abandoned_work_keeps_the_exit_status(how: str, status: int) -> None:
    """A start that failed and abandoned a step on its way out once exited 0, as a clean stop
    does: a missing TLS key looked like success to a supervisor."""
    done = subprocess.run(
        [sys.executable, "-c", _ABANDONING_SERVE, how],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == status, done.stderr[-2000:]
    assert "stopped with work abandoned" in done.stderr
