"""A small typed client for institutions calling credgate over mutual TLS.

    async with CredgateClient.from_pki_dir("127.0.0.1:50051", Path("var/pki"), "bank-demo") as c:
        report = await c.get_repair_status("440305...", purpose=Purpose.JUDICIAL_INVESTIGATION,
                                           case_reference="(2026)粤03执1号")

Failed calls raise ``CredgateError`` carrying the gRPC code, the ErrorInfo reason and the
BadRequest field violations, so callers branch on reasons rather than parse messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from types import TracebackType

import grpc
from credit_repair.v1 import consent_service_pb2 as consent_pb2
from credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credit_repair.v1 import report_pb2
from credit_repair.v1 import vocabulary_pb2 as vocab

from gateway.channel import client_channel
from gateway.errors import parse_error, request_id_from_error
from gateway.pki import institution_paths

DEFAULT_TIMEOUT_SECONDS = 10.0


class CredgateError(Exception):
    """A call the gateway refused or could not complete."""

    def __init__(self, rpc_error: grpc.RpcError) -> None:
        parsed = parse_error(rpc_error)
        self.code = parsed.code
        self.reason = parsed.error_info.reason if parsed.error_info else ""
        self.field_violations: list[tuple[str, str]] = (
            [(v.field, v.description) for v in parsed.bad_request.field_violations]
            if parsed.bad_request
            else []
        )
        self.request_id = request_id_from_error(rpc_error)
        details = getattr(rpc_error, "details", None)
        self.message = str(details()) if callable(details) else ""
        super().__init__(f"{self.code.name} {self.reason}: {self.message}")


def purpose_from_name(name: str) -> vocab.Purpose.ValueType:
    """``credit_application_review`` → PURPOSE_CREDIT_APPLICATION_REVIEW."""
    try:
        value = vocab.Purpose.Value("PURPOSE_" + name.strip().upper())
    except ValueError:
        raise ValueError(f"unknown purpose {name!r}") from None
    if value == vocab.PURPOSE_UNSPECIFIED:
        raise ValueError("purpose must be given")
    return value


def category_from_name(name: str) -> vocab.DataCategory.ValueType:
    try:
        return vocab.DataCategory.Value("DATA_CATEGORY_" + name.strip().upper())
    except ValueError:
        raise ValueError(f"unknown data category {name!r}") from None


class CredgateClient:
    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._channel = channel
        self._stub = service_grpc.RepairStatusServiceStub(channel)
        self._consents = consent_grpc.ConsentServiceStub(channel)

    @classmethod
    def from_pki_dir(cls, target: str, pki_dir: Path, institution_id: str) -> CredgateClient:
        """Connect as ``institution_id`` using the certificate files in a PKI directory."""
        paths = institution_paths(pki_dir, institution_id)
        return cls(client_channel(target, pki_dir / "ca.pem", paths.cert, paths.key))

    async def __aenter__(self) -> CredgateClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def get_repair_status(
        self,
        identity_number: str,
        *,
        purpose: vocab.Purpose.ValueType,
        categories: Iterable[vocab.DataCategory.ValueType] = (),
        consent_id: str = "",
        case_reference: str = "",
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> report_pb2.RepairStatusReport:
        request = service_pb2.GetRepairStatusRequest(
            identity_number=identity_number,
            purpose=purpose,
            categories=list(categories),
            consent_id=consent_id,
            case_reference=case_reference,
        )
        try:
            response = await self._stub.GetRepairStatus(request, timeout=timeout)
        except grpc.RpcError as error:
            raise CredgateError(error) from None
        report: report_pb2.RepairStatusReport = response.report
        return report

    async def batch_get_repair_status(
        self,
        requests: Sequence[service_pb2.GetRepairStatusRequest],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> list[service_pb2.BatchGetRepairStatusResult]:
        try:
            response = await self._stub.BatchGetRepairStatus(
                service_pb2.BatchGetRepairStatusRequest(requests=list(requests)), timeout=timeout
            )
        except grpc.RpcError as error:
            raise CredgateError(error) from None
        return list(response.results)

    async def enroll_subject_key(
        self, identity_number: str, public_key: bytes, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> str:
        """Enrol a subject's consent-signing key (enrolment offices only); returns its key id."""
        try:
            response = await self._consents.EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(
                    identity_number=identity_number, public_key=public_key
                ),
                timeout=timeout,
            )
        except grpc.RpcError as error:
            raise CredgateError(error) from None
        key_id: str = response.subject_key_id
        return key_id

    async def grant_consent(
        self,
        identity_number: str,
        signed_terms: bytes,
        signature: bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> consent_pb2.ConsentGrant:
        """Record a grant the subject signed (``consent.grants.sign_terms`` on their device)."""
        try:
            response = await self._consents.GrantConsent(
                consent_pb2.GrantConsentRequest(
                    identity_number=identity_number, signed_terms=signed_terms,
                    signature=signature,
                ),
                timeout=timeout,
            )
        except grpc.RpcError as error:
            raise CredgateError(error) from None
        grant: consent_pb2.ConsentGrant = response.grant
        return grant

    async def revoke_consent(
        self, consent_id: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> consent_pb2.ConsentGrant:
        try:
            response = await self._consents.RevokeConsent(
                consent_pb2.RevokeConsentRequest(consent_id=consent_id), timeout=timeout
            )
        except grpc.RpcError as error:
            raise CredgateError(error) from None
        grant: consent_pb2.ConsentGrant = response.grant
        return grant
