"""A minimal PNG reader for tests: a browser screenshot as grey pixels, so a QR code drawn on a
page can be read back by zxing-cpp (which takes pixels, not files) without an image library.

Handles what Chromium writes: 8-bit RGB or RGBA, not interlaced, the five PNG filters.
"""

from __future__ import annotations

import struct
import zlib

_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def grey_pixels(png: bytes) -> tuple[memoryview, int, int]:
    """``(pixels, width, height)``: one byte of luminance per pixel, row after row, shaped
    ``(height, width)`` for zxing-cpp."""
    if not png.startswith(_SIGNATURE):
        raise ValueError("not a PNG")
    at, data, header = len(_SIGNATURE), b"", b""
    while at < len(png):
        (length,) = struct.unpack(">I", png[at : at + 4])
        kind, body = png[at + 4 : at + 8], png[at + 8 : at + 8 + length]
        at += 12 + length
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            data += body
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    channels = {2: 3, 6: 4}.get(colour)
    if depth != 8 or channels is None or interlace:
        raise ValueError("only 8-bit RGB(A), not interlaced")
    raw = zlib.decompress(data)
    stride = width * channels
    previous = bytearray(stride)
    grey = bytearray()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            a = line[x - channels] if x >= channels else 0
            b = previous[x]
            c = previous[x - channels] if x >= channels else 0
            line[x] = (line[x] + (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]) & 0xFF
        for x in range(0, stride, channels):
            r, g, b = line[x], line[x + 1], line[x + 2]
            grey.append((299 * r + 587 * g + 114 * b) // 1000)
        previous = line
    return memoryview(bytes(grey)).cast("B", (height, width)), width, height
