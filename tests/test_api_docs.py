"""docs/api.md is generated from the .proto comments, complete, and its examples work.

The reference is regenerated into a temporary file and compared with the committed one, like
the generated-code check: a proto change without a regenerated reference fails here, and the
failure says which command brings it back in line.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from google.protobuf import descriptor_pool, json_format, message_factory

from tests.fixtures.mocks import RunningGateway
from tests.fixtures.pki import DevPki

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "gen_api_docs.py"
COMMITTED = ROOT / "docs" / "api.md"
REGENERATE = ".venv/bin/python scripts/gen_api_docs.py"
_EXAMPLE = re.compile(
    r"```sh\ngrpcurl -cacert var/demo/pki/ca\.pem -cert var/demo/pki/(?P<who>\S+)\.pem "
    r"-key var/demo/pki/(?P=who)\.key \\\n  -d (?P<body>'.*?'|@) .*?"
    r"127\.0\.0\.1:50051 (?P<service>[\w.]+)/(?P<method>\w+)",
    re.DOTALL,
)


def _generator() -> ModuleType:
    """The generator script as a module (it imports its sibling gen_protos)."""
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        spec = importlib.util.spec_from_file_location("gen_api_docs", SCRIPT)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.fixture(scope="module")
def generator() -> ModuleType:
    return _generator()


@pytest.fixture(scope="module")
def reference() -> str:
    return COMMITTED.read_text(encoding="utf-8")


def test_api_reference_is_regenerated_from_the_current_protos(tmp_path: Path) -> None:
    fresh = tmp_path / "api.md"
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--output", str(fresh)],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert run.returncode == 0, f"{SCRIPT.name} failed:\n{run.stderr}"
    committed = COMMITTED.read_text(encoding="utf-8") if COMMITTED.exists() else ""
    regenerated = fresh.read_text(encoding="utf-8")
    if committed != regenerated:
        diff = "\n".join(list(difflib.unified_diff(
            committed.splitlines(), regenerated.splitlines(), "docs/api.md (committed)",
            "docs/api.md (from the protos)", lineterm="", n=1,
        ))[:40])
        pytest.fail(
            f"docs/api.md is stale: the .proto files changed since it was generated.\n"
            f"Regenerate it with:\n\n    {REGENERATE}\n\nand commit the result.\n\n{diff}",
            pytrace=False,
        )


def test_every_service_rpc_message_field_and_enum_value_is_documented(
    generator: ModuleType, reference: str
) -> None:
    files = [f for f in generator.descriptor_set().file if f.package == "credit_repair.v1"]
    assert {Path(f.name).name for f in files} == {
        p.name for p in (ROOT / "proto" / "credit_repair" / "v1").glob("*.proto")
    }
    missing = []
    for file in files:
        for service in file.service:
            for method in service.method:
                anchor = f'<a id="credit_repair.v1.{service.name}.{method.name}"></a>'
                if anchor not in reference:
                    missing.append(f"rpc {service.name}.{method.name}")
        for name, message in generator._all_messages(file.message_type):
            if message.options.map_entry:
                continue
            if f'<a id="credit_repair.v1.{name}"></a>' not in reference:
                missing.append(f"message {name}")
            missing += [f"field {name}.{f.name}" for f in message.field
                        if f"| `{f.name}` | {f.number} |" not in reference]
            for enum in message.enum_type:
                missing += _enum_gaps(f"{name}.{enum.name}", enum, reference)
        for enum in file.enum_type:
            missing += _enum_gaps(enum.name, enum, reference)
    assert not missing, f"not in docs/api.md: {missing}"
    assert "| — |" not in reference, "an element of the API has no comment in its .proto"


def _enum_gaps(name: str, enum: Any, reference: str) -> list[str]:
    gaps = [] if f'<a id="credit_repair.v1.{name}"></a>' in reference else [f"enum {name}"]
    return gaps + [f"value {v.name}" for v in enum.value
                   if f"| `{v.name}` | {v.number} |" not in reference]


def test_every_rpc_has_a_grpcurl_example_over_mutual_tls(
    generator: ModuleType, reference: str
) -> None:
    examples = {(m["service"], m["method"]) for m in _EXAMPLE.finditer(reference)}
    rpcs = {
        (f"credit_repair.v1.{service.name}", method.name)
        for file in generator.descriptor_set().file if file.package == "credit_repair.v1"
        for service in file.service for method in service.method
    }
    assert rpcs, "no services found"
    assert rpcs <= examples, f"RPCs without a grpcurl example: {sorted(rpcs - examples)}"


async def test_hand_picked_examples_succeed_against_a_running_gateway(
    gateway: RunningGateway, dev_pki: DevPki, generator: ModuleType, reference: str
) -> None:
    """What a reader copies from the reference works: same body, same institution, status OK."""
    curated = {f"credit_repair.v1.{key.replace('.', '/')}" for key in generator.EXAMPLE_BODIES}
    tried = set()
    for match in _EXAMPLE.finditer(reference):
        path = f"{match['service']}/{match['method']}"
        if path not in curated:
            continue
        body = json.loads(match["body"][1:-1].replace("'\\''", "'"))
        tried.add(path)
        await _call(gateway, dev_pki, match["who"], path, body)
    assert tried == curated


async def _call(
    gateway: RunningGateway, pki: DevPki, who: str, path: str, body: dict[str, Any]
) -> None:
    pool = descriptor_pool.Default()
    service_name, method_name = path.split("/")
    method = pool.FindServiceByName(service_name).FindMethodByName(method_name)
    request_class = message_factory.GetMessageClass(method.input_type)
    response_class = message_factory.GetMessageClass(method.output_type)
    request = json_format.Parse(json.dumps(body), request_class())
    paths = pki.institution(who)
    credentials = grpc.ssl_channel_credentials(
        pki.paths.ca_cert.read_bytes(), paths.key.read_bytes(), paths.cert.read_bytes()
    )
    async with grpc.aio.secure_channel(gateway.target, credentials) as channel:
        call = channel.unary_unary(
            f"/{path}", request_serializer=request_class.SerializeToString,
            response_deserializer=response_class.FromString,
        )
        try:
            await call(request, timeout=10)
        except grpc.aio.AioRpcError as exc:
            pytest.fail(f"documented example {path} as {who} failed: {exc.code().name}")
