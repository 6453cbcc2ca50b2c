"""``dsdocre distant-label``: label unlabeled documents from a knowledge base (distant supervision).

Every ordered pair (h, t), h != t, of every document gets the relations that the KB holds
between a KB entity matching h and one matching t. Matching (see :mod:`sharding.entities`): by KB
id when the document's mentions carry ``kb_id``, else by normalized name (any mention name of the
document entity equals any alias of the KB entity). That is DocRED's own recipe for its distant
training set, and its noise (a shared name is not a shared entity; a KB fact need not be
expressed in the text) is what the pre-denoiser exists for.

KB file (JSON)::

    {"format": "dsdocre-kb", "version": 1,
     "entities": {"Q90": {"name": "Paris", "aliases": ["City of Light"]}, ...},
     "triples": [["Q90", "P17", "Q142"], ...]}       # [head id, relation, tail id]

(``"facts"`` is accepted for ``"triples"``: that is how ``dsdocre synth`` writes its ``kb.json``.)

``--kb-from annotated.json`` builds it from annotated documents' facts instead: every entity of
every document becomes a KB entity (its ``kb_id`` if its mentions carry one, so that documents
about the same entity merge; else ``<document index>:<entity index>``) whose aliases are its
mention names; every label becomes a triple. ``--save-kb`` writes that KB out.

The KB is held in memory (an alias index); documents are streamed in and out.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Iterator

from dsdocre import fsio
from dsdocre.errors import UserError
from sharding.entities import entity_kb_id, entity_names, normalize_name

KB_FORMAT = "dsdocre-kb"
KB_VERSION = 1


class KnowledgeBase:
    """Triples (head id, relation, tail id) and an alias index (normalized name -> entity ids)."""

    def __init__(self):
        self.names: dict[str, str] = {}  # id -> display name
        self.aliases: dict[str, set[str]] = defaultdict(set)  # id -> normalized aliases
        self.by_alias: dict[str, set[str]] = defaultdict(set)  # normalized alias -> ids
        self.out: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))  # h -> t -> rels
        self.num_triples = 0

    def add_entity(self, entity_id: str, name: str | None, aliases: Iterable[str] = ()) -> None:
        entity_id = str(entity_id)
        if name is not None:
            self.names.setdefault(entity_id, name)
        for alias in ([name] if name else []) + list(aliases):
            n = normalize_name(alias)
            if n and n not in self.aliases[entity_id]:
                self.aliases[entity_id].add(n)
                self.by_alias[n].add(entity_id)

    def add_triple(self, head: str, relation: str, tail: str) -> None:
        rels = self.out[str(head)][str(tail)]
        if relation not in rels:
            rels.add(relation)
            self.num_triples += 1

    @property
    def num_entities(self) -> int:
        return len(set(self.names) | set(self.aliases))

    # ---- reading and writing ----------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path) -> "KnowledgeBase":
        data = json.loads(Path(path).read_text())
        if not isinstance(data, dict) or not ("triples" in data or "facts" in data):
            raise UserError(f"{path}: not a KB file (expected an object with 'entities' and 'triples'; "
                             "see `dsdocre distant-label --help`)")
        kb = cls()
        entities = data.get("entities", {})
        if isinstance(entities, list):  # also accept [{"id", "name", "aliases"}, ...]
            entities = {e["id"]: e for e in entities}
        for eid, ent in entities.items():
            if isinstance(ent, str):
                ent = {"name": ent}
            kb.add_entity(eid, ent.get("name"), ent.get("aliases", ()))
        # "facts" is what `dsdocre synth` calls them (same [head, relation, tail] triples).
        for i, triple in enumerate(data.get("triples", data.get("facts", []))):
            if isinstance(triple, dict):
                h, r, t = triple.get("h", triple.get("head")), triple.get("r", triple.get("relation")), \
                    triple.get("t", triple.get("tail"))
            else:
                h, r, t = triple
            if h is None or r is None or t is None:
                raise UserError(f"{path}: triples[{i}] needs a head, a relation and a tail: {triple!r}")
            kb.add_triple(str(h), str(r), str(t))
        return kb

    def to_json(self) -> dict:
        ids = sorted(set(self.names) | set(self.aliases))
        return {
            "format": KB_FORMAT, "version": KB_VERSION,
            "entities": {i: {"name": self.names.get(i), "aliases": sorted(self.aliases.get(i, ()))} for i in ids},
            "triples": [[h, r, t] for h in sorted(self.out) for t in sorted(self.out[h])
                        for r in sorted(self.out[h][t])],
        }

    @classmethod
    def from_annotated(cls, paths: Iterable[str | Path], log=print) -> "KnowledgeBase":
        """Every labelled fact of annotated documents as a triple (see the module docstring)."""
        from dsdocre.data.reader import iter_raw_documents
        from dsdocre.data.validation import validate_document

        kb = cls()
        for path in paths:
            n_docs = n_skipped = 0
            for index, doc in enumerate(iter_raw_documents(path)):
                if validate_document(doc, index, str(path)) or not doc.get("labels"):
                    n_skipped += 1  # invalid, or no facts to contribute
                    continue
                n_docs += 1
                ids = []
                for e, mentions in enumerate(doc["vertexSet"]):
                    eid = entity_kb_id(mentions) or f"{Path(path).name}:{index}:{e}"
                    kb.add_entity(eid, max((m["name"] for m in mentions), key=len), [m["name"] for m in mentions])
                    ids.append(eid)
                for lab in doc["labels"]:
                    kb.add_triple(ids[lab["h"]], lab["r"], ids[lab["t"]])
            if log:
                log(f"KB from {path}: facts of {n_docs} documents; {n_skipped} skipped (invalid or unlabeled)")
        return kb

    # ---- labelling ----------------------------------------------------------------------------
    def match(self, mentions: list[dict]) -> set[str]:
        """KB entities a document entity may be: its KB id, else every entity sharing a name."""
        kb_id = entity_kb_id(mentions)
        if kb_id is not None:
            return {kb_id}
        found: set[str] = set()
        for name in entity_names(mentions):
            found |= self.by_alias.get(name, set())
        return found

    def label(self, doc: dict) -> list[dict]:
        """DS labels of one document: ``{"h", "t", "r", "evidence": []}`` sorted by (h, t, r)."""
        candidates = [self.match(ent) for ent in doc["vertexSet"]]
        doc_entities_of: dict[str, list[int]] = defaultdict(list)  # KB id -> document entities
        for e, ids in enumerate(candidates):
            for i in ids:
                doc_entities_of[i].append(e)
        found: dict[tuple[int, int], set[str]] = defaultdict(set)
        for h, ids in enumerate(candidates):
            for head_id in ids:
                for tail_id, rels in self.out.get(head_id, {}).items():
                    for t in doc_entities_of.get(tail_id, ()):
                        if t != h:
                            found[(h, t)] |= rels
        labels = []
        for (h, t) in sorted(found):
            for r in sorted(found[(h, t)]):
                labels.append({"h": h, "t": t, "r": r, "evidence": []})
        return labels


def distant_label(kb: KnowledgeBase, inputs: Iterable[str | Path], out: str | Path, log=print) -> dict:
    """Label every valid document of ``inputs`` and write them (a JSON array) to ``out``.

    Invalid documents are not written: they go to ``<out>.rejected.jsonl`` with the reason.
    Existing labels of the inputs are replaced. Returns the counts.
    """
    from dsdocre.data.documents import write_documents
    from dsdocre.data.reader import Rejection, iter_raw_documents, write_rejections
    from dsdocre.data.validation import validate_document
    from dsdocre.relations import relation_names

    known = set(relation_names())
    stats = {"documents": 0, "rejected": 0, "labelled_documents": 0, "labels": 0, "pairs": 0,
             "unknown_relation_labels_dropped": 0}
    rejected_path = Path(f"{out}.rejected.jsonl")
    rejections: list[Rejection] = []

    def labelled() -> Iterator[dict]:
        for path in inputs:
            for index, doc in enumerate(iter_raw_documents(path)):
                unlabelled = {k: v for k, v in doc.items() if k != "labels"} if isinstance(doc, dict) else doc
                problems = validate_document(unlabelled, index, str(path))
                if problems:
                    rejections.append(Rejection.of(problems))
                    stats["rejected"] += 1
                    continue
                all_labels = kb.label(doc)
                labels = [x for x in all_labels if x["r"] in known]
                stats["unknown_relation_labels_dropped"] += len(all_labels) - len(labels)
                stats["documents"] += 1
                stats["labels"] += len(labels)
                stats["pairs"] += len({(x["h"], x["t"]) for x in labels})
                stats["labelled_documents"] += bool(labels)
                yield {**unlabelled, "labels": labels}

    write_documents(labelled(), out)
    if rejections:
        write_rejections(rejections, rejected_path)
    elif rejected_path.exists():
        rejected_path.unlink()
    if log:
        log(f"{stats['labels']} DS labels on {stats['pairs']} entity pairs of {stats['labelled_documents']} "
            f"of {stats['documents']} documents -> {out}"
            + (f"; {stats['rejected']} invalid documents -> {rejected_path}" if stats["rejected"] else "")
            + (f"; {stats['unknown_relation_labels_dropped']} labels with relations outside DocRED's 96 dropped"
               if stats["unknown_relation_labels_dropped"] else ""))
    return stats


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Distant supervision: label every entity pair of the input documents with the relations the "
        "knowledge base holds for it. Entities match KB entities by KB id when their mentions carry "
        "'kb_id', else by normalized name (lowercase, whitespace collapsed, punctuation stripped at the "
        "ends; any mention name against any alias). KB file: {\"entities\": {id: {\"name\", \"aliases\"}}, "
        "\"triples\": [[head id, relation, tail id], ...]}; or build it from annotated documents' facts "
        "with --kb-from.")
    kb = parser.add_mutually_exclusive_group(required=True)
    kb.add_argument("--kb", metavar="KB.json", help="knowledge base file (triples with aliases)")
    kb.add_argument("--kb-from", nargs="+", metavar="ANNOTATED.json",
                    help="build the KB from the facts of these annotated DocRED-format files")
    parser.add_argument("--save-kb", metavar="KB.json", help="also write the KB built with --kb-from")
    parser.add_argument("--input", nargs="+", required=True, metavar="DOCS.json",
                        help="documents to label (.json arrays or .jsonl, streamed)")
    parser.add_argument("--out", required=True, metavar="DS.json",
                        help="labelled documents (JSON array; invalid inputs -> OUT.rejected.jsonl)")
    parser.add_argument("--stats", metavar="STATS.json", help="write the counts as JSON too")


def run(args: argparse.Namespace) -> int:
    try:
        if args.kb:
            kb = KnowledgeBase.load(args.kb)
        else:
            kb = KnowledgeBase.from_annotated(args.kb_from)
            if args.save_kb:
                fsio.write_text_atomic(args.save_kb, json.dumps(kb.to_json()))
        print(f"KB: {kb.num_entities} entities, {len(kb.by_alias)} aliases, {kb.num_triples} triples",
              file=sys.stderr)
        stats = distant_label(kb, args.input, args.out)
    except (OSError, ValueError) as err:
        print(f"dsdocre distant-label: {err}", file=sys.stderr)
        return 1
    if args.stats:
        fsio.write_json_atomic(args.stats, stats, indent=1)
    return 0
