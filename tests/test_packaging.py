"""What ``pip install credgate`` puts into a user's environment: one name, typed, complete.

The wheel is built from this checkout, as a release would be, and read back: every file under
``credgate/`` (or its dist-info), ``py.typed`` at the top so a bank's ``mypy --strict`` sees all
of it, and nothing that only a checkout needs (bench, tests).
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         str(ROOT), "-w", str(out)],
        check=True, capture_output=True, timeout=240,
    )
    [wheel] = out.glob("credgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def test_the_wheel_holds_only_the_credgate_namespace(wheel_names: list[str]) -> None:
    tops = {name.split("/", 1)[0] for name in wheel_names}
    assert {top for top in tops if not top.endswith(".dist-info")} == {"credgate"}


def test_the_wheel_is_typed_and_complete(wheel_names: list[str]) -> None:
    names = set(wheel_names)
    assert "credgate/py.typed" in names
    for needed in (
        "credgate/gateway/cli.py",
        "credgate/adapters/testing/plugin.py",
        "credgate/consent/policy.py",
        "credgate/audit/log.py",
        "credgate/core/storage/database.py",
        "credgate/api/credit_repair/v1/report_pb2.py",
        "credgate/api/credit_repair/v1/report_pb2.pyi",
        "credgate/api/credit_repair/v1/report.proto",
        "credgate/gateway/storage/migrations/script.py.mako",
    ):
        assert needed in names, needed
    migrations = ROOT / "gateway" / "storage" / "migrations" / "versions"
    for migration in migrations.glob("*.py"):
        assert f"credgate/gateway/storage/migrations/versions/{migration.name}" in names
    assert not any(name.startswith(("credgate/bench", "credgate/tests")) for name in names)
    # The browser console serves its own templates and assets (no CDN): all in the wheel.
    console = ROOT / "gateway" / "console"
    for asset in [*console.glob("templates/**/*.*"), *console.glob("static/**/*.*")]:
        assert f"credgate/gateway/console/{asset.relative_to(console)}" in names, asset


def test_the_console_script_names_the_namespaced_cli(wheel_names: list[str]) -> None:
    assert any(name.endswith(".dist-info/entry_points.txt") for name in wheel_names)
    from importlib.metadata import entry_points

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "credgate"]
    assert script.value == "credgate.gateway.cli:main"
