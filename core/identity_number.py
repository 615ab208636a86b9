"""GB 11643 resident identity numbers: validation and masking.

The identity number is the most sensitive value credgate touches. It is validated at the edge
(every field of every request is untrusted), masked wherever it must be shown, and otherwise
only ever handled as a subject token.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_CHECK_CHARS = "10X98765432"
_SHAPE = re.compile(r"[0-9]{17}[0-9X]", re.ASCII)
_TYPED_SPACE = " \t\u3000"
"""The spaces people type around a number (ASCII, tab, the ideographic space of Chinese input
methods). Not ``str.strip()``'s whole set, which also takes C0 separators and NEL away."""
_FULL_WIDTH = str.maketrans("０１２３４５６７８９Ｘｘx", "0123456789XXX")
"""What Chinese input methods type for the digits and the check character, and a lower-case x:
the only foreign forms folded to the canonical one. Any other Unicode digit (Arabic-Indic,
Devanagari, ...) is left as it is and so refused by the ASCII-only shape."""
# First digit of the administrative division code (GB/T 2260): 1-6 are the mainland regions,
# 7 Taiwan, 8 Hong Kong / Macao (residence permits), 9 foreign permanent residents.
_REGION_FIRST_DIGITS = set("12345689")
EARLIEST_BIRTH = dt.date(1900, 1, 1)


@dataclass(frozen=True)
class IdentityNumberError:
    """Why an identity number was rejected; the text never repeats the number itself."""

    reason: str
    description: str


def check_character(first17: str) -> str:
    """The mod 11-2 check character for the first 17 digits."""
    total = sum(int(d) * w for d, w in zip(first17, _WEIGHTS, strict=True))
    return _CHECK_CHARS[total % 11]


def validate(value: str, *, today: dt.date | None = None) -> IdentityNumberError | None:
    """Return None when ``value`` is a plausible identity number, else why it is not."""
    if len(value) != 18:
        return IdentityNumberError("LENGTH", f"must be 18 characters, got {len(value)}")
    if not _SHAPE.fullmatch(value):
        return IdentityNumberError(
            "CHARACTERS", "must be 17 digits followed by a digit or an upper-case X"
        )
    if value[0] not in _REGION_FIRST_DIGITS or value[:2] in {"00", "10", "20"}:
        return IdentityNumberError("REGION", "region code is not an administrative division")
    try:
        birth = dt.date(int(value[6:10]), int(value[10:12]), int(value[12:14]))
    except ValueError:
        return IdentityNumberError("BIRTH_DATE", "birth date is not a calendar date")
    if not EARLIEST_BIRTH <= birth <= (today or dt.date.today()):
        return IdentityNumberError("BIRTH_DATE", "birth date is out of range")
    if check_character(value[:17]) != value[17]:
        return IdentityNumberError("CHECK_CHARACTER", "check character does not match")
    return None


def normalize(value: str) -> str:
    """The canonical form of what a person typed: surrounding whitespace trimmed, full-width
    digits and a full-width or lower-case x folded to ASCII. Nothing else is changed, so a
    number with any other non-ASCII character still fails ``validate``: one person, one form,
    one subject token."""
    return value.strip(_TYPED_SPACE).translate(_FULL_WIDTH)


def is_canonical_shape(value: str) -> bool:
    """True for exactly 17 ASCII digits and an ASCII digit or X (no date or check test): the
    only strings a subject token may be derived from."""
    return _SHAPE.fullmatch(value) is not None


def mask(value: str) -> str:
    """Keep the region code and the check character; enough to tell two people apart on a
    printed report, not enough to recover the number."""
    if len(value) != 18:
        return "*" * len(value)
    return value[:6] + "*" * 11 + value[17]
