"""Stream the documents of DocRED-format files as their exact bytes, never loading a file whole.

The sharding driver only has to cut the input into documents; parsing, validation and
tokenization happen in the Ray workers. So the driver does not build Python objects with
:func:`dsdocre.data.reader.iter_raw_documents` (ijson, ~60 us/document) and re-serialize them: it
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

from dsdocre.data.reader import UTF8_HINT, check_encoding
from dsdocre.errors import UserError

BLOCK_CHARS = 4 << 20  # characters decoded per read: the reader's memory bound (plus one document)
_SKIP = re.compile(r"[ \t\n\r]*")
_SKIP_COMMA = re.compile(r"[ \t\n\r]*,?[ \t\n\r]*")


def iter_document_bytes(path: str | Path, block_chars: int = BLOCK_CHARS) -> Iterator[bytes]:
    """Yield the UTF-8 bytes of each document of a ``.json`` array or a ``.jsonl`` file, in order.

    A document is yielded without being checked (a worker validates it); a file that is not a
    JSON array / JSON Lines at all raises ``ValueError`` (a :class:`UserError`) naming the file and
    the character offset, or, for a ``.json`` array that is not UTF-8 text, the byte offset.

    A UTF-8 byte-order mark is accepted (and is not part of the first document's bytes). A ``.json``
    array that starts with a UTF-16/32 byte-order mark or holds a NUL byte in its first 4 KiB is
    refused up front, with the library reader's words. A ``.jsonl`` line is yielded as it is: a
    line that is not UTF-8 is rejected by its worker ("not UTF-8 text"), the other lines are kept.
    """
    path = Path(path)
    if path.suffix == ".jsonl":
        with open(path, "rb") as f:
            for line_no, line in enumerate(f):
                if line_no == 0 and line.startswith(codecs.BOM_UTF8):
                    line = line[len(codecs.BOM_UTF8):]
                line = line.strip()
                if line:
                    yield line
        return
    yield from _iter_array(path, block_chars)


def _iter_array(path: Path, block_chars: int) -> Iterator[bytes]:
    with open(path, "rb") as f:
        head = f.read(4096)
        check_encoding(path, head)  # UTF-16/32 (a byte-order mark, or NUL bytes): refused clearly
        bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0  # a UTF-8 BOM is fine
        f.seek(bom)
        scan = _Scanner(f, block_chars, start=bom)
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

    def __init__(self, f, block_chars: int, start: int = 0):
        """``f`` is read from byte ``start`` (after a UTF-8 byte-order mark, which is no character)."""
        self.f, self.block_chars = f, block_chars
        self.utf8 = codecs.getincrementaldecoder("utf-8")()  # a character split between reads is fine
        self.json = json.JSONDecoder()
        self.buf, self.pos, self.dropped, self.eof = "", 0, 0, False
        self.fed = start  # bytes of the file handed to the decoder so far

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
        pending = len(self.utf8.getstate()[0])  # the start of a character cut by the previous read
        try:
            self.buf += self.utf8.decode(raw, final=self.eof)
        except UnicodeDecodeError as err:  # Latin-1, CP1252, bytes that are not text: name the file
            at = self.fed - pending + err.start
            raise UserError(f"{self.f.name}: not UTF-8 text ({err.reason} at byte {at}); {UTF8_HINT}") from None
        self.fed += len(raw)
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
            except RecursionError:  # the C scanner's depth limit (~1000 levels)
                raise self.error("nested too deeply") from None
            except ValueError as err:  # an integer of more than 4,300 digits (sys.get_int_max_str_digits)
                raise self.error(str(err)) from None
            self.fill(grow=True)
        value = self.buf[self.pos:end].encode("utf-8")
        self.pos = end
        return value

    def error(self, what: str, at: int | None = None) -> UserError:
        at = self.pos if at is None else at
        return UserError(f"{self.f.name}: not a JSON array of documents: {what} "
                         f"(near character {self.dropped + at})")
