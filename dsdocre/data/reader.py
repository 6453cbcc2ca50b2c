"""Reading DocRED files: a streaming reader, the loaders that validate and type, rejections.

:func:`iter_raw_documents` streams the raw documents of a ``.json`` array (ijson) or ``.jsonl``
file, never loading it whole, and names the file and the position of any damage.
:func:`load_valid_documents` (training and prediction inputs) keeps the valid documents as
:class:`~dsdocre.data.documents.Document` and rejects the others with every reason
(:class:`Rejection`, written as JSON Lines by :func:`write_rejections`);
:func:`load_gold_documents` (gold for scoring) leaves none out.
"""

from __future__ import annotations

import codecs
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from dsdocre import fsio
from dsdocre.data.documents import Document
from dsdocre.data.validation import Problem, duplicate_title_problem, validate_document
from dsdocre.errors import UserError


_BLOCK_BYTES = 64 << 10  # the read size handed to ijson (its buf_size; its default)
_JSON_WHITESPACE = b" \t\n\r"
# Byte-order marks of encodings that are not UTF-8 (UTF-32 first: its LE mark starts with UTF-16's).
_FOREIGN_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                 (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
UTF8_HINT = "DocRED files are UTF-8: convert it (e.g. `iconv -f ENCODING -t UTF-8`)"


def check_encoding(path: Path, head: bytes) -> None:
    """A clear error for a file that is evidently not UTF-8 text (looked at before parsing)."""
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise UserError(f"{path}: {name} text (it starts with a {name} byte-order mark); {UTF8_HINT}")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path}: holds a NUL byte at byte {nul}: not UTF-8 text (UTF-16 or UTF-32 without a "
                        f"byte-order mark?); {UTF8_HINT}")


def iter_raw_documents(path: str | Path) -> Iterator[Any]:
    """Stream the raw documents of a ``.json`` array or ``.jsonl`` file, never loading it whole.

    Documents are yielded as they are parsed; a file that is damaged further on (cut short, a
    syntax error, bytes that are not UTF-8) raises :class:`UserError` there, naming the file and
    the position (the line of a ``.jsonl`` file; for a ``.json`` array the number of documents
    read before the damage, and the byte offset of bytes that are not UTF-8). A UTF-8 byte-order
    mark is accepted; UTF-16/32 text is refused up front.

    ``.json`` arrays are parsed by ijson (its C backend, yajl2_c, where installed), which cannot
    read integers beyond 64 bits or NaN / Infinity (refused with a clear error; ``.jsonl`` files,
    read by :mod:`json`, can hold them) and turns a lone high-surrogate escape (``"\\ud800"``)
    into ``"?"`` (yajl's substitution; a lone low surrogate is refused).
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file" if not path.exists() else f"{path}: not a file")
    with open(path, "rb") as f:
        head = f.read(4096)
        check_encoding(path, head)
        f.seek(0)
        if path.suffix == ".jsonl":
            yield from _iter_json_lines(path, f)
        else:
            bom = len(codecs.BOM_UTF8) if head.startswith(codecs.BOM_UTF8) else 0  # a UTF-8 byte-order mark is fine
            yield from _iter_json_array(path, f, bom)


def _iter_json_lines(path: Path, f) -> Iterator[Any]:
    for line_no, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise UserError(f"{path}:{line_no}: not UTF-8 text ({err.reason} at byte {err.start} of the line); "
                            f"{UTF8_HINT}") from None
        try:
            doc = json.loads(text)
        except RecursionError:
            raise UserError(f"{path}:{line_no}: not valid JSON: nested too deeply") from None
        except ValueError as err:  # JSONDecodeError, or an integer too long to convert
            raise UserError(f"{path}:{line_no}: not valid JSON: {err}") from None
        if isinstance(doc, list):
            raise UserError(f"{path}:{line_no}: a JSON array, where JSON Lines has one document (an object) per "
                            "line; a file holding a JSON array of documents must be named .json")
        yield doc


def _iter_json_array(path: Path, f, start: int) -> Iterator[Any]:
    """The elements of the JSON array that begins at byte ``start`` (after a UTF-8 byte-order
    mark), streamed by ijson; yajl itself refuses data after the closing ``]``."""
    import ijson  # streaming: DocRED's train_distant.json is a 1.5 GB array

    f.seek(start)
    first = b""
    while not first and (block := f.read(4096)):
        first = block.lstrip(_JSON_WHITESPACE)[:1]
    if first != b"[":
        if first >= b"\x80" and (bad := _first_non_utf8(f)):
            raise _not_utf8(path, bad, 0)
        what = {b"{": "a JSON object", b"": "nothing"}.get(first, "no JSON array")
        raise UserError(f"{path}: holds {what}, not an array of documents; a DocRED file is a JSON "
                        "array [{...}, ...] (or JSON Lines, one document per line, named .jsonl)")
    f.seek(start)
    n = 0
    try:
        for doc in ijson.items(f, "item", use_float=True, buf_size=_BLOCK_BYTES):
            n += 1
            yield doc
    except (ijson.JSONError, ValueError, OverflowError, RecursionError) as err:  # UnicodeDecodeError: a ValueError
        raise _array_error(path, f, err, n) from None


# yajl's messages (ijson's C backend), as the reader words them
_YAJL_MESSAGES = {
    "premature EOF": "the file ends inside the array (missing ']': cut short?)",
    "trailing garbage": "unexpected data after the closing ']'",
    "unallowed token at this point in JSON text": "no value where one belongs (a trailing comma before ']'?)",
    "after array element, I expect ',' or ']'": "expected ',' or ']' after an array element",
    "integer overflow": "a number too large (an integer beyond 64 bits, which the .json reader cannot hold)",
    "numeric (floating point) overflow": "a number too large (beyond the range of a float)",
    "invalid char in json text": "a character that JSON does not allow here (NaN and Infinity, which Python's "
                                 "json writes, are not JSON)",
    "malformed number, a digit is required after the minus sign": "a malformed number (-Infinity or -NaN, which "
                                                                   "Python's json writes, are not JSON)",
}


def _array_error(path: Path, f, err: BaseException, n: int) -> UserError:
    """The one-line error for what stopped ijson after ``n`` documents. ijson gives no byte offset
    (its message quotes the text around the error: left out, as it depends on the read size); for
    bytes that are not UTF-8 the file is scanned for the first such byte."""
    if isinstance(err, RecursionError):
        return UserError(f"{path}: not a valid JSON array of documents: nested too deeply ({_after(n)})")
    if isinstance(err, UnicodeDecodeError):  # raised where ijson decodes a string
        kind, maybe_bytes = "a string that is not Unicode text (a lone surrogate \\u escape such as \\udc00?)", True
    else:
        text = err.args[0] if err.args else ""
        if isinstance(text, bytes):  # yajl's message quotes the input, which may not be UTF-8
            text = text.decode("utf-8", "replace")
        lines = str(text).strip().splitlines()
        kind = lines[0] if lines else type(err).__name__
        if kind.startswith(("parse error: ", "lexical error: ")):
            kind = kind.split(": ", 1)[1].rstrip(".")
        # bytes that are not UTF-8: a lexical error (invalid bytes or char), or data after the closing ']'
        maybe_bytes = bool(lines) and (lines[0].startswith("lexical error: ") or kind == "trailing garbage")
    if maybe_bytes:
        bad = _first_non_utf8(f)
        if bad and bad[1] == _CUT_CHARACTER and kind == "invalid bytes in UTF8 string":
            kind = "premature EOF"  # a file cut inside a string, in the middle of a character
        elif bad:
            return _not_utf8(path, bad, n)
    return UserError(f"{path}: not a valid JSON array of documents: {_YAJL_MESSAGES.get(kind, kind)} ({_after(n)})")


def _after(n: int) -> str:
    return f"after {n} complete document{'s' if n != 1 else ''}"


_CUT_CHARACTER = "a character cut by the end of the file"


def _first_non_utf8(f) -> tuple[int, str] | None:
    """``(byte offset, reason)`` of the first bytes of ``f`` that are not UTF-8 (reason
    ``_CUT_CHARACTER`` for an incomplete character at the very end), or None when the whole file
    is UTF-8. Reads ``f`` from the start (done only when reading failed)."""
    f.seek(0)
    decoder = codecs.getincrementaldecoder("utf-8")()
    fed = 0
    while block := f.read(1 << 20):
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(block)
        except UnicodeDecodeError as err:
            return fed - pending + err.start, err.reason
        fed += len(block)
    pending = len(decoder.getstate()[0])
    return (fed - pending, _CUT_CHARACTER) if pending else None


def _not_utf8(path: Path, bad: tuple[int, str], n: int) -> UserError:
    at, reason = bad
    return UserError(f"{path}: not UTF-8 text: {reason} at byte {at} ({_after(n)}); {UTF8_HINT}")



@dataclass
class Rejection:
    """A document that failed validation: where it came from and every reason."""

    source: str
    index: int
    title: str | None
    problems: list[Problem]

    @classmethod
    def of(cls, problems: list[Problem]) -> "Rejection":
        """The rejection of the document these problems (all of one document, at least one) describe."""
        first = problems[0]
        return cls(first.source, first.index, first.title, problems)

    def to_json(self) -> dict:
        return {"source": self.source, "index": self.index, "title": self.title,
                "reasons": [f"{p.field}: {p.message}" for p in self.problems]}


def write_rejections(rejections: Iterable[Rejection], path: str | Path, append: bool = False) -> None:
    """Rejections as JSON Lines, one per document, with every reason; after those already in
    ``path`` when ``append``. Written whole or not at all (the file as it was stands)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsio.atomic_open(path, "wb") as f:
        if append and path.is_file():
            with open(path, "rb") as before:
                shutil.copyfileobj(before, f)
        for rej in rejections:
            f.write(json.dumps(rej.to_json()).encode() + b"\n")


def _checked_documents(path: str | Path, require_labels: bool):
    """``(index, raw, errors, warnings)`` for every document of one file, duplicate titles included."""
    source = str(path)
    titles: dict[str, int] = {}
    for index, raw in enumerate(iter_raw_documents(path)):
        problems = validate_document(raw, index, source)
        if require_labels and isinstance(raw, dict) and "labels" not in raw:
            problems.append(Problem(source, index, raw.get("title") if isinstance(raw.get("title"), str) else None,
                                    "labels", "missing: this command needs annotated documents"))
        errors = [p for p in problems if p.severity == "error"]
        if not errors:
            duplicate = duplicate_title_problem(raw, index, source, titles)
            errors += [duplicate] if duplicate else []
        yield index, raw, errors, [p for p in problems if p.severity != "error"]


def load_valid_documents(paths: str | Path | Iterable[str | Path], *, require_labels: bool = False,
                         rejected_path: str | Path | None = None,
                         log=print) -> tuple[list[Document], list[Rejection]]:
    """Read, validate and type every document; invalid ones are rejected, never silently dropped.

    For training and prediction inputs. A document with an error is rejected; one with only
    warnings (a duplicated label) is kept and the warning logged. Rejections are appended to
    ``rejected_path`` (JSON Lines) when given, and a one-line account ("read N, kept K, rejected R
    -> FILE") is logged for each file. Gold files for scoring go through
    :func:`load_gold_documents`, which never leaves a document out.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    documents: list[Document] = []
    rejections: list[Rejection] = []
    for path in paths:
        source = str(path)
        n_read = n_rejected = n_warned = 0
        for index, raw, errors, warnings in _checked_documents(path, require_labels):
            n_read += 1
            if errors:
                n_rejected += 1
                rejections.append(Rejection.of(errors + warnings))
                continue
            if warnings and log is not None:
                n_warned += 1
                if n_warned <= 3:
                    log(f"  {warnings[0]}")
            documents.append(Document.from_json(raw))
        if n_read == 0:
            raise UserError(f"{source}: holds no documents")
        if log is not None:
            where = f" -> {rejected_path}" if rejected_path and n_rejected else ""
            warned = f" ({n_warned} with warnings)" if n_warned else ""
            log(f"{source}: read {n_read}, kept {n_read - n_rejected}{warned}, rejected {n_rejected}{where}")
            for rej in [r for r in rejections if r.source == source][:3]:
                log(f"  rejected: {rej.problems[0]}")
    if rejected_path is not None and rejections:
        write_rejections(rejections, rejected_path, append=True)
    return documents, rejections


def load_gold_documents(path: str | Path, *, log=print, max_listed: int = 5) -> list[Document]:
    """Every document of a gold (annotated) file, for scoring: nothing is left out.

    Gold is read the way DocRED's official scorer reads it: a duplicated label is counted once (a
    warning). A document that cannot be scored (a missing field, an entity index out of range, a
    duplicate title, no labels, ...) stops the caller with a :class:`UserError` naming every such
    document, so that recall is never computed over a quietly smaller gold set.
    """
    documents: list[Document] = []
    unusable: list[Rejection] = []
    n_warned = 0
    for index, raw, errors, warnings in _checked_documents(path, require_labels=True):
        if errors:
            unusable.append(Rejection.of(errors))
            continue
        if warnings:
            n_warned += 1
            if log is not None and n_warned <= max_listed:
                log(f"{warnings[0]}")
        documents.append(Document.from_json(raw))
    if unusable:
        listed = "; ".join(str(r.problems[0]) + (f" (+{len(r.problems) - 1} more)" if len(r.problems) > 1 else "")
                           for r in unusable[:max_listed])
        more = f"; and {len(unusable) - max_listed} more documents" if len(unusable) > max_listed else ""
        raise UserError(f"{path}: {len(unusable)} gold documents cannot be scored, and leaving them out would "
                        f"shrink the gold set: {listed}{more}. Fix them (`dsdocre validate {path}` lists "
                        "every problem).")
    if not documents:
        raise UserError(f"{path}: holds no documents")
    if n_warned and log is not None:
        log(f"{path}: {n_warned} gold documents with duplicated labels; each label counted once, as DocRED's "
            "official scorer does")
    return documents

