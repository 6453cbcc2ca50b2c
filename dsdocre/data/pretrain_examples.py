"""Pre-training examples: a fact-join pair record, both documents and the denoiser's kept pairs
turned into the task instances of :class:`dsdocre.model.pretrain.PretrainExample`.

Documents are read by key from the document shards through their member indexes
(:mod:`dsdocre.data.tar_index`: no scan of the tar files, a bounded pool of open shards); kept pairs by the same key from the scored shards. A distant label is
a positive only when its pair was kept (with no scored folder: every labelled pair). The instances
are drawn from a ``random.Random`` the caller seeds (from seed, epoch and the pair's position),
so an epoch's examples are the same on any process layout:

* blanking: every entity of either document is blanked (all its mentions, words → ``[unused0]``)
  with probability ``blank_prob`` (alpha; Soares et al. 2019, whom the paper follows, use 0.7);
* MM intra: per document one mention of an entity with two or more mentions is blanked and is
  the query; it is left out of its entity's pooling;
* MM inter: each entity both documents share (the pair record's ``shared_entities``), d_B's
  against d_A's entities;
* RD intra: per document one labelled kept pair among ``negatives`` unlabelled pairs of the same
  document; RD inter: a labelled kept pair among unlabelled pairs of both documents;
* RA: for each shared fact, d_B's instance against d_A's labelled kept pairs (at least two).
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dsdocre.data.encoding import EncodedDocument, MarkerTokenizer
from dsdocre.data.manifest import ShardVerificationError
from dsdocre.data.tar_index import DEFAULT_MAX_OPEN, TarPool


Ref = tuple[int, int]  # (side, entity): side 0 = d_A, 1 = d_B


@dataclass
class PretrainExample:
    """One document pair and its task instances (entity references are (side, entity))."""

    docs: tuple  # (EncodedDocument of d_A, EncodedDocument of d_B), blanked where the data chose to
    unpooled: list[tuple[int, int, int]] = field(default_factory=list)  # (side, entity, mention) left out of pooling
    mm_intra: list[tuple[int, int, int]] = field(default_factory=list)  # (side, query token position, target entity)
    mm_inter: list[tuple[int, int]] = field(default_factory=list)  # (entity of d_B, the same entity in d_A)
    rd_intra: list[list[tuple[Ref, Ref]]] = field(default_factory=list)  # groups of (head, tail), positive first
    rd_inter: list[list[tuple[Ref, Ref]]] = field(default_factory=list)
    ra: list[tuple[tuple[Ref, Ref], list[tuple[Ref, Ref]], int]] = field(default_factory=list)  # query, candidates, target


def collate_pretrain(examples: list[PretrainExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Tensors for :meth:`PretrainModel.forward`: the 2B documents (d_A of every example, then
    d_B), padded to the longest one, and each task's instances padded per example."""
    docs = [ex.docs[0] for ex in examples] + [ex.docs[1] for ex in examples]
    B = len(examples)
    T = max(len(d.input_ids) for d in docs)
    N = max(d.num_entities for d in docs)
    M = max(len(m) for d in docs for m in d.mention_starts)
    tokens = torch.full((2 * B, T), pad_id, dtype=torch.long)
    mention_pos = torch.zeros((2 * B, N, M), dtype=torch.long)
    mention_mask = torch.zeros((2 * B, N, M), dtype=torch.bool)
    for i, d in enumerate(docs):
        tokens[i, :len(d.input_ids)] = torch.tensor(d.input_ids)
        for e, starts in enumerate(d.mention_starts):
            mention_pos[i, e, :len(starts)] = torch.tensor(starts)
            mention_mask[i, e, :len(starts)] = True
    for b, ex in enumerate(examples):
        for side, e, m in ex.unpooled:
            mention_mask[side * B + b, e, m] = False
    batch = {"tokens": tokens, "lengths": torch.tensor([len(d.input_ids) for d in docs]),
             "mention_pos": mention_pos, "mention_mask": mention_mask, "num_entities": torch.tensor(N),
             "entity_counts": torch.tensor([d.num_entities for d in docs])}

    def flat(ref: Ref) -> int:
        return ref[0] * N + ref[1]

    def padded(rows_per_example: list[list], width: int, fill) -> tuple[torch.Tensor, torch.Tensor]:
        Q = max([len(r) for r in rows_per_example] + [1])
        values = torch.full((B, Q, width), fill, dtype=torch.long)
        mask = torch.zeros((B, Q), dtype=torch.bool)
        for b, rows in enumerate(rows_per_example):
            for q, row in enumerate(rows):
                values[b, q] = torch.tensor(row)
                mask[b, q] = True
        return values, mask

    batch["mm_intra"], batch["mm_intra_mask"] = padded(
        [[(side, pos, side * N + target) for side, pos, target in ex.mm_intra] for ex in examples], 3, 0)
    batch["mm_inter"], batch["mm_inter_mask"] = padded(
        [[(N + qb, qa) for qb, qa in ex.mm_inter] for ex in examples], 2, 0)
    for task in ("rd_intra", "rd_inter"):
        groups = [[[x for h, t in group for x in (flat(h), flat(t))] for group in getattr(ex, task)]
                  for ex in examples]
        sizes = {len(g) for gs in groups for g in gs}
        if len(sizes) > 1:
            raise ValueError(f"{task}: every group needs the same number of candidates (1 + k_n); got {sorted(sizes)}")
        width = sizes.pop() if sizes else 2
        batch[task], batch[task + "_mask"] = padded(groups, width, 0)
    rows = [[[flat(q[0]), flat(q[1]), target, len(cands)] + [x for h, t in cands for x in (flat(h), flat(t))]
             for q, cands, target in ex.ra] for ex in examples]
    width = max([len(r) for rs in rows for r in rs] + [6])
    batch["ra"], batch["ra_mask"] = padded([[r + [0] * (width - len(r)) for r in rs] for rs in rows], width, 0)
    return batch


class DocumentStore:
    """Documents (raw JSON + encoding) and kept pairs by (shard, key), read through tar indexes.

    One pool of open shards per folder: documents and kept labels are read in the same random order,
    so a shared pool would hold half of each and reopen shards twice as often."""

    def __init__(self, shard_dir: str | Path, scored_dir: str | Path | None = None, max_open: int = DEFAULT_MAX_OPEN):
        self.shard_dir = Path(shard_dir)
        self.scored_dir = Path(scored_dir) if scored_dir else None
        self._documents, self._kept = TarPool(max_open), TarPool(max_open)
        self._shard_prefix = f"{self.shard_dir}{os.sep}"  # strings: a Path per read costs more than the read's syscalls
        self._scored_prefix = f"{self.scored_dir}{os.sep}" if self.scored_dir else None

    @staticmethod
    def _read(pool: TarPool, path: str, key: str) -> dict:
        tar = pool.get(path)
        try:
            return tar.read_key(key)
        except KeyError:
            raise ShardVerificationError(f"{path}: no sample {key} (a pair record names it): the pairs were not "
                                         "joined from these shards; re-run `dsdocre fact-join`") from None

    def document(self, shard: str, key: str) -> tuple[dict, EncodedDocument]:
        sample = self._read(self._documents, self._shard_prefix + shard, key)
        return json.loads(sample["json"]), EncodedDocument.from_json(json.loads(sample["enc.json"]))

    def kept(self, shard: str, key: str) -> set[tuple[int, int]] | None:
        if self.scored_dir is None:
            return None
        sample = self._read(self._kept, self._scored_prefix + shard.replace("shard-", "scored-", 1), key)
        return {tuple(p) for p in json.loads(sample["kept.json"])["kept"]}

    def close(self) -> None:
        self._documents.close()
        self._kept.close()


def _labelled_pairs(doc: dict, kept: set | None) -> list[tuple[int, int]]:
    pairs = sorted({(lab["h"], lab["t"]) for lab in doc.get("labels") or ()})
    return [p for p in pairs if kept is None or p in kept]


def _unlabelled_pairs(doc: dict) -> list[tuple[int, int]]:
    labelled = {(lab["h"], lab["t"]) for lab in doc.get("labels") or ()}
    n = len(doc["vertexSet"])
    return [(h, t) for h in range(n) for t in range(n) if h != t and (h, t) not in labelled]


def build_example(record: dict, store: DocumentStore, tokenizer: MarkerTokenizer, rng: random.Random, *,
                  blank_prob: float = 0.7, negatives: int = 5) -> PretrainExample:
    """The task instances of one pair record (``sharding.fact_join`` format, docs/shards.md)."""
    raws, encodings, kept = [], [], []
    for side in ("a", "b"):
        raw, enc = store.document(record[side]["shard"], record[side]["key"])
        raws.append(raw)
        encodings.append(enc)
        kept.append(store.kept(record[side]["shard"], record[side]["key"]))
    example = PretrainExample(docs=(None, None))
    docs = []
    for side, (raw, enc) in enumerate(zip(raws, encodings)):
        blanked = [(e, m) for e in range(enc.num_entities) if rng.random() < blank_prob
                   for m in range(len(enc.mention_starts[e]))]
        multi = [e for e in range(enc.num_entities) if len(enc.mention_starts[e]) >= 2]
        query = None
        if multi:
            e = rng.choice(multi)
            query = (e, rng.randrange(len(enc.mention_starts[e])))
            blanked.append(query)
        enc = tokenizer.blank_mentions(enc, blanked)
        if query is not None:
            example.unpooled.append((side, *query))
            example.mm_intra.append((side, enc.mention_starts[query[0]][query[1]], query[0]))
        docs.append(enc)
    example.docs = tuple(docs)
    example.mm_inter = [(b, a) for _, a, b in record.get("shared_entities", [])]

    positives = [[((s, h), (s, t)) for h, t in _labelled_pairs(raws[s], kept[s])] for s in (0, 1)]
    nas = [[((s, h), (s, t)) for h, t in _unlabelled_pairs(raws[s])] for s in (0, 1)]
    for s in (0, 1):
        if positives[s] and len(nas[s]) >= negatives:
            example.rd_intra.append([rng.choice(positives[s])] + rng.sample(nas[s], negatives))
    both_pos, both_na = positives[0] + positives[1], nas[0] + nas[1]
    if both_pos and len(both_na) >= negatives and nas[0] and nas[1]:
        example.rd_inter.append([rng.choice(both_pos)] + rng.sample(both_na, negatives))

    instances_a = positives[0]
    for fact in record.get("shared_facts", []):
        target = ((0, fact["a"][0]), (0, fact["a"][1]))
        if target in instances_a and len(instances_a) >= 2:
            cands = list(instances_a)
            rng.shuffle(cands)
            query = ((1, fact["b"][0]), (1, fact["b"][1]))
            example.ra.append((query, cands, cands.index(target)))
    return example
