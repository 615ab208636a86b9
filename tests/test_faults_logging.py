"""Logging never blocks the event loop (issue #12, item 3), through a real gateway on loopback.

The deadlock seen: the event loop waited on a logging handler's lock, held by a thread in which
a garbage collection ran a gRPC finalizer. Here the log output is blocked (a stream whose write
waits), and another thread holds the root handler's lock as that thread did; the gateway must
keep answering — its calls log source failures — and every line must still be written once the
output moves again.
"""

from __future__ import annotations

import gc
import io
import logging
import threading
import time

import pytest

from credgate.adapters.mocks.fleet import MockFleet
from credgate.adapters.mocks.population import Population
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway.telemetry.logs import QueueingHandler, configure_logging, flush_logging
from tests.fixtures.mocks import RunningGateway

CASE = "(2026)粤03执监1号"
RELEASE_AFTER = 8.0
"""When the blocked output is released at the latest (so a regression fails, not hangs)."""


class BlockedStream(io.StringIO):
    """A stream whose writes wait until ``release`` (or ``RELEASE_AFTER``)."""

    def __init__(self) -> None:
        super().__init__()
        self.open = threading.Event()
        self.writer_waiting = threading.Event()
        threading.Timer(RELEASE_AFTER, self.open.set).start()

    def write(self, text: str) -> int:
        self.writer_waiting.set()
        self.open.wait()
        return super().write(text)


class LogsWhenCollected:
    """A finalizer that logs, as grpc.aio's and asyncio's do."""

    def __del__(self) -> None:
        logging.getLogger("tests.finalizer").warning("collected while logging")


async def test_a_stuck_log_output_and_a_held_handler_lock_never_stall_the_gateway(
    gateway: RunningGateway, mock_fleet: MockFleet, population: Population
) -> None:
    stream = BlockedStream()
    handler = configure_logging("text", stream=stream)
    assert isinstance(handler, QueueingHandler)
    await mock_fleet.set_faults("tax-shenzhen", {"error_rate": 1.0})  # a warning per call
    logging.getLogger("tests").warning("first line: the writer blocks on it")
    assert stream.writer_waiting.wait(5)
    held = threading.Event()
    let_go = threading.Event()

    def hold_the_lock() -> None:
        # A thread inside a logging call (holding the handler's lock) in which a collection
        # runs a finalizer that logs: neither may block anyone else.
        with handler.lock:  # type: ignore[union-attr]
            cycle = LogsWhenCollected()
            cycle.self = cycle  # type: ignore[attr-defined]
            del cycle
            gc.collect()
            held.set()
            let_go.wait(RELEASE_AFTER)

    holder = threading.Thread(target=hold_the_lock, daemon=True)
    holder.start()
    assert held.wait(5)
    number = population.scenarios["observation"].person.identity_number
    started = time.monotonic()
    try:
        async with gateway.client("court-demo") as client:
            for _ in range(5):
                report = await client.get_repair_status(
                    number, purpose=vocab.PURPOSE_JUDICIAL_INVESTIGATION, case_reference=CASE
                )
                assert "tax-shenzhen" in [f.source_id for f in report.failures]
        for index in range(2000):
            logging.getLogger("tests").info("line %d", index)
        elapsed = time.monotonic() - started
    finally:
        let_go.set()
        stream.open.set()
    assert elapsed < 3.0
    flush_logging()
    written = stream.getvalue()
    assert "first line" in written
    assert "collected while logging" in written
    assert "source tax-shenzhen failed: SOURCE_UNAVAILABLE" in written
    assert "line 1999" in written


def test_closing_the_handler_writes_everything_queued_and_stops_its_thread() -> None:
    stream = io.StringIO()
    handler = configure_logging("json", stream=stream, service_name="credgate-t")
    before = threading.active_count()
    for index in range(500):
        logging.getLogger("tests").warning("line %d", index)
    handler.close()
    logging.getLogger().removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 500
    assert '"service": "credgate-t"' in lines[-1]
    assert threading.active_count() == before - 1


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_queued_lines_keep_their_exception_stack_and_no_message(log_format: str) -> None:
    stream = io.StringIO()
    handler = configure_logging(log_format, stream=stream)
    message = "secret " + "440305197805120318"
    try:
        raise ValueError(message)
    except ValueError:
        logging.getLogger("tests").exception("failed")
    handler.flush()
    text = stream.getvalue()
    handler.close()
    assert "ValueError" in text
    assert "test_faults_logging.py" in text
    assert "secret" not in text
    assert text.count("failed") == 1
