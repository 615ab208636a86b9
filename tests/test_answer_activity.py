"""Background work steps aside while a live answer is on its critical path, but is never
starved (issue #16, item 3: ``gateway.answer_activity``)."""

from __future__ import annotations

import asyncio
import time

import pytest

from credgate.adapters.base import SourceConfig
from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.gateway import answer_activity
from credgate.gateway.answer_activity import AnswerActivity
from credgate.gateway.engine.fanout import fan_out
from credgate.gateway.reconciliation.reconciler import Reconciler


@pytest.fixture
def activity(monkeypatch: pytest.MonkeyPatch) -> AnswerActivity:
    """A fresh process-wide activity for the test (the fan-out and the reconciler use it)."""
    fresh = AnswerActivity()
    monkeypatch.setattr(answer_activity, "activity", fresh)
    return fresh


async def _took(awaitable: object) -> float:
    started = time.monotonic()
    await awaitable  # type: ignore[misc]
    return time.monotonic() - started


async def test_quiet_returns_at_once_when_no_answer_is_on_its_critical_path(
    activity: AnswerActivity,
) -> None:
    assert not activity.busy()
    assert await _took(activity.quiet()) < 0.05


async def test_quiet_waits_for_the_stretch_to_end(activity: AnswerActivity) -> None:
    activity.answering(0.2)
    assert activity.busy()
    assert await _took(activity.quiet()) >= 0.19
    assert not activity.busy()


async def test_quiet_gives_up_after_its_bound(activity: AnswerActivity) -> None:
    activity.answering(60.0)  # sustained load: never quiet
    waited = await _took(activity.quiet(max_wait=0.1))
    assert 0.09 <= waited < 5.0
    assert activity.busy()


async def test_a_longer_stretch_is_not_shortened_by_a_shorter_one(
    activity: AnswerActivity,
) -> None:
    activity.answering(0.3)
    activity.answering(0.0)
    assert activity.busy()


class _Adapter:
    def __init__(self) -> None:
        self.config = SourceConfig("tax-shenzhen", "tax", "http://127.0.0.1:1")
        self.source_kind = vocab.SOURCE_KIND_TAX

    async def fetch(self, identity_number: str, *, timeout: float) -> report_pb2.SourceFacts:
        return report_pb2.SourceFacts(source_id="tax-shenzhen")

    async def aclose(self) -> None:
        return None


async def test_the_fan_out_marks_the_answer_s_critical_stretch_when_its_sources_answered(
    activity: AnswerActivity,
) -> None:
    loop = asyncio.get_running_loop()
    outcomes = await fan_out(
        [_Adapter()], "110101199003074477", deadline=loop.time() + 5.0, breakers={}
    )
    assert outcomes[0].ok
    assert activity.busy()


class _Store:
    def __init__(self) -> None:
        self.passes = 0

    async def reconcile(self) -> int:
        self.passes += 1
        return 0


async def test_the_reconciler_steps_aside_in_the_background_but_catch_up_does_not(
    activity: AnswerActivity,
) -> None:
    store = _Store()
    reconciler = Reconciler(store, asyncio.Event(), poll_seconds=0.05)  # type: ignore[arg-type]
    activity.answering(0.5)
    assert await _took(reconciler.catch_up()) < 0.25  # a caller waiting for it is not delayed
    assert store.passes == 1
    reconciler.start()
    try:
        await asyncio.sleep(0.1)
        assert store.passes == 1  # still aside: an answer is on its critical path
        for _ in range(500):  # then it runs (within about 0.5 s; 10 s allowed)
            if store.passes >= 2:
                break
            await asyncio.sleep(0.02)
        assert store.passes >= 2
    finally:
        await reconciler.stop()
