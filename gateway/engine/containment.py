"""One source call, contained: it ends by its budget, and only ever fails as a ``SourceError``.

Every place that awaits a source — the query fan-out, and the workflows filing objections or
rulings and fetching what a source now says — goes through ``contained``, so that whatever an
adapter or its transport does, the caller gets one of the seam's failures in time:

* **Overrun.** The adapter is trusted to honour its ``timeout``; in case it does not, the call
  is cancelled ``grace`` seconds later and reported as ``SourceTimeout``.
* **Stray cancellation.** A ``CancelledError`` that the awaiting task did not ask for — a
  transport closing a channel under the call, a library cancelling its own future — is the
  source's failure (``SourceUnavailable``), not the caller's: left alone it would unwind the
  whole RPC handler, and the caller would get no status at all (issue #12). The caller's own
  cancellation (the client left, the handler's deadline) is told apart by
  ``Task.cancelling()`` and always propagates.
* **A bare ``TimeoutError``** from the adapter is a ``SourceTimeout`` too.

Exception texts are not kept: they may echo a payload.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import TypeVar

from credgate.adapters.base import SourceTimeout, SourceUnavailable

_log = logging.getLogger(__name__)
_T = TypeVar("_T")

GRACE_SECONDS = 0.05
"""How long past its own budget an adapter may run before the hard limit cancels it."""


async def contained(
    call: Awaitable[_T], *, budget: float, source_id: str, grace: float = GRACE_SECONDS
) -> _T:
    """``await call``, cancelled ``grace`` s past ``budget``; every way out but the answer, a
    ``SourceError`` or the caller's own cancellation becomes a ``SourceError``."""
    task = asyncio.current_task()
    limit = asyncio.timeout(max(budget, 0.0) + grace)
    try:
        async with limit:
            return await call
    except TimeoutError:
        if limit.expired():
            _log.warning("source %s overran its %.3f s budget; cancelled", source_id, budget)
            raise SourceTimeout(f"the source did not answer within {budget:.2f} s") from None
        raise SourceTimeout("the source call timed out") from None
    except asyncio.CancelledError:
        if task is None or task.cancelling():
            raise  # the caller's own cancellation
        _log.warning("source %s: the call was cancelled under it (not by its caller)", source_id)
        raise SourceUnavailable("the call to the source was cut off") from None
