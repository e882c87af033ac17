"""Stream one big JSON array out of a JSON document in bounded memory: a trace's ``traceEvents``.

A Kineto trace of 10M events is ~2.5 GB of JSON; parsed whole it is ~14 GB of Python objects.
This reader never holds more than a chunk: it finds the structure with a vectorised scan (quotes,
escapes, brackets; numpy over 16 MiB at a time), hands the array's items on in batches of
complete items (raw bytes, for a parser in another process), and keeps everything outside the
array (``deviceProperties``, ``otherData``: small) as a document of its own with the array left
empty. Plain or gzip (by the magic bytes), with a cap on the decompressed size.
"""

from __future__ import annotations

import gzip
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np

CHUNK = 16 << 20
MAX_DEPTH = 512  # deeper than any trace; the parsers' recursion would fail first
MAX_OUTSIDE = 256 << 20  # bytes outside the streamed array (metadata), and the largest single item
MAX_BYTES = 64 << 30  # decompressed size refused beyond this (gzip bombs take time, not memory, now)
_KEY = re.compile(rb'"traceEvents"\s*:\s*$')

_OPEN = np.zeros(256, dtype=np.int8)
_OPEN[[ord("{"), ord("[")]] = 1
_OPEN[[ord("}"), ord("]")]] = -1


class StreamError(ValueError):
    """The bytes are not the JSON document expected; the message says what (no file name)."""


@dataclass
class Document:
    """What :func:`stream_items` leaves after the items: the rest of the document, as bytes."""

    outside: bytearray = field(default_factory=bytearray)
    top: bytes = b""  # b"{" or b"[": an object with the array under the key, or the array itself
    found: bool = False  # the array was there


class _Scanner:
    """Quote/escape/bracket state carried across chunks."""

    def __init__(self) -> None:
        self.depth, self.in_string, self.escape_next = 0, False, False

    def structure(self, chunk: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Positions, bytes and depth after each bracket outside strings, in ``chunk``."""
        b = np.frombuffer(chunk, dtype=np.uint8)
        pos = np.flatnonzero((b == 0x22) | (b == 0x5C) | ((b | 0x20) == 0x7B) | ((b | 0x20) == 0x7D))
        ch = b[pos]
        escaped = self._escaped(pos[ch == 0x5C], len(chunk))
        if escaped:
            keep = ~np.isin(pos, np.asarray(escaped, dtype=pos.dtype))
            pos, ch = pos[keep], ch[keep]
        quote = (ch == 0x22).astype(np.int64)
        before = (int(self.in_string) + np.cumsum(quote) - quote) & 1  # inside a string before this byte
        self.in_string = bool((int(self.in_string) + int(quote.sum())) & 1)
        structural = (before == 0) & (quote == 0) & (ch != 0x5C)
        pos, ch = pos[structural], ch[structural]
        depth = self.depth + np.cumsum(_OPEN[ch].astype(np.int64))
        if len(depth):
            if depth.max() > MAX_DEPTH:
                raise StreamError("JSON nested too deeply")
            if depth.min() < 0:
                raise StreamError("not a readable JSON trace (a bracket closes nothing)")
            self.depth = int(depth[-1])
        return pos, ch, depth

    def _escaped(self, backslashes: np.ndarray, n: int) -> list[int]:
        """Bytes escaped by a backslash (rare in traces: a loop is fine)."""
        out: list[int] = []
        skip = 0
        if self.escape_next:
            out.append(0)
            skip = 1
        for p in backslashes.tolist():
            if p < skip:
                continue
            out.append(p + 1)
            skip = p + 2
        self.escape_next = bool(out) and out[-1] == n
        return [p for p in out if p < n]


def open_bytes(path: Path) -> BinaryIO:
    """The file, gunzipped when it is gzip (by its magic bytes, not its name)."""
    with open(path, "rb") as fh:
        gz = fh.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")  # noqa: SIM115 - the caller closes it


def stream_items(fh: BinaryIO, doc: Document, chunk: int = CHUNK,
                 max_bytes: int = MAX_BYTES) -> Iterator[bytes]:
    """Batches of the array's items as JSON text (``a, b, c``: wrap in brackets to parse), from a
    document that is the array itself or an object with the array under ``"traceEvents"``. After
    the last batch, ``doc`` holds the rest of the document (the array emptied)."""
    scan = _Scanner()
    inside = False
    pending = bytearray()
    item_depth = 0  # the depth of the array's items' closing brackets
    total = 0
    while True:
        try:
            data = fh.read(chunk)
        except (OSError, EOFError, zlib.error, gzip.BadGzipFile) as exc:
            raise StreamError(f"cannot read ({exc})") from None
        if not data:
            break
        total += len(data)
        if total > max_bytes:
            raise StreamError(f"decompresses to more than {max_bytes >> 20} MiB; refused")
        pos, ch, depth = scan.structure(data)
        cursor, k = 0, 0
        while True:
            if not inside:
                if not doc.top:
                    head = data.lstrip(b" \t\r\n\xef\xbb\xbf")
                    if not head:
                        doc.outside += data
                        if len(doc.outside) > MAX_OUTSIDE:
                            raise StreamError("not a readable JSON trace (only white space)")
                        break
                    if head[:1] not in (b"{", b"["):
                        raise StreamError("not a readable JSON trace (it starts with neither { nor [)")
                    doc.top = head[:1]
                    item_depth = 1 if doc.top == b"[" else 2
                opens = np.flatnonzero((ch[k:] == ord("[")) & (depth[k:] == item_depth)) + k
                j = _array_start(opens, pos, data, cursor, doc, item_depth)
                if j is None:
                    doc.outside += data[cursor:]
                    if len(doc.outside) > MAX_OUTSIDE:
                        raise StreamError("no traceEvents list in the first "
                                          f"{MAX_OUTSIDE >> 20} MiB outside the events")
                    break
                doc.outside += data[cursor:int(pos[j]) + 1]
                doc.found, inside, cursor, k = True, True, int(pos[j]) + 1, j + 1
            closes = np.flatnonzero(depth[k:] == item_depth - 1) + k
            stop = int(closes[0]) if len(closes) else len(pos)
            ends = np.flatnonzero(((ch[k:stop] == ord("}")) | (ch[k:stop] == ord("]")))
                                  & (depth[k:stop] == item_depth)) + k
            if len(closes):  # the array ends in this chunk
                end = int(pos[stop])
                pending += data[cursor:end]
                if pending.strip():
                    yield bytes(pending)
                pending = bytearray()
                inside, cursor, k = False, end, stop
                continue
            if len(ends):
                last = int(pos[ends[-1]]) + 1
                pending += data[cursor:last]
                yield bytes(pending)
                pending = bytearray(data[last:])
            else:
                pending += data[cursor:]
                if len(pending) > MAX_OUTSIDE:
                    raise StreamError(f"an event larger than {MAX_OUTSIDE >> 20} MiB")
            break
    if inside or scan.depth or scan.in_string:
        raise StreamError("not a readable JSON trace (it ends early: truncated?)")


def _array_start(opens: np.ndarray, pos: np.ndarray, data: bytes, cursor: int, doc: Document,
                 item_depth: int) -> int | None:
    """Index (into ``pos``) of the bracket that opens the events array, if it is in this chunk."""
    for j in opens.tolist():
        if item_depth == 1:
            return j
        p = int(pos[j])
        before = data[max(cursor, p - 256):p]
        if p - cursor < 256:  # the key may have come with the previous chunk
            before = bytes(doc.outside[-256:]) + before
        if _KEY.search(before):
            return j
    return None


def wrap(batch: bytes) -> bytes:
    """A batch of items as one JSON array."""
    text = batch.strip()
    if text.startswith(b","):
        text = text[1:]
    return b"[" + text + b"]"
