"""The assertions of the conformance kit, usable on their own in any adapter test.

Each one checks a promise of the adapter seam (``adapters.base``) that the query engine relies
on without re-checking: facts are attributable (provenance on everything), filed under the
right data category, and free of personal data outside the identity block; errors never carry
an identity number or a name, however deep in their ``__cause__``/``__context__`` chain, since
the gateway logs and reports error chains.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from collections.abc import Iterable, Iterator

from google.protobuf.message import Message

from credgate.adapters.base import SourceConfig
from credgate.adapters.mocks.population import Person
from credgate.adapters.testing.expectations import CATEGORY_OF_KIND, Expectation
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core.identity_number import mask

CLOCK_SLACK = dt.timedelta(seconds=2)
"""How far ``fetched_at`` may sit outside the call that produced it (timestamp rounding)."""


class ConformanceError(AssertionError):
    """An adapter broke a promise of the seam; the message says which, without personal data."""


def personal_strings(person: Person) -> tuple[str, ...]:
    """The renderings of a person's identity number and name that must never leak.

    Besides the plain text, names are looked for JSON-escaped (``\\u9648...``, as a source that
    escapes non-ASCII sends them), since a parser error that quotes the payload quotes that form.
    """
    escaped = json.dumps(person.name)[1:-1]
    renderings = {person.identity_number, person.name, escaped}
    return tuple(sorted(r for r in renderings if r))


def _encodings(text: str) -> tuple[bytes, ...]:
    """The byte forms a payload quoted in an error would carry (sources send both)."""
    return tuple({text.encode("utf-8", "replace"), text.encode("gb18030", "replace")})


def _exception_chain(exc: BaseException) -> Iterator[BaseException]:
    """The exception and everything reachable through ``__cause__`` and ``__context__``.

    Both links are followed (``raise ... from None`` only hides ``__context__`` from the default
    traceback printer; the object is still there for any error reporter that walks it).
    """
    seen: set[int] = set()
    pending = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        pending.extend(e for e in (current.__cause__, current.__context__) if e is not None)
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)


def _renderings(exc: BaseException) -> Iterator[str | bytes]:
    yield str(exc)
    yield repr(exc)
    for arg in exc.args:
        yield arg if isinstance(arg, str | bytes) else repr(arg)
    yield from getattr(exc, "__notes__", ())
    for value in vars(exc).values():  # e.g. UnicodeDecodeError.object, JSONDecodeError.doc
        if isinstance(value, str | bytes):
            yield value


def assert_no_personal_data_in_error(exc: BaseException, person: Person) -> None:
    """Fail if the error or anything chained to it names the person."""
    texts = personal_strings(person)
    blobs = tuple(b for t in texts for b in _encodings(t))
    for index, link in enumerate(_exception_chain(exc)):
        for rendering in _renderings(link):
            found = (
                any(t in rendering for t in texts)
                if isinstance(rendering, str)
                else any(b in rendering for b in blobs)
            )
            if found:
                raise ConformanceError(
                    f"personal data in {type(link).__name__} (link {index} of the error chain "
                    f"of {type(exc).__name__}); an adapter error must never carry the identity "
                    "number or the name"
                )


def _strings(message: Message, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string field of a message, recursively, with its path."""
    for descriptor, value in message.ListFields():
        name = f"{path}{descriptor.name}"
        repeated = descriptor.is_repeated
        values = list(value) if repeated else [value]
        for position, item in enumerate(values):
            where = f"{name}[{position}]" if repeated else name
            if isinstance(item, Message):
                yield from _strings(item, where + ".")
            elif isinstance(item, str):
                yield where, item


def assert_no_personal_data_in_facts(facts: report_pb2.SourceFacts, person: Person) -> None:
    """The identity number appears nowhere in clear; the name only in ``identity.name``.

    Summaries, record ids and case fields travel to every caller the purpose allows, including
    ones not entitled to the IDENTITY category, so they must not identify the person.
    """
    for where, value in _strings(facts):
        if person.identity_number in value:
            raise ConformanceError(f"{where} contains the identity number in clear")
        if where != "identity.name" and person.name in value:
            raise ConformanceError(f"{where} contains the subject's name")


def _check_provenance(
    provenance: report_pb2.Provenance,
    where: str,
    config: SourceConfig,
    source_kind: vocabulary_pb2.SourceKind.ValueType,
    window: tuple[dt.datetime, dt.datetime],
) -> None:
    problems = []
    if provenance.source_id != config.source_id:
        problems.append("source_id is not the configured source id")
    if provenance.source_kind != source_kind:
        problems.append("source_kind is not the adapter's kind")
    if not provenance.source_record_id:
        problems.append("source_record_id is empty")
    if not provenance.HasField("source_as_of"):
        problems.append("source_as_of is missing")
    if not provenance.HasField("fetched_at"):
        problems.append("fetched_at is missing")
    else:
        fetched = provenance.fetched_at.ToDatetime(dt.UTC)
        if not window[0] - CLOCK_SLACK <= fetched <= window[1] + CLOCK_SLACK:
            problems.append("fetched_at is not the time of this fetch")
    if provenance.signature == report_pb2.SIGNATURE_STATUS_UNSPECIFIED:
        problems.append("signature status is unspecified")
    if problems:
        raise ConformanceError(f"{where}.provenance: " + "; ".join(problems))


def assert_facts_as_expected(
    facts: report_pb2.SourceFacts,
    expected: Expectation,
    *,
    person: Person | None,
    config: SourceConfig,
    source_kind: vocabulary_pb2.SourceKind.ValueType,
    window: tuple[dt.datetime, dt.datetime],
) -> None:
    """Compare one answer with its expectation and check every promise of the seam on it.

    ``person`` is the subject asked about (``None`` only for a number that names nobody);
    ``window`` is when the fetch started and ended, which ``fetched_at`` must fall within.
    """
    state_name = vocabulary_pb2.RepairState.Name
    if facts.source_id != config.source_id or facts.source_kind != source_kind:
        raise ConformanceError("the answer does not name the configured source id and kind")
    if facts.display_name != config.display_name:
        raise ConformanceError("display_name is not the configured display name")
    if facts.stale:
        raise ConformanceError("an adapter never marks facts stale; only the gateway does")
    if facts.asserted_state != expected.asserted_state:
        raise ConformanceError(
            f"asserted_state is {state_name(facts.asserted_state)}, expected "
            f"{state_name(expected.asserted_state)}"
        )
    _check_identity(facts, expected, person)
    if sorted(c.case_number for c in facts.cases) != sorted(expected.case_numbers):
        raise ConformanceError(
            f"{len(facts.cases)} case(s) reported, expected {len(expected.case_numbers)} "
            "(or different case numbers)"
        )
    _check_record_kinds(facts.records, expected)
    signed: list[report_pb2.BankruptcyCase | report_pb2.CreditRecord] = [
        *facts.cases, *facts.records
    ]
    asserts = facts.asserted_state != vocabulary_pb2.REPAIR_STATE_UNSPECIFIED
    if facts.HasField("provenance") or asserts:
        # A state assertion must be attributable; an answer without one may lack it.
        _check_provenance(facts.provenance, "answer", config, source_kind, window)
        if signed and facts.provenance.signature != expected.signature:
            raise ConformanceError("answer.provenance: signature status is not the expected one")
    for index, item in enumerate(signed):
        where = f"cases[{index}]" if index < len(facts.cases) else (
            f"records[{index - len(facts.cases)}]"
        )
        _check_provenance(item.provenance, where, config, source_kind, window)
        if item.provenance.signature != expected.signature:
            status = report_pb2.SignatureStatus.Name(item.provenance.signature)
            raise ConformanceError(f"{where}.provenance: signature status is {status}")
    for index, record in enumerate(facts.records):
        if CATEGORY_OF_KIND.get(record.kind) != record.category:
            kind = vocabulary_pb2.RecordKind.Name(record.kind)
            category = vocabulary_pb2.DataCategory.Name(record.category)
            raise ConformanceError(f"records[{index}]: {kind} filed under {category}")
        if not record.summary:
            raise ConformanceError(f"records[{index}]: summary is empty")
    if person is not None:
        assert_no_personal_data_in_facts(facts, person)


def _check_identity(
    facts: report_pb2.SourceFacts, expected: Expectation, person: Person | None
) -> None:
    if not expected.knows_subject:
        if facts.HasField("identity"):
            raise ConformanceError("identity is present for a subject the source does not know")
        return
    if not facts.HasField("identity") or person is None:
        raise ConformanceError("identity is missing for a subject the source knows")
    if facts.identity.name != person.name:
        raise ConformanceError(
            "identity.name differs from the source's record (an encoding or trimming error?)"
        )
    if facts.identity.masked_identity_number != mask(person.identity_number):
        raise ConformanceError("identity.masked_identity_number is not the masked number")


def _check_record_kinds(
    records: Iterable[report_pb2.CreditRecord], expected: Expectation
) -> None:
    name = vocabulary_pb2.RecordKind.Name
    actual = Counter(r.kind for r in records)
    for kind, count in actual.items():
        if kind not in expected.records:
            raise ConformanceError(f"{count} unexpected {name(kind)} record(s)")
    for kind, wanted in expected.records.items():
        got = actual.get(kind, 0)
        if (wanted is None and got == 0) or (wanted is not None and got != wanted):
            raise ConformanceError(
                f"{got} {name(kind)} record(s), expected "
                f"{'at least one' if wanted is None else wanted}"
            )
