"""Defensive parsing helpers for untrusted source payloads, shared by the adapters.

Sources are outside credgate's control: a payload may be truncated, mis-encoded, hostile (an
XML entity bomb) or simply wrong. These helpers make every such failure a ``MalformedPayload``
whose message names what went wrong but never echoes payload content, because a payload
carries identity numbers and names and error messages reach callers and logs.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TypeVar

from credgate.adapters.base import MalformedPayload, SourceError
from credgate.adapters.mapping import bounded

_T = TypeVar("_T")
_XML_DECLARATION = re.compile(r"""\A<\?xml\s[^>]*?encoding\s*=\s*["']([A-Za-z0-9_.:-]+)["']""")


def guarded(what: str, mapping: Callable[[], _T]) -> _T:
    """Run ``mapping`` over an untrusted payload; any failure becomes a ``SourceError`` that
    carries no chained exception.

    Unexpected exceptions become ``MalformedPayload``. The raise happens after the ``try``
    statement, and source errors are re-created from their message, because Python attaches
    the exception being handled as ``__context__`` even with ``from None`` — and a
    ``UnicodeDecodeError`` or a parser error drags the whole payload (identity numbers, names)
    into any log or error reporter that walks the chain.
    """
    try:
        return mapping()
    except SourceError as exc:
        clean = type(exc)(exc.message)
    except Exception as exc:
        clean = MalformedPayload(f"{what}: payload could not be mapped ({type(exc).__name__})")
    raise clean


@contextmanager
def mapping_guard(what: str) -> Iterator[None]:
    """Context-manager form of ``guarded`` (kept for the adapters that use it).

    A raise inside ``__exit__`` cannot avoid Python attaching the original exception as
    ``__context__``, so that exception is scrubbed of its payload first. ``guarded`` is the
    stricter choice: its errors carry no chain at all.
    """
    try:
        yield
    except SourceError:
        raise
    except Exception as exc:
        _scrub(exc)
        message = f"{what}: payload could not be mapped ({type(exc).__name__})"
        raise MalformedPayload(message) from None


def _scrub(exc: BaseException) -> None:
    """Drop what an exception holds of the payload: its args, the decoded or parsed document
    and the traceback, whose frames keep the payload in their local variables."""
    exc.args = ()
    if isinstance(exc, UnicodeDecodeError):
        exc.object = b""
    if isinstance(exc, json.JSONDecodeError):
        exc.doc = ""
    exc.__traceback__ = None


def lookup(table: Mapping[str, _T], value: object, field: str) -> _T:
    """Look a native code up; an unknown code is malformed, never guessed."""
    if not isinstance(value, str) or value not in table:
        raise MalformedPayload(f"{field}: unknown code")
    return table[value]


def decode(body: bytes, encoding: str, what: str, *, strip_bom: bool = False) -> str:
    """Decode strictly: a byte that is invalid in the source's encoding is a broken payload,
    never something to replace silently (that is how names get garbled)."""
    try:
        document: str | None = body.decode(encoding, errors="strict")
    except (UnicodeDecodeError, LookupError):
        document = None  # raised below, outside the handler, so the payload is not chained
    if document is None:
        raise MalformedPayload(f"{what}: payload is not valid {encoding}")
    if strip_bom and document.startswith("\ufeff"):
        document = document[1:]
    return document


def media_type(content_type: str) -> tuple[str, str | None]:
    """Split a Content-Type header into (lower-case media type, lower-case charset or None)."""
    parts = [part.strip() for part in content_type.split(";")]
    charset = None
    for parameter in parts[1:]:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip('"').lower()
    return parts[0].lower(), charset


def require_media_type(content_type: str, allowed: tuple[str, ...], what: str) -> str | None:
    """Check the media type and return the declared charset (lower case), if any."""
    mime, charset = media_type(content_type)
    if mime not in allowed:
        raise MalformedPayload(f"{what}: unexpected content type")
    return charset


def xml_declared_encoding(document: str) -> str | None:
    """The encoding named in the XML declaration, upper case, or None without a declaration."""
    match = _XML_DECLARATION.match(document)
    return match.group(1).upper() if match else None


def parse_xml(document: str, what: str) -> ET.Element:
    """Parse an XML document that must not carry a DTD.

    A DTD is how the billion-laughs and external-entity (XXE) attacks get in, and no source
    credgate speaks to needs one, so any DOCTYPE or ENTITY declaration is refused outright.
    """
    if "<!DOCTYPE" in document or "<!ENTITY" in document:
        raise MalformedPayload(f"{what}: DTDs and entity declarations are refused")
    try:
        return ET.fromstring(document)  # noqa: S314 -- DTDs refused above
    except ET.ParseError:
        pass  # raised below, outside the handler, so the payload is not chained
    raise MalformedPayload(f"{what}: not well-formed XML")


def xml_child(parent: ET.Element, tag: str, what: str) -> ET.Element:
    """The one child element named ``tag``; missing or repeated is malformed."""
    found = parent.findall(tag)
    if len(found) != 1:
        raise MalformedPayload(f"{what}: expected exactly one <{tag}>")
    return found[0]


def xml_text(parent: ET.Element, tag: str, what: str) -> str:
    """The text of the one child element ``tag`` (empty string for an empty element)."""
    child = xml_child(parent, tag, what)
    if len(child):
        raise MalformedPayload(f"{what}: <{tag}> must hold text only")
    return (child.text or "").strip()


def xml_optional_text(parent: ET.Element, tag: str, what: str) -> str | None:
    """The text of an optional child element; absent or empty gives None."""
    if not parent.findall(tag):
        return None
    return xml_text(parent, tag, what) or None


def xml_items(parent: ET.Element, container: str, item: str, what: str) -> list[ET.Element]:
    """The ``item`` children of an optional ``container`` element, bounded in number."""
    holders = parent.findall(container)
    if not holders:
        return []
    if len(holders) > 1:
        raise MalformedPayload(f"{what}: expected at most one <{container}>")
    children = list(holders[0])
    bounded(children, what)
    if any(child.tag != item for child in children):
        raise MalformedPayload(f"{what}: unexpected element in <{container}>")
    return children
