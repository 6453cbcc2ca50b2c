"""Fine-tuning examples: every candidate entity pair of a document with its multi-hot labels.

Batches are deterministic for (seed, epoch): documents are shuffled, grouped into buckets of
similar length (less padding, the main cost on CPU), cut into global batches, and each global
batch is split across data-parallel ranks and accumulation steps (see :func:`epoch_batches`).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
import torch

from dsdocre.data.documents import Document
from dsdocre.data.encoding import EncodedDocument, MarkerTokenizer
from dsdocre.errors import UserError
from dsdocre.relations import NUM_CLASSES, relation_index


@dataclass
class PairExample:
    doc: Document
    encoded: EncodedDocument
    heads: np.ndarray  # [P] candidate pairs (all ordered pairs, or the denoiser's kept pairs)
    tails: np.ndarray
    labels: np.ndarray  # [P, NUM_CLASSES] multi-hot, column 0 = NA


def all_ordered_pairs(n: int) -> tuple[np.ndarray, np.ndarray]:
    h, t = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    keep = h != t
    return h[keep], t[keep]


def build_examples(docs: list[Document], tokenizer: MarkerTokenizer,
                   kept_pairs: dict[str, list[tuple[int, int]]] | None = None) -> list[PairExample]:
    """``kept_pairs`` (title -> pairs) restricts candidates to the pre-denoiser's choice; then every
    document must have its kept pairs (a document the denoiser never saw is an error, not a
    silent fallback to every pair)."""
    rel = relation_index()
    examples = []
    if kept_pairs is not None:
        missing = [d.title for d in docs if d.title not in kept_pairs]
        if missing:
            raise UserError(f"{len(missing)} documents have no kept pairs (first: {missing[0]!r}); score their file "
                            "with `dsdocre denoise score` and pass its folder too")
    for doc in docs:
        if kept_pairs is not None:
            pairs = np.asarray(kept_pairs[doc.title], dtype=np.int64).reshape(-1, 2)
            heads, tails = pairs[:, 0], pairs[:, 1]
        else:
            heads, tails = all_ordered_pairs(doc.num_entities)
        labels = np.zeros((len(heads), NUM_CLASSES), dtype=np.float32)
        index = {(int(h), int(t)): i for i, (h, t) in enumerate(zip(heads, tails))}
        for lab in doc.labels or ():
            i = index.get((lab.h, lab.t))
            if i is not None:
                labels[i, rel[lab.r]] = 1.0
        labels[labels.sum(1) == 0, 0] = 1.0  # NA
        examples.append(PairExample(doc, tokenizer.encode(doc), heads, tails, labels))
    return examples


def collate(examples: list[PairExample], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """The padded batch tensors of ``examples``; on ``device`` when given."""
    B = len(examples)
    T = max(len(e.encoded.input_ids) for e in examples)
    N = max(e.encoded.num_entities for e in examples)
    M = max(len(m) for e in examples for m in e.encoded.mention_starts)
    P = max(1, max(len(e.heads) for e in examples))
    tokens = torch.full((B, T), pad_id, dtype=torch.long)
    mention_pos = torch.zeros((B, N, M), dtype=torch.long)
    mention_mask = torch.zeros((B, N, M), dtype=torch.bool)
    heads = torch.zeros((B, P), dtype=torch.long)
    tails = torch.zeros((B, P), dtype=torch.long)
    pair_mask = torch.zeros((B, P), dtype=torch.bool)
    labels = torch.zeros((B, P, NUM_CLASSES), dtype=torch.float32)
    for b, e in enumerate(examples):
        ids = e.encoded.input_ids
        tokens[b, :len(ids)] = torch.tensor(ids)
        for n, starts in enumerate(e.encoded.mention_starts):
            mention_pos[b, n, :len(starts)] = torch.tensor(starts)
            mention_mask[b, n, :len(starts)] = True
        p = len(e.heads)
        heads[b, :p] = torch.from_numpy(e.heads)
        tails[b, :p] = torch.from_numpy(e.tails)
        pair_mask[b, :p] = True
        labels[b, :p] = torch.from_numpy(e.labels)
    lengths = torch.tensor([len(e.encoded.input_ids) for e in examples])
    batch = {"tokens": tokens, "lengths": lengths, "mention_pos": mention_pos, "mention_mask": mention_mask,
             "heads": heads, "tails": tails, "pair_mask": pair_mask, "labels": labels}
    return batch if device is None else {k: v.to(device) for k, v in batch.items()}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, rank: int = 0,
                  world_size: int = 1, accumulation: int = 1, bucket: int = 50,
                  shuffle: bool = True) -> list[list[int]]:
    """This rank's micro-batches (document indices) for one epoch, in step order: a pure function of
    (seed, epoch) and the global batch, never of how it is split over processes.

    A global batch (``batch_size × world_size × accumulation`` documents, one optimizer step) is
    formed first, from a shuffled order cut into buckets of similar length (less padding, the main
    cost on CPU); its micro-batch ``k`` goes to rank ``k // accumulation`` as accumulation step
    ``k % accumulation``. So 2 processes with ``accumulation=1`` see exactly the documents that 1
    process with ``accumulation=2`` sees, step by step. Every document is in exactly one rank's
    batches: the last global batch may be smaller (split as evenly as possible), and one too small
    to give each micro-batch a document is folded into its predecessor.
    """
    per_step = world_size * accumulation  # micro-batches per optimizer step
    if len(lengths) < per_step:
        raise UserError(f"{len(lengths)} documents cannot fill the {per_step} micro-batches of one step "
                         f"({world_size} processes x {accumulation} accumulation steps)")
    global_size = batch_size * per_step
    order = list(range(len(lengths)))
    rng = random.Random(seed * 1_000_003 + epoch)
    if shuffle:
        rng.shuffle(order)
    steps: list[list[int]] = []
    for start in range(0, len(order), global_size * bucket):
        chunk = sorted(order[start:start + global_size * bucket], key=lambda i: lengths[i])
        steps.extend(chunk[i:i + global_size] for i in range(0, len(chunk), global_size))
    if shuffle:
        rng.shuffle(steps)
    for i, step in enumerate(steps):
        if len(step) < per_step:  # too few documents for one each: join the step before (or after)
            neighbour = i - 1 if i > 0 else i + 1
            steps[neighbour] = sorted(steps[neighbour] + step, key=lambda j: lengths[j])
            del steps[i]
            break  # only the last batch of the last bucket can be short
    mine = []
    for step in steps:
        pieces = np.array_split(np.asarray(step), per_step)
        mine.extend(pieces[k].tolist() for k in range(rank * accumulation, (rank + 1) * accumulation))
    return mine


def class_prior_log_odds(examples: list[PairExample]) -> np.ndarray:
    """[97] log-odds of each class (NA first) among the candidate pairs of ``examples``: where a
    classifier's bias starts. Positives are ~0.1% of (pair, relation) cells; from a zero bias
    (p = 0.5 everywhere) Adam moves the bias ~lr per step, so the first epochs would be spent
    pushing every logit down."""
    counts = sum(e.labels.sum(0) for e in examples)
    total = sum(len(e.labels) for e in examples)
    prior = np.clip(counts / max(total, 1), 1e-6, 1 - 1e-6)
    return np.log(prior / (1 - prior))


def rank_candidates(example: PairExample, rng: random.Random, positives: int = 3,
                    negatives: int = 5) -> tuple[np.ndarray, np.ndarray, int]:
    """Relation Detection candidates of one document: up to ``positives`` labelled pairs, each
    followed by ``negatives`` NA pairs of the same document (the paper's release: 3 and 5).

    Returns ``(heads, tails, groups)``: ``groups`` groups of ``1 + negatives`` pairs, the positive
    first in each; ``groups == 0`` when the document has no labelled pair or too few NA pairs.
    """
    labelled = np.flatnonzero(example.labels[:, 0] == 0)
    na = np.flatnonzero(example.labels[:, 0] == 1)
    if len(labelled) == 0 or len(na) < negatives:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), 0
    chosen = rng.sample(list(labelled), min(positives, len(labelled)))
    rows = []
    for pos in chosen:
        rows.append(pos)
        rows.extend(rng.sample(list(na), negatives))
    rows = np.asarray(rows)
    return example.heads[rows], example.tails[rows], len(chosen)
