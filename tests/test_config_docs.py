"""docs/configuration.md is generated from the config schema, and current.

The reference is regenerated in memory and compared with the committed file, like the API
reference: a config change without a regenerated reference fails here, and the failure says
which command brings it back in line.
"""

from __future__ import annotations

import difflib
import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

from credgate.gateway import config as schema

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_config_docs.py"
COMMITTED = ROOT / "docs" / "configuration.md"
REGENERATE = ".venv/bin/python scripts/gen_config_docs.py"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_config_docs", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def generated() -> str:
    text: str = _generator().render()
    return text


def test_configuration_reference_is_current(generated: str) -> None:
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    if committed != generated:
        diff = "\n".join(
            list(
                difflib.unified_diff(
                    committed.splitlines(),
                    generated.splitlines(),
                    "committed",
                    "regenerated",
                    lineterm="",
                    n=1,
                )
            )[:40]
        )
        pytest.fail(f"docs/configuration.md is stale; regenerate it with: {REGENERATE}\n{diff}")


def test_every_key_the_loader_accepts_is_documented(generated: str) -> None:
    for section, keys in schema._SECTIONS.items():
        assert f"## `[{section}]`" in generated
        for key in keys:
            env = f"`CREDGATE_{section.upper()}_{key.upper()}`"
            assert f"| `{key}` |" in generated, f"{section}.{key}"
            assert env in generated, f"{section}.{key}"
    for key in schema._SOURCE_KEYS:
        assert f"| `{key}` |" in generated


def test_check_mode_exits_zero_when_current_and_names_the_command_when_stale(
    tmp_path: Path,
) -> None:
    ok = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, check=False
    )
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "configuration.md"
    stale.write_text("# out of date\n", encoding="utf-8")
    failed = subprocess.run(
        [sys.executable, str(SCRIPT), "--check", "--output", str(stale)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert failed.returncode == 1
    assert "python scripts/gen_config_docs.py" in failed.stderr


def test_a_key_without_a_description_stops_the_generator(monkeypatch: pytest.MonkeyPatch) -> None:
    generator = _generator()
    described = dict(schema.KEY_DESCRIPTIONS["breaker"])
    del described["reset_seconds"]
    monkeypatch.setitem(schema.KEY_DESCRIPTIONS, "breaker", described)
    with pytest.raises(SystemExit, match=r"breaker\.reset_seconds has no description"):
        generator.render()


def test_a_key_without_a_known_default_stops_the_generator(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    generator = _generator()
    monkeypatch.setitem(schema._SECTIONS, "storage", {**schema._SECTIONS["storage"], "x": int})
    with pytest.raises(SystemExit, match=r"storage\.x: no dataclass field"):
        generator.render()
