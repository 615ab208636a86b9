"""A self-contained development workspace: PKI, keyring, database and gateway.toml.

``credgate init`` and ``credgate demo`` build it so a new user gets a gateway that runs with
mutual TLS and encryption at rest from the first command, exactly as production would.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.fleet import planned_source_configs
from credgate.adapters.mocks.population import build_population
from credgate.adapters.mocks.providers import SCRIPTS
from credgate.adapters.mocks.serve import planned_ports
from credgate.gateway.pki import write_dev_pki
from credgate.gateway.protection.keyring import Keyring


@dataclass(frozen=True)
class Workspace:
    directory: Path
    config_path: Path
    pki_dir: Path


def _toml_string(value: str) -> str:
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(value, ensure_ascii=False)


def _sources_toml(sources: list[SourceConfig]) -> str:
    blocks = []
    for source in sources:
        lines = [
            "[[sources]]",
            f"source_id = {_toml_string(source.source_id)}",
            f"kind = {_toml_string(source.kind)}",
            f"endpoint = {_toml_string(source.endpoint)}",
            f"display_name = {_toml_string(source.display_name)}",
            f"timeout_seconds = {source.timeout_seconds}",
        ]
        if source.options:
            options = ", ".join(f"{k} = {_toml_string(v)}" for k, v in source.options.items())
            lines.append(f"options = {{ {options} }}")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def gateway_toml(listen: str, sources: list[SourceConfig]) -> str:
    return f"""# credgate development workspace, written by `credgate init`.
# Paths are relative to this file. See docs/example-config.toml for every setting.

[gateway]
listen = {_toml_string(listen)}
default_deadline_seconds = 3.0

[tls]
ca = "pki/ca.pem"
cert = "pki/server.pem"
key = "pki/server.key"
# Certificates the CA revoked (`credgate pki revoke`); re-read when it changes.
revocation_list = "pki/crl.pem"

[storage]
data_dir = "."
# No url: the database is <data_dir>/credgate.db, beside this file. (A relative path inside a
# URL, like sqlite:///credgate.db, would be relative to the working directory instead.)

[keys]
keyring = "keyring.json"

[consent]
# Institutions that verify a subject in person and enrol the key they sign consents with.
enrolment_offices = ["office-demo"]

[breaker]
failure_threshold = 5
reset_seconds = 30.0

# The mock sources, as `credgate mocks` serves them.
{_sources_toml(sources)}

# The scripted data providers of `credgate mocks --push`, each bound to its own source.
{"".join(script.provider_toml() + chr(10) for script in SCRIPTS)}"""


def init_workspace(
    directory: Path,
    *,
    listen: str = "127.0.0.1:50051",
    mock_base_port: int = 7801,
    force: bool = False,
) -> Workspace:
    config_path = directory / "gateway.toml"
    if config_path.exists() and not force:
        raise FileExistsError(f"{config_path} exists; use --force to start over")
    if force and directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    pki = write_dev_pki(directory / "pki")
    Keyring.generate(directory / "keyring.json")
    sources = planned_source_configs(
        build_population(size=0), "127.0.0.1", planned_ports(mock_base_port)
    )
    config_path.write_text(gateway_toml(listen, sources), encoding="utf-8")
    return Workspace(directory, config_path, pki.directory)
