"""The correction desk a mock source keeps: objections it received and rulings it recorded.

A real source that takes objections files them for its staff and answers in writing later; one
that records a court's ruling changes what it publishes from then on. The mocks do the same
over their native APIs, and this desk is their shared memory of it: per identity number, the
subject *as this source now sees them* (the population stays the unchanged truth of the
synthetic world; each source's changes are its own, so sources can disagree after a ruling
exactly as real ones do until each has caught up).

Tests and the demo act as the source's staff through ``correct`` (an objection found
well-founded: the source's record catches up with the truth), or ``set_subject`` (any other
correction the source made), and read ``objections`` to see what was filed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from credgate.adapters.mocks.population import (
    REFERENCE_DATE,
    Population,
    SourceView,
    Stage,
    State,
    Subject,
)

RULING_STATES = frozenset({State.DISCLOSURE_SUSPENDED, State.RESTORED})
"""What a repair ruling can make a subject at a source."""


@dataclass(frozen=True)
class FiledObjection:
    """One objection as the source received it (the desk keeps it, unlike any log)."""

    source_reference: str
    received_on: dt.date
    identity_number: str
    record_id: str
    kind: str
    text: str


class CorrectionDesk:
    """Objections received and subjects changed by rulings or corrections, for one mock."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix
        self._overrides: dict[str, Subject] = {}
        self._objections: dict[str, FiledObjection] = {}
        self._rulings: dict[str, str] = {}
        self._corrections: dict[str, str] = {}

    @property
    def objections(self) -> Mapping[str, FiledObjection]:
        """Every objection received, by the filer's own reference."""
        return self._objections

    @property
    def rulings(self) -> Mapping[str, str]:
        """Every ruling recorded: the filer's own reference → this source's change reference."""
        return self._rulings

    @property
    def corrections(self) -> Mapping[str, str]:
        """Every objection found well-founded: the filer's reference → the reply reference."""
        return self._corrections

    def subject(self, population: Population, identity_number: str) -> Subject | None:
        """The subject as this source now sees them (a correction or ruling wins)."""
        return self._overrides.get(identity_number) or population.get(identity_number)

    def set_subject(self, subject: Subject) -> None:
        """From now on, serve ``subject`` for their identity number (the source's own fix)."""
        self._overrides[subject.person.identity_number] = subject

    def file_objection(
        self, external_reference: str, identity_number: str, record_id: str, kind: str, text: str
    ) -> FiledObjection:
        """Receive an objection; a repeated external reference returns the first receipt."""
        known = self._objections.get(external_reference)
        if known is not None:
            return known
        digest = hashlib.sha256(external_reference.encode()).hexdigest()[:10].upper()
        filed = FiledObjection(
            f"{self._prefix}{digest}", REFERENCE_DATE, identity_number, record_id, kind, text
        )
        self._objections[external_reference] = filed
        return filed

    def correct(self, external_reference: str, population: Population, view: SourceView) -> str:
        """The source's staff find the objection filed under ``external_reference`` well-founded
        and correct their record: from now on this source (of kind ``view``) shows the subject
        as they truly are, no longer lagging behind. Returns the written reply's reference;
        a repeated call changes nothing and returns the same reference. ``KeyError`` when no
        such objection was received."""
        known = self._corrections.get(external_reference)
        if known is not None:
            return known
        filed = self._objections[external_reference]
        subject = self.subject(population, filed.identity_number)
        if subject is None:
            raise KeyError(external_reference)
        lag = {v: s for v, s in subject.lagging_views.items() if v is not view}
        self.set_subject(dataclasses.replace(subject, lagging_views=lag))
        digest = hashlib.sha256(external_reference.encode()).hexdigest()[:10].upper()
        self._corrections[external_reference] = f"{self._prefix}HF{digest}"
        return self._corrections[external_reference]

    def record_ruling(
        self, external_reference: str, subject: Subject, state: State, ruled_on: dt.date
    ) -> str:
        """Apply a repair ruling to what this source serves; return the change reference.

        Repeating the same external reference changes nothing and returns the same reference.
        """
        known = self._rulings.get(external_reference)
        if known is not None:
            return known
        if state not in RULING_STATES or subject.case is None:
            raise ValueError("not a repair ruling for a subject with a case")
        case = subject.case
        if state is State.RESTORED:
            case = dataclasses.replace(case, stage=Stage.FULLY_EXECUTED, restored_on=ruled_on)
        else:
            case = dataclasses.replace(case, disclosure_suspended_on=ruled_on)
        self.set_subject(dataclasses.replace(subject, state=state, case=case, lagging_views={}))
        digest = hashlib.sha256(external_reference.encode()).hexdigest()[:10].upper()
        self._rulings[external_reference] = f"{self._prefix}R{digest}"
        return self._rulings[external_reference]
