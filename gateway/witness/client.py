"""Talking to a witness over HTTP: ``add-checkpoint`` and the monitoring endpoint.

Every answer is checked here, not trusted: a 200's cosignature must verify with the witness
key the caller configured, and a fetched checkpoint must carry both the log's signature (by a
key the caller trusts) and the witness's cosignature.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from credgate.audit.checkpoint import SignedCheckpoint, open_checkpoint
from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.note import NoteError, NoteVerifier
from credgate.audit.witness import SIZE_CONTENT_TYPE, AddCheckpoint, origin_hash

DEFAULT_TIMEOUT_SECONDS = 10.0
_SIZE_BODY = re.compile(r"(0|[1-9][0-9]{0,19})\n")


class WitnessUnavailable(Exception):
    """The witness could not be reached, or answered something outside the protocol."""


@dataclass(frozen=True)
class WitnessEndpoint:
    """One witness: where it listens and the cosigner key its answers must verify with."""

    url: str
    """Base URL; ``/add-checkpoint`` and ``/<origin hash>/checkpoint`` are appended."""
    verifier: CosignerVerifier
    ca: Path | None = None
    """CA bundle for an ``https`` URL (default: the system's trust store)."""

    @property
    def name(self) -> str:
        """The witness's key name."""
        return self.verifier.name

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for aiohttp: the CA bundle if one is configured."""
        if self.ca is None:
            return True
        return ssl.create_default_context(cafile=str(self.ca))


@dataclass(frozen=True)
class AddResult:
    """A witness's answer to ``add-checkpoint``."""

    status: int
    body: str
    cosigned_note: str | None = None
    """On 200: the checkpoint with the witness's verified cosignature appended."""
    cosigned_at: int | None = None
    known_size: int | None = None
    """On 409: the size the witness says it last cosigned."""


def _url(endpoint: WitnessEndpoint, path: str) -> str:
    return endpoint.url.rstrip("/") + path


async def add_checkpoint(
    session: aiohttp.ClientSession,
    endpoint: WitnessEndpoint,
    old_size: int,
    proof: Sequence[bytes],
    signed: SignedCheckpoint,
) -> AddResult:
    """POST one ``add-checkpoint``; WitnessUnavailable on a transport failure or an answer the
    protocol does not allow (a 200 without a valid cosignature, a 409 without a size)."""
    body = AddCheckpoint(old_size, tuple(proof), signed.note).encode()
    try:
        async with session.post(
            _url(endpoint, "/add-checkpoint"), data=body, ssl=endpoint.ssl_context()
        ) as response:
            text = await response.text(encoding="utf-8", errors="replace")
            status, content_type = response.status, response.content_type
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise WitnessUnavailable(f"{type(exc).__name__}: {exc}") from None
    if status == 200:
        cosigned = signed.note + "".join(
            line + "\n" for line in text.splitlines() if line.startswith("— ")
        )
        try:
            when = endpoint.verifier.cosignature_time(cosigned)
        except NoteError as exc:
            raise WitnessUnavailable(
                f"the witness answered 200 without a valid cosignature: {exc}"
            ) from None
        return AddResult(status, text, cosigned, when)
    if status == 409:
        match = _SIZE_BODY.fullmatch(text)
        if match is None or content_type != SIZE_CONTENT_TYPE:
            raise WitnessUnavailable("the witness answered 409 without its size")
        return AddResult(status, text, known_size=int(match.group(1)))
    return AddResult(status, text.strip()[:500])


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """A checkpoint the witness cosigned, both signatures verified."""

    signed: SignedCheckpoint
    cosigned_at: int


async def fetch_cosigned(
    endpoint: WitnessEndpoint,
    origin: str,
    log_verifiers: Sequence[NoteVerifier],
    *,
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> WitnessedCheckpoint | None:
    """The witness's latest cosigned checkpoint of ``origin`` (None: it never cosigned one).

    NoteError when the answer lacks a valid log signature or cosignature; WitnessUnavailable
    when the witness cannot be asked.
    """
    url = _url(endpoint, f"/{origin_hash(origin)}/checkpoint")
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, ssl=endpoint.ssl_context()) as response,
        ):
            text = await response.text(encoding="utf-8", errors="replace")
            status = response.status
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise WitnessUnavailable(f"{type(exc).__name__}: {exc}") from None
    if status == 404:
        return None
    if status != 200:
        raise WitnessUnavailable(f"the witness answered HTTP {status}")
    signed = open_checkpoint(text, log_verifiers)
    if signed.checkpoint.origin != origin:
        raise NoteError("the witness returned a checkpoint of another log")
    return WitnessedCheckpoint(signed, endpoint.verifier.cosignature_time(text))
