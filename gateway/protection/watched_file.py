"""A key file a running gateway follows: re-read when its bytes change, never half-loaded.

Keys rotate while replicas serve (docs/deployment.md, "Keys and their rotation"): an operator
writes a new keyring or signing-key file and copies it to every replica, and each replica must
take it up without a restart. Reading it once at start made a rotation break every read of a
record under the new key until the replica restarted (issue #18).

How a change is taken up, and why that way:

* **Polled, at most every ``check_seconds``, on use.** ``current()`` re-reads the file when
  the last read is older than that — no thread, no inotify (which misses changes on the bind
  mounts and network volumes secrets are often delivered on). The file is a few hundred bytes,
  so a read a second costs nothing; ``check_now()`` reads at once (a ciphertext naming a key
  the process does not hold).
* **Compared by content, not by mtime.** A copy that lands within one timestamp tick of the
  last one, with the same size, is still seen.
* **All or nothing.** The new bytes are parsed and checked in full before they replace what is
  loaded; a torn copy (``cp`` is not atomic), a malformed or insecure file, or one that fails
  ``accept`` keeps the loaded value and is logged at ERROR, once per distinct content, so the
  operator sees it and serving goes on. The next change is read again.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_CHECK_SECONDS = 1.0
"""How stale a followed key file may be before ``current()`` reads it again."""


class WatchedFile(Generic[T]):
    """The last good parse of a file, refreshed on use when the file's bytes change."""

    def __init__(
        self,
        what: str,
        read: Callable[[], bytes],
        parse: Callable[[bytes], T],
        *,
        check_seconds: float = DEFAULT_CHECK_SECONDS,
        accept: Callable[[T, T], str | None] | None = None,
        on_change: Callable[[T, T], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Read and parse the file now; its errors propagate (a start-up must fail on them).

        ``accept(old, new)`` returns why ``new`` must not replace ``old`` (or None);
        ``on_change(old, new)`` is told after a replacement (to log what changed).
        """
        if check_seconds <= 0:
            raise ValueError("check_seconds must be positive")
        self._what = what
        self._read = read
        self._parse = parse
        self._accept = accept
        self._on_change = on_change
        self._clock = clock
        self._check_seconds = check_seconds
        self._lock = threading.Lock()
        raw = read()
        self._value = parse(raw)
        self._digest = _digest(raw)
        self._refused: bytes | None = None
        self._next_check = clock() + check_seconds

    @property
    def what(self) -> str:
        return self._what

    def current(self) -> T:
        """The loaded value, re-read first when the last read is ``check_seconds`` old."""
        if self._clock() < self._next_check:
            return self._value
        return self.check_now()

    def check_now(self) -> T:
        """Read the file now; take its content if it changed and is valid; return the value."""
        with self._lock:
            self._next_check = self._clock() + self._check_seconds
            try:
                raw = self._read()
            except Exception as error:  # a vanished or unreadable file keeps the loaded keys
                self._refuse(b"unreadable:" + str(error).encode(), error)
                return self._value
            digest = _digest(raw)
            if digest == self._digest:
                return self._value
            try:
                new = self._parse(raw)
                why = None if self._accept is None else self._accept(self._value, new)
            except Exception as error:
                self._refuse(digest, error)
                return self._value
            if why is not None:
                self._refuse(digest, why)
                return self._value
            old, self._value, self._digest, self._refused = self._value, new, digest, None
        if self._on_change is not None:
            self._on_change(old, new)
        return new

    def _refuse(self, seen: bytes, why: object) -> None:
        """Log (once per distinct bad content, ``seen``) that the file was not taken up."""
        if seen == self._refused:
            return
        self._refused = seen
        reason = why if isinstance(why, str) else f"{type(why).__name__}: {why}"
        log.error(
            "%s changed but was NOT loaded, still serving with the keys loaded before: %s",
            self._what,
            reason,
        )


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()
