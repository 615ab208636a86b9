"""``[gateway] event_loop``: which loop ``credgate serve`` runs on, and the gateway on uvloop.

uvloop is an optional extra (``credgate[uvloop]``); the tests that need it are skipped where it
is not installed. On uvloop the whole path runs — mTLS identity, a LIVE answer over the mock
sources, an INDEX answer from what it stored, signatures the client verifies, and the audit
entries of both before the answers — so a loop difference that broke any of it shows here.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.queries import EntryFilter, list_entries
from credgate.gateway.config import ConfigError, GatewaySettings, config_from_mapping
from credgate.gateway.server import loop_factory
from tests.fixtures.mocks import RunningGateway, unstale

pytestmark = pytest.mark.filterwarnings(
    # pytest-asyncio 1.x still honours the fixture; its replacement hook is plugin-wide.
    'ignore:Overriding the "event_loop_policy" fixture is deprecated'
)

CASE = "(2026)粤03执监1号"
JUDICIAL = vocab.PURPOSE_JUDICIAL_INVESTIGATION
LIVE = service_pb2.CONSISTENCY_MODE_LIVE
INDEX = service_pb2.CONSISTENCY_MODE_INDEX


def _installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def test_the_default_is_auto_and_an_unknown_loop_is_refused(tmp_path: Path) -> None:
    assert GatewaySettings().event_loop == "auto"
    document = {
        "gateway": {"event_loop": "trio"},
        "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
        "storage": {"data_dir": "data"},
        "keys": {"keyring": "keyring.json"},
    }
    with pytest.raises(ConfigError, match=r"gateway\.event_loop must be one of"):
        config_from_mapping(document, base_dir=tmp_path, environ={})


def test_asyncio_is_the_standard_librarys_and_auto_takes_uvloop_when_installed() -> None:
    assert loop_factory("asyncio") is None
    factory = loop_factory("auto")
    if not _installed():
        assert factory is None
        with pytest.raises(ConfigError, match="needs the uvloop package"):
            loop_factory("uvloop")
        return
    import uvloop

    assert factory is uvloop.new_event_loop
    assert loop_factory("uvloop") is uvloop.new_event_loop
    loop = factory()
    try:
        assert isinstance(loop, uvloop.Loop)
    finally:
        loop.close()


@pytest.fixture
def event_loop_policy() -> asyncio.AbstractEventLoopPolicy:
    """The async test below (and the gateway fixture it uses) runs on uvloop, when installed."""
    if not _installed():
        return asyncio.DefaultEventLoopPolicy()
    import uvloop

    policy: asyncio.AbstractEventLoopPolicy = uvloop.EventLoopPolicy()
    return policy


async def test_the_gateway_answers_live_and_from_the_index_on_uvloop(
    gateway: RunningGateway, population: Population
) -> None:
    uvloop = pytest.importorskip("uvloop")
    assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
    number = population.scenarios["restored_reorganization"].person.identity_number
    async with gateway.client("court-demo") as court:
        live = await unstale(  # about the event loop, not the sources' timing
            lambda: court.get_signed_repair_status(
                number,
                purpose=JUDICIAL,
                case_reference=CASE,
                consistency=service_pb2.CONSISTENCY_MODE_LIVE,
            ),
            report_of=lambda signed: signed.report,
        )
        indexed = await court.get_signed_repair_status(
            number,
            purpose=JUDICIAL,
            case_reference=CASE,
            consistency=service_pb2.CONSISTENCY_MODE_INDEX,
        )
    assert live.report.state == indexed.report.state == vocab.REPAIR_STATE_RESTORED
    assert not indexed.report.failures  # every source's facts came from the index
    assert {s.source_id for s in indexed.report.sources} == {
        s.source_id for s in live.report.sources
    }
    records, _ = await list_entries(gateway.gateway.database, EntryFilter(), limit=1000)
    assert [r.entry.report_id for r in records[-2:]] == [
        live.report.report_id,
        indexed.report.report_id,
    ]
