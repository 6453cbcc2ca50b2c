"""Tests for dsdocre.evaluation: DocRED official scoring rules, hand-computed."""

from __future__ import annotations

import json
import random
from fractions import Fraction as F
from pathlib import Path

import pytest

from dsdocre.evaluation import (
    GoldIndex,
    document_counts,
    format_metrics,
    paired_bootstrap,
    score_predictions,
    train_fact_set,
)

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "redocred"


def m(name, sent_id, pos=(0, 1), typ="MISC"):
    return {"name": name, "pos": list(pos), "sent_id": sent_id, "type": typ}


def lab(h, t, r, evidence=()):
    return {"h": h, "t": t, "r": r, "evidence": list(evidence)}


def pred(title, h, t, r, **extra):
    return {"title": title, "h_idx": h, "t_idx": t, "r": r, **extra}


def doc_a(labels=None):
    """Gold doc "A", 3 sentences.

    entity 0: "Alpha" (sent 0) and alias "Al" (sent 2)   -> sents {0, 2}
    entity 1: "Beta"  (sent 0)                           -> sents {0}
    entity 2: "Gamma" (sent 1)                           -> sents {1}
    entity 3: "Delta" (sent 2)                           -> sents {2}
    Labels: (0,1,P1) intra [sent 0], (0,2,P2) inter, (0,3,P3) intra via the
    alias mention in sent 2 (the canonical mention is in sent 0), (2,3,P4) inter.
    """
    return {
        "title": "A",
        "sents": [["Alpha", "Beta", "."], ["Gamma", "."], ["Al", "Delta", "."]],
        "vertexSet": [
            [m("Alpha", 0), m("Al", 2)],
            [m("Beta", 0, (1, 2))],
            [m("Gamma", 1)],
            [m("Delta", 2, (1, 2))],
        ],
        "labels": labels
        if labels is not None
        else [lab(0, 1, "P1"), lab(0, 2, "P2"), lab(0, 3, "P3"), lab(2, 3, "P4")],
    }


def gold_preds_a():
    return [pred("A", 0, 1, "P1"), pred("A", 0, 2, "P2"), pred("A", 0, 3, "P3"), pred("A", 2, 3, "P4")]


def f1(p, r):
    return 2 * p * r / (p + r) if p + r else F(0)


def approx(x):
    return pytest.approx(float(x), abs=1e-12)


def check(res, **expected):
    for key, val in expected.items():
        if isinstance(val, F):
            assert res[key] == approx(val), key
        else:
            assert res[key] == val, key


# ---------------------------------------------------------------- rules 1-4


def test_perfect_predictions():
    res = score_predictions(gold_preds_a(), [doc_a()])
    check(
        res,
        precision=F(1), recall=F(1), f1=F(1), ign_precision=F(1), ign_f1=F(1),
        intra_f1=F(1), inter_f1=F(1), intra_precision=F(1), intra_recall=F(1),
        inter_precision=F(1), inter_recall=F(1),
        num_predictions=4, num_gold=4, num_correct=4, num_correct_in_train=0,
    )


def test_empty_predictions():
    res = score_predictions([], [doc_a()])
    check(
        res,
        precision=F(0), recall=F(0), f1=F(0), ign_precision=F(0), ign_f1=F(0),
        intra_f1=F(0), inter_f1=F(0),
        num_predictions=0, num_gold=4, num_correct=0, num_correct_in_train=0,
    )


def test_duplicate_predictions_removed():
    preds = [
        pred("A", 0, 1, "P1", score=0.9),
        pred("A", 0, 1, "P1", score=0.1, evidence=[0]),  # exact duplicate on the 4 keys
        pred("A", 0, 1, "P9"),  # different r: not a duplicate, wrong
    ]
    res = score_predictions(preds, [doc_a()])
    # 2 unique predictions, 1 correct, 4 gold: P=1/2, R=1/4, F1=2*(1/8)/(3/4)=1/3
    check(res, num_predictions=2, num_correct=1, num_gold=4,
          precision=F(1, 2), recall=F(1, 4), f1=F(1, 3))


def test_prediction_order_irrelevant():
    preds = gold_preds_a()[:2] + [pred("A", 3, 0, "P3")]
    a = score_predictions(preds, [doc_a()])
    b = score_predictions(list(reversed(preds)), [doc_a()])
    assert a == b


def test_duplicate_gold_labels_count_once():
    labels = [lab(0, 1, "P1", [0]), lab(0, 1, "P1", [0, 2]), lab(0, 2, "P2")]
    res = score_predictions([pred("A", 0, 1, "P1")], [doc_a(labels)])
    # 2 unique gold facts, 1 prediction correct: P=1, R=1/2, F1=2/3
    check(res, num_gold=2, num_correct=1, precision=F(1), recall=F(1, 2), f1=F(2, 3))
    # the intra/inter gold split also counts the duplicated fact once
    check(res, num_intra_gold=1, num_inter_gold=1)


def test_unknown_title_counts_in_denominator():
    preds = [
        pred("A", 0, 1, "P1"),
        pred("A", 0, 2, "P2"),
        pred("Zzz", 0, 1, "P1"),  # same triple, unknown title: never correct
    ]
    res = score_predictions(preds, [doc_a()])
    # P=2/3, R=2/4, F1=2*(1/3)/(7/6)=4/7
    check(res, num_predictions=3, num_correct=2, precision=F(2, 3), recall=F(1, 2), f1=F(4, 7))
    # excluded from both the intra and the inter subsets
    check(res, num_intra_predictions=1, num_inter_predictions=1,
          intra_precision=F(1), inter_precision=F(1))


def test_facts_are_keyed_by_title():
    doc_b = doc_a(labels=[lab(1, 0, "P1")])
    doc_b["title"] = "B"
    preds = [pred("A", 0, 1, "P1"), pred("B", 0, 1, "P1"), pred("B", 1, 0, "P1")]
    res = score_predictions(preds, [doc_a(), doc_b])
    # gold 5, preds 3, correct 2 (A:0-1 and B:1-0): P=2/3, R=2/5, F1=2*(4/15)/(16/15)=1/2
    check(res, num_gold=5, num_correct=2, precision=F(2, 3), recall=F(2, 5), f1=F(1, 2))


def test_all_wrong_gives_zero_f1():
    res = score_predictions([pred("A", 1, 2, "P1"), pred("A", 0, 1, "P2")], [doc_a()])
    check(res, num_correct=0, precision=F(0), recall=F(0), f1=F(0), ign_f1=F(0))


def test_zero_gold_facts():
    res = score_predictions([pred("A", 0, 1, "P1")], [doc_a(labels=[])])
    check(res, num_gold=0, num_predictions=1, precision=F(0), recall=F(0), f1=F(0),
          intra_recall=F(0), inter_recall=F(0), intra_f1=F(0), inter_f1=F(0))


def test_no_gold_docs_at_all():
    res = score_predictions([pred("A", 0, 1, "P1")], [])
    check(res, num_gold=0, num_predictions=1, num_correct=0, f1=F(0),
          num_intra_predictions=0, num_inter_predictions=0)


def test_out_of_range_indices_are_wrong_and_unclassified():
    res = score_predictions([pred("A", 0, 1, "P1"), pred("A", 0, 99, "P1")], [doc_a()])
    # P=1/2, R=1/4, F1=1/3; the bad pair belongs to neither subset
    check(res, num_predictions=2, num_correct=1, precision=F(1, 2), recall=F(1, 4), f1=F(1, 3),
          num_intra_predictions=1, num_inter_predictions=0)


def test_numpy_like_indices_match():
    import numpy as np

    res = score_predictions([pred("A", np.int64(0), np.int64(1), "P1")], [doc_a()])
    check(res, num_correct=1, num_intra_predictions=1)


# ---------------------------------------------------------------- rule 5: Ign


def train_docs():
    """Training doc whose facts use the alias "Al" (not "Alpha") for P1,
    and ("Gamma", "Delta", "P9") - a relation that is NOT gold for A's (2, 3)."""
    return [
        {
            "title": "T1",
            "sents": [["Al", "Beta", "Gamma", "Delta", "Epsilon"]],
            "vertexSet": [
                [m("Al", 0)],
                [m("Beta", 0, (1, 2))],
                [m("Gamma", 0, (2, 3))],
                [m("Delta", 0, (3, 4)), m("Epsilon", 0, (4, 5))],
            ],
            "labels": [lab(0, 1, "P1"), lab(2, 3, "P9")],
        }
    ]


def test_train_fact_set_cross_product_and_direction():
    facts = train_fact_set(train_docs())
    assert facts == {
        ("Al", "Beta", "P1"),
        ("Gamma", "Delta", "P9"),
        ("Gamma", "Epsilon", "P9"),
    }
    assert ("Alpha", "Beta", "P1") not in facts
    assert ("Beta", "Al", "P1") not in facts


def test_train_fact_set_all_mention_pairs():
    doc = {
        "title": "T",
        "sents": [["x"]],
        "vertexSet": [[m("a1", 0), m("a2", 0), m("a1", 0)], [m("b1", 0), m("b2", 0)]],
        "labels": [lab(0, 1, "R")],
    }
    assert train_fact_set([doc]) == {
        ("a1", "b1", "R"), ("a1", "b2", "R"), ("a2", "b1", "R"), ("a2", "b2", "R"),
    }


def test_ign_rule():
    preds = [
        pred("A", 0, 1, "P1"),  # correct, in train via the alias "Al" (canonical "Alpha" is not)
        pred("A", 0, 2, "P2"),  # correct, not in train
        pred("A", 2, 3, "P9"),  # incorrect; ("Gamma","Delta","P9") is in train -> NOT counted
    ]
    res = score_predictions(preds, [doc_a()], train_docs())
    # P=2/3, R=2/4, F1=4/7; IgnP=(2-1)/(3-1)=1/2, IgnF1=2*(1/4)/1=1/2
    check(res, num_predictions=3, num_correct=2, num_correct_in_train=1,
          precision=F(2, 3), recall=F(1, 2), f1=F(4, 7),
          ign_precision=F(1, 2), ign_f1=F(1, 2))


def test_ign_with_prebuilt_fact_set_matches():
    preds = [pred("A", 0, 1, "P1"), pred("A", 0, 2, "P2"), pred("A", 2, 3, "P9")]
    facts = train_fact_set(train_docs())
    a = score_predictions(preds, [doc_a()], train_docs())
    b = score_predictions(preds, [doc_a()], train_facts=facts)
    c = score_predictions(preds, GoldIndex([doc_a()]), train_facts=facts)
    assert a == b == c
    with pytest.raises(ValueError):
        score_predictions(preds, [doc_a()], train_docs(), train_facts=facts)


def test_ign_without_train_equals_f1():
    preds = [pred("A", 0, 1, "P1"), pred("A", 0, 2, "P2"), pred("A", 2, 3, "P9")]
    res = score_predictions(preds, [doc_a()])
    check(res, num_correct_in_train=0, ign_precision=F(2, 3), ign_f1=F(4, 7))
    assert res["ign_f1"] == res["f1"]


def test_ign_relation_must_match():
    # ("Al","Beta") is in train only with P1; a correct P5 fact on the same pair is not in train.
    doc = doc_a(labels=[lab(0, 1, "P5")])
    res = score_predictions([pred("A", 0, 1, "P5")], [doc], train_docs())
    check(res, num_correct=1, num_correct_in_train=0, ign_f1=F(1))


def test_ign_all_correct_predictions_gives_ign_precision_one():
    # 2 predictions, both correct, 1 in train: IgnP = (2-1)/(2-1) = 1 (official formula).
    preds = [pred("A", 0, 1, "P1"), pred("A", 0, 2, "P2")]
    res = score_predictions(preds, [doc_a()], train_docs())
    # P=1, R=2/4, F1=2/3; IgnP=1, IgnF1=2/3
    check(res, num_correct_in_train=1, precision=F(1), recall=F(1, 2), f1=F(2, 3),
          ign_precision=F(1), ign_f1=F(2, 3))


def test_ign_zero_denominator():
    # The only prediction is correct and in train: IgnP = (1-1)/(1-1) -> 0.
    doc = doc_a(labels=[lab(0, 1, "P1")])
    res = score_predictions([pred("A", 0, 1, "P1")], [doc], train_docs())
    check(res, precision=F(1), recall=F(1), f1=F(1), num_correct_in_train=1,
          ign_precision=F(0), ign_f1=F(0))


# ---------------------------------------------------------------- rule 6: intra / inter


def test_gold_intra_inter_split():
    g = GoldIndex([doc_a()])
    assert (g.num_intra, g.num_inter) == (2, 2)


def test_intra_inter_split():
    preds = [
        # intra pairs
        pred("A", 0, 1, "P1"),  # correct (sent 0)
        pred("A", 0, 3, "P3"),  # correct: "Alpha" is sent 0 but alias "Al" shares sent 2 with "Delta"
        pred("A", 1, 0, "P6"),  # wrong (sent 0)
        # inter pairs
        pred("A", 0, 2, "P2"),  # correct
        pred("A", 1, 3, "P5"),  # wrong (sents {0} vs {2})
        pred("A", 1, 2, "P7"),  # wrong (sents {0} vs {1})
        # unknown title: in neither subset, but in the overall denominator
        pred("Zzz", 0, 1, "P1"),
    ]
    res = score_predictions(preds, [doc_a()])
    # overall: P=3/7, R=3/4, F1=2*(9/28)/(33/28)=6/11
    check(res, num_predictions=7, num_correct=3, precision=F(3, 7), recall=F(3, 4), f1=F(6, 11))
    # intra: 3 preds, 2 correct, 2 gold -> P=2/3, R=1, F1=4/5
    check(res, num_intra_predictions=3, num_intra_correct=2, num_intra_gold=2,
          intra_precision=F(2, 3), intra_recall=F(1), intra_f1=F(4, 5))
    # inter: 3 preds, 1 correct, 2 gold -> P=1/3, R=1/2, F1=2/5
    check(res, num_inter_predictions=3, num_inter_correct=1, num_inter_gold=2,
          inter_precision=F(1, 3), inter_recall=F(1, 2), inter_f1=F(2, 5))


def test_inter_zero_division_when_only_intra():
    doc = doc_a(labels=[lab(0, 1, "P1")])
    res = score_predictions([pred("A", 0, 1, "P1")], [doc])
    check(res, intra_f1=F(1), inter_precision=F(0), inter_recall=F(0), inter_f1=F(0),
          num_inter_gold=0, num_inter_predictions=0)


# ---------------------------------------------------------------- formatting, speed


def test_format_metrics():
    res = score_predictions(gold_preds_a()[:2] + [pred("A", 1, 2, "P7")], [doc_a()])
    text = format_metrics(res)
    assert "66.67" in text  # P = 2/3
    assert "50.00" in text  # R = 2/4
    assert "57.14" in text  # F1 = 4/7
    for word in ("Ign", "Intra", "Inter", "predictions=3", "gold=4", "correct=2"):
        assert word in text


def _synthetic(num_docs, ents, rng):
    docs = []
    for d in range(num_docs):
        vs = [[m(f"e{d}_{i}_{k}", rng.randrange(8)) for k in range(rng.randint(1, 3))]
              for i in range(ents)]
        labels = [lab(rng.randrange(ents), rng.randrange(ents), f"P{rng.randrange(20)}")
                  for _ in range(12)]
        docs.append({"title": f"doc{d}", "sents": [["w"]] * 8, "vertexSet": vs, "labels": labels})
    return docs


def test_1000_docs_50k_predictions():  # the scorer's speed is not asserted here: benchmarks/ measure
    rng = random.Random(0)
    docs = _synthetic(1000, 20, rng)
    preds = [pred(f"doc{rng.randrange(1000)}", rng.randrange(20), rng.randrange(20),
                  f"P{rng.randrange(20)}") for _ in range(50_000)]
    preds += [pred(d["title"], x["h"], x["t"], x["r"]) for d in docs for x in d["labels"]]
    facts = train_fact_set(docs[:500])
    res = score_predictions(preds, docs, train_facts=facts)
    assert res["recall"] == 1.0
    assert res["num_correct_in_train"] > 0


# ---------------------------------------------------------------- real data


@pytest.mark.skipif(not (DATA_DIR / "valid.json").exists() or not (DATA_DIR / "train.json").exists(),
                    reason=f"Re-DocRED data not found at {DATA_DIR}")
def test_real_valid_gold_as_predictions():
    with open(DATA_DIR / "valid.json") as fh:
        valid = json.load(fh)
    with open(DATA_DIR / "train.json") as fh:
        train = json.load(fh)
    preds = [pred(d["title"], x["h"], x["t"], x["r"], evidence=x.get("evidence", []))
             for d in valid for x in d["labels"]]
    res = score_predictions(preds, valid, train)
    assert res["precision"] == 1.0
    assert res["recall"] == 1.0
    assert res["f1"] == 1.0
    assert res["num_correct_in_train"] > 0
    # With the official formula IgnP = (c - k) / (n - k), every prediction being
    # correct (n == c) makes IgnP exactly 1 whatever k < c is, so Ign F1 is 1 here
    # too; it drops below 1 as soon as there is one wrong prediction (below).
    assert res["ign_f1"] == 1.0
    assert res["num_intra_gold"] + res["num_inter_gold"] == res["num_gold"]
    assert res["num_intra_gold"] > 0 and res["num_inter_gold"] > 0
    assert res["intra_f1"] == 1.0 and res["inter_f1"] == 1.0

    # One wrong prediction per document: Ign F1 < F1 < 1 (facts seen in train removed).
    wrong = [pred(d["title"], 0, 0, "P0") for d in valid]  # h == t is never gold
    res = score_predictions(preds + wrong, valid, train)
    assert res["recall"] == 1.0
    assert res["ign_f1"] < res["f1"] < 1.0
    c, n, k = res["num_correct"], res["num_predictions"], res["num_correct_in_train"]
    assert (c, n) == (len(set((p["title"], p["h_idx"], p["t_idx"], p["r"]) for p in preds)), c + len(valid))
    assert res["ign_precision"] == pytest.approx((c - k) / (n - k))


# ---------------------------------------------------------------- cross-check


def _official_reference(submission, truth, fact_in_train):
    """Near-literal port of the relation part of DocRED's official evaluation.py."""
    std = {}
    title2vectexSet = {}
    for x in truth:
        title = x["title"]
        title2vectexSet[title] = x["vertexSet"]
        for label in x["labels"]:
            std[(title, label["r"], label["h"], label["t"])] = set(label["evidence"])
    tot_relations = len(std)
    tmp = list(submission)
    tmp.sort(key=lambda x: (x["title"], x["h_idx"], x["t_idx"], x["r"]))
    submission_answer = [tmp[0]]
    for i in range(1, len(tmp)):
        x, y = tmp[i], tmp[i - 1]
        if (x["title"], x["h_idx"], x["t_idx"], x["r"]) != (y["title"], y["h_idx"], y["t_idx"], y["r"]):
            submission_answer.append(tmp[i])
    correct_re = 0
    correct_in_train_annotated = 0
    for x in submission_answer:
        title, h_idx, t_idx, r = x["title"], x["h_idx"], x["t_idx"], x["r"]
        if title not in title2vectexSet:
            continue
        vertexSet = title2vectexSet[title]
        if (title, r, h_idx, t_idx) in std:
            correct_re += 1
            in_train_annotated = False
            for n1 in vertexSet[h_idx]:
                for n2 in vertexSet[t_idx]:
                    if (n1["name"], n2["name"], r) in fact_in_train:
                        in_train_annotated = True
            if in_train_annotated:
                correct_in_train_annotated += 1
    re_p = correct_re / len(submission_answer)
    re_r = correct_re / tot_relations
    re_f1 = 0 if re_p + re_r == 0 else 2.0 * re_p * re_r / (re_p + re_r)
    ign_p = (correct_re - correct_in_train_annotated) / (len(submission_answer) - correct_in_train_annotated)
    ign_f1 = 0 if ign_p + re_r == 0 else 2.0 * ign_p * re_r / (ign_p + re_r)
    return re_p, re_r, re_f1, ign_p, ign_f1


@pytest.mark.parametrize("seed", range(5))
def test_matches_official_reference_on_random_data(seed):
    rng = random.Random(seed)
    # few names and relations so that duplicates, train hits and misses all occur
    docs = []
    for d in range(30):
        ents = rng.randint(2, 6)
        vs = [[m(f"n{rng.randrange(6)}", rng.randrange(4)) for _ in range(rng.randint(1, 3))]
              for _ in range(ents)]
        labels = [lab(rng.randrange(ents), rng.randrange(ents), f"P{rng.randrange(3)}")
                  for _ in range(rng.randint(0, 5))]
        docs.append({"title": f"d{d}", "sents": [["w"]] * 4, "vertexSet": vs, "labels": labels})
    gold, train = docs[:20], docs[20:]
    preds = []
    for _ in range(150):
        d = rng.choice(docs[:22])  # d20, d21 are unknown titles for scoring
        n = len(d["vertexSet"])
        preds.append(pred(d["title"], rng.randrange(n), rng.randrange(n), f"P{rng.randrange(3)}"))
    preds += [pred(d["title"], x["h"], x["t"], x["r"]) for d in gold for x in d["labels"][:2]]
    facts = train_fact_set(train)
    ref = _official_reference(preds, gold, facts)
    res = score_predictions(preds, gold, train)
    got = (res["precision"], res["recall"], res["f1"], res["ign_precision"], res["ign_f1"])
    assert got == pytest.approx(ref, abs=1e-12)
    assert res["num_correct_in_train"] > 0


# ---------------------------------------------------------------- gold files, read whole


def _real_rels():
    from dsdocre.relations import relation_ids

    return relation_ids()[1:6]  # gold files are validated: only DocRED relation ids are accepted


def _write_gold(tmp_path, docs, name="gold.json"):
    path = tmp_path / name
    with open(path, "w") as fh:
        json.dump(docs, fh)
    return path


def _titled(title, labels):
    doc = doc_a(labels)
    doc["title"] = title
    return doc


def test_gold_file_with_duplicated_label_is_read_whole_and_matches_official(tmp_path):
    from dsdocre.data.reader import load_gold_documents

    r0, r1, r2, r3, r4 = _real_rels()
    gold = [
        # "A": (0, 1, r0) twice (different evidence): a warning, counted once
        _titled("A", [lab(0, 1, r0, [0]), lab(0, 2, r1), lab(0, 1, r0, [0, 2]), lab(2, 3, r2)]),
        _titled("B", [lab(1, 0, r0), lab(0, 3, r3)]),
        _titled("C", [lab(3, 2, r4)]),
    ]
    path = _write_gold(tmp_path, gold)
    train = [{"title": "T1", "sents": [["Al", "Beta"]], "vertexSet": [[m("Al", 0)], [m("Beta", 0, (1, 2))]],
              "labels": [lab(0, 1, r0)]}]
    facts = train_fact_set(train)
    preds = [
        pred("A", 0, 1, r0),  # the duplicated gold fact: correct, in train via the alias "Al"
        pred("A", 0, 1, r0, score=0.1),  # a duplicate prediction
        pred("A", 0, 2, r1),  # correct
        pred("A", 1, 2, r0),  # wrong pair
        pred("A", 2, 3, r4),  # wrong relation
        pred("B", 1, 0, r0),  # correct, not in train (("Beta", "Al") is the other direction)
        pred("B", 0, 1, r0),  # wrong direction
        pred("C", 3, 2, r4),  # correct
        pred("Zzz", 0, 1, r0),  # unknown title
    ]

    logs = []
    docs = load_gold_documents(path, log=logs.append)
    assert [d.title for d in docs] == ["A", "B", "C"]
    assert any("'A'" in msg and "duplicate" in msg for msg in logs)
    res = score_predictions(preds, [d.to_json() for d in docs], train_facts=facts)

    with open(path) as fh:
        truth = json.load(fh)
    ref = _official_reference(preds, truth, facts)
    got = (res["precision"], res["recall"], res["f1"], res["ign_precision"], res["ign_f1"])
    assert got == ref  # to the last digit
    # 8 unique predictions, 6 unique gold facts, 4 correct, 1 of them in train
    check(res, num_predictions=8, num_gold=6, num_correct=4, num_correct_in_train=1,
          precision=F(1, 2), recall=F(2, 3), f1=F(4, 7), ign_precision=F(3, 7))


def test_gold_file_with_out_of_range_entity_names_the_document(tmp_path):
    from dsdocre.data.reader import load_gold_documents
    from dsdocre.errors import UserError

    r0, r1, *_ = _real_rels()
    gold = [
        _titled("Fine document", [lab(0, 1, r0)]),
        _titled("Broken document", [lab(0, 2, r1), lab(0, 7, r0)]),  # doc_a has 4 entities
        _titled("Another fine one", [lab(0, 1, r0), lab(0, 1, r0)]),  # only a warning
    ]
    path = _write_gold(tmp_path, gold)
    with pytest.raises(UserError) as info:
        load_gold_documents(path, log=None)
    msg = str(info.value)
    assert "Broken document" in msg
    assert "out of range" in msg
    assert "Fine document" not in msg and "Another fine one" not in msg


def test_gold_file_of_only_the_duplicated_label_document_counts_officially(tmp_path):
    from dsdocre.data.reader import load_gold_documents

    r0, r1, *_ = _real_rels()
    labels = [lab(0, 1, r0), lab(0, 2, r1), lab(0, 1, r0, [2]), lab(0, 1, r0)]
    path = _write_gold(tmp_path, [_titled("A", labels)])
    docs = load_gold_documents(path, log=None)
    assert len(docs) == 1

    preds = [pred("A", 0, 1, r0), pred("A", 1, 0, r0)]
    res = score_predictions(preds, [d.to_json() for d in docs])
    with open(path) as fh:
        truth = json.load(fh)
    official_count = len({(d["title"], x["r"], x["h"], x["t"]) for d in truth for x in d["labels"]})
    assert official_count == 2
    assert res["num_gold"] == official_count
    assert len(GoldIndex([d.to_json() for d in docs])) == official_count
    ref = _official_reference(preds, truth, set())
    assert (res["precision"], res["recall"], res["f1"], res["ign_precision"], res["ign_f1"]) == ref
    check(res, num_correct=1, precision=F(1, 2), recall=F(1, 2), f1=F(1, 2))


# ---------------------------------------------------------------- per-document counts, paired bootstrap
def two_docs():
    b = doc_a(labels=[lab(1, 0, "P1"), lab(2, 3, "P4")])
    b["title"] = "B"
    return [doc_a(), b]


def test_document_counts_sum_to_the_corpus_counts():
    """Split by document and summed, the counts are exactly the whole-corpus scoring's, Ign included."""
    gold = two_docs()
    facts = {("Alpha", "Beta", "P1"), ("Beta", "Alpha", "P1")}  # makes A's (0,1,P1) and B's (1,0,P1) in train
    preds = gold_preds_a()[:3] + [pred("A", 1, 2, "P9"), pred("B", 1, 0, "P1"), pred("B", 1, 0, "P1"),
                                  pred("B", 0, 2, "P2")]
    counts = document_counts(preds, gold, train_facts=facts)
    # A: 4 predicted, 3 correct, 1 of them in train, 4 gold; B: 2 predicted (one duplicate), 1 correct, in train, 2 gold
    assert counts == [(4, 3, 1, 4), (2, 1, 1, 2)]
    whole = score_predictions(preds, gold, train_facts=facts)
    assert [sum(c[i] for c in counts) for i in range(4)] == [
        whole["num_predictions"], whole["num_correct"], whole["num_correct_in_train"], whole["num_gold"]]


def test_document_counts_refuse_what_cannot_be_split_by_document():
    with pytest.raises(ValueError, match="title 'C'"):
        document_counts([pred("C", 0, 1, "P1")], two_docs())
    with pytest.raises(ValueError, match="share titles"):
        document_counts([], [doc_a(), doc_a()])


def test_paired_bootstrap_gap_interval_and_share():
    gold = two_docs()
    weaker = document_counts(gold_preds_a()[:2], gold)         # half of A, nothing of B
    stronger = document_counts(gold_preds_a() + [pred("B", 1, 0, "P1")], gold)
    out = paired_bootstrap(stronger, weaker, resamples=2000, seed=3)
    f1_strong = score_predictions(gold_preds_a() + [pred("B", 1, 0, "P1")], gold)["f1"]
    f1_weak = score_predictions(gold_preds_a()[:2], gold)["f1"]
    assert out["f1_diff"] == round(100 * (f1_strong - f1_weak), 2) == 40.91  # F1 10/11 against 1/2 (6 gold facts)
    assert out["ign_f1_diff"] == out["f1_diff"]  # nothing is in train
    # stronger is at least as good on each document and strictly better on both: ahead in every resample
    assert out["f1_a_ahead"] == 1.0 and 0 < out["f1_ci95"][0] <= out["f1_diff"] <= out["f1_ci95"][1]
    assert paired_bootstrap(stronger, weaker, resamples=2000, seed=3) == out  # a seed gives one answer
    same = paired_bootstrap(stronger, stronger, resamples=500)
    assert (same["f1_diff"], same["f1_ci95"], same["f1_a_ahead"]) == (0.0, [0.0, 0.0], 0.0)
    with pytest.raises(ValueError, match="same documents"):
        paired_bootstrap(stronger, weaker[:1])
