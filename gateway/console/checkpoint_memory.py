"""The newest checkpoint a console session has verified, apart from the code that checks it
(``console.proofs``) so the connection that holds it and the checks that use the connection do
not import each other."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from credgate.audit.checkpoint import SignedCheckpoint


@dataclass
class CheckpointMemory:
    """The newest checkpoint this console has verified, kept in memory for the session.

    Each newer checkpoint must extend it — proven with a consistency proof from the gateway
    (``GetConsistencyProof``) checked here (``audit.proof.verify_consistency``) — so a gateway
    that showed this console one history and then another (a fork, or entries rewritten after
    a page was seen) is caught, not just one whose signature fails. It is forgotten when the
    console stops; nothing is written anywhere.
    """

    trusted: SignedCheckpoint | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
