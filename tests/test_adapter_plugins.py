"""Adapters are plugins: an adapter package installed beside credgate is deployable (issue #15, 4).

What is attacked: that a source kind needs an edit of credgate (the catalog, the .proto enum)
to be served; that a broken plugin brings the gateway down with a traceback, or silently
replaces a built-in adapter; that an unknown kind is anything but a configuration error naming
what is installed. The end-to-end test installs the documented example package
(docs/examples/housing_fund) into a fresh virtual environment, starts ``credgate serve`` from
it and queries the plugin's source through the gateway over mutual TLS.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import time
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest

from credgate.adapters import catalog
from credgate.adapters.base import SourceConfig
from credgate.adapters.catalog import (
    BUILTIN_KINDS,
    AdapterPluginError,
    UnknownSourceKind,
    available_kinds,
    build_adapter,
    kinds_from,
)
from credgate.adapters.mocks.population import build_population
from credgate.adapters.tax import TaxAdapter
from credgate.adapters.testing import MockedSource
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as V
from credgate.gateway.cli import main
from credgate.gateway.config import ConfigError, load_config
from tests.plugin_support import EXAMPLE, EXAMPLE_FILES, example_package

pytest_plugins = ("pytester",)

GROUP = catalog.ENTRY_POINT_GROUP
EXIT_USAGE = 2
CREDGATE = [sys.executable, "-m", "credgate.gateway.cli"]
TAX_ADAPTER = f"{TaxAdapter.__module__}:TaxAdapter"
"""Entry-point values are strings: spelled from the modules, they follow a package rename."""


def _point(name: str, value: str) -> EntryPoint:
    return EntryPoint(name, value, GROUP)


def _source(kind: str) -> SourceConfig:
    return SourceConfig("plugin-source", kind, "http://127.0.0.1:9")


def _returns_a_string(config: SourceConfig) -> object:
    return "not an adapter"


def _raises(config: SourceConfig) -> object:
    raise RuntimeError("cannot reach the licence server")


NOT_A_FACTORY = 42


# --- the registry -------------------------------------------------------------------------------


def test_every_builtin_kind_is_registered_and_builds() -> None:
    kinds = available_kinds()
    assert set(kinds) == {
        "disclosure_platform", "credit_registry", "court", "bank", "tax", "social_insurance",
        "market_supervision",
    }
    assert all(kind.builtin for kind in kinds.values())
    adapter = build_adapter(SourceConfig("tax-x", "tax", "http://127.0.0.1:9"))
    assert isinstance(adapter, TaxAdapter)


def test_builtin_kinds_follow_the_package_name() -> None:
    """The built-in entry points name modules of this very package, whatever it is called."""
    package = catalog.__name__.rpartition(".")[0]
    assert all(point.value.startswith(f"{package}.") for point in BUILTIN_KINDS)


def test_a_plugin_kind_is_built_from_its_entry_point() -> None:
    kinds = kinds_from([*BUILTIN_KINDS, _point("tax_copy", TAX_ADAPTER)])
    adapter = build_adapter(_source("tax_copy"), kinds)
    assert isinstance(adapter, TaxAdapter)
    assert adapter.config.kind == "tax_copy"


@pytest.mark.parametrize(
    ("point", "says"),
    [
        (_point("ghost", "credgate_ghost.adapter:GhostAdapter"),
         r"'ghost' = 'credgate_ghost.adapter:GhostAdapter'.* failed to load: "
         r"ModuleNotFoundError"),
        (_point("nameless", f"{TaxAdapter.__module__}:NoSuchAdapter"),
         r"'nameless'.* failed to load: "),
        (_point("number", f"{__name__}:NOT_A_FACTORY"),
         r"'number'.* is an object of type int, not an adapter"),
        (_point("config_class", f"{SourceConfig.__module__}:SourceConfig"),
         r"'config_class'.* class SourceConfig is not a SourceAdapter \(missing fetch, "
         r"aclose\)"),
        (_point("stringly", f"{__name__}:_returns_a_string"),
         r"'plugin-source'.* 'stringly'.* returned an object of type str, not a SourceAdapter"),
        (_point("failing", f"{__name__}:_raises"),
         r"'failing'.* failed to build its adapter: RuntimeError"),
    ],
)
def test_a_broken_plugin_is_a_configuration_error_naming_its_entry_point(
    point: EntryPoint, says: str
) -> None:
    kinds = kinds_from([*BUILTIN_KINDS, point])
    with pytest.raises(AdapterPluginError, match=says) as raised:
        build_adapter(_source(point.name), kinds)
    assert isinstance(raised.value, ValueError)  # exit 2: gateway.commands.common
    assert f"group {GROUP}" in str(raised.value)
    error = raised.value  # no chain: the message is the whole story (and all that is printed)
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__


def test_a_plugin_may_not_take_a_builtin_name() -> None:
    impostor = _point("bank", "credgate_evil.adapter:BankAdapter")
    with pytest.raises(AdapterPluginError, match="duplicates the built-in kind 'bank'") as raised:
        kinds_from([*BUILTIN_KINDS, impostor])
    assert "credgate_evil.adapter:BankAdapter" in str(raised.value)
    with pytest.raises(AdapterPluginError, match="duplicates the built-in kind 'bank'"):
        kinds_from([impostor, *BUILTIN_KINDS])  # whatever order the path lists them in


def test_two_plugins_may_not_claim_one_name() -> None:
    with pytest.raises(AdapterPluginError, match=r"'fund' is claimed twice: .*a:A.*b:B"):
        kinds_from([_point("fund", "a:A"), _point("fund", "b:B")])


def test_a_kind_name_must_be_a_kind_name() -> None:
    with pytest.raises(AdapterPluginError, match="'Housing-Fund' is not a valid kind name"):
        kinds_from([_point("Housing-Fund", "a:A")])


def test_an_unknown_kind_lists_the_available_ones() -> None:
    with pytest.raises(UnknownSourceKind, match=r"unknown kind 'housing_fund' \(available: bank,"):
        build_adapter(_source("housing_fund"))


def test_an_unknown_kind_in_the_config_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[[sources]]\nsource_id = "fund"\nkind = "housing_fund"\nendpoint = "http://x"\n'
    )
    with pytest.raises(ConfigError, match=r"sources\[0\]\.kind 'housing_fund' is not an "
                       r"installed adapter kind \(available: bank, court, credit_registry, "):
        load_config(config)


# --- a broken plugin at start-up: exit 2 and one line, never a traceback -------------------------


def _install_metadata(site: Path, distribution: str, entry_points: str) -> None:
    """An installed distribution, as importlib.metadata sees one: a dist-info on the path."""
    info = site / f"{distribution}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{GROUP}]\n{entry_points}\n")


def _workspace_with_source(tmp_path: Path, kind: str, endpoint: str, port: int = 0) -> Path:
    """A ``credgate init`` workspace whose only queried source is one of ``kind``."""
    directory = tmp_path / "ws"
    assert main(["init", "--dir", str(directory)]) == 0
    path = directory / "gateway.toml"
    text = path.read_text("utf-8")
    # Drop the demo fleet's [[sources]] tables (each runs until the next table header).
    text = re.sub(r"\[\[sources\]\]\n(?:(?!\[).*\n|\n)*", "", text)
    if port:
        text = text.replace('listen = "127.0.0.1:50051"', f'listen = "127.0.0.1:{port}"')
    text += (
        f'\n[[sources]]\nsource_id = "housing-fund-shenzhen"\nkind = "{kind}"\n'
        f'endpoint = "{endpoint}"\ndisplay_name = "深圳市住房公积金管理中心"\n'
        "timeout_seconds = 2.0\n"
    )
    path.write_text(text, "utf-8")
    return path


@pytest.mark.parametrize(
    ("entry_points", "says"),
    [
        ("housing_fund = credgate_ghost.adapter:GhostAdapter",
         "adapter entry point 'housing_fund' = 'credgate_ghost.adapter:GhostAdapter' "
         f"(group {GROUP}, distribution broken_plugin) failed to load: ModuleNotFoundError"),
        (f"housing_fund = {catalog.__name__}:ENTRY_POINT_GROUP",
         f"'housing_fund' = '{catalog.__name__}:ENTRY_POINT_GROUP' (group credgate.adapters, "
         "distribution broken_plugin) is an object of type str, not an adapter factory"),
        (f"court = credgate_evil.adapter:CourtAdapter\nhousing_fund = {TAX_ADAPTER}",
         "'court' = 'credgate_evil.adapter:CourtAdapter' (group credgate.adapters, "
         "distribution broken_plugin) duplicates the built-in kind 'court'"),
    ],
    ids=["import-fails", "not-a-factory", "duplicates-builtin"],
)
def test_credgate_serve_refuses_a_broken_plugin_with_exit_2(
    tmp_path: Path, entry_points: str, says: str
) -> None:
    site = tmp_path / "site"
    _install_metadata(site, "broken_plugin", entry_points)
    config = _workspace_with_source(tmp_path, "housing_fund", "http://127.0.0.1:9")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    env["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [*CREDGATE, "serve", "--config", str(config)], capture_output=True, text=True,
        timeout=120, check=False, env=env, cwd=tmp_path,
    )
    assert result.returncode == EXIT_USAGE, result.stderr
    assert says in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


# --- the documented example package ------------------------------------------------------------


def test_the_documented_example_is_the_tested_package() -> None:
    """docs/writing-an-adapter.md shows every file of the example package, verbatim."""
    guide = (EXAMPLE.parents[1] / "writing-an-adapter.md").read_text("utf-8")
    for name in EXAMPLE_FILES:
        text = (EXAMPLE / name).read_text("utf-8")
        assert f"\n{text}```" in guide, f"{name} is not shown verbatim in the guide"


@pytest.fixture
def fresh_venv(tmp_path: Path) -> tuple[Path, Path]:
    """A new virtual environment that sees this one's packages (nothing is downloaded) and has
    the example package installed into it the way an operator would: ``pip install``."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    # addsitedir, not a plain path line: it also runs this environment's own .pth files (the
    # editable install of credgate).
    here = sysconfig.get_paths()["purelib"]
    (Path(purelib) / "_credgate_base.pth").write_text(f"import site; site.addsitedir({here!r})\n")
    package = example_package(tmp_path / "src")
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", str(package)],
        check=True, capture_output=True, cwd=tmp_path, timeout=120,
    )
    return python, package


def _gateway_command(python: Path, *argv: str) -> list[str]:
    return [str(python), "-m", "credgate.gateway.cli", *argv]


def test_an_installed_adapter_package_serves_its_source_through_the_gateway(
    tmp_path: Path, fresh_venv: tuple[Path, Path], unused_tcp_port: int
) -> None:
    python, package = fresh_venv
    population = build_population()
    subject = next(
        s for s in population if [a for a in s.accounts if a.product == "mortgage"]
    )
    loans = [a for a in subject.accounts if a.product == "mortgage"]
    sys.path.insert(0, str(package))
    try:
        from credgate_housing_fund.mock import HousingFundMock  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(package))
    mock = MockedSource("housing-fund-shenzhen", "housing_fund", HousingFundMock)
    endpoint = mock.start(population).endpoint
    config = _workspace_with_source(tmp_path, "housing_fund", endpoint, unused_tcp_port)
    pki = config.parent / "pki"
    target = f"127.0.0.1:{unused_tcp_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    gateway_process = subprocess.Popen(
        _gateway_command(python, "serve", "--config", str(config)),
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 45
        while True:
            health = subprocess.run(
                _gateway_command(python, "health", "--target", target, "--pki-dir", str(pki),
                                 "--timeout", "2"),
                capture_output=True, text=True, cwd=tmp_path, env=env, check=False,
            )
            if health.returncode == 0:
                break
            assert gateway_process.poll() is None, gateway_process.communicate()[0]
            assert time.monotonic() < deadline, health.stdout + health.stderr
            time.sleep(0.2)
        answer = subprocess.run(
            _gateway_command(
                python, "query", subject.person.identity_number, "--purpose",
                "judicial_investigation", "--case-reference", "(2026)粤03执1号", "--target",
                target, "--pki-dir", str(pki), "--consistency", "live", "--json",
            ),
            capture_output=True, text=True, cwd=tmp_path, env=env, timeout=60, check=False,
        )
    finally:
        gateway_process.terminate()
        output, _ = gateway_process.communicate(timeout=30)
        mock.stop()
    assert answer.returncode == 0, answer.stdout + answer.stderr + output
    report = json.loads(answer.stdout)
    # The workspace's push providers have sent nothing: only they may be missing.
    failures = report.get("failures", [])
    assert {f["sourceId"] for f in failures} <= {"disclosure-platform", "credit-registry"}
    assert {f["reason"] for f in failures} <= {"NOT_IN_INDEX"}, failures
    (facts,) = [s for s in report["sources"] if s["sourceId"] == "housing-fund-shenzhen"]
    assert facts["sourceId"] == "housing-fund-shenzhen"
    assert facts["sourceKind"] == V.SourceKind.Name(V.SOURCE_KIND_OTHER)
    assert facts["sourceKindName"] == "housing_fund"
    assert facts["displayName"] == "深圳市住房公积金管理中心"
    kinds = [record["kind"] for record in facts["records"]]
    assert kinds.count("RECORD_KIND_CREDIT_ACCOUNT") == len(loans)
    assert kinds.count("RECORD_KIND_DEFAULT") == sum(a.default_on is not None for a in loans)
    balances = sorted(
        int(r["amount"]["minorUnits"]) for r in facts["records"]
        if r["kind"] == "RECORD_KIND_CREDIT_ACCOUNT"
    )
    assert balances == sorted(a.balance_fen for a in loans)
    assert all(r["provenance"]["sourceKindName"] == "housing_fund" for r in facts["records"])
    assert report_pb2.SourceFacts.DESCRIPTOR.fields_by_name["source_kind_name"].number == 10


def test_the_example_package_passes_the_conformance_kit_from_its_own_venv(
    fresh_venv: tuple[Path, Path],
) -> None:
    """The operator's own test run: ``pytest`` in their project, the kit loaded by its
    conftest.py, against the installed adapter (not the source tree)."""
    python, package = fresh_venv
    env = {k: v for k, v in os.environ.items() if not k.startswith("CREDGATE_")}
    result = subprocess.run(
        [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "."],
        # From tests/, so the adapter imported is the installed one, not the source tree.
        capture_output=True, text=True, cwd=package / "tests", env=env, timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\b2\d passed\b", result.stdout), result.stdout


# --- the kind on the wire ----------------------------------------------------------------------


class _CourtImpostor:
    """A plugin adapter whose answers claim to be a court's, by enum and by name."""

    source_kind = V.SOURCE_KIND_OTHER

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    async def fetch(self, identity_number: str, *, timeout: float) -> report_pb2.SourceFacts:
        claim = report_pb2.Provenance(source_kind=V.SOURCE_KIND_COURT, source_kind_name="court")
        return report_pb2.SourceFacts(
            source_kind=V.SOURCE_KIND_COURT, source_kind_name="court", provenance=claim,
            asserted_state=V.REPAIR_STATE_RESTORED,
            records=[report_pb2.CreditRecord(kind=V.RECORD_KIND_DEFAULT, provenance=claim)],
        )

    async def aclose(self) -> None:
        return None


async def test_the_gateway_names_the_configured_kind_whatever_the_adapter_claims() -> None:
    import asyncio

    from credgate.gateway.engine.fanout import fan_out

    kinds = kinds_from([*BUILTIN_KINDS, _point("housing_fund", f"{__name__}:_CourtImpostor")])
    adapter = build_adapter(_source("housing_fund"), kinds)
    (outcome,) = await fan_out(
        [adapter], "440304198511030421", deadline=asyncio.get_running_loop().time() + 2,
        breakers={},
    )
    facts = outcome.facts
    assert facts is not None
    provenances = [facts.provenance, *(r.provenance for r in facts.records)]
    assert facts.source_kind == V.SOURCE_KIND_OTHER
    assert facts.source_kind_name == "housing_fund"
    assert {p.source_kind for p in provenances[:1]} == {V.SOURCE_KIND_OTHER}
    assert {p.source_kind_name for p in provenances} == {"housing_fund"}


def test_source_kind_names_were_added_without_renumbering() -> None:
    """Wire compatibility: the new fields take new numbers, the enum keeps its values."""
    assert report_pb2.Provenance.DESCRIPTOR.fields_by_name["source_kind_name"].number == 7
    assert report_pb2.SourceFacts.DESCRIPTOR.fields_by_name["source_kind_name"].number == 10
    assert report_pb2.SourceFailure.DESCRIPTOR.fields_by_name["source_kind_name"].number == 6
    assert [V.SourceKind.Value(n) for n in (
        "SOURCE_KIND_UNSPECIFIED", "SOURCE_KIND_DISCLOSURE_PLATFORM", "SOURCE_KIND_CREDIT_REGISTRY",
        "SOURCE_KIND_BANK", "SOURCE_KIND_COURT", "SOURCE_KIND_TAX", "SOURCE_KIND_SOCIAL_INSURANCE",
        "SOURCE_KIND_MARKET_SUPERVISION", "SOURCE_KIND_OTHER",
    )] == list(range(9))


# --- the conformance kit is opt-in -------------------------------------------------------------


def test_installing_credgate_loads_no_pytest_plugin_into_other_projects(
    pytester: pytest.Pytester,
) -> None:
    """A project that does not ask for the kit gets none of its fixtures or hooks; one that
    asks (``-p credgate.adapters.testing``) gets them."""
    pytester.makepyfile(test_nothing="def test_nothing():\n    pass\n")
    bare = pytester.runpytest_subprocess("--fixtures", "-p", "no:cacheprovider")
    assert "conformance_adapter" not in bare.stdout.str()
    kit = catalog.__name__.replace(".catalog", ".testing")
    asked = pytester.runpytest_subprocess("--fixtures", "-p", kit, "-p", "no:cacheprovider")
    assert "conformance_adapter" in asked.stdout.str()
