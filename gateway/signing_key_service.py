"""SigningKeyService: the public keys a verifier needs to check a signed report.

Any authenticated caller may list them — they are public, and every institution receiving a
report must be able to verify it. Retired keys stay listed, so reports kept as proof verify
after a rotation. The listing is paginated from the first version (AIP-158) although a
gateway holds few keys; the page token is a position (the last key id seen), authenticated like
every listing's (``gateway.protection.page_tokens``) so that no input a caller makes up is
read as one.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import grpc

from credgate.api.credit_repair.v1 import signing_key_service_pb2 as keys_pb2
from credgate.api.credit_repair.v1 import signing_key_service_pb2_grpc as keys_grpc
from credgate.core.errors import GatewayError
from credgate.core.institution import Institution
from credgate.gateway.protection.page_tokens import (
    PAGE_TOKEN_VIOLATION,
    PageScope,
    PageTokenError,
    PageTokens,
)
from credgate.gateway.repair_certificates import RepairCertificates
from credgate.gateway.report_signing_keys import PublicSigningKey, PublishedReportKeys

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
LIST_SIGNING_KEYS = "credit_repair.v1.SigningKeyService/ListSigningKeys"


def _invalid(field: str, description: str) -> GatewayError:
    return GatewayError.invalid_request([(field, description)])


def to_proto(key: PublicSigningKey) -> keys_pb2.SigningKey:
    """The API resource for one key."""
    message = keys_pb2.SigningKey(
        key_id=key.key_id,
        public_key=key.public_key,
        state=(
            keys_pb2.SIGNING_KEY_STATE_CURRENT
            if key.current
            else keys_pb2.SIGNING_KEY_STATE_RETIRED
        ),
    )
    message.create_time.FromDatetime(key.created_at)
    if key.retired_at is not None:
        message.retire_time.FromDatetime(key.retired_at)
    return message


class SigningKeyServicer(keys_grpc.SigningKeyServiceServicer):
    """The grpc.aio servicer over the published keys."""

    def __init__(
        self,
        published: PublishedReportKeys,
        identify: Callable[[grpc.aio.ServicerContext], Institution],
        page_tokens: PageTokens,
        *,
        certificates: RepairCertificates | None = None,
    ) -> None:
        self._page_tokens = page_tokens
        self._certificates = certificates
        self._published = published
        self._identify = identify

    async def ListSigningKeys(
        self, request: keys_pb2.ListSigningKeysRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.ListSigningKeysResponse:
        """A page of keys, oldest first."""
        caller = self._identify(context)  # authenticated callers only, whatever their role
        if request.page_size < 0:
            raise _invalid("page_size", "must not be negative")
        keys = list(self._published.snapshot())
        scope = PageScope(LIST_SIGNING_KEYS, caller.institution_id)
        start = 0
        if request.page_token:
            try:
                after = self._page_tokens.open_key(request.page_token, scope)
                start = next(i for i, k in enumerate(keys) if k.key_id == after) + 1
            except (PageTokenError, StopIteration):
                raise _invalid(*PAGE_TOKEN_VIOLATION) from None
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        page = keys[start : start + size]
        response = keys_pb2.ListSigningKeysResponse(signing_keys=[to_proto(k) for k in page])
        if start + size < len(keys):
            response.next_page_token = self._page_tokens.issue(scope, (page[-1].key_id,))
        return response

    async def GetCertificateStatusList(
        self, request: keys_pb2.GetCertificateStatusListRequest, context: grpc.aio.ServicerContext
    ) -> keys_pb2.GetCertificateStatusListResponse:
        """The signed certificate status list, re-evaluated now (``gateway.repair_certificates``).

        Not audited: it names nobody (an index and a bit per certificate), like the keys.
        """
        self._identify(context)  # authenticated callers only, whatever their role
        if self._certificates is None:
            raise GatewayError.of(
                grpc.StatusCode.UNIMPLEMENTED,
                "this gateway issues no certificates",
                "CERTIFICATES_DISABLED",
            )
        if request.list_id not in ("", self._certificates.list_id):
            raise GatewayError.of(
                grpc.StatusCode.NOT_FOUND, "no such status list", "STATUS_LIST_NOT_FOUND"
            )
        signed = await self._certificates.status_list(now=dt.datetime.now(dt.UTC))
        return keys_pb2.GetCertificateStatusListResponse(status_list=signed)
