"""The ``credgate`` command line: help with examples everywhere, documented exit codes, ``--json``
output, progress on stderr, and the workspace commands working end to end."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import io
import json
import os
import re
import sys
from pathlib import Path

import pytest

from bench.cli import add_arguments as add_bench_arguments
from bench.index_scale import synthetic_identity_numbers
from credgate.adapters.mocks.population import Population
from credgate.core.storage.database import Database
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway import cli
from credgate.gateway.cli import EXIT_CODES_HELP, build_parser, iter_commands, main
from credgate.gateway.config import load_config
from credgate.gateway.fact_index import FactIndex
from credgate.gateway.progress import Progress
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.protection.keyring import Keyring
from credgate.gateway.storage.migrate import upgrade_to_head
from tests.fixtures.mocks import RunningGateway

ROOT = Path(__file__).resolve().parent.parent
COMMANDS = [words for words, _ in iter_commands(build_parser())]
OBSERVATION = "440304198511030421"
CASE = "(2026)粤03执1号"


@pytest.fixture(autouse=True)
def _keep_pytest_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """``main`` reconfigures the root logger for a real process; not inside pytest's."""
    monkeypatch.setattr(cli, "_setup_logging", lambda *args, **kwargs: None)


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _credgate_command() -> list[str]:
    script = Path(sys.executable).with_name("credgate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "credgate.gateway.cli"]


async def _credgate(*argv: str) -> tuple[int, str, str]:
    """Run ``credgate`` as its own process without blocking this event loop (the gateway)."""
    process = await asyncio.create_subprocess_exec(
        *_credgate_command(),
        *argv,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


# -- help --------------------------------------------------------------------------------------


def test_every_command_is_found() -> None:
    found = {" ".join(words) for words in COMMANDS}
    expected = {"init", "pki revoke", "keys rotate", "db status", "health", "query", "scenarios"}
    assert expected <= found


@pytest.mark.parametrize("words", COMMANDS, ids=[" ".join(w) for w in COMMANDS])
def test_every_command_has_help_with_an_example_and_the_exit_codes(
    words: tuple[str, ...], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([*words, "--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text, f"credgate {' '.join(words)} --help shows no example"
    examples = text.split("examples:", 1)[1]
    assert f"credgate {words[0]}" in examples, (
        f"credgate {' '.join(words)}: add epilog='examples:\\n  credgate ...' "
        "(gateway.cli.command does it)"
    )
    assert EXIT_CODES_HELP in text


def test_top_level_help_in_a_real_process_lists_commands_and_exit_codes() -> None:
    code, out, _ = asyncio.run(_credgate("--help"))
    assert code == 0
    for name in ("init", "pki", "keys", "db", "serve", "health", "query", "scenarios"):
        assert f"    {name}" in out
    assert "3  refused by the gateway" in out


def test_version_in_a_real_process_is_the_installed_distributions() -> None:
    """``credgate --version`` reports what pip installed (pyproject.toml's version), exit 0."""
    import tomllib
    from importlib import metadata

    code, out, _ = asyncio.run(_credgate("--version"))
    assert code == 0
    installed = metadata.version("credgate")
    assert out.strip() == f"credgate {installed}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert installed == declared["project"]["version"]


def test_a_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["keys", "rotate"])  # --config missing
    assert exited.value.code == 2
    assert "--config" in capsys.readouterr().err


# -- a workspace, end to end ------------------------------------------------------------------


async def _seed_subjects(config_path: Path, count: int) -> None:
    """Put ``count`` encrypted subjects into the workspace database, as queries would."""
    config = load_config(config_path, environ={})
    await asyncio.to_thread(upgrade_to_head, config.storage.url)
    keyring = Keyring.load(config.keys.keyring)
    database = Database.from_url(config.storage.url)
    index = FactIndex(database, FieldCipher(keyring))
    tokenizer = SubjectTokenizer(keyring.subject_token_key)
    try:
        for number in synthetic_identity_numbers(count):
            await index.remember_subject(tokenizer.token(number), number)
    finally:
        await database.dispose()


def test_init_scenarios_and_key_rotation_on_a_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "ws"
    code, out, _ = _run(capsys, "init", "--dir", str(directory), "--json")
    assert code == 0
    written = json.loads(out)
    config_path = Path(written["config"])
    assert config_path == directory / "gateway.toml"
    assert (Path(written["pki_dir"]) / "crl.pem").exists()

    code, out, _ = _run(capsys, "init", "--dir", str(directory))
    assert code == 2  # exists; --force would replace it

    code, out, _ = _run(capsys, "scenarios", "--json")
    assert code == 0
    scenarios = {item["scenario"]: item for item in json.loads(out)}
    assert scenarios["observation"]["identity_number"] == OBSERVATION
    assert scenarios["revoked"]["truth"] == "REVOKED"
    code, out, _ = _run(capsys, "scenarios")
    assert code == 0
    assert OBSERVATION in out

    code, out, _ = _run(capsys, "db", "status", "--config", str(config_path), "--json")
    assert code == 1  # never migrated
    assert json.loads(out)["revision"] is None
    code, out, _ = _run(capsys, "db", "upgrade", "--config", str(config_path), "--json")
    assert code == 0
    revision = json.loads(out)["revision"]
    code, out, _ = _run(capsys, "db", "status", "--config", str(config_path))
    assert code == 0
    assert f"revision {revision} (head)" in out

    asyncio.run(_seed_subjects(config_path, 30))
    before = Keyring.load(directory / "keyring.json").primary_key_id
    code, out, err = _run(
        capsys, "keys", "rotate", "--config", str(config_path), "--progress", "--json"
    )
    assert code == 0, err
    rotated = json.loads(out)
    assert rotated["reencrypted"] == 30
    assert rotated["primary_key_id"] != before
    assert Keyring.load(directory / "keyring.json").primary_key_id == rotated["primary_key_id"]
    assert "re-encrypting [" in err
    assert "30/30 records" in err
    code, out, err = _run(capsys, "keys", "rotate", "--config", str(config_path))
    assert code == 0
    assert "re-encrypted 30 records" in out
    assert err == ""  # no progress off a terminal unless asked

    # The multi-replica rotation: add (not primary), promote, re-encrypt.
    keys = ["--config", str(config_path), "--json"]
    primary = Keyring.load(directory / "keyring.json").primary_key_id
    code, out, _ = _run(capsys, "keys", "add", *keys)
    assert code == 0
    added = json.loads(out)["key_id"]
    keyring = Keyring.load(directory / "keyring.json")
    assert added in keyring.key_ids
    assert keyring.primary_key_id == primary
    code, out, _ = _run(capsys, "keys", "reencrypt", *keys)
    assert json.loads(out) == {"reencrypted": 0}  # the primary did not change
    code, _, err = _run(capsys, "keys", "promote", "dek_nosuchkey00", *keys)
    assert code == 2
    assert "not in the keyring" in err
    code, out, _ = _run(capsys, "keys", "promote", added, *keys)
    assert code == 0
    assert Keyring.load(directory / "keyring.json").primary_key_id == added
    code, out, _ = _run(capsys, "keys", "reencrypt", *keys)
    assert json.loads(out) == {"reencrypted": 30}
    code, out, _ = _run(capsys, "keys", "reencrypt", *keys)
    assert json.loads(out) == {"reencrypted": 0}

    signing = ["keys", "rotate-signing", "--config", str(config_path), "--json"]
    code, out, _ = _run(capsys, *signing)
    assert code == 0
    first = json.loads(out)
    assert first["created"] is True
    code, out, _ = _run(capsys, *signing)
    assert code == 0
    second = json.loads(out)
    assert second["created"] is False
    assert second["key_id"] != first["key_id"]

    pki = str(directory / "pki")
    code, out, _ = _run(capsys, "pki", "revoke", "--dir", pki, "--institution", "bank-demo")
    assert code == 0
    assert "revoked" in out
    code, out, _ = _run(capsys, "pki", "revoke", "--dir", pki, "--institution", "nobody")
    assert code == 2


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[gateway]\nlisten = 5\n", "gateway.listen"),
        ("[gatway]\n", "gatway"),
        ("[tls]\nrevocation_lst = 'crl.pem'\n", "tls.revocation_lst"),
        ("not toml [", "invalid TOML"),
    ],
)
def test_a_bad_config_exits_2_naming_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, named: str
) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(text, encoding="utf-8")
    for argv in (["keys", "rotate"], ["db", "upgrade"], ["serve"]):
        code, _, err = _run(capsys, *argv, "--config", str(config))
        assert code == 2, argv
        assert named in err


def test_a_missing_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(capsys, "db", "upgrade", "--config", str(tmp_path / "absent.toml"))
    assert code == 2
    assert "cannot read config file" in err


def test_a_crl_from_another_ca_is_a_config_error_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "ws"
    _run(capsys, "init", "--dir", str(directory))
    _run(capsys, "pki", "init", "--dir", str(tmp_path / "other"))
    config = directory / "gateway.toml"
    text = config.read_text(encoding="utf-8")
    config.write_text(
        text.replace(
            'revocation_list = "pki/crl.pem"', f'revocation_list = "{tmp_path}/other/crl.pem"'
        ),
        encoding="utf-8",
    )
    code, _, err = asyncio.run(_credgate("serve", "--config", str(config)))  # a real start
    assert code == 2, err
    assert "tls.revocation_list" in err


# -- talking to a gateway ---------------------------------------------------------------------


async def test_query_exit_codes_0_when_answered_3_when_refused(
    gateway: RunningGateway, population: Population
) -> None:
    common = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]
    answered, refused, invalid = await asyncio.gather(
        _credgate(
            "query", OBSERVATION, "--purpose", "judicial_investigation",
            "--case-reference", CASE, "--institution", "court-demo", "--json", *common,
        ),
        _credgate(
            "query", OBSERVATION, "--purpose", "credit_application_review",
            "--institution", "bank-demo", *common,
        ),
        _credgate(
            "query", "440304198511030420", "--purpose", "judicial_investigation",
            "--case-reference", CASE, "--institution", "court-demo", *common,
        ),
    )  # fmt: skip
    code, out, err = answered
    assert code == 0, err
    assert json.loads(out)["state"] == "REPAIR_STATE_OBSERVATION"
    # --consistency index: what the gateway holds, no source asked. OBSERVATION was just asked
    # live, so the index has every source; a subject no test asks about has nothing there.
    never_asked_number = list(population.subjects)[-1]
    indexed, never_asked = await asyncio.gather(
        *(
            _credgate(
                "query", number, "--purpose", "judicial_investigation", "--case-reference", CASE,
                "--institution", "court-demo", "--consistency", "index", "--json", *common,
            )
            for number in (OBSERVATION, never_asked_number)
        )
    )  # fmt: skip
    assert indexed[0] == 0, indexed[2]
    assert json.loads(indexed[1])["state"] == "REPAIR_STATE_OBSERVATION"
    assert not json.loads(indexed[1]).get("failures")
    assert never_asked[0] == 0, never_asked[2]
    failures = json.loads(never_asked[1])["failures"]
    assert failures
    assert {f["reason"] for f in failures} == {"NOT_IN_INDEX"}
    code, out, err = refused
    assert code == 3
    assert out == ""
    assert "refused: PERMISSION_DENIED" in err
    assert "request id:" in err
    code, _, err = invalid
    assert code == 3
    assert "INVALID_ARGUMENT" in err
    assert "440304198511030420" not in err  # never echoed back


def test_query_exits_1_when_the_gateway_cannot_be_reached(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    _run(capsys, "pki", "init", "--dir", str(tmp_path / "pki"))
    code, _, err = _run(
        capsys,
        "query", OBSERVATION, "--purpose", "judicial_investigation", "--case-reference", CASE,
        "--target", f"127.0.0.1:{unused_tcp_port}", "--pki-dir", str(tmp_path / "pki"),
        "--timeout", "2",
    )  # fmt: skip
    assert code == 1
    assert "failed: UNAVAILABLE" in err or "failed: DEADLINE_EXCEEDED" in err


async def test_health_exits_0_when_serving(gateway: RunningGateway) -> None:
    code, out, err = await _credgate(
        "health", "--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory),
        "--institution", "regulator-demo", "--json",
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out) == {"target": gateway.target, "service": "", "status": "SERVING"}
    code, out, _ = await _credgate(
        "health", "--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory),
        "--service", "credit_repair.v1.RepairStatusService",
    )  # fmt: skip
    assert code == 0
    assert "SERVING" in out


async def test_health_exits_1_when_not_serving(gateway: RunningGateway) -> None:
    await gateway.gateway.server.set_serving("", False)
    code, out, _ = await _credgate(
        "health", "--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory),
    )  # fmt: skip
    assert code == 1
    assert "NOT_SERVING" in out


def test_health_exits_1_when_unreachable_and_2_without_certificates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], unused_tcp_port: int
) -> None:
    _run(capsys, "pki", "init", "--dir", str(tmp_path / "pki"))
    target = f"127.0.0.1:{unused_tcp_port}"
    code, out, _ = _run(
        capsys, "health", "--target", target, "--pki-dir", str(tmp_path / "pki"), "--timeout", "1"
    )
    assert code == 1
    assert "UNREACHABLE" in out
    code, _, err = _run(capsys, "health", "--target", target)
    assert code == 2
    assert "probe certificate" in err


# -- progress ---------------------------------------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_silent_off_a_terminal_unless_asked() -> None:
    stream = io.StringIO()
    with Progress("seeding", 100, stream=stream) as progress:
        for _ in range(100):
            progress.advance()
    assert stream.getvalue() == ""


def test_forced_progress_off_a_terminal_prints_a_line_per_tenth() -> None:
    stream = io.StringIO()
    with Progress("export", 1000, stream=stream, enabled=True, unit="entries") as progress:
        for done in range(0, 1001, 10):
            progress(done, 1000)
    lines = stream.getvalue().splitlines()
    assert 10 <= len(lines) <= 11
    assert "\r" not in stream.getvalue()
    assert lines[-1].startswith("export [########################] 100% 1,000/1,000 entries")


def test_progress_on_a_terminal_rewrites_one_line() -> None:
    stream = _Terminal()
    progress = Progress("verify", 50, stream=stream, min_interval=0.0)
    for _ in range(50):
        progress.advance()
    progress.close()
    text = stream.getvalue()
    assert text.count("\r") >= 50
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "50/50" in text.rsplit("\r", 1)[1]


def test_progress_with_an_unknown_total_counts() -> None:
    stream = io.StringIO()
    with Progress("importing", stream=stream, enabled=True, unit="rows") as progress:
        progress.advance(7)
    assert stream.getvalue().startswith("importing: 7 rows")


def test_no_progress_wins_even_on_a_terminal() -> None:
    stream = _Terminal()
    with Progress("x", 3, stream=stream, enabled=False) as progress:
        progress.advance(3)
    assert stream.getvalue() == ""


def test_every_progress_flag_is_the_shared_one_off_by_default_off_a_terminal() -> None:
    """Every command's ``--progress`` (enumerated from the parser, so a new one cannot escape)
    is ``gateway.progress``'s: default None (terminal only), ``--progress`` / ``--no-progress``."""
    found = []
    for words, parser in iter_commands(build_parser()):
        for action in parser._actions:
            if "--progress" in action.option_strings:
                found.append(" ".join(words))
                assert isinstance(action, argparse.BooleanOptionalAction), words
                assert action.default is None, words
                assert "--no-progress" in action.option_strings, words
    bench = argparse.ArgumentParser()
    add_bench_arguments(bench)  # python -m bench: the same flag
    for action in bench._actions:
        if "--progress" in action.option_strings:
            found.append("python -m bench")
            assert isinstance(action, argparse.BooleanOptionalAction)
            assert action.default is None
    expected = {"keys rotate", "keys reencrypt", "audit export", "audit verify", "python -m bench"}
    assert expected <= set(found)


def test_only_gateway_progress_draws_in_place() -> None:
    """A carriage return redraws a line: only ``gateway.progress`` may write one, and it does so
    only on a terminal (tests above). Any other module writing ``\\r`` to a stream fails here."""
    drawing = re.compile(r"""(?:print|write)\(\(?f?["']\\r""")
    offenders = [
        str(path.relative_to(ROOT))
        for package in ("gateway", "audit", "bench", "adapters", "consent", "scripts")
        for path in sorted((ROOT / package).rglob("*.py"))
        if drawing.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == ["gateway/progress.py"]


# -- every --json prints JSON ------------------------------------------------------------------

# How to run each command that takes --json in the test setup, with placeholders filled in from
# one workspace (``credgate init``) and the running test gateway. The set of commands is checked
# against the parser, so a new --json command fails ``test_every_json_command_has_a_recipe``
# until it is added here, and is then run and parsed by one of the two tests below.
_OFFLINE_JSON: dict[str, list[str]] = {
    "init": ["init", "--dir", "{ws}"],
    "scenarios": ["scenarios"],
    "pki init": ["pki", "init", "--dir", "{pki}"],
    "pki issue": ["pki", "issue", "--dir", "{pki}", "--institution", "x", "--role", "regulator"],
    "pki revoke": ["pki", "revoke", "--dir", "{pki}", "--institution", "x"],
    "keys init": ["keys", "init", "--path", "{tmp}/other-keyring.json"],
    "db status": ["db", "status", "--config", "{config}"],  # exit 1: not migrated yet
    "db upgrade": ["db", "upgrade", "--config", "{config}"],
    "keys rotate": ["keys", "rotate", "--config", "{config}"],
    "keys add": ["keys", "add", "--config", "{config}"],
    "keys promote": ["keys", "promote", "{primary}", "--config", "{config}"],
    "keys reencrypt": ["keys", "reencrypt", "--config", "{config}"],
    "keys rotate-signing": ["keys", "rotate-signing", "--config", "{config}"],
    "audit checkpoint": ["audit", "checkpoint", "--config", "{config}"],
    "audit query": ["audit", "query", "--config", "{config}"],
    "audit export": ["audit", "export", "--config", "{config}"],  # JSON Lines: its format
    "audit verify": ["audit", "verify", "--config", "{config}"],
    "audit report": ["audit", "report", "--config", "{config}"],
    "audit witnesses": ["audit", "witnesses", "--config", "{config}"],
    "witness keygen": ["witness", "keygen", "--name", "w.test/w1", "--out", "{tmp}/witness.key"],
    "witness show": [
        *("witness", "show", "--key", "{tmp}/witness.key", "--state", "{tmp}/witness-state"),
        *("--log", "{ws}/audit-log.pub"),
    ],
    "audit acknowledge-rollback": [
        *("audit", "acknowledge-rollback", "--config", "{config}", "--dry-run"),
    ],
    "reconcile": ["reconcile", "--config", "{config}"],
    "consent keygen": ["consent", "keygen", "--out", "{tmp}/consent-key.pem"],
}
_GATEWAY_JSON: dict[str, list[str]] = {
    "health": ["health", "--institution", "regulator-demo"],
    "query": [
        *("query", OBSERVATION, "--purpose", "judicial_investigation"),
        *("--case-reference", CASE, "--institution", "court-demo"),
    ],
    "objections": ["objections", "--institution", "agency-demo"],
    "applications": ["applications", "--institution", "agency-demo"],
    "announcements": ["announcements", "--institution", "bank-demo"],
}


_JSON_TESTED_ELSEWHERE: dict[str, str] = {
    name: "tests/test_consent_cli.py runs it with --json and parses it: it needs a grant and "
    "the subject's key file, made there"
    for name in ("consent receipt", "consent pause", "consent resume", "consent withdraw")
} | {
    "verify-certificate": "tests/test_repair_certificates.py runs it with --json and parses it: "
    "it needs a certificate a subject was issued, made there"
}


def _json_commands() -> set[str]:
    return {
        " ".join(words)
        for words, parser in iter_commands(build_parser())
        if any("--json" in action.option_strings for action in parser._actions)
    }


def _parse_json_output(name: str, out: str) -> None:
    """stdout must be one JSON document (``audit export``: its JSON Lines format, every line)."""
    assert out.strip(), f"credgate {name} --json printed nothing"
    if name == "audit export":
        for line in out.splitlines():
            json.loads(line)
        return
    try:
        json.loads(out)
    except json.JSONDecodeError as error:
        raise AssertionError(f"credgate {name} --json printed non-JSON: {out[:200]!r}") from error


def test_every_json_command_has_a_recipe() -> None:
    assert _json_commands() == set(_OFFLINE_JSON) | set(_GATEWAY_JSON) | set(_JSON_TESTED_ELSEWHERE)


def test_every_offline_json_command_prints_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ws = tmp_path / "ws"
    places = {"ws": str(ws), "pki": str(tmp_path / "pki"), "tmp": str(tmp_path)}
    places["config"] = str(ws / "gateway.toml")
    for name, template in _OFFLINE_JSON.items():
        if "{primary}" in template:
            places["primary"] = Keyring.load(ws / "keyring.json").primary_key_id
        argv = [part.format(**places) for part in template]
        code, out, err = _run(capsys, *argv, "--json")
        assert code in (0, 1), f"credgate {name}: exit {code}: {err}"
        _parse_json_output(name, out)


async def test_every_gateway_json_command_prints_json(gateway: RunningGateway) -> None:
    common = ["--target", gateway.target, "--pki-dir", str(gateway.pki.paths.directory)]
    results = await asyncio.gather(
        *(_credgate(*argv, *common, "--json") for argv in _GATEWAY_JSON.values())
    )
    for name, (code, out, err) in zip(_GATEWAY_JSON, results, strict=True):
        assert code == 0, f"credgate {name}: exit {code}: {err}"
        _parse_json_output(name, out)


# -- the README lists every command and every dependency ---------------------------------------


def test_readme_lists_every_command_the_parser_has() -> None:
    """The README's command list is generated from the parser; a new or renamed command without
    ``scripts/gen_cli_docs.py`` rerun fails here."""
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts/gen_cli_docs.py")
    assert spec is not None
    assert spec.loader is not None
    generator = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(generator)
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert generator.render() in readme, "run .venv/bin/python scripts/gen_cli_docs.py"
    listed = set(re.findall(r"^credgate ([a-z -]+?)\s{2,}", readme, re.MULTILINE))
    runnable = {" ".join(words) for words, parser in iter_commands(build_parser())}
    groups = {" ".join(words[:-1]) for words, _ in iter_commands(build_parser()) if len(words) > 1}
    assert listed == runnable - groups


def _dependency_names(requirements: list[str]) -> list[str]:
    return [re.split(r"[\[<>=!~; ]", requirement, maxsplit=1)[0] for requirement in requirements]


def test_readme_justifies_every_dependency_in_pyproject() -> None:
    """Every runtime (and dev) dependency in pyproject.toml has a row with a reason in the
    README's "Dependencies and why" table: a new dependency without one fails here."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Dependencies and why", 1)[1].split("\n## ", 1)[0]
    rows = [
        [cell.strip() for cell in line.strip("|").split("|")]
        for line in section.splitlines()
        if line.startswith("|") and not line.startswith("|--") and "| why |" not in line
    ]
    named: dict[str, str] = {}
    for first, reason, *_ in rows:
        for name in re.findall(r"[A-Za-z0-9][A-Za-z0-9._-]*", first.removeprefix("dev:")):
            named[name.lower()] = reason
    wanted = [
        *_dependency_names(project["dependencies"]),
        *_dependency_names(project["optional-dependencies"]["dev"]),
    ]
    missing = [name for name in wanted if not named.get(name.lower())]
    assert not missing, f"add these to README.md's 'Dependencies and why' table: {missing}"
