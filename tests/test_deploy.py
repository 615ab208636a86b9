"""The deployment files stay consistent with the code, since no container can be built here.

deploy/Containerfile must install every package pyproject.toml ships, run the commands the CLI
has, as a non-root user, with the port deploy/gateway.toml listens on; the systemd unit must give
the drain enough time; docs/deployment.md must only name commands that exist.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from credgate.gateway.cli import build_parser, iter_commands
from credgate.gateway.config import load_config

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
CONTAINERFILE = (DEPLOY / "Containerfile").read_text(encoding="utf-8")
UNIT = (DEPLOY / "credgate.service").read_text(encoding="utf-8")
DEPLOYMENT_DOC = (ROOT / "docs" / "deployment.md").read_text(encoding="utf-8")
CONFIG_PATH = "/etc/credgate/gateway.toml"


def _instructions(name: str) -> list[str]:
    """Arguments of every ``NAME ...`` instruction, continuation lines joined."""
    joined = re.sub(r"\\\n\s*", " ", CONTAINERFILE)
    return [line.split(None, 1)[1] for line in joined.splitlines() if line.startswith(name + " ")]


def test_production_config_loads() -> None:
    config = load_config(DEPLOY / "gateway.toml", environ={})
    assert config.storage.url.startswith("postgresql://")
    assert config.tls.revocation_list is not None
    assert config.gateway.listen.endswith(":50051")
    assert config.gateway.drain_delay_seconds > 0
    assert config.telemetry.log_format == "json"


def test_containerfile_copies_every_package_pyproject_ships() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    copied = {args.split()[0] for args in _instructions("COPY") if "--from" not in args}
    assert "pyproject.toml" in copied
    assert find["include"] == ["credgate*"]
    assert "credgate" in copied
    # credgate/ links the folders in: each link's target must be in the image too.
    for link in (ROOT / "credgate").iterdir():
        if link.is_symlink():
            target = (link.parent / link.readlink()).resolve().relative_to(ROOT)
            assert str(target) in copied, f"deploy/Containerfile does not COPY {target}/"


def test_containerfile_base_user_port_health_and_command() -> None:
    bases = _instructions("FROM")
    assert bases
    assert all(base.split()[0].endswith("python:3.11-slim") for base in bases)
    assert any("pip install ." in run for run in _instructions("RUN"))
    user = _instructions("USER")[-1]
    assert user.split(":")[0] not in {"root", "0"}
    port = load_config(DEPLOY / "gateway.toml", environ={}).gateway.listen.rsplit(":", 1)[1]
    assert _instructions("EXPOSE") == [port]
    assert _instructions("STOPSIGNAL") == ["SIGTERM"]
    health = _instructions("HEALTHCHECK")[0]
    assert '"credgate", "health", "--config", "' + CONFIG_PATH + '"' in health
    assert _instructions("ENTRYPOINT") == ['["credgate"]']
    assert _instructions("CMD")[-1] == f'["serve", "--config", "{CONFIG_PATH}"]'


def test_the_commands_the_container_and_unit_run_parse() -> None:
    parser = build_parser()
    parser.parse_args(["serve", "--config", CONFIG_PATH])
    parser.parse_args(["health", "--config", CONFIG_PATH])
    for line in UNIT.splitlines():
        if line.startswith(("ExecStart=", "ExecStartPost=")):
            words = line.split("=", 1)[1].split()
            assert words[0] == "/opt/credgate/bin/credgate"
            parser.parse_args(words[1:])


def test_unit_waits_longer_than_the_drain() -> None:
    settings = load_config(DEPLOY / "gateway.toml", environ={}).gateway
    match = re.search(r"^TimeoutStopSec=(\d+)$", UNIT, re.MULTILINE)
    assert match is not None
    assert int(match.group(1)) > settings.drain_delay_seconds + settings.shutdown_grace_seconds
    assert "KillSignal=SIGTERM" in UNIT
    assert "RestartPreventExitStatus=2" in UNIT


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_unit(tmp_path: Path) -> None:
    unit = tmp_path / "credgate.service"
    unit.write_text(UNIT.replace("/opt/credgate/bin/credgate", "/bin/true"), encoding="utf-8")
    checked = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


def test_deployment_doc_names_only_commands_that_exist() -> None:
    known = {" ".join(words) for words, _ in iter_commands(build_parser())}
    fenced = re.findall(r"```sh\n(.*?)```", DEPLOYMENT_DOC, re.DOTALL)
    code = "\n".join([*fenced, *re.findall(r"`([^`\n]+)`", DEPLOYMENT_DOC)])
    named = re.findall(r"\bcredgate ((?:[a-z][a-z-]*)(?: [a-z][a-z-]*)?)", code)
    assert named
    for phrase in named:
        words = phrase.split()
        assert words[0] in known, f"docs/deployment.md names `credgate {phrase}`"
        if len(words) == 2 and any(k.startswith(words[0] + " ") for k in known):
            assert phrase in known, f"docs/deployment.md names `credgate {phrase}`"
