"""Configuration loading: the example file, defaults, environment overrides, and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from credgate.adapters.base import SourceConfig
from credgate.core.institution import Institution, InstitutionRole
from credgate.gateway.config import ConfigError, GatewayConfig, load_config

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "example-config.toml"


def _load_text(tmp_path: Path, text: str, environ: dict[str, str] | None = None) -> GatewayConfig:
    path = tmp_path / "credgate.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path, environ=environ or {})


def test_example_config_loads_with_paths_resolved_against_its_directory() -> None:
    config = load_config(EXAMPLE, environ={})
    docs = EXAMPLE.parent
    assert config.gateway.listen == "127.0.0.1:50051"
    assert config.gateway.insecure_dev is False
    assert config.gateway.batch_max == 100
    assert config.tls.ca == docs / "data/pki/ca.pem"
    assert config.tls.key == docs / "data/pki/server.key"
    assert config.storage.data_dir == docs / "data"
    assert config.keys.keyring == docs / "data/keyring"
    assert (config.breaker.failure_threshold, config.breaker.reset_seconds) == (5, 30.0)
    assert (config.outbox.poll_seconds, config.outbox.claim_seconds) == (5.0, 60.0)
    assert config.dev_identity == Institution(
        "bank-demo", InstitutionRole.INSTITUTION_ROLE_FINANCIAL_INSTITUTION, "Demo Bank"
    )
    assert [s.source_id for s in config.sources] == ["disclosure", "bank-a"]
    assert config.sources[1] == SourceConfig(
        source_id="bank-a",
        kind="bank",
        endpoint="http://127.0.0.1:8103",
        display_name="Bank A",
        timeout_seconds=1.5,
        options={"dialect": "xml-gb18030"},
    )


def test_defaults_derive_from_data_dir_when_keys_are_absent(tmp_path: Path) -> None:
    config = _load_text(tmp_path, '[storage]\ndata_dir = "state"\n')
    state = tmp_path / "state"
    assert config.storage.url == f"sqlite:///{state}/credgate.db"
    assert (config.tls.ca, config.tls.cert, config.tls.key) == (
        state / "pki/ca.pem",
        state / "pki/server.pem",
        state / "pki/server.key",
    )
    assert config.keys.keyring == state / "keyring"
    assert config.gateway.listen == "127.0.0.1:50051"
    assert config.dev_identity is None
    assert config.sources == ()


def test_no_config_file_gives_defaults() -> None:
    config = load_config(None, environ={})
    assert config.gateway.batch_max == 100
    assert config.gateway.insecure_dev is False


def test_environment_overrides_win_over_the_file() -> None:
    config = load_config(
        EXAMPLE,
        environ={
            "CREDGATE_GATEWAY_LISTEN": "0.0.0.0:6000",
            "CREDGATE_GATEWAY_BATCH_MAX": "7",
            "CREDGATE_GATEWAY_INSECURE_DEV": "true",
            "CREDGATE_STORAGE_URL": "postgresql+psycopg://db/credgate",
            "CREDGATE_BREAKER_RESET_SECONDS": "2.5",
            "CREDGATE_DEV_IDENTITY_ROLE": "regulator",
            "CREDGATE_TEST_POSTGRES_URL": "postgresql://elsewhere",  # not a section: ignored
        },
    )
    assert config.gateway.listen == "0.0.0.0:6000"
    assert config.gateway.batch_max == 7
    assert config.gateway.insecure_dev is True
    assert config.storage.url == "postgresql+psycopg://db/credgate"
    assert config.breaker.reset_seconds == 2.5
    assert config.dev_identity is not None
    assert config.dev_identity.role == InstitutionRole.INSTITUTION_ROLE_REGULATOR


def test_environment_data_dir_moves_derived_defaults(tmp_path: Path) -> None:
    config = load_config(None, environ={"CREDGATE_STORAGE_DATA_DIR": str(tmp_path)})
    assert config.storage.url == f"sqlite:///{tmp_path}/credgate.db"
    assert config.tls.ca == tmp_path / "pki/ca.pem"


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[gateway]\nlisten_addr = "x:1"\n', "gateway.listen_addr"),
        ('[tls]\nca = "a"\ncerts = "b"\n', "tls.certs"),
        ("[telemetry]\nenabled = true\n", "telemetry"),
        (
            '[[sources]]\nsource_id = "a"\nkind = "bank"\nendpoint = "e"\nurl = "u"\n',
            "sources[0].url",
        ),
        (
            '[dev_identity]\ninstitution_id = "x"\nrole = "bank"\nnickname = "n"\n',
            "dev_identity.nickname",
        ),
    ],
)
def test_unknown_key_error_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError, match="unknown") as caught:
        _load_text(tmp_path, text)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[gateway]\nbatch_max = "100"\n', "gateway.batch_max"),
        ("[gateway]\nbatch_max = true\n", "gateway.batch_max"),
        ('[gateway]\ninsecure_dev = "false"\n', "gateway.insecure_dev"),
        ("[gateway]\nlisten = 50051\n", "gateway.listen"),
        ("[breaker]\nreset_seconds = [1]\n", "breaker.reset_seconds"),
        ("[tls]\nca = 1\n", "tls.ca"),
        ("gateway = 3\n", "gateway"),
        (
            '[[sources]]\nsource_id = "a"\nkind = "bank"\nendpoint = "e"\ntimeout_seconds = "2"\n',
            "sources[0].timeout_seconds",
        ),
        (
            '[[sources]]\nsource_id = "a"\nkind = "bank"\nendpoint = "e"\noptions = { n = 1 }\n',
            "sources[0].options",
        ),
    ],
)
def test_wrong_type_error_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_text(tmp_path, text)
    assert named in str(caught.value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CREDGATE_GATEWAY_BATCH_MAX", "many"),
        ("CREDGATE_GATEWAY_INSECURE_DEV", "perhaps"),
        ("CREDGATE_GATEWAY_LISTN", "127.0.0.1:1"),
    ],
)
def test_bad_environment_override_error_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={name: value})
    assert name in str(caught.value)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ('[gateway]\nlisten = "no-port"\n', "gateway.listen"),
        ("[gateway]\nbatch_max = 0\n", "gateway.batch_max"),
        ("[breaker]\nfailure_threshold = -1\n", "breaker.failure_threshold"),
        ("[outbox]\npoll_seconds = 0\n", "outbox.poll_seconds"),
        ("[outbox]\nclaim_seconds = -5\n", "outbox.claim_seconds"),
        ('[[sources]]\nsource_id = "a"\nkind = "bank"\n', "sources[0].endpoint"),
        (
            '[[sources]]\nsource_id = "a"\nkind = "bank"\nendpoint = "e"\n'
            '[[sources]]\nsource_id = "a"\nkind = "bank"\nendpoint = "f"\n',
            "sources[1].source_id",
        ),
        ('[dev_identity]\ninstitution_id = "x"\nrole = "astrologer"\n', "dev_identity.role"),
        ('[dev_identity]\nrole = "regulator"\n', "dev_identity.institution_id"),
    ],
)
def test_invalid_values_error_names_the_key(tmp_path: Path, text: str, named: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _load_text(tmp_path, text)
    assert named in str(caught.value)


def test_unparseable_toml_and_missing_file_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="invalid TOML"):
        _load_text(tmp_path, "[gateway\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "absent.toml", environ={})


def test_the_proof_connection_mapping_is_configurable(tmp_path: Path) -> None:
    default = _load_text(tmp_path, "")
    assert default.storage.sqlite_proof_mmap_bytes == 2_147_418_112
    assert _load_text(tmp_path, "[storage]\nsqlite_proof_mmap_bytes = 0\n").storage == (
        type(default.storage)(default.storage.url, default.storage.data_dir, 0)
    )
    from_env = _load_text(tmp_path, "", {"CREDGATE_STORAGE_SQLITE_PROOF_MMAP_BYTES": "65536"})
    assert from_env.storage.sqlite_proof_mmap_bytes == 65_536
    with pytest.raises(ConfigError, match="sqlite_proof_mmap_bytes"):
        _load_text(tmp_path, "[storage]\nsqlite_proof_mmap_bytes = -1\n")
