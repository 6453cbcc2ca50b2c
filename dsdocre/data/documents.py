"""DocRED documents: the typed model.

A DocRED file is a JSON array (or JSON Lines) of documents::

    {"title": str, "sents": [[word, ...], ...],
     "vertexSet": [[{"name", "pos": [start, end), "sent_id", "type"}, ...], ...],
     "labels": [{"h": int, "t": int, "r": "P17", "evidence": [int, ...]}, ...]}

``labels`` is absent in unlabeled files. Unknown fields (``global_pos``, ``kb_id``, ...) are kept
and written back unchanged, so ``Document.from_json(d).to_json() == d`` for every valid ``d``.

The rest of the data layer builds on this module (which imports neither of them):

- :mod:`dsdocre.data.validation`: every problem of a raw document (:func:`validate_document`),
  named by document, field (a JSON path such as ``vertexSet[3][0].pos``) and message;
- :mod:`dsdocre.data.reader`: the streaming reader (:func:`iter_raw_documents`), the loaders
  that validate and type (:func:`load_valid_documents`, :func:`load_gold_documents`) and the
  rejection records.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from dsdocre import fsio


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


def write_documents(documents: Iterable[Document | dict], path: str | Path) -> None:
    """Write a DocRED JSON array, streamed, whole or not at all (:func:`dsdocre.fsio.atomic_open`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with fsio.atomic_open(path, "w") as f:
        f.write("[")
        for i, doc in enumerate(documents):
            f.write(("," if i else "") + json.dumps(doc.to_json() if isinstance(doc, Document) else doc))
        f.write("]")
