"""Log lines that a pipeline can parse and join to traces, and that carry no personal data.

``json``: one JSON object a line — time, level, logger, message, and, inside a call, the
``trace_id`` / ``span_id`` of the current span and the ``request_id`` the caller was given, so
an operator goes from a caller's quoted request id or a slow trace straight to the log lines.
``text``: the familiar one-line format, with the same ids appended.

Personal data must not be logged in the first place; the formatters are a second line of
defence, not the first: anything shaped like an identity number is masked in the message, and
of an exception only the type and the stack (file, line, code) are written, never its message,
which may echo a payload (names cannot be recognised, so this is what keeps them out).

**Logging never blocks the caller** (``QueueingHandler``). A record is formatted on the thread
that logs it (the trace and request ids live in that thread's context) and put on an unbounded
``queue.SimpleQueue`` without taking any lock; one listener thread writes the lines out. A
stream handler takes a lock around every write, and a write can block (a full pipe, a slow
disk); issue #12 saw the event loop wait forever on that lock while the thread holding it was
stuck in a garbage collection running a gRPC finalizer. With the queue, the event loop never
waits for a writer, and a finalizer that logs on any thread, even one inside a logging call,
only appends to the queue (``SimpleQueue.put`` is reentrant). The listener is flushed and
stopped when the handler is closed, which ``logging.shutdown`` does at exit, and by
``flush_logging`` at the end of a graceful stop.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import logging.handlers
import queue
import re
import sys
import threading
import traceback
from collections.abc import Mapping
from typing import Any, TextIO

from opentelemetry import trace

from credgate.core.errors import current_request_id

_IDENTITY_NUMBER = re.compile(r"(?<![0-9])[0-9]{17}[0-9Xx](?![0-9Xx])")
MASK = "[REDACTED-ID]"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """``text`` with every identity-number-shaped run of characters masked."""
    return _IDENTITY_NUMBER.sub(MASK, text)


def correlation_ids() -> dict[str, str]:
    """trace_id, span_id (W3C hex) and request_id of the current call, those that exist."""
    ids: dict[str, str] = {}
    span_context = trace.get_current_span().get_span_context()
    if span_context.is_valid:
        ids["trace_id"] = format(span_context.trace_id, "032x")
        ids["span_id"] = format(span_context.span_id, "016x")
    request_id = current_request_id()
    if request_id:
        ids["request_id"] = request_id
    return ids


def _stack(record: logging.LogRecord) -> dict[str, str] | None:
    if not record.exc_info or record.exc_info[0] is None:
        return None
    exc_type, _, tb = record.exc_info
    return {
        "type": exc_type.__qualname__,
        "stack": redact("".join(traceback.format_tb(tb))),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per record; ``static`` fields (e.g. the service name) go on every line."""

    def __init__(self, static: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self._static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
            **self._static,
            **correlation_ids(),
        }
        exception = _stack(record)
        if exception is not None:
            entry["exception"] = exception
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return json.dumps(entry, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``TEXT_FORMAT`` plus ``[trace=… span=… request=…]`` inside a call; same redaction."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = redact(super().formatMessage(record))
        ids = correlation_ids()
        if ids:
            names = {"trace_id": "trace", "span_id": "span", "request_id": "request"}
            line += " [" + " ".join(f"{names[k]}={v}" for k, v in ids.items()) + "]"
        return line

    def formatException(self, ei: Any) -> str:
        exc_type, _, tb = ei
        name = exc_type.__qualname__ if exc_type is not None else "Exception"
        return redact("Traceback (most recent call last):\n" + "".join(traceback.format_tb(tb))) + (
            f"{name} (message withheld)"
        )


def formatter_for(log_format: str, *, service_name: str = "credgate") -> logging.Formatter:
    """The formatter ``[telemetry] log_format`` names."""
    if log_format == "json":
        return JsonFormatter({"service": service_name})
    if log_format == "text":
        return TextFormatter()
    raise ValueError(f"log format must be text or json, got {log_format!r}")


STOP_SECONDS = 5.0
"""How long closing the handler waits for the listener to write what is queued."""


class _Flush:
    """A marker put on the queue: the listener sets ``done`` when it reaches it."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Listener(logging.handlers.QueueListener):
    def handle(self, record: logging.LogRecord) -> None:
        if isinstance(record, _Flush):
            record.done.set()
            return
        for handler in self.handlers:
            handler.handle(record)  # already formatted and prepared by QueueingHandler


class QueueingHandler(logging.handlers.QueueHandler):
    """Formats on the logging thread, queues without a lock, writes on a listener thread.

    ``target`` does the writing (its formatter should print ``%(message)s``: the record's
    message is the formatted line). ``handle`` takes no handler lock, unlike
    ``logging.Handler.handle``: emitting is formatting and one ``SimpleQueue.put``, both safe
    without it, and a lock is exactly what a finalizer running inside a logging call could
    deadlock on.
    """

    def __init__(self, target: logging.Handler) -> None:
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        super().__init__(self._queue)
        self.target = target
        self._listener: _Listener | None = _Listener(self._queue, target)
        self._listener.start()
        self._closing = threading.Lock()

    def handle(self, record: logging.LogRecord) -> bool:
        if not self.filter(record):
            return False
        self.emit(record)
        return True

    def flush(self) -> None:
        """Wait (up to ``STOP_SECONDS``) until every record queued so far is written."""
        listener = self._listener
        if listener is None or threading.current_thread() is getattr(listener, "_thread", None):
            return
        marker = _Flush()
        self._queue.put_nowait(marker)
        marker.done.wait(STOP_SECONDS)
        self.target.flush()

    def close(self) -> None:
        """Write what is queued (bounded), stop the listener, close the target."""
        with self._closing:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.enqueue_sentinel()
            thread = getattr(listener, "_thread", None)
            if thread is not None and thread is not threading.current_thread():
                thread.join(STOP_SECONDS)
            listener._thread = None
            self.target.close()
        super().close()


def flush_logging() -> None:
    """Write out every queued record of the root logger's handlers (at the end of a stop)."""
    for handler in logging.getLogger().handlers:
        handler.flush()


def configure_logging(
    log_format: str = "text",
    *,
    level: int = logging.INFO,
    service_name: str = "credgate",
    stream: TextIO | None = None,
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) in ``log_format`` through a
    ``QueueingHandler``, replacing (and closing) the root logger's handlers; returns the
    handler installed on the root logger (its formatter is the one ``log_format`` names)."""
    writer = logging.StreamHandler(stream or sys.stderr)
    writer.setFormatter(logging.Formatter("%(message)s"))
    handler = QueueingHandler(writer)
    handler.setFormatter(formatter_for(log_format, service_name=service_name))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    return handler
