"""Stream the documents of DocRED-format files as their exact bytes, never loading a file whole.

The sharding driver only has to cut the input into documents; parsing, validation and
tokenization happen in the Ray workers. So the driver does not build Python objects with
:func:`dsdocre.data.documents.iter_raw_documents` (ijson, ~60 us/document) and re-serialize them: it
finds each array element's exact byte span with the C JSON scanner (``raw_decode``, ~20 us per
document), which is what lets two workers scale on two cores, and keeps every document byte for
byte as it was in the input (the shards store those bytes).

Memory is bounded by the read block (a few MB) plus the largest single document.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Iterator

BLOCK_CHARS = 4 << 20  # characters decoded per read: the reader's memory bound (plus one document)
_SKIP = re.compile(r"[ \t\n\r]*")
_SKIP_COMMA = re.compile(r"[ \t\n\r]*,?[ \t\n\r]*")


def iter_document_bytes(path: str | Path, block_chars: int = BLOCK_CHARS) -> Iterator[bytes]:
    """Yield the UTF-8 bytes of each document of a ``.json`` array or a ``.jsonl`` file, in order.

    A document is yielded without being checked (a worker validates it); a file that is not a
    JSON array / JSON Lines at all raises ``ValueError`` naming the file and the byte-ish offset.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for line in f:
                line = line.strip()
                if line:
                    yield line
        return
    yield from _iter_array(path, block_chars)


def _iter_array(path: Path, block_chars: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        scan = _Scanner(f, block_chars)
        if scan.skip(_SKIP)[1] != "[":
            raise scan.error("expected '[' at the start")
        scan.pos += 1
        first = True
        while True:
            separator, nxt = scan.skip(_SKIP if first else _SKIP_COMMA)
            if nxt == "":
                raise scan.error("unexpected end of file (missing ']')")
            if nxt == "]":
                if "," in separator:
                    raise scan.error("trailing comma before ']'")
                scan.pos += 1
                if scan.skip(_SKIP)[1]:  # e.g. two arrays back to back: never drop data silently
                    raise scan.error("unexpected data after the closing ']'")
                return
            if not first and "," not in separator:
                raise scan.error("expected ',' between documents")
            yield scan.element()
            first = False


class _Scanner:
    """A window over a decoded file: ``buf[pos:]`` is what is not consumed yet."""

    def __init__(self, f, block_chars: int):
        self.f, self.block_chars = f, block_chars
        self.utf8 = codecs.getincrementaldecoder("utf-8-sig")()  # a BOM is fine; split characters too
        self.json = json.JSONDecoder()
        self.buf, self.pos, self.dropped, self.eof = "", 0, 0, False

    def fill(self, grow: bool = False) -> bool:
        """Append one block; False at end of file. Only here is the consumed prefix dropped, so the
        copy costs one block per block read, not one per document. ``grow`` reads as much as is
        buffered already, so that a document larger than a block is retried O(log size) times."""
        if self.eof:
            return False
        self.dropped += self.pos
        self.buf, self.pos = self.buf[self.pos:], 0
        raw = self.f.read(max(self.block_chars, len(self.buf) if grow else 0))
        self.eof = not raw
        self.buf += self.utf8.decode(raw, final=self.eof)
        return True

    def skip(self, pattern: re.Pattern) -> tuple[str, str]:
        """Skip ``pattern`` (whitespace, a comma): (the skipped text, the next character or '')."""
        while True:
            end = pattern.match(self.buf, self.pos).end()
            if end < len(self.buf) or not self.fill():  # fill() moves pos: match again
                skipped, self.pos = self.buf[self.pos:end], end
                return skipped, self.buf[end:end + 1]

    def element(self) -> bytes:
        """The exact bytes of the JSON value at ``pos``. A value cut by the end of the window fails
        to decode (or, for a bare number, may end exactly at the window's end): read more and
        retry until it ends strictly inside the window or the file is finished."""
        while True:
            try:
                _, end = self.json.raw_decode(self.buf, self.pos)
                if end < len(self.buf) or self.eof:
                    break
            except json.JSONDecodeError as err:
                if self.eof:
                    raise self.error(err.msg, err.pos) from None
            self.fill(grow=True)
        value = self.buf[self.pos:end].encode("utf-8")
        self.pos = end
        return value

    def error(self, what: str, at: int | None = None) -> ValueError:
        at = self.pos if at is None else at
        return ValueError(f"{self.f.name}: not a JSON array of documents: {what} "
                          f"(near character {self.dropped + at})")
