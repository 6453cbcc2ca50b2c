"""From pair logits to facts: probabilities, the decision threshold, the official submission.

Every relation of a pair whose probability is at or above one global threshold is predicted
(``p >= threshold``; multi-label: the paper's release takes a single argmax relation per pair,
which loses multi-label facts). The threshold is the one that maximizes F1 on the validation
documents, found by sorting all candidate (pair, relation) probabilities once. Candidates with
equal probabilities (common in bf16) are all in or all out: the search only cuts between distinct
values, so the F1 it reports is the F1 that decoding at its threshold gives.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from dsdocre.data.examples import PairExample, collate, epoch_batches
from dsdocre.model.device import inference_precision
from dsdocre.relations import relation_ids

# Probabilities below this never become predictions; it bounds the candidates sorted for the
# threshold search (a threshold this low would predict nearly every pair).
MIN_CANDIDATE_PROB = 1e-3


def resolve_device(name: str | None = "auto") -> torch.device:
    """``auto``: CUDA when it is there, else the CPU; otherwise the device named (``cuda:1``)."""
    from dsdocre.errors import UserError

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise UserError(f"--device {name!r}: {err}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return device


@torch.no_grad()
def predict_probabilities(model, examples: list[PairExample], batch_size: int = 4, pad_id: int = 0,
                          progress: bool = True, device: str | torch.device = "cpu") -> list[np.ndarray]:
    """Per example, sigmoid probabilities [P, 96] of the relations (the NA column dropped)."""
    was_training = model.training
    model.eval()
    out: list[np.ndarray | None] = [None] * len(examples)
    batches = epoch_batches([len(e.encoded.input_ids) for e in examples], batch_size, 0, 0, shuffle=False)
    for idx in tqdm(batches, desc="predict", disable=not progress, leave=False):
        batch = collate([examples[i] for i in idx], pad_id, device)
        with inference_precision(device):
            logits = model(batch)
        probs = torch.sigmoid(logits[..., 1:].float()).cpu().numpy()
        for row, i in enumerate(idx):
            out[i] = probs[row, :len(examples[i].heads)]
    model.train(was_training)
    return out  # type: ignore[return-value]


def choose_threshold(examples: list[PairExample], probs: list[np.ndarray], num_gold: int) -> tuple[float, float]:
    """The threshold that maximizes F1 over all gold facts of ``examples``; returns (threshold, f1).

    ``num_gold`` counts every gold fact, also those whose pair is not a candidate (dropped by the
    pre-denoiser): they are missed. Predicting ``p >= threshold`` gives exactly the returned F1.
    """
    scores, correct = [], []
    for e, p in zip(examples, probs):
        keep = p > MIN_CANDIDATE_PROB
        scores.append(p[keep])
        correct.append(e.labels[:, 1:][keep] > 0)
    scores_all = np.concatenate(scores) if scores else np.zeros(0)
    if scores_all.size == 0 or num_gold == 0:
        return 0.5, 0.0
    correct_all = np.concatenate(correct)
    order = np.argsort(-scores_all, kind="stable")
    s, c = scores_all[order], np.cumsum(correct_all[order])
    # Cut only after the last of a run of equal scores: decoding takes a tie group whole.
    group_end = np.r_[s[1:] != s[:-1], True]
    k = np.arange(1, len(s) + 1)[group_end]
    f1 = 2 * c[group_end] / (k + num_gold)
    best = int(np.argmax(f1))
    return float(s[group_end][best]), float(f1[best])


def decode(examples: list[PairExample], probs: list[np.ndarray], threshold: float) -> list[dict]:
    """Official submission records ``{"title", "h_idx", "t_idx", "r"}`` (plus ``"score"``)."""
    rels = relation_ids()[1:]
    facts = []
    for e, p in zip(examples, probs):
        for pair, r in zip(*np.nonzero(p >= threshold)):
            facts.append({"title": e.doc.title, "h_idx": int(e.heads[pair]), "t_idx": int(e.tails[pair]),
                          "r": rels[r], "score": round(float(p[pair, r]), 5)})
    return facts


SUBMISSION_KEYS = ("title", "h_idx", "t_idx", "r")


def write_submission(predictions: list[dict], path: str | Path) -> Path:
    """Write predictions in DocRED's official submission format (atomically: a crash never leaves
    a truncated file under the final name)."""
    from dsdocre.fsio import write_text_atomic

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps([{k: p[k] for k in SUBMISSION_KEYS} for p in predictions]),
                             what_stands="the submission file there before, if any, stands")
