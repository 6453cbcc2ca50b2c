"""Validation of raw DocRED documents: every problem, each naming its document and field.

A :class:`Problem` names the document (index in its file and title), the field (a JSON path such
as ``vertexSet[3][0].pos``) and what is wrong. ``dsdocre validate FILE...``
(:mod:`dsdocre.validate`) prints every problem; training commands reject bad documents with the
same messages (:func:`dsdocre.data.reader.load_valid_documents`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from dsdocre.relations import relation_names


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

