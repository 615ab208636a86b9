"""Calendar periods for a grant's frequency limit ("at most N uses per day").

Periods are calendar periods in Asia/Shanghai time (the domain's: the subjects, the
institutions and the courts are in mainland China), computed from the gateway's clock. A
period is named by its start as an aware UTC datetime, which is what the register stores beside
the count of uses spent in it: a use in a later period starts the count again.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2

PERIOD_ZONE = ZoneInfo("Asia/Shanghai")
"""The zone whose calendar the periods follow."""

KNOWN_PERIODS = frozenset(consent_pb2.FrequencyPeriod.values()) - {
    consent_pb2.FREQUENCY_PERIOD_UNSPECIFIED
}
KNOWN_FETCH_TYPES = frozenset(consent_pb2.FetchType.values())


def period_start(now: dt.datetime, period: int) -> dt.datetime:
    """The start (aware, UTC) of the calendar ``period`` containing ``now``."""
    local = now.astimezone(PERIOD_ZONE)
    if period == consent_pb2.FREQUENCY_PERIOD_HOUR:
        start = local.replace(minute=0, second=0, microsecond=0)
    elif period == consent_pb2.FREQUENCY_PERIOD_DAY:
        start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    elif period == consent_pb2.FREQUENCY_PERIOD_MONTH:
        start = local.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    elif period == consent_pb2.FREQUENCY_PERIOD_YEAR:
        start = local.replace(month=1, day=1, hour=0, minute=0, second=0, microsecond=0)
    else:
        raise ValueError(f"not a frequency period: {period}")
    return start.astimezone(dt.UTC)


def effective_max_uses(terms: consent_pb2.ConsentTerms) -> int:
    """The grant's limit on uses over its life: 1 for a ONE_TIME grant, else ``max_uses``."""
    if terms.fetch_type == consent_pb2.FETCH_TYPE_ONE_TIME:
        return 1
    return terms.max_uses
