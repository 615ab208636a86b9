"""A small typed client for institutions calling credgate over mutual TLS.

    async with CredgateClient.from_pki_dir("127.0.0.1:50051", Path("var/pki"), "bank-demo") as c:
        report = await c.get_repair_status("440305...", purpose=Purpose.JUDICIAL_INVESTIGATION,
                                           case_reference="(2026)粤03执1号")

Failed calls raise ``CredgateError`` carrying the gRPC code, the ErrorInfo reason and the
BadRequest field violations, so callers branch on reasons rather than parse messages. A call
that cannot connect because the client's own certificate has expired (or is not yet valid)
raises ``ClientCertificateRefused`` saying so: the gateway refuses it at the TLS handshake,
which gRPC reports only as ``UNAVAILABLE … Socket closed``.

Every report is verified before it is returned: the gateway's Ed25519 signature over the
report's exact bytes, and the request digest against the request this client sent (a random
nonce in every request keeps that digest from revealing the identity number). The gateway's
public keys are fetched once (``SigningKeyService``) and cached, fetched again only for a key
id not seen before (a rotation); pass ``signing_keys`` to pin them instead and never fetch.
A report that fails raises ``ReportVerificationError``. ``get_signed_repair_status`` also
returns the ``SignedReport`` to keep as proof of what the institution was told.

Grant receipts (``get_grant_receipt``) are verified the same way, against the same published
keys, under their own signing context (``gateway.grant_receipts``); one that fails raises
``ReceiptVerificationError``. ``verify_signed_receipt`` checks a kept receipt offline.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from credgate.api.credit_repair.v1 import audit_pb2, report_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2 as consent_pb2
from credgate.api.credit_repair.v1 import consent_service_pb2_grpc as consent_grpc
from credgate.api.credit_repair.v1 import objection_service_pb2 as objection_pb2
from credgate.api.credit_repair.v1 import objection_service_pb2_grpc as objection_grpc
from credgate.api.credit_repair.v1 import repair_application_service_pb2 as application_pb2
from credgate.api.credit_repair.v1 import repair_application_service_pb2_grpc as application_grpc
from credgate.api.credit_repair.v1 import repair_status_service_pb2 as service_pb2
from credgate.api.credit_repair.v1 import repair_status_service_pb2_grpc as service_grpc
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2 as self_pb2
from credgate.api.credit_repair.v1 import self_inquiry_service_pb2_grpc as self_grpc
from credgate.api.credit_repair.v1 import signing_key_service_pb2 as keys_pb2
from credgate.api.credit_repair.v1 import signing_key_service_pb2_grpc as keys_grpc
from credgate.api.credit_repair.v1 import vocabulary_pb2 as vocab
from credgate.consent.data_life import report_keep_until
from credgate.core.channel import client_channel
from credgate.gateway.certificate_validity import Refusal, validity_refusal
from credgate.gateway.grant_receipts import (
    ReceiptVerificationError,
    receipt_terms,
    verify_signed_receipt,
)
from credgate.gateway.pki import institution_paths
from credgate.gateway.repair_certificate_format import (
    Certificate,
    read_status_list,
    verify_certificate,
)
from credgate.gateway.report_signing import (
    ReportVerificationError,
    index_public_keys,
    request_digest,
    verify_signed_report,
)
from credgate.gateway.wire_errors import parse_error, request_id_from_error

DEFAULT_TIMEOUT_SECONDS = 10.0
CONSISTENCY_DEFAULT = service_pb2.CONSISTENCY_MODE_UNSPECIFIED
NONCE_BYTES = 16
_Item = TypeVar("_Item")
_Page = TypeVar("_Page", bound=Any)
_Response = TypeVar("_Response")
"""A listing's response message: it has ``next_page_token``."""
_LIST_PAGE_SIZE = 200

__all__ = [
    "ClientCertificateRefused",
    "CredgateClient",
    "CredgateError",
    "ReceiptVerificationError",
    "ReportVerificationError",
    "VerifiedReceipt",
    "VerifiedReport",
    "WatchedReport",
    "category_from_name",
    "purpose_from_name",
    "verify_signed_receipt",
]


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


class ClientCertificateRefused(CredgateError):
    """A call that could not connect while this client's own certificate is outside its
    validity period: the likely cause, named.

    The gateway refuses such a certificate at the TLS handshake, and gRPC reports that only as
    ``UNAVAILABLE … Socket closed`` (TLS 1.3 delivers the server's alert after the client has
    finished its side). ``code`` stays UNAVAILABLE; ``reason`` (``CERTIFICATE_EXPIRED`` or
    ``CERTIFICATE_NOT_YET_VALID``) and ``message`` are this client's own diagnosis.
    """

    def __init__(self, rpc_error: grpc.RpcError, refusal: Refusal) -> None:
        super().__init__(rpc_error)
        said = self.message
        self.reason = refusal.reason
        self.message = f"{refusal.message} (gRPC said: {said})"
        self.args = (f"{self.code.name} {self.reason}: {self.message}",)


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


@dataclass(frozen=True)
class WatchedReport:
    """One report of a watch stream, verified, with the changes it follows."""

    report: report_pb2.RepairStatusReport
    signed: report_pb2.SignedReport
    changes: tuple[service_pb2.SubjectChange, ...]
    """Empty for the first report; then the subject's changes since the previous report."""


@dataclass(frozen=True)
class VerifiedReport:
    """A report whose signature and request digest verified, with the signed original."""

    report: report_pb2.RepairStatusReport
    """Parsed from ``signed.report`` after verification (never the unsigned copy)."""
    signed: report_pb2.SignedReport
    """Keep this: it verifies on its own, against the gateway's public key."""

    @property
    def keep_until(self) -> dt.datetime | None:
        """Until when the report may be kept (its signed data life), or None when the grant
        sets no period or no grant was relied on (``report.data_life.basis`` says which)."""
        return report_keep_until(self.report)


@dataclass(frozen=True)
class VerifiedReceipt:
    """A grant receipt whose gateway signature verified, with the signed original."""

    receipt: consent_pb2.GrantReceipt
    """Parsed from ``signed.receipt`` after verification."""
    terms: consent_pb2.ConsentTerms
    """The terms the subject signed, parsed from ``receipt.signed_terms``."""
    signed: consent_pb2.SignedGrantReceipt
    """Keep this: it verifies on its own (``verify_signed_receipt``) against the gateway's
    published keys."""


def _with_nonce(
    request: service_pb2.GetRepairStatusRequest,
) -> service_pb2.GetRepairStatusRequest:
    """A copy of ``request`` with a fresh random nonce unless the caller chose one."""
    copy = service_pb2.GetRepairStatusRequest()
    copy.CopyFrom(request)
    if not copy.nonce:
        copy.nonce = secrets.token_bytes(NONCE_BYTES)
    return copy


class CredgateClient:
    def __init__(
        self,
        channel: grpc.aio.Channel,
        *,
        signing_keys: Iterable[bytes] | None = None,
        certificate: bytes | None = None,
    ) -> None:
        """``certificate``: the PEM client certificate the channel presents, if known, so that
        a connection refused for its validity period says so (``ClientCertificateRefused``)."""
        self._channel = channel
        self._certificate = certificate
        self._stub = service_grpc.RepairStatusServiceStub(channel)
        self._consents = consent_grpc.ConsentServiceStub(channel)
        self._signing_key_stub = keys_grpc.SigningKeyServiceStub(channel)
        self._self_inquiry = self_grpc.SelfInquiryServiceStub(channel)
        self._objections = objection_grpc.ObjectionServiceStub(channel)
        self._applications = application_grpc.RepairApplicationServiceStub(channel)
        self._pinned = signing_keys is not None
        self._keys: dict[str, bytes] = index_public_keys(signing_keys or ())
        self._keys_lock = asyncio.Lock()

    @classmethod
    def from_pki_dir(
        cls,
        target: str,
        pki_dir: Path,
        institution_id: str,
        *,
        signing_keys: Iterable[bytes] | None = None,
    ) -> CredgateClient:
        """Connect as ``institution_id`` using the certificate files in a PKI directory."""
        paths = institution_paths(pki_dir, institution_id)
        return cls(
            client_channel(target, pki_dir / "ca.pem", paths.cert, paths.key),
            signing_keys=signing_keys,
            certificate=paths.cert.read_bytes(),
        )

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

    def _error(self, error: grpc.RpcError) -> CredgateError:
        """``CredgateError`` for a failed call; ``ClientCertificateRefused`` when it could not
        connect and this client's certificate is outside its validity period."""
        code = getattr(error, "code", None)
        if (
            self._certificate is not None
            and callable(code)
            and code() == grpc.StatusCode.UNAVAILABLE
        ):
            refusal = validity_refusal(self._certificate)
            if refusal is not None:
                return ClientCertificateRefused(error, refusal)
        return CredgateError(error)

    async def _answer(self, call: Awaitable[_Response]) -> _Response:
        """The call's response, its failure raised as this client's ``CredgateError``."""
        try:
            return await call
        except grpc.RpcError as error:
            raise self._error(error) from None

    # -- signing keys -----------------------------------------------------------------------------

    async def list_signing_keys(
        self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> list[keys_pb2.SigningKey]:
        """Every report-signing key the gateway publishes (current and retired), all pages."""
        return await self._every_page(
            lambda token: self._signing_key_stub.ListSigningKeys(
                keys_pb2.ListSigningKeysRequest(page_size=_LIST_PAGE_SIZE, page_token=token),
                timeout=timeout,
            ),
            lambda page: page.signing_keys,
        )

    async def _public_key(self, key_id: str) -> dict[str, bytes]:
        """``{key_id: key}`` for the verifier; fetches the gateway's keys on an unknown id."""
        if key_id not in self._keys and not self._pinned:
            async with self._keys_lock:
                if key_id not in self._keys:
                    fetched = await self.list_signing_keys()
                    self._keys.update(index_public_keys(k.public_key for k in fetched))
        key = self._keys.get(key_id)
        return {} if key is None else {key_id: key}

    async def verify(
        self,
        signed: report_pb2.SignedReport,
        request: service_pb2.GetRepairStatusRequest | None,
    ) -> report_pb2.RepairStatusReport:
        """The report in ``signed``, verified against the gateway's keys and (unless None) the
        request it must answer. Raises ``ReportVerificationError``."""
        return verify_signed_report(
            signed,
            await self._public_key(signed.key_id),
            expected_request_digest=None if request is None else request_digest(request),
        )

    # -- repair status ----------------------------------------------------------------------------

    async def get_signed_repair_status(
        self,
        identity_number: str,
        *,
        purpose: vocab.Purpose.ValueType,
        categories: Iterable[vocab.DataCategory.ValueType] = (),
        consent_id: str = "",
        case_reference: str = "",
        consistency: service_pb2.ConsistencyMode.ValueType = CONSISTENCY_DEFAULT,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> VerifiedReport:
        """One subject's report, verified, together with the signed original to keep.

        ``consistency``: INDEX (the gateway's index only, fast), LIVE (ask every source now) or
        AUTO (index where fresh enough); unspecified means the gateway's default (AUTO).
        """
        request = _with_nonce(
            service_pb2.GetRepairStatusRequest(
                identity_number=identity_number,
                purpose=purpose,
                categories=list(categories),
                consent_id=consent_id,
                case_reference=case_reference,
                consistency=consistency,
            )
        )
        response = await self._answer(self._stub.GetRepairStatus(request, timeout=timeout))
        report = await self.verify(response.signed_report, request)
        return VerifiedReport(report, response.signed_report)

    async def get_repair_status(
        self,
        identity_number: str,
        *,
        purpose: vocab.Purpose.ValueType,
        categories: Iterable[vocab.DataCategory.ValueType] = (),
        consent_id: str = "",
        case_reference: str = "",
        consistency: service_pb2.ConsistencyMode.ValueType = CONSISTENCY_DEFAULT,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> report_pb2.RepairStatusReport:
        """One subject's report, verified (``get_signed_repair_status`` without the proof)."""
        verified = await self.get_signed_repair_status(
            identity_number,
            purpose=purpose,
            categories=categories,
            consent_id=consent_id,
            case_reference=case_reference,
            consistency=consistency,
            timeout=timeout,
        )
        return verified.report

    async def watch_repair_status(
        self, query: service_pb2.GetRepairStatusRequest, *, timeout: float | None = None
    ) -> AsyncIterator[WatchedReport]:
        """The subject's report now and after every change, each verified against ``query``.

        Ends when the caller stops iterating (the stream is cancelled) or the gateway ends it:
        a refusal (consent revoked: PERMISSION_DENIED CONSENT_REVOKED) or a dropped slow reader
        (RESOURCE_EXHAUSTED WATCHER_TOO_SLOW) raises ``CredgateError``.
        """
        sent = _with_nonce(query)
        call = self._stub.WatchRepairStatus(
            service_pb2.WatchRepairStatusRequest(query=sent), timeout=timeout
        )
        try:
            async for response in call:
                report = await self.verify(response.signed_report, sent)
                yield WatchedReport(report, response.signed_report, tuple(response.changes))
        except grpc.RpcError as error:
            raise self._error(error) from None
        finally:
            call.cancel()

    async def batch_get_repair_status(
        self,
        requests: Sequence[service_pb2.GetRepairStatusRequest],
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> list[service_pb2.BatchGetRepairStatusResult]:
        """Results in request order; each successful ``report`` is the verified signed one."""
        sent = [_with_nonce(r) for r in requests]
        response = await self._answer(
            self._stub.BatchGetRepairStatus(
                service_pb2.BatchGetRepairStatusRequest(requests=sent), timeout=timeout
            )
        )
        results = list(response.results)
        for result in results:
            if result.HasField("error"):
                continue
            if not 0 <= result.index < len(sent):
                raise ReportVerificationError(
                    "REQUEST_DIGEST_MISMATCH", "a batch result names no request that was sent"
                )
            result.report.CopyFrom(await self.verify(result.signed_report, sent[result.index]))
        return results

    async def enroll_subject_key(
        self, identity_number: str, public_key: bytes, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> str:
        """Enrol a subject's consent-signing key (enrolment offices only); returns its key id."""
        response = await self._answer(
            self._consents.EnrollSubjectKey(
                consent_pb2.EnrollSubjectKeyRequest(
                    identity_number=identity_number, public_key=public_key
                ),
                timeout=timeout,
            )
        )
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
        response = await self._answer(
            self._consents.GrantConsent(
                consent_pb2.GrantConsentRequest(
                    identity_number=identity_number,
                    signed_terms=signed_terms,
                    signature=signature,
                ),
                timeout=timeout,
            )
        )
        grant: consent_pb2.ConsentGrant = response.grant
        return grant

    async def revoke_consent(
        self, consent_id: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> consent_pb2.ConsentGrant:
        response = await self._answer(
            self._consents.RevokeConsent(
                consent_pb2.RevokeConsentRequest(consent_id=consent_id), timeout=timeout
            )
        )
        grant: consent_pb2.ConsentGrant = response.grant
        return grant

    async def change_consent_state(
        self,
        signed_statement: bytes,
        signature: bytes,
        *,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> consent_pb2.ConsentGrant:
        """Carry a subject's signed pause, resume or revocation (``consent.state_change``).

        The subject may call it with their own certificate; any institution may relay it.
        """
        response = await self._answer(
            self._consents.ChangeConsentState(
                consent_pb2.ChangeConsentStateRequest(
                    signed_statement=signed_statement, signature=signature
                ),
                timeout=timeout,
            )
        )
        grant: consent_pb2.ConsentGrant = response.grant
        return grant

    # -- grant receipts -----------------------------------------------------------------------

    async def get_signed_grant_receipt(
        self, consent_id: str, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> consent_pb2.SignedGrantReceipt:
        """A grant's receipt as the gateway sent it, not yet verified (``get_grant_receipt``
        verifies). Answered to the grant's subject, grantee and collecting institution."""
        response = await self._answer(
            self._consents.GetGrantReceipt(
                consent_pb2.GetGrantReceiptRequest(consent_id=consent_id), timeout=timeout
            )
        )
        signed: consent_pb2.SignedGrantReceipt = response.receipt
        return signed

    async def verify_grant_receipt(
        self,
        signed: consent_pb2.SignedGrantReceipt,
        *,
        expected_consent_id: str | None = None,
        subject_signature: bytes | None = None,
    ) -> consent_pb2.GrantReceipt:
        """The receipt in ``signed``, verified against the gateway's published keys (fetched
        on an unknown key id unless pinned). Raises ``ReceiptVerificationError``."""
        return verify_signed_receipt(
            signed,
            await self._public_key(signed.key_id),
            expected_consent_id=expected_consent_id,
            subject_signature=subject_signature,
        )

    async def get_grant_receipt(
        self,
        consent_id: str,
        *,
        subject_signature: bytes | None = None,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> VerifiedReceipt:
        """A grant's receipt, verified to be the gateway's and about ``consent_id`` (and, given
        the subject's own copy of their signature, about that signature)."""
        signed = await self.get_signed_grant_receipt(consent_id, timeout=timeout)
        receipt = await self.verify_grant_receipt(
            signed, expected_consent_id=consent_id, subject_signature=subject_signature
        )
        return VerifiedReceipt(receipt, receipt_terms(receipt), signed)

    # -- repair-status certificates --------------------------------------------------------------

    async def issue_repair_status_certificate(
        self,
        identity_number: str,
        *,
        validity_days: int = 0,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> str:
        """A certificate of the caller's own repair state in its wire form ("CGRC1....",
        docs/certificate.md); for a subject only. Check it with ``verify_repair_certificate``."""
        response = await self._answer(
            self._self_inquiry.IssueRepairStatusCertificate(
                self_pb2.IssueRepairStatusCertificateRequest(
                    identity_number=identity_number, validity_days=validity_days
                ),
                timeout=timeout,
            )
        )
        return str(response.certificate)

    async def get_certificate_status_list(
        self, *, list_id: str = "", timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> str:
        """The gateway's certificate status list in its wire form ("CGSL1...."), as of now."""
        response = await self._answer(
            self._signing_key_stub.GetCertificateStatusList(
                keys_pb2.GetCertificateStatusListRequest(list_id=list_id), timeout=timeout
            )
        )
        return str(response.status_list)

    async def verify_repair_certificate(
        self, certificate: str, *, identity_number: str | None = None
    ) -> Certificate:
        """``certificate`` checked against the gateway's published keys and its status list
        fetched now (and, given the applicant's identity number, that it is about them).
        Raises ``CertificateVerificationError``."""
        keys = index_public_keys(k.public_key for k in await self.list_signing_keys())
        status = read_status_list(await self.get_certificate_status_list(), keys)
        return verify_certificate(
            certificate,
            keys,
            now=dt.datetime.now(dt.UTC),
            status_list=status,
            identity_number=identity_number,
        )

    async def watch_consent_events(
        self,
        *,
        cursor: str = "",
        consent_id: str = "",
        timeout: float | None = None,
    ) -> AsyncIterator[consent_pb2.WatchConsentEventsResponse]:
        """The events of the caller's grants (a grantee's, or a subject's own), oldest first,
        then live; each response's ``cursor`` resumes after it (pass it back after a reconnect:
        nothing is skipped or repeated).

        Ends when the caller stops iterating (the stream is cancelled) or the gateway ends it
        (``CredgateError``: a refusal, WATCHER_TOO_SLOW, GATEWAY_STOPPING).
        """
        call = self._consents.WatchConsentEvents(
            consent_pb2.WatchConsentEventsRequest(cursor=cursor, consent_id=consent_id),
            timeout=timeout,
        )
        try:
            async for response in call:
                yield response
        except grpc.RpcError as error:
            raise self._error(error) from None
        finally:
            call.cancel()

    # -- self-inquiry (callers holding a subject certificate) ---------------------------------

    async def list_own_consents(
        self,
        *,
        state: consent_pb2.ConsentState.ValueType = consent_pb2.CONSENT_STATE_UNSPECIFIED,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
    ) -> list[consent_pb2.ConsentGrant]:
        """Every consent grant the calling subject signed (all pages), oldest first."""
        return await self._every_page(
            lambda token: self._self_inquiry.ListOwnConsents(
                self_pb2.ListOwnConsentsRequest(
                    page_size=_LIST_PAGE_SIZE, page_token=token, state=state
                ),
                timeout=timeout,
            ),
            lambda page: page.grants,
        )

    async def list_own_accesses(
        self, *, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> list[audit_pb2.SubjectAccessRecord]:
        """Who accessed the calling subject's record (all pages), oldest first; a release under
        a grant shows its data life (``keep_until``, ``data_life_basis``)."""
        return await self._every_page(
            lambda token: self._self_inquiry.ListOwnAccesses(
                self_pb2.ListOwnAccessesRequest(page_size=_LIST_PAGE_SIZE, page_token=token),
                timeout=timeout,
            ),
            lambda page: page.accesses,
        )

    async def list_objections(
        self, *, open_only: bool = False, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> list[objection_pb2.Objection]:
        """The caller's objections (all pages), newest first: a subject's own, an authorized
        party's filed ones, a data provider's routed ones; with their deadlines and steps."""
        return await self._every_page(
            lambda token: self._objections.ListObjections(
                objection_pb2.ListObjectionsRequest(
                    page_size=_LIST_PAGE_SIZE, page_token=token, open_only=open_only
                ),
                timeout=timeout,
            ),
            lambda page: page.objections,
        )

    async def list_repair_applications(
        self, *, open_only: bool = False, timeout: float = DEFAULT_TIMEOUT_SECONDS
    ) -> list[application_pb2.RepairApplication]:
        """The caller's repair applications (all pages), newest first: a subject's own, with
        their stages and deadlines."""
        return await self._every_page(
            lambda token: self._applications.ListRepairApplications(
                application_pb2.ListRepairApplicationsRequest(
                    page_size=_LIST_PAGE_SIZE, page_token=token, open_only=open_only
                ),
                timeout=timeout,
            ),
            lambda page: page.applications,
        )

    async def _every_page(
        self,
        fetch: Callable[[str], Awaitable[_Page]],
        items: Callable[[_Page], Iterable[_Item]],
    ) -> list[_Item]:
        """Every item of a paginated listing (AIP-158), page after page until the last; a
        refusal on any page is raised as ``CredgateError``."""
        collected: list[_Item] = []
        token = ""
        while True:
            page = await self._answer(fetch(token))
            collected.extend(items(page))
            token = page.next_page_token
            if not token:
                return collected
