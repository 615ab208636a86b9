"""Everything that can be decided about one update without the database.

The stream reader runs this on each update as it arrives, so the transaction that applies a
batch does no parsing, verification or encryption. The result is either a ``Rejection``
(UPPER_SNAKE reason plus a message for the provider's operator, never personal data) or an
``Accepted`` update whose identity number is already a subject token and whose facts and
signed original are already ciphertexts bound to the rows they will be written to.

Checks run cheapest-to-trust first: size, then the signature over the raw bytes (nothing
unsigned is parsed further), then canonical form, then the fields.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import NoReturn

import grpc
from google.protobuf import timestamp_pb2
from google.protobuf.message import DecodeError

from credgate.adapters.mapping import MAX_RECORDS
from credgate.api.credit_repair.v1 import provider_sync_service_pb2 as sync_pb2
from credgate.api.credit_repair.v1 import report_pb2, vocabulary_pb2
from credgate.core import identity_number
from credgate.core.errors import GatewayError
from credgate.core.sync.signing import (
    DIGEST_BYTES,
    NotCanonicalError,
    batch_signature_valid,
    batch_tree,
    parse_canonical,
    signature_valid,
    update_digest,
)
from credgate.core.tokens import SubjectTokenizer
from credgate.gateway.fact_index import facts_context, identity_context
from credgate.gateway.input_rules import check_message
from credgate.gateway.protection.cipher import FieldCipher
from credgate.gateway.sync.models import original_context
from credgate.gateway.sync.settings import ProviderConfig, SyncSettings, source_kind_name

log = logging.getLogger(__name__)

_IDEMPOTENCY_DOMAIN = b"credgate/idempotency-key/v1\x00"
_MAX_SEQUENCE = 2**63 - 1
_MAX_TIMESTAMP_SECONDS = 253_402_300_800  # 10000-01-01T00:00:00Z, protobuf's upper bound
_KNOWN_STATES = frozenset(vocabulary_pb2.RepairState.values())
_CHECKED_BY_VALIDATOR = frozenset({"identity_number"})
"""ProviderUpdate fields whose value ``_check_content`` checks itself before the input rules."""
_IDEMPOTENCY_KEY = re.compile(r"[\x21-\x7e]{8,128}")
"""8-128 printable ASCII characters, no space (one C-level match instead of a loop per char)."""


@dataclass(frozen=True)
class Rejection:
    """Why an update is refused."""

    reason: str
    message: str


@dataclass(frozen=True)
class Accepted:
    """A valid update, ready to write: tokens, digests and ciphertexts only."""

    subject_token: str
    idempotency_digest: str
    source_kind: int
    source_as_of: dt.datetime
    facts_ciphertext: bytes
    identity_ciphertext: bytes
    original_ciphertext: bytes
    update_digest: bytes = b""
    """SHA-256 of the signed ``update_bytes``: what an ack says was applied under the number."""

    @property
    def facts_key_id(self) -> str:
        """The key id ``facts_ciphertext`` was made under (stored beside it)."""
        return envelope_key_id(self.facts_ciphertext)

    @property
    def identity_key_id(self) -> str:
        """The key id ``identity_ciphertext`` was made under."""
        return envelope_key_id(self.identity_ciphertext)

    @property
    def original_key_id(self) -> str:
        """The key id ``original_ciphertext`` was made under."""
        return envelope_key_id(self.original_ciphertext)


def envelope_key_id(blob: bytes) -> str:
    """The key id in a ``FieldCipher`` envelope's header: version, length, id.

    What ``FieldCipher.key_id_of`` returns, without its full parse (a dataclass and three
    slices, three times per update on the ingest path); the blobs here were made by the
    gateway's own cipher moments before, so their header is well-formed.
    """
    return blob[2 : 2 + blob[1]].decode("ascii")


@dataclass(frozen=True)
class Prepared:
    """One update as the applier sees it: its sequence number and what validation decided."""

    sequence: int
    received_at: dt.datetime
    result: Accepted | Rejection


class IdempotencyDigester:
    """Keyed digests of idempotency keys: equality without storing provider-chosen text.

    A provider may build its keys from anything, an identity number included; an unkeyed hash
    of a small space is reversible, an HMAC under a secret key is not. The key is the keyring's
    subject-token key under its own domain prefix (so no value here can equal a token).
    """

    def __init__(self, hmac_key: bytes) -> None:
        self._key = hmac_key

    def __repr__(self) -> str:
        return "IdempotencyDigester()"

    def digest(self, source_id: str, key: str) -> str:
        """Hex digest of ``key`` scoped to ``source_id``."""
        message = _IDEMPOTENCY_DOMAIN + source_id.encode() + b"\x00" + key.encode()
        # hmac.digest: the one-shot C path (same HMAC-SHA256 as hmac.new, without building
        # an HMAC object per update on the ingest path).
        return hmac.digest(self._key, message, hashlib.sha256).hex()


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UpdateValidator:
    """Turns a ``SignedProviderUpdate`` from a given provider into a ``Prepared`` update."""

    def __init__(
        self,
        tokenizer: SubjectTokenizer,
        cipher: FieldCipher,
        digester: IdempotencyDigester,
        settings: SyncSettings,
        *,
        clock: Callable[[], dt.datetime] = _utcnow,
    ) -> None:
        self._tokenizer = tokenizer
        self._cipher = cipher
        self._digester = digester
        self._settings = settings
        self._clock = clock
        self._stamp: tuple[dt.datetime, timestamp_pb2.Timestamp] | None = None

    @property
    def primary_key_id(self) -> str:
        """The key id new ciphertexts are made under now (sent with a batch to a worker)."""
        return self._cipher.primary_key_id

    def prepare(self, provider: ProviderConfig, signed: sync_pb2.SignedProviderUpdate) -> Prepared:
        """Validate ``signed`` as coming from ``provider``; never raises for bad input."""
        received_at = self._clock()
        result: Accepted | Rejection
        try:
            result = self._check(provider, signed, received_at)
        except _Refused as refused:
            result = refused.rejection
        except Exception as exc:  # a bug must cost one update, not the provider's stream
            log.warning(
                "update %d from provider %s refused: %s while validating (details withheld)",
                signed.sequence,
                provider.institution_id,
                type(exc).__name__,
            )
            result = Rejection("UPDATE_INVALID", "the update could not be validated")
        return Prepared(signed.sequence, received_at, result)

    def prepare_batch(
        self, provider: ProviderConfig, batch: sync_pb2.SignedUpdateBatch
    ) -> list[Prepared]:
        """Validate a ``SignedUpdateBatch`` from ``provider``: one ``Prepared`` per update.

        The batch as a whole is checked first — its shape, its one signature over the digests
        it carries, then each update against its signed digest — and refused as a whole with a
        ``BatchRefused`` (nothing of it applied, the position of a changed update named).
        Only then is each update checked on its own, exactly as a single update is after its
        signature: a bad update in a well-signed batch costs its own sequence number only.
        """
        received_at = self._clock()
        first, count = batch.first_sequence, len(batch.update_bytes)
        where = {"first_sequence": str(first), "update_count": str(count)}
        if not 1 <= count <= self._settings.max_batch_updates:
            _refuse_batch(
                "BATCH_MALFORMED",
                f"a batch holds 1 to {self._settings.max_batch_updates} updates",
                where,
                "batch.update_bytes",
            )
        if len(batch.update_digests) != count:
            _refuse_batch(
                "BATCH_MALFORMED",
                "a batch carries one digest per update",
                where,
                "batch.update_digests",
            )
        if any(len(d) != DIGEST_BYTES for d in batch.update_digests):
            _refuse_batch(
                "BATCH_MALFORMED", "each digest is 32 bytes", where, "batch.update_digests"
            )
        if not 1 <= first <= _MAX_SEQUENCE - count + 1:
            _refuse_batch(
                "BATCH_MALFORMED",
                "the batch's sequence range is out of bounds",
                where,
                "batch.first_sequence",
            )
        digests = list(batch.update_digests)
        root, paths = batch_tree(digests)
        if not batch_signature_valid(
            provider.public_key, provider.source_id, first, count, root, batch.signature
        ):
            _refuse_batch(
                "BATCH_SIGNATURE_INVALID",
                "the batch's signature does not verify with the registered key",
                where,
                "batch.signature",
            )
        for position, (update_bytes, digest) in enumerate(
            zip(batch.update_bytes, digests, strict=True)
        ):
            if update_digest(update_bytes) != digest:
                _refuse_batch(
                    "BATCH_UPDATE_TAMPERED",
                    f"update {position} of the batch (sequence {first + position}) differs "
                    "from the digest the batch's signature covers",
                    {**where, "position": str(position), "sequence": str(first + position)},
                    f"batch.update_bytes[{position}]",
                )
        prepared: list[Prepared] = []
        for position, (update_bytes, digest) in enumerate(
            zip(batch.update_bytes, digests, strict=True)
        ):
            sequence = first + position
            original = sync_pb2.SignedProviderUpdate(
                sequence=sequence,
                update_bytes=update_bytes,
                batch_inclusion=sync_pb2.BatchInclusion(
                    first_sequence=first,
                    update_count=count,
                    inclusion_path=paths[position],
                    signature=batch.signature,
                ),
            )
            result: Accepted | Rejection
            try:
                if len(update_bytes) > self._settings.max_update_bytes:
                    _refuse(
                        "UPDATE_TOO_LARGE",
                        f"update_bytes exceed {self._settings.max_update_bytes}",
                    )
                result = self._check_content(provider, original, digest, received_at)
            except _Refused as refused:
                result = refused.rejection
            except Exception as exc:  # a bug must cost one update, not the provider's stream
                log.warning(
                    "update %d from provider %s refused: %s while validating (details withheld)",
                    sequence,
                    provider.institution_id,
                    type(exc).__name__,
                )
                result = Rejection("UPDATE_INVALID", "the update could not be validated")
            prepared.append(Prepared(sequence, received_at, result))
        return prepared

    def _check(
        self,
        provider: ProviderConfig,
        signed: sync_pb2.SignedProviderUpdate,
        received_at: dt.datetime,
    ) -> Accepted:
        if signed.sequence <= 0:
            _refuse("SEQUENCE_INVALID", "sequence must be 1 or more")
        if len(signed.update_bytes) > self._settings.max_update_bytes:
            _refuse("UPDATE_TOO_LARGE", f"update_bytes exceed {self._settings.max_update_bytes}")
        if signed.HasField("batch_inclusion"):
            _refuse("UPDATE_INVALID", "batch_inclusion is set by the gateway only")
        if not signature_valid(provider.public_key, signed.update_bytes, signed.signature):
            _refuse("SIGNATURE_INVALID", "signature does not verify with the registered key")
        return self._check_content(
            provider, signed, hashlib.sha256(signed.update_bytes).digest(), received_at
        )

    def _check_content(
        self,
        provider: ProviderConfig,
        signed: sync_pb2.SignedProviderUpdate,
        digest: bytes,
        received_at: dt.datetime,
    ) -> Accepted:
        """Everything after the signature: canonical form, fields, tokens, ciphertexts.

        ``signed`` is what is kept as the signed original (for a batched update, with its
        ``BatchInclusion``); ``digest`` the SHA-256 of its ``update_bytes``."""
        try:
            update = parse_canonical(signed.update_bytes)
        except NotCanonicalError:
            _refuse("UPDATE_NOT_CANONICAL", "update_bytes are not the canonical serialization")
        except DecodeError:
            _refuse("UPDATE_MALFORMED", "update_bytes do not parse as a ProviderUpdate")
        if update.sequence != signed.sequence:
            _refuse("SEQUENCE_MISMATCH", "signed sequence differs from the envelope's")
        if update.source_id != provider.source_id:
            _refuse("SOURCE_NOT_PERMITTED", "a provider may only write its own source's facts")
        key = update.idempotency_key
        if _IDEMPOTENCY_KEY.fullmatch(key) is None:
            _refuse("IDEMPOTENCY_KEY_INVALID", "idempotency_key must be 8-128 printable ASCII")
        number = update.identity_number
        problem = identity_number.validate(number, today=received_at.date())
        if problem is not None:
            _refuse("IDENTITY_NUMBER_INVALID", f"identity_number: {problem.description}")
        facts, as_of = self._indexed_facts(provider, update, received_at)
        # The identity number's value was checked above, more strictly than its rules
        # (canonical ASCII, birth date against the receipt's day, check character): once.
        violations = check_message(update, fold=False, checked=_CHECKED_BY_VALIDATOR)
        if violations:
            described = "; ".join(f"{path} {problem}" for path, problem in violations)
            _refuse("UPDATE_INVALID", described)
        token = self._tokenizer.token(number)
        return Accepted(
            subject_token=token,
            idempotency_digest=self._digester.digest(provider.source_id, key),
            source_kind=int(facts.source_kind),
            source_as_of=as_of,
            facts_ciphertext=self._cipher.encrypt(
                facts.SerializeToString(deterministic=True),
                context=facts_context(token, provider.source_id),
            ),
            identity_ciphertext=self._cipher.encrypt(
                number.encode("ascii"), context=identity_context(token)
            ),
            original_ciphertext=self._cipher.encrypt(
                signed.SerializeToString(deterministic=True),
                context=original_context(provider.source_id, signed.sequence),
            ),
            update_digest=digest,
        )

    def _received_stamp(self, received_at: dt.datetime) -> timestamp_pb2.Timestamp:
        """``received_at`` as a Timestamp, converted once per batch (every update of a batch
        shares its receipt time; the conversion was 5 % of validating an update)."""
        cached = self._stamp
        if cached is None or cached[0] != received_at:
            stamp = timestamp_pb2.Timestamp()
            stamp.FromDatetime(received_at)
            cached = self._stamp = (received_at, stamp)
        return cached[1]

    def _indexed_facts(
        self, provider: ProviderConfig, update: sync_pb2.ProviderUpdate, received_at: dt.datetime
    ) -> tuple[report_pb2.SourceFacts, dt.datetime]:
        """Check the facts' sanity; return them as the index keeps them, and their as-of time.

        The index copy says what the gateway knows: the signature verified, and the facts
        arrived at ``received_at``. The signed original keeps the provider's exact bytes.
        """
        if not update.HasField("facts"):
            _refuse("FACTS_INVALID", "facts are required")
        facts = report_pb2.SourceFacts()
        facts.CopyFrom(update.facts)
        if facts.source_id != provider.source_id:
            _refuse("SOURCE_NOT_PERMITTED", "facts.source_id must be the provider's own source")
        if facts.source_kind != provider.source_kind:
            _refuse("SOURCE_KIND_MISMATCH", "facts.source_kind differs from the configured kind")
        kind_name = source_kind_name(provider.source_kind)
        if facts.source_kind_name not in ("", kind_name):
            _refuse("SOURCE_KIND_MISMATCH", "facts.source_kind_name is not the configured kind")
        facts.source_kind_name = kind_name
        if facts.stale:
            _refuse("FACTS_INVALID", "pushed facts cannot be stale")
        if facts.asserted_state not in _KNOWN_STATES:
            _refuse("FACTS_INVALID", "facts.asserted_state is not a known repair state")
        if len(facts.cases) + len(facts.records) > MAX_RECORDS:
            _refuse("FACTS_INVALID", f"more than {MAX_RECORDS} cases and records")
        if not facts.provenance.HasField("source_as_of"):
            _refuse("FACTS_INVALID", "facts.provenance.source_as_of is required")
        latest = received_at + dt.timedelta(seconds=self._settings.max_clock_skew_seconds)
        as_of = _timestamp_until(facts.provenance.source_as_of, latest)
        if as_of is None:
            _refuse("FACTS_INVALID", "facts.provenance.source_as_of is invalid or in the future")
        if facts.HasField("identity"):
            masked = identity_number.mask(update.identity_number)
            if facts.identity.masked_identity_number not in ("", masked):
                _refuse("FACTS_INVALID", "identity.masked_identity_number must be masked")
            facts.identity.masked_identity_number = masked
        stamp = self._received_stamp(received_at)
        for provenance in _provenances(facts):
            if provenance.source_id not in ("", provider.source_id):
                _refuse("SOURCE_NOT_PERMITTED", "a provenance names another source")
            if provenance.source_kind not in (0, provider.source_kind):
                _refuse("SOURCE_KIND_MISMATCH", "a provenance names another source kind")
            provenance.source_id = provider.source_id
            provenance.source_kind = provider.source_kind
            if provenance.source_kind_name not in ("", kind_name):
                _refuse("SOURCE_KIND_MISMATCH", "a provenance names another source kind")
            provenance.source_kind_name = kind_name
            provenance.signature = report_pb2.SIGNATURE_STATUS_VERIFIED
            provenance.fetched_at.CopyFrom(stamp)
        return facts, as_of


def _provenances(facts: report_pb2.SourceFacts) -> Iterator[report_pb2.Provenance]:
    yield facts.provenance
    for case in facts.cases:
        yield case.provenance
    for record in facts.records:
        yield record.provenance


def _timestamp_until(stamp: timestamp_pb2.Timestamp, latest: dt.datetime) -> dt.datetime | None:
    """``stamp`` as an aware datetime if it is valid and not after ``latest``, else None
    (converted once: the caller keeps the value as the update's ``source_as_of``)."""
    if not 0 <= stamp.seconds < _MAX_TIMESTAMP_SECONDS or not 0 <= stamp.nanos < 10**9:
        return None
    value = stamp.ToDatetime(tzinfo=dt.UTC)
    return value if value <= latest else None


class _Refused(Exception):
    def __init__(self, rejection: Rejection) -> None:
        super().__init__(rejection.reason)
        self.rejection = rejection


def _refuse(reason: str, message: str) -> NoReturn:
    raise _Refused(Rejection(reason, message))


class BatchRefused(GatewayError):
    """A ``SignedUpdateBatch`` refused as a whole: the stream ends with this status once every
    message before the batch is resolved, and nothing of the batch is applied."""


def _refuse_batch(reason: str, message: str, where: dict[str, str], field: str) -> NoReturn:
    raise BatchRefused.of(
        grpc.StatusCode.INVALID_ARGUMENT,
        message,
        reason,
        metadata=where,
        field_violations=[(field, message)],
    )
