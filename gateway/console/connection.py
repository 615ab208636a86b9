"""The console's one connection to the gateway: an mTLS channel with the reader's certificate.

The reader's *mode* (which pages the console offers) comes from the role written in the
reader's own certificate (``core.institution``): a regulator sees the regulator pages, a subject
the subject pages. The gateway decides again on every call — the mode only chooses what to
show; it grants nothing.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc

from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as objection_grpc
from credgate.api.credit_repair.v1 import reconciliation_service_pb2_grpc as reconciliation_grpc
from credgate.api.credit_repair.v1 import regulator_service_pb2_grpc as regulator_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.log_signing_key import load_verifier
from credgate.audit.note import NoteVerifier
from credgate.core.channel import client_channel
from credgate.core.institution import CertificateRejected, Institution, institution_from_pem
from credgate.gateway.client import CredgateClient
from credgate.gateway.console.checkpoint_memory import CheckpointMemory
from credgate.gateway.console.witnesses import DEFAULT_BEHIND_AFTER

DEFAULT_TIMEOUT_SECONDS = 10.0
_Stub = TypeVar("_Stub")


class Mode(enum.StrEnum):
    """Which pages the console offers, from the reader's certificate role."""

    REGULATOR = "regulator"
    SUBJECT = "subject"
    OTHER = "other"
    """A certificate of any other role: the console says it has no pages for it."""


def mode_of(reader: Institution) -> Mode:
    if reader.role == vocab.INSTITUTION_ROLE_REGULATOR:
        return Mode.REGULATOR
    if reader.role == vocab.INSTITUTION_ROLE_SUBJECT:
        return Mode.SUBJECT
    return Mode.OTHER


def read_reader(cert_pem: bytes) -> Institution:
    """The reader named by ``cert_pem``; ValueError for a certificate the gateway would refuse."""
    result = institution_from_pem(cert_pem)
    if isinstance(result, CertificateRejected):
        raise ValueError(f"the certificate names no reader: {result.message}")
    return result


def _witness_verifier(text_or_path: str) -> CosignerVerifier:
    """A witness verifier key given inline or as a file (``credgate witness keygen``'s .pub)."""
    candidate = Path(text_or_path)
    text = candidate.read_text(encoding="ascii") if candidate.is_file() else text_or_path
    return CosignerVerifier.from_vkey(text.strip())


@dataclass
class GatewayConnection:
    """The channel, the reader, and the stubs pages call (``stub(...)`` for any other service).

    Pages call stubs with ``timeout=connection.timeout``; a failed call raises
    ``grpc.aio.AioRpcError``, which the console turns into an error page (``app``).
    """

    target: str
    channel: grpc.aio.Channel
    reader: Institution
    certificate: bytes
    log_verifiers: Sequence[NoteVerifier] = ()
    """The gateway's audit log key(s), pinned out of band (``--log-key``): checkpoints are
    checked against these, never against a key the gateway hands over."""
    witness_verifiers: Sequence[CosignerVerifier] = ()
    """Witness keys pinned out of band (``--witness-key``): their cosignatures are checked."""
    witness_behind_after: dt.timedelta = DEFAULT_BEHIND_AFTER
    """How long a witness may trail the newest checkpoint before the console alerts."""
    subject_key: Path | None = None
    """The subject's consent-signing key file (``--subject-key``), for subject mode."""
    timeout: float = DEFAULT_TIMEOUT_SECONDS
    checkpoints: CheckpointMemory = field(default_factory=CheckpointMemory)
    """The newest checkpoint verified in this session (``console.proofs``), in memory only."""
    _stubs: dict[type, Any] = field(default_factory=dict)

    @classmethod
    def open(
        cls,
        target: str,
        *,
        ca: Path,
        cert: Path,
        key: Path,
        log_keys: Sequence[str] = (),
        witness_keys: Sequence[str] = (),
        subject_key: Path | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> GatewayConnection:
        certificate = cert.read_bytes()
        return cls(
            target=target,
            channel=client_channel(target, ca, certificate, key),
            reader=read_reader(certificate),
            certificate=certificate,
            log_verifiers=[load_verifier(text) for text in log_keys],
            witness_verifiers=[_witness_verifier(text) for text in witness_keys],
            subject_key=subject_key,
            timeout=timeout,
        )

    @property
    def mode(self) -> Mode:
        return mode_of(self.reader)

    def stub(self, stub_class: type[_Stub]) -> _Stub:
        """One stub of ``stub_class`` on this channel, e.g. ``stub(ConsentServiceStub)``."""
        if stub_class not in self._stubs:
            self._stubs[stub_class] = stub_class(self.channel)  # type: ignore[call-arg]
        return self._stubs[stub_class]  # type: ignore[no-any-return]

    @property
    def regulator(self) -> regulator_grpc.RegulatorServiceStub:
        return self.stub(regulator_grpc.RegulatorServiceStub)

    @property
    def objections(self) -> objection_grpc.ObjectionServiceStub:
        return self.stub(objection_grpc.ObjectionServiceStub)

    @property
    def reconciliation(self) -> reconciliation_grpc.ReconciliationServiceStub:
        return self.stub(reconciliation_grpc.ReconciliationServiceStub)

    @property
    def client(self) -> CredgateClient:
        """The typed client (verifies signed reports and receipts) on the same channel."""
        if CredgateClient not in self._stubs:
            self._stubs[CredgateClient] = CredgateClient(self.channel, certificate=self.certificate)
        return self._stubs[CredgateClient]  # type: ignore[no-any-return]

    async def close(self) -> None:
        await self.channel.close()
