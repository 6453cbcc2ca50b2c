"""Tests for dsdocre.inference: the threshold search agrees with decoding at its threshold.

The decision rule is ``p >= threshold``; the search only cuts between distinct probability values
(a tie group is all in or all out), so the F1 ``choose_threshold`` reports is the F1 that
``decode`` at that threshold gets from the official scorer. Checked against a brute-force search
over every distinct candidate value, on random scores with many ties.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dsdocre.data.documents import Document
from dsdocre.data.examples import PairExample
from dsdocre.errors import UserError
from dsdocre.evaluation import GoldIndex, score_predictions
from dsdocre.inference import MIN_CANDIDATE_PROB, choose_threshold, decode
from dsdocre.relations import NUM_CLASSES, relation_ids

RELS = relation_ids()[1:]  # column j of the [P, 96] probabilities is relation RELS[j]


def _raw_doc(title: str, num_entities: int, labels: list[tuple[int, int, int]]) -> dict:
    """A minimal valid DocRED document; ``labels`` as (h, t, column of the 96 relations)."""
    return {
        "title": title,
        "sents": [["w"] * num_entities],
        "vertexSet": [[{"name": f"{title}_e{i}", "pos": [i, i + 1], "sent_id": 0, "type": "MISC"}]
                      for i in range(num_entities)],
        "labels": [{"h": h, "t": t, "r": RELS[r], "evidence": []} for h, t, r in labels],
    }


def _example(raw: dict, heads, tails) -> PairExample:
    """A PairExample over the candidate pairs (heads[i], tails[i]) with multi-hot labels from ``raw``
    (column 0 = NA); ``encoded`` is unused by choose_threshold and decode."""
    heads = np.asarray(heads, dtype=np.int64)
    tails = np.asarray(tails, dtype=np.int64)
    labels = np.zeros((len(heads), NUM_CLASSES), dtype=np.float32)
    index = {(int(h), int(t)): i for i, (h, t) in enumerate(zip(heads, tails))}
    rel_col = {r: j + 1 for j, r in enumerate(RELS)}
    for lab in raw["labels"]:
        i = index.get((lab["h"], lab["t"]))
        if i is not None:
            labels[i, rel_col[lab["r"]]] = 1.0
    labels[labels.sum(1) == 0, 0] = 1.0
    return PairExample(Document.from_json(raw), None, heads, tails, labels)


def _random_case(seed: int):
    """(examples, probs, gold raw docs, num_gold) with quantised probabilities (ties common), random
    gold labels, and gold facts on pairs that are not candidates (dropped, as by the pre-denoiser)."""
    rng = np.random.default_rng(seed)
    rel_cols = rng.choice(len(RELS), size=6, replace=False)  # few relations: gold hits are common
    examples, probs, raws = [], [], []
    for d in range(6):
        n = int(rng.integers(3, 7))
        pairs = [(h, t) for h in range(n) for t in range(n) if h != t]
        order = rng.permutation(len(pairs))
        num_kept = int(rng.integers(len(pairs) // 2, len(pairs)))  # at least one pair dropped
        kept = [pairs[i] for i in sorted(order[:num_kept])]
        dropped = [pairs[i] for i in order[num_kept:]]
        labels = [(*pairs[int(rng.integers(len(pairs)))], int(rng.choice(rel_cols)))
                  for _ in range(int(rng.integers(1, 9)))]  # duplicates possible: counted once
        labels.append((*dropped[0], int(rng.choice(rel_cols))))  # a gold fact that is never a candidate
        raw = _raw_doc(f"doc{d}", n, labels)
        ex = _example(raw, [h for h, _ in kept], [t for _, t in kept])
        gold = ex.labels[:, 1:] > 0
        p = rng.random((len(kept), len(RELS))) * 0.8
        p = np.where(gold, np.maximum(p, rng.random(p.shape)), p)  # gold cells score higher on average
        tiny = rng.random(p.shape) < 0.85
        p = np.where(tiny & ~gold, p * MIN_CANDIDATE_PROB, p)  # most cells are not candidates
        p[:, ~np.isin(np.arange(len(RELS)), rel_cols)] *= rng.random() < 0.5  # other relations off, or not
        if seed % 3 == 2:
            p = torch.tensor(p, dtype=torch.float32).bfloat16().float().numpy()  # bf16-like
        else:
            p = np.round(p, 1 + seed % 3)  # 1 or 2 decimals
        examples.append(ex)
        probs.append(p.astype(np.float32))
        raws.append(raw)
    num_gold = len(GoldIndex(raws))
    return examples, probs, raws, num_gold


def _candidates(examples, probs):
    scores = np.concatenate([p[p > MIN_CANDIDATE_PROB] for p in probs])
    correct = np.concatenate([(e.labels[:, 1:] > 0)[p > MIN_CANDIDATE_PROB] for e, p in zip(examples, probs)])
    return scores, correct


def _f1_at(scores, correct, num_gold, t) -> float:
    """F1 of predicting every candidate with p >= t, counted directly."""
    chosen = scores >= t
    n, c = int(chosen.sum()), int((correct & chosen).sum())
    p = c / n if n else 0.0
    r = c / num_gold if num_gold else 0.0
    return 2 * p * r / (p + r) if p + r else 0.0


@pytest.mark.parametrize("seed", range(12))
def test_choose_threshold_matches_brute_force_and_decode(seed):
    examples, probs, raws, num_gold = _random_case(seed)
    scores, correct = _candidates(examples, probs)
    distinct = np.unique(scores)
    # the case exercises what it is meant to: ties, misses, gold facts that are not candidates
    assert len(distinct) < len(scores)
    assert 0 < int(correct.sum()) < num_gold
    assert int(correct.sum()) < len(scores)

    brute = {float(t): _f1_at(scores, correct, num_gold, t) for t in distinct}
    best = max(brute.values())
    threshold, f1 = choose_threshold(examples, probs, num_gold)

    assert f1 == pytest.approx(best, abs=1e-12)
    assert threshold in brute  # an actual probability value (the low end of a tie group), no midpoint
    assert brute[threshold] == pytest.approx(f1, abs=1e-12)

    predictions = decode(examples, probs, threshold)
    assert len(predictions) == int((scores >= threshold).sum())
    assert all(p["score"] >= round(threshold, 5) for p in predictions)
    res = score_predictions(predictions, raws)
    assert res["num_gold"] == num_gold
    assert res["num_correct"] == int((correct & (scores >= threshold)).sum())
    assert res["f1"] == pytest.approx(f1, abs=1e-12)


def _old_rule(examples, probs, num_gold):
    """The previous search: cut after every position (ties split), midpoint threshold, ``p > t``."""
    scores, correct = _candidates(examples, probs)
    order = np.argsort(-scores, kind="stable")
    s, c = scores[order], np.cumsum(correct[order])
    f1 = 2 * c / (np.arange(1, len(s) + 1) + num_gold)
    best = int(np.argmax(f1))
    threshold = (s[best] + s[best + 1]) / 2 if best + 1 < len(s) else s[best] / 2
    return float(threshold), float(f1[best])


@pytest.mark.parametrize("correct_first", [True, False])
def test_tied_candidates_one_correct_one_wrong(correct_first):
    # pair (0,1): 0.9 on a gold relation; pair (0,2): 0.5 on a gold relation and 0.5 on a wrong one.
    good, bad = (0, 1) if correct_first else (1, 0)
    raw = _raw_doc("T", 3, [(0, 1, 0), (0, 2, good)])
    ex = _example(raw, [0, 0], [1, 2])
    p = np.zeros((2, len(RELS)), dtype=np.float32)
    p[0, 0] = 0.9
    p[1, good] = 0.5
    p[1, bad] = 0.5
    examples, probs, num_gold = [ex], [p], 2

    # The old rule reports F1 = 1 (cutting inside the tie) but decodes only the 0.9 fact: F1 = 2/3.
    old_t, old_f1 = _old_rule(examples, probs, num_gold)
    old_decoded = score_predictions(
        [x for x in decode(examples, probs, 0.0) if x["score"] > old_t], [raw])["f1"]
    if correct_first:
        assert old_f1 == pytest.approx(1.0) and old_decoded == pytest.approx(2 / 3)
        assert old_f1 != pytest.approx(old_decoded)

    # The tie group is all in or all out: in gives P = 2/3, R = 1, F1 = 4/5 > 2/3 (out).
    threshold, f1 = choose_threshold(examples, probs, num_gold)
    assert threshold == 0.5
    assert f1 == pytest.approx(0.8, abs=1e-12)
    predictions = decode(examples, probs, threshold)
    assert sorted((x["h_idx"], x["t_idx"], x["r"]) for x in predictions) == sorted(
        [(0, 1, RELS[0]), (0, 2, RELS[0]), (0, 2, RELS[1])])
    res = score_predictions(predictions, [raw])
    assert (res["num_predictions"], res["num_correct"], res["num_gold"]) == (3, 2, 2)
    assert res["f1"] == pytest.approx(f1, abs=1e-12)


def test_choose_threshold_no_candidates_or_no_gold():
    raw = _raw_doc("T", 2, [(0, 1, 0)])
    ex = _example(raw, [0, 1], [1, 0])
    below = np.full((2, len(RELS)), MIN_CANDIDATE_PROB / 2, dtype=np.float32)
    assert choose_threshold([ex], [below], 1) == (0.5, 0.0)
    some = below.copy()
    some[0, 0] = 0.7
    assert choose_threshold([ex], [some], 0) == (0.5, 0.0)
    assert choose_threshold([ex], [some], 1) == (pytest.approx(0.7), 1.0)


# ---- device ------------------------------------------------------------------------------------
def test_device_auto_takes_cuda_when_it_is_there(monkeypatch):
    import torch

    from dsdocre.inference import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="--device 'gpu7'"):
        resolve_device("gpu7")
