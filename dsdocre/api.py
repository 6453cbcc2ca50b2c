"""Relation extraction from your own code: load a model ``dsdocre finetune`` saved (its ``model/``
folder), run it on DocRED-format documents, get the facts with their scores.

    from dsdocre.api import load_model

    extractor = load_model("runs/pipeline/finetune/model")   # CUDA when available, else the CPU
    result = extractor.predict("docs.json")                    # a DocRED file, or a list of document dicts
    for fact in result.facts:
        print(fact.title, fact.head_name, fact.relation_name, fact.tail_name, round(fact.score, 3))
    for rejected in result.invalid:                            # documents that failed validation
        print(rejected.index, rejected.title, [str(p) for p in rejected.problems])
    submission = [fact.to_submission() for fact in result.facts]   # DocRED's official format

A document is a dict ``{"title", "sents", "vertexSet"[, "labels"]}`` as in DocRED. Invalid
documents are never dropped silently: each is in ``result.invalid`` with every problem (document
index, title, field, message), or ``predict(..., on_invalid="raise")`` raises
:class:`InvalidDocumentsError` naming them. ``dsdocre predict`` is this module with files around it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from dsdocre.data.documents import Document
from dsdocre.errors import UserError

__all__ = ["Fact", "InvalidDocumentsError", "Predictions", "RelationExtractor", "load_model"]

# What predict takes: a DocRED file, or the documents themselves.
Documents = str | Path | Iterable[Mapping[str, Any] | Document]
# Candidate pairs per title, or the folders (JSON files) `dsdocre denoise score` wrote them to.
KeptPairs = Mapping[str, list] | str | Path | Iterable[str | Path] | None


@dataclass(frozen=True)
class Fact:
    """One predicted relational fact of one document."""

    title: str  # the document's title
    head: int  # entity indices into the document's vertexSet
    tail: int
    head_name: str  # the entity's longest mention
    tail_name: str
    relation: str  # Wikidata id, "P17"
    relation_name: str  # "country"
    score: float  # the model's probability for this fact (5 decimals); facts have score >= threshold

    def to_submission(self) -> dict:
        """The record of DocRED's official submission format (with the score, which scorers ignore)."""
        return {"title": self.title, "h_idx": self.head, "t_idx": self.tail, "r": self.relation, "score": self.score}


@dataclass
class Predictions:
    facts: list[Fact]  # document by document in input order; within one, by pair then relation
    documents: list[Document]  # the documents the model ran on (the valid ones), in input order
    invalid: list  # dsdocre.data.reader.Rejection: source, index, title, problems (each with its field)
    threshold: float  # the decision threshold used


class InvalidDocumentsError(UserError):
    """Raised by ``predict(..., on_invalid="raise")``; ``invalid`` holds every rejection."""

    def __init__(self, invalid: list):
        self.invalid = invalid
        first = "; ".join(str(r.problems[0]) for r in invalid[:3])
        more = f"; and {len(invalid) - 3} more" if len(invalid) > 3 else ""
        super().__init__(f"{len(invalid)} invalid documents: {first}{more}")


def load_model(path: str | Path, device: str | torch.device | None = None) -> "RelationExtractor":
    """The relation extractor saved at ``path`` (the ``model/`` folder ``dsdocre finetune`` writes),
    on ``device``: None or "auto" for CUDA when available else the CPU, or "cpu", "cuda:1", a
    ``torch.device``. A wrong folder raises :class:`~dsdocre.errors.UserError` saying what it lacks."""
    from dsdocre import inference
    from dsdocre.model import RelationClassifier

    device = inference.resolve_device(str(device) if isinstance(device, torch.device) else device)
    model, metadata = RelationClassifier.from_pretrained(path)
    model.to(device)
    return RelationExtractor(model, metadata, device)


class RelationExtractor:
    """A loaded relation classifier; :meth:`predict` runs it on documents."""

    def __init__(self, model, metadata: dict, device: torch.device):
        self.model = model
        self.metadata = metadata  # dsdocre_model.json: the threshold chosen on valid, the model config, ...
        self.device = device

    @property
    def threshold(self) -> float:
        """The decision threshold chosen on the validation documents when the model was trained."""
        return self.metadata.get("threshold", 0.5)

    def predict(self, documents: Documents, kept_pairs: KeptPairs = None, threshold: float | None = None,
                batch_size: int = 4, on_invalid: Literal["report", "raise"] = "report",
                progress: bool = False) -> Predictions:
        """Every fact the model predicts with probability >= ``threshold`` (default: :attr:`threshold`).

        ``documents``: a DocRED file (``.json`` array or ``.jsonl``), or a list of document dicts
        (or :class:`~dsdocre.data.documents.Document`). ``kept_pairs``: with pre-denoising, the
        candidate pairs per title (a dict ``title -> [[h, t], ...]``, or the folders ``dsdocre
        denoise score`` wrote); by default every ordered entity pair is a candidate. Invalid
        documents are left out and listed in ``Predictions.invalid`` (``on_invalid="report"``) or
        raise :class:`InvalidDocumentsError` (``"raise"``).
        """
        from dsdocre import inference
        from dsdocre.data.examples import build_examples
        from dsdocre.data.scored import read_kept_pairs
        from dsdocre.relations import relation_names

        docs, invalid = _valid_documents(documents)
        if invalid and on_invalid == "raise":
            raise InvalidDocumentsError(invalid)
        threshold = self.threshold if threshold is None else threshold
        if not docs:
            return Predictions([], [], invalid, threshold)
        if kept_pairs is not None and not isinstance(kept_pairs, Mapping):
            kept_pairs = read_kept_pairs(kept_pairs)
        tokenizer = self.model.tokenizer
        examples = build_examples(docs, tokenizer, kept_pairs)
        probs = inference.predict_probabilities(self.model, examples, batch_size, tokenizer.pad_id,
                                                progress=progress, device=self.device)
        by_title = {d.title: d for d in docs}  # titles are unique among valid documents
        names = relation_names()
        facts = []
        for p in inference.decode(examples, probs, threshold):
            doc = by_title[p["title"]]
            facts.append(Fact(p["title"], p["h_idx"], p["t_idx"], doc.entity_name(p["h_idx"]),
                              doc.entity_name(p["t_idx"]), p["r"], names[p["r"]], p["score"]))
        return Predictions(facts, docs, invalid, threshold)


def _valid_documents(documents: Documents) -> tuple[list[Document], list]:
    """(valid documents, rejections) of a DocRED file or a list of documents, checked as
    ``dsdocre validate`` checks them (a repeated title is an error: titles identify documents)."""
    from dsdocre.data.reader import Rejection, iter_raw_documents
    from dsdocre.data.validation import duplicate_title_problem, validate_document

    if isinstance(documents, (str, Path)):
        source, raw_documents = str(documents), iter_raw_documents(documents)
    elif isinstance(documents, Mapping):
        raise TypeError("predict takes a list of documents (or a file path), not a single document dict")
    else:
        source = "<documents>"
        raw_documents = (d.to_json() if isinstance(d, Document) else d for d in documents)
    valid, invalid, titles = [], [], {}
    n_read = 0
    for index, raw in enumerate(raw_documents):
        n_read += 1
        problems = validate_document(raw, index, source)
        errors = [p for p in problems if p.severity == "error"]
        if not errors and (duplicate := duplicate_title_problem(raw, index, source, titles)):
            errors.append(duplicate)
        if errors:  # with the warnings too: every reason, as the training commands list them
            invalid.append(Rejection.of(errors + [p for p in problems if p.severity != "error"]))
        else:
            valid.append(Document.from_json(raw))
    if n_read == 0 and isinstance(documents, (str, Path)):
        raise UserError(f"{documents}: holds no documents")
    return valid, invalid
