"""A released report's data life: how long its recipient may keep it ("may be kept until").

The subject signs ``ConsentTerms.retention_days``; a grant's data life is only worth something
if it travels with what was released under it, so every report carries a ``DataLife`` inside
its signed bytes (``RepairStatusReport.data_life``) and the subject's access history lists the
same date. The rules, in one place (``docs/consent.md``, "Data life"):

* **A grant with a period** (``retention_days`` > 0): the report may be kept until its
  disclosure time (``generated_at``) plus that many whole days of 86 400 seconds. The date is
  derived from two signed fields of the same report, so a verifier can recompute it.
* **A grant without one** (``retention_days`` 0, as the terms have always read: "the grant sets
  no period"): no ``keep_until``; the grant adds no limit of its own and the law and the
  recipient's own duties govern. The gateway does not invent a period the subject did not sign.
* **No grant** (a court or tax investigation, a statutory duty, a regulator, the subject's own
  inquiry): no ``keep_until``; the purpose's legal basis (``legal_basis``) governs.

Pure: no I/O, the disclosure time is passed in.
"""

from __future__ import annotations

import datetime as dt
from typing import TypeAlias

from credgate.api.credit_repair.v1 import report_pb2
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab

DAY = dt.timedelta(days=1)
BasisValue: TypeAlias = vocab.DataLifeBasis.ValueType


def keep_until(disclosed_at: dt.datetime, retention_days: int) -> dt.datetime | None:
    """Until when what was disclosed at ``disclosed_at`` may be kept, or None (no period)."""
    if retention_days < 0:
        raise ValueError("retention_days must not be negative")
    return disclosed_at + retention_days * DAY if retention_days else None


def basis_of(retention_days: int | None) -> BasisValue:
    """The basis for a release under a grant of ``retention_days`` (None: no grant)."""
    if retention_days is None:
        return vocab.DATA_LIFE_BASIS_WITHOUT_CONSENT
    if retention_days:
        return vocab.DATA_LIFE_BASIS_CONSENT_PERIOD
    return vocab.DATA_LIFE_BASIS_CONSENT_NO_PERIOD


def data_life(retention_days: int | None, disclosed_at: dt.datetime) -> report_pb2.DataLife:
    """The ``DataLife`` of a report released at ``disclosed_at`` under a grant setting
    ``retention_days`` (None: released without a grant)."""
    life = report_pb2.DataLife(basis=basis_of(retention_days), retention_days=retention_days or 0)
    until = keep_until(disclosed_at, retention_days or 0)
    if until is not None:
        life.keep_until.FromDatetime(until)
    return life


def report_keep_until(report: report_pb2.RepairStatusReport) -> dt.datetime | None:
    """The report's "may be kept until", or None when it carries no period."""
    if not report.data_life.HasField("keep_until"):
        return None
    return report.data_life.keep_until.ToDatetime(tzinfo=dt.UTC)
