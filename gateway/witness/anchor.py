"""``credgate audit verify --witness-key K --witness-url U``: the witness's latest cosigned
checkpoint as the outside anchor, fetched at verification time.

An operator who deletes the newest entries, rolls the head row back and deletes the newer
checkpoints leaves a database consistent in itself; a checkpoint kept outside it shows the
cut. A witness keeps exactly that checkpoint, for every log it watches, signed twice: by the
log (so the operator cannot deny it) and by the witness (so it cannot have been made up). The
verifier checks both signatures and hands the checkpoint to ``verify_log`` like any kept
checkpoint: one that covers more entries than the log has is a TRUNCATED finding at the first
missing index.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from credgate.audit.cosignature import CosignerVerifier
from credgate.audit.note import NoteError, NoteVerifier
from credgate.gateway.witness.client import (
    WitnessEndpoint,
    WitnessUnavailable,
    fetch_cosigned,
)


class WitnessCheckFailed(Exception):
    """A witness named on the command line gave no checkpoint the verifier could use."""


@dataclass(frozen=True)
class Witnessed:
    """One witness's latest cosigned checkpoint, both signatures verified."""

    witness: str
    url: str
    tree_size: int
    cosigned_at: int
    note: str

    @property
    def label(self) -> str:
        """How findings name it."""
        return f"cosigned by witness {self.witness} ({self.url})"


def _read_key(text_or_path: str) -> CosignerVerifier:
    path = Path(text_or_path)
    text = path.read_text(encoding="utf-8") if path.is_file() else text_or_path
    return CosignerVerifier.from_vkey(text.strip())


def witness_endpoints(
    keys: Sequence[str], urls: Sequence[str], ca: str | None = None
) -> list[WitnessEndpoint]:
    """Pair ``--witness-key`` with ``--witness-url`` in order; ValueError (exit 2) if they do
    not pair up or a key is malformed."""
    if len(keys) != len(urls):
        raise ValueError("give one --witness-url for each --witness-key, in the same order")
    try:
        verifiers = [_read_key(k) for k in keys]
    except NoteError as exc:
        raise ValueError(f"--witness-key: {exc}") from None
    return [
        WitnessEndpoint(url, v, Path(ca) if ca else None)
        for url, v in zip(urls, verifiers, strict=True)
    ]


async def witnessed_checkpoints(
    endpoints: Sequence[WitnessEndpoint], log_verifiers: Sequence[NoteVerifier]
) -> list[Witnessed]:
    """Each witness's latest cosigned checkpoint of the log the verifiers name.

    WitnessCheckFailed when a witness cannot be reached, has cosigned nothing for this log,
    or answers with a checkpoint whose signatures do not verify: the caller asked for the
    anchor, so verifying without it would be a silent pass.
    """
    if not endpoints:
        return []
    origins = {v.name for v in log_verifiers}
    if len(origins) != 1:
        raise WitnessCheckFailed("the trusted log keys must name one origin")
    origin = origins.pop()
    found = []
    for endpoint in endpoints:
        where = f"witness {endpoint.name} at {endpoint.url}"
        try:
            witnessed = await fetch_cosigned(endpoint, origin, log_verifiers)
        except WitnessUnavailable as exc:
            raise WitnessCheckFailed(f"{where} could not be asked: {exc}") from None
        except NoteError as exc:
            raise WitnessCheckFailed(f"{where} returned an invalid checkpoint: {exc}") from None
        if witnessed is None:
            raise WitnessCheckFailed(f"{where} has cosigned no checkpoint of {origin}")
        found.append(
            Witnessed(
                endpoint.name,
                endpoint.url,
                witnessed.signed.checkpoint.tree_size,
                witnessed.cosigned_at,
                witnessed.signed.note,
            )
        )
    return found


def describe_witnessed(witnessed: Witnessed, log_entries: int) -> str:
    """One line comparing the witness's cosigned size with the log's."""
    at = dt.datetime.fromtimestamp(witnessed.cosigned_at, dt.UTC).isoformat()
    line = (
        f"witness {witnessed.witness}: cosigned size {witnessed.tree_size} at {at}; "
        f"the log has {log_entries} entries"
    )
    if witnessed.tree_size > log_entries:
        missing = witnessed.tree_size - log_entries
        line += f" — {missing} cosigned entries are missing, from entry {log_entries} on"
    return line
