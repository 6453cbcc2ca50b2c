"""DocRED documents: a typed model, a streaming reader and validation.

A DocRED file is a JSON array (or JSON Lines) of documents::

    {"title": str, "sents": [[word, ...], ...],
     "vertexSet": [[{"name", "pos": [start, end), "sent_id", "type"}, ...], ...],
     "labels": [{"h": int, "t": int, "r": "P17", "evidence": [int, ...]}, ...]}

``labels`` is absent in unlabeled files. Unknown fields (``global_pos``, ``kb_id``, ...) are kept
and written back unchanged, so ``Document.from_json(d).to_json() == d`` for every valid ``d``.

Validation names the document (index in its file and title), the field (a JSON path such as
``vertexSet[3][0].pos``) and the problem. ``dsdocre validate FILE...`` (:mod:`dsdocre.validate`) prints every problem;
training commands reject bad documents with the same messages (see :func:`load_valid_documents`).
"""

from __future__ import annotations

import codecs
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from dsdocre.errors import UserError
from dsdocre.relations import relation_names


# --------------------------------------------------------------------------------------------
# The typed model
# --------------------------------------------------------------------------------------------
def _ordered(fields: dict, key_order: tuple[str, ...]) -> dict:
    """``fields`` in the source object's key order (new keys last): to_json() is byte-exact."""
    order = [k for k in key_order if k in fields] + [k for k in fields if k not in key_order]
    return {k: fields[k] for k in order}


@dataclass(frozen=True)
class Mention:
    name: str
    sent_id: int
    start: int  # word offset inside the sentence, inclusive
    end: int  # exclusive
    type: str
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    @property
    def kb_id(self) -> str | None:
        return self.extra.get("kb_id")

    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, m: dict) -> "Mention":
        extra = {k: v for k, v in m.items() if k not in ("name", "sent_id", "pos", "type")}
        return cls(m["name"], m["sent_id"], m["pos"][0], m["pos"][1], m["type"], extra, tuple(m))

    def to_json(self) -> dict:
        return _ordered({"name": self.name, "pos": [self.start, self.end], "sent_id": self.sent_id,
                         "type": self.type, **self.extra}, self.key_order)


@dataclass(frozen=True)
class Label:
    h: int
    t: int
    r: str
    evidence: tuple[int, ...] = ()
    extra: dict = field(default_factory=dict, compare=False, repr=False)

    key_order: tuple[str, ...] = field(default=(), compare=False, repr=False)

    @classmethod
    def from_json(cls, lab: dict) -> "Label":
        extra = {k: v for k, v in lab.items() if k not in ("h", "t", "r", "evidence")}
        return cls(lab["h"], lab["t"], lab["r"], tuple(lab.get("evidence", ())), extra, tuple(lab))

    def to_json(self) -> dict:
        fields = {"h": self.h, "t": self.t, "r": self.r, **self.extra}
        if self.evidence or "evidence" in self.key_order or not self.key_order:
            fields["evidence"] = list(self.evidence)
        return _ordered(fields, self.key_order)


@dataclass
class Document:
    title: str
    sents: list[list[str]]
    entities: list[list[Mention]]  # vertexSet: entity index -> its mentions
    labels: list[Label] | None  # None for unlabeled documents
    extra: dict = field(default_factory=dict, repr=False)
    # Key order of the source object, so that to_json() reproduces it byte for byte.
    key_order: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def from_json(cls, d: dict) -> "Document":
        """Build from a raw dict. Call :func:`validate_document` first on untrusted input."""
        labels = d.get("labels")
        extra = {k: v for k, v in d.items() if k not in ("title", "sents", "vertexSet", "labels")}
        return cls(
            title=d["title"],
            sents=d["sents"],
            entities=[[Mention.from_json(m) for m in ent] for ent in d["vertexSet"]],
            labels=None if labels is None else [Label.from_json(x) for x in labels],
            extra=extra,
            key_order=tuple(d.keys()),
        )

    def to_json(self) -> dict:
        fields = {"title": self.title, "sents": self.sents,
                  "vertexSet": [[m.to_json() for m in ent] for ent in self.entities], **self.extra}
        if self.labels is not None:
            fields["labels"] = [x.to_json() for x in self.labels]
        return _ordered(fields, self.key_order)

    @property
    def num_entities(self) -> int:
        return len(self.entities)

    def entity_name(self, i: int) -> str:
        """The longest mention name: the most informative one to show a reader."""
        return max((m.name for m in self.entities[i]), key=len)

    def pair_is_intra(self, h: int, t: int) -> bool:
        """Re-DocRED's definition: some head mention and some tail mention share a sentence."""
        return bool({m.sent_id for m in self.entities[h]} & {m.sent_id for m in self.entities[t]})


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    """One thing wrong with one document, precise enough to find and fix it."""

    source: str  # file name
    index: int  # position of the document in its file (0-based)
    title: str | None
    field: str  # JSON path inside the document
    message: str
    # "error": the document cannot be used as it is. "warning": it can, the way DocRED's official
    # scorer uses it (a duplicated label counts once).
    severity: str = "error"

    def __str__(self) -> str:
        title = _short(self.title, 120) if self.title is not None else "(no title)"
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{self.source}: document {self.index} {title}: {prefix}{self.field}: {self.message}"

    def to_json(self) -> dict:
        return {"source": self.source, "index": self.index, "title": self.title,
                "field": self.field, "message": self.message, "severity": self.severity}


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _type_name(x: Any) -> str:
    return type(x).__name__ if x is not None else "null"


def _short(x: Any, limit: int = 80) -> str:
    """``repr(x)``, cut to ``limit`` characters: a message stays one readable line whatever the input."""
    try:
        text = repr(x)
    except RecursionError:  # a value nested deeper than repr goes
        text = f"<a deeply nested {_type_name(x)}>"
    return text if len(text) <= limit else text[:limit - 5] + " ...>"


def _not_text(s: str) -> str | None:
    """Why ``s`` is not valid Unicode text (a lone surrogate, from a broken ``\\uD8xx`` escape:
    the tokenizer and every UTF-8 writer refuse it), or None."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as err:
        return (f"not valid Unicode text: lone surrogate {s[err.start]!r} at character {err.start} "
                "(a broken \\u escape?)")
    return None


def validate_document(doc: Any, index: int = 0, source: str = "<input>",
                      known_relations: Iterable[str] | None = None) -> list[Problem]:
    """Every problem of one raw document (an empty list when it is valid); warnings included."""
    problems: list[Problem] = []
    title = doc.get("title") if isinstance(doc, dict) and isinstance(doc.get("title"), str) else None

    def bad(path: str, message: str, severity: str = "error") -> None:
        problems.append(Problem(source, index, title, path, message, severity))

    if not isinstance(doc, dict):
        bad("<document>", f"expected a JSON object, got {_type_name(doc)}")
        return problems
    for key in ("title", "sents", "vertexSet"):
        if key not in doc:
            bad(key, "missing required field")
    if "title" in doc and not isinstance(doc["title"], str):
        bad("title", f"expected a string, got {_type_name(doc['title'])}")
    elif "title" in doc and (why := _not_text(doc["title"])):
        bad("title", why)

    # sents: a non-empty list of non-empty lists of strings
    sents = doc.get("sents")
    sent_lengths: list[int] | None = None
    if "sents" in doc:
        if not isinstance(sents, list) or not sents:
            bad("sents", "expected a non-empty list of sentences" if isinstance(sents, list)
                else f"expected a list of sentences, got {_type_name(sents)}")
        else:
            sent_lengths = []
            for s_i, sent in enumerate(sents):
                if not isinstance(sent, list) or not sent:
                    bad(f"sents[{s_i}]", "expected a non-empty list of words" if isinstance(sent, list)
                        else f"expected a list of words, got {_type_name(sent)}")
                    sent_lengths.append(0)
                    continue
                wrong = [w_i for w_i, w in enumerate(sent) if not isinstance(w, str)]
                if wrong:
                    bad(f"sents[{s_i}][{wrong[0]}]",
                        f"expected a string word, got {_type_name(sent[wrong[0]])}"
                        + (f" ({len(wrong)} such words in this sentence)" if len(wrong) > 1 else ""))
                elif _not_text("".join(sent)):  # one check per sentence; find the word only then
                    w_i = next(i for i, w in enumerate(sent) if _not_text(w))
                    bad(f"sents[{s_i}][{w_i}]", _not_text(sent[w_i]))
                sent_lengths.append(len(sent))

    # vertexSet: a non-empty list of entities, each a non-empty list of mentions
    vertex_set = doc.get("vertexSet")
    num_entities: int | None = None
    if "vertexSet" in doc:
        if not isinstance(vertex_set, list):
            bad("vertexSet", f"expected a list of entities, got {_type_name(vertex_set)}")
        elif not vertex_set:
            bad("vertexSet", "empty: a document needs at least one entity")
        else:
            num_entities = len(vertex_set)
            for e_i, entity in enumerate(vertex_set):
                if not isinstance(entity, list) or not entity:
                    bad(f"vertexSet[{e_i}]", "expected a non-empty list of mentions" if isinstance(entity, list)
                        else f"expected a list of mentions, got {_type_name(entity)}")
                    continue
                for m_i, m in enumerate(entity):
                    _validate_mention(m, f"vertexSet[{e_i}][{m_i}]", sent_lengths, bad)

    if "labels" in doc:
        _validate_labels(doc["labels"], num_entities, len(sent_lengths) if sent_lengths else None,
                         set(known_relations) if known_relations is not None else set(relation_names()), bad)
    return problems


def _validate_mention(m: Any, path: str, sent_lengths: list[int] | None, bad) -> None:
    if not isinstance(m, dict):
        bad(path, f"expected a mention object, got {_type_name(m)}")
        return
    for key in ("name", "pos", "sent_id", "type"):
        if key not in m:
            bad(f"{path}.{key}", "missing required field")
    if "name" in m and not isinstance(m["name"], str):
        bad(f"{path}.name", f"expected a string, got {_type_name(m['name'])}")
    elif "name" in m and (why := _not_text(m["name"])):
        bad(f"{path}.name", why)
    if "type" in m and not (isinstance(m["type"], str) and m["type"]):
        bad(f"{path}.type", f"expected a non-empty string, got {_short(m['type'])}")
    elif "type" in m and (why := _not_text(m["type"])):
        bad(f"{path}.type", why)
    if isinstance(m.get("kb_id"), str) and (why := _not_text(m["kb_id"])):  # entity keys of the fact join
        bad(f"{path}.kb_id", why)
    sent_id = m.get("sent_id")
    if "sent_id" in m and not _is_int(sent_id):
        bad(f"{path}.sent_id", f"expected an integer, got {_type_name(sent_id)}")
        sent_id = None
    elif sent_lengths is not None and _is_int(sent_id) and not 0 <= sent_id < len(sent_lengths):
        bad(f"{path}.sent_id", f"sentence {sent_id} does not exist (the document has {len(sent_lengths)})")
        sent_id = None
    pos = m.get("pos")
    if "pos" not in m:
        return
    if not (isinstance(pos, list) and len(pos) == 2 and all(_is_int(p) for p in pos)):
        bad(f"{path}.pos", f"expected [start, end] integers, got {_short(pos)}")
        return
    start, end = pos
    if start < 0 or end <= start:
        bad(f"{path}.pos", f"[{start}, {end}) is not a non-empty word span")
    elif sent_lengths is not None and sent_id is not None and end > sent_lengths[sent_id]:
        bad(f"{path}.pos", f"[{start}, {end}) is outside sentence {sent_id}, "
                           f"which has {sent_lengths[sent_id]} words")


def _validate_labels(labels: Any, num_entities: int | None, num_sents: int | None,
                     known_relations: set[str], bad) -> None:
    if not isinstance(labels, list):
        bad("labels", f"expected a list of labels, got {_type_name(labels)}")
        return
    seen: dict[tuple, int] = {}
    for l_i, lab in enumerate(labels):
        path = f"labels[{l_i}]"
        if not isinstance(lab, dict):
            bad(path, f"expected a label object, got {_type_name(lab)}")
            continue
        for key in ("h", "t", "r"):
            if key not in lab:
                bad(f"{path}.{key}", "missing required field")
        for key in ("h", "t"):
            if key in lab:
                v = lab[key]
                if not _is_int(v):
                    bad(f"{path}.{key}", f"expected an entity index (integer), got {_type_name(v)}")
                elif num_entities is not None and not 0 <= v < num_entities:
                    bad(f"{path}.{key}", f"entity index {v} out of range (the document has {num_entities} entities)")
        if "r" in lab and not isinstance(lab["r"], str):
            bad(f"{path}.r", f"expected a relation id (a string such as 'P17'), got {_type_name(lab['r'])}")
        elif "r" in lab and lab["r"] not in known_relations:
            bad(f"{path}.r", f"unknown relation id {_short(lab['r'])}")
        h, t = lab.get("h"), lab.get("t")
        if _is_int(h) and h == t:
            bad(path, f"head and tail are the same entity ({h})")
        evidence = lab.get("evidence", [])
        if not isinstance(evidence, list) or not all(_is_int(e) for e in evidence):
            bad(f"{path}.evidence", f"expected a list of sentence ids, got {_short(evidence)}")
        elif num_sents is not None and any(not 0 <= e < num_sents for e in evidence):
            bad(f"{path}.evidence", f"sentence ids {_short(evidence)} outside 0..{num_sents - 1}")
        key = (h, t, lab.get("r"))
        if all(isinstance(k, (int, str)) for k in key):
            if key in seen:
                bad(path, f"duplicate of labels[{seen[key]}] (h={h}, t={t}, r={lab.get('r')}); counted once, "
                          "as DocRED's official scorer does", severity="warning")
            else:
                seen[key] = l_i


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
_BLOCK_BYTES = 64 << 10  # the read size handed to ijson (its buf_size; its default)
_JSON_WHITESPACE = b" \t\n\r"
# Byte-order marks of encodings that are not UTF-8 (UTF-32 first: its LE mark starts with UTF-16's).
_FOREIGN_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
                 (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))
_UTF8_HINT = "DocRED files are UTF-8: convert it (e.g. `iconv -f ENCODING -t UTF-8`)"


def _check_encoding(path: Path, head: bytes) -> None:
    """A clear error for a file that is evidently not UTF-8 text (looked at before parsing)."""
    for bom, name in _FOREIGN_BOMS:
        if head.startswith(bom):
            raise UserError(f"{path}: {name} text (it starts with a {name} byte-order mark); {_UTF8_HINT}")
    nul = head.find(b"\x00")
    if nul >= 0:
        raise UserError(f"{path}: holds a NUL byte at byte {nul}: not UTF-8 text (UTF-16 or UTF-32 without a "
                        f"byte-order mark?); {_UTF8_HINT}")


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
        _check_encoding(path, head)
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
                            f"{_UTF8_HINT}") from None
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
    return UserError(f"{path}: not UTF-8 text: {reason} at byte {at} ({_after(n)}); {_UTF8_HINT}")


def duplicate_title_problem(raw: Any, index: int, source: str, titles: dict[str, int]) -> Problem | None:
    """A problem when ``raw``'s title was seen before in this file; records it otherwise."""
    if not (isinstance(raw, dict) and isinstance(raw.get("title"), str)):
        return None
    title = raw["title"]
    if title in titles:
        return Problem(source, index, title, "title", f"duplicate of document {titles[title]}: titles "
                                                      "identify documents in the official evaluation")
    titles[title] = index
    return None


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
    """Rejections as JSON Lines, one per document, with every reason."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w") as f:
        for rej in rejections:
            f.write(json.dumps(rej.to_json()) + "\n")


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


def write_documents(documents: Iterable[Document | dict], path: str | Path) -> None:
    """Write a DocRED JSON array atomically (temporary name, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        f.write("[")
        for i, doc in enumerate(documents):
            f.write(("," if i else "") + json.dumps(doc.to_json() if isinstance(doc, Document) else doc))
        f.write("]")
    tmp.replace(path)
