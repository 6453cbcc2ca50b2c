"""Relation-extraction scoring, reproducing DocRED's official evaluation script.

The rules follow ``evaluation.py`` from the DocRED release (thunlp/DocRED),
restricted to relation scoring (evidence scoring is not computed):

1. The gold fact set is ``{(title, r, h, t)}`` over all labels of all gold
   documents; duplicate gold labels count once.
2. Predictions (``{"title", "h_idx", "t_idx", "r", ...}``) are deduplicated on
   ``(title, h_idx, t_idx, r)``; other keys (``evidence``, ``score``) are ignored.
3. A prediction whose title is not a gold title is never correct but still
   counts in the number of predictions (the precision denominator).
4. ``P = correct / #predictions``, ``R = correct / #gold``,
   ``F1 = 2PR / (P + R)``; every zero denominator gives 0 (the official script
   would raise instead).
5. Ign: a *correct* prediction is "in train" when any
   ``(head mention name, tail mention name, r)`` combination of its gold
   entities is a training fact (see :func:`train_fact_set`).
   ``IgnP = (correct - in_train) / (#predictions - in_train)``, recall is
   unchanged and ``IgnF1 = 2 IgnP R / (IgnP + R)``.
6. Intra / Inter (Re-DocRED): a ``(title, h, t)`` pair is intra-sentence when
   some head mention and some tail mention share a sentence, inter otherwise.
   P/R/F1 are recomputed with predictions and gold facts both restricted to
   intra (resp. inter) pairs. Predictions with unknown titles, or with entity
   indices outside the document's vertexSet, belong to neither subset.

As in the official script, when several gold documents share a title, their
labels are all gold facts while the vertexSet of the *last* such document is
the one used for the Ign and intra/inter look-ups.
"""

from __future__ import annotations

import operator
from collections import Counter
from typing import Any, Iterable, Mapping, Sequence

__all__ = [
    "GoldIndex",
    "train_fact_set",
    "score_predictions",
    "format_metrics",
    "prf",
    "document_counts",
    "paired_bootstrap",
]

def train_fact_set(train_docs: Iterable[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    """Training facts for the Ign rule: ``(head mention name, tail mention name, r)``.

    Every mention of the head entity is combined with every mention of the
    tail entity, for every label of every training document (exactly as the
    official ``gen_train_facts``). Build it once and pass it as
    ``score_predictions(..., train_facts=...)`` to reuse it across calls.
    """
    facts: set[tuple[str, str, str]] = set()
    for doc in train_docs:
        vertex_set = doc["vertexSet"]
        for label in doc.get("labels", ()):
            rel = label["r"]
            head_names = {m["name"] for m in vertex_set[label["h"]]}
            tail_names = {m["name"] for m in vertex_set[label["t"]]}
            for n1 in head_names:
                for n2 in tail_names:
                    facts.add((n1, n2, rel))
    return facts


class _DocInfo:
    """Per-document precomputation: unique mention names and sentence ids per entity."""

    __slots__ = ("names", "sents")

    def __init__(self, vertex_set: Sequence[Sequence[Mapping[str, Any]]]):
        self.names: list[tuple[str, ...]] = [
            tuple(dict.fromkeys(m["name"] for m in entity)) for entity in vertex_set
        ]
        self.sents: list[frozenset[int]] = [
            frozenset(m["sent_id"] for m in entity) for entity in vertex_set
        ]

    def _valid(self, idx: Any) -> bool:
        return isinstance(idx, int) and not isinstance(idx, bool) and 0 <= idx < len(self.sents)

    def is_intra(self, h: Any, t: Any) -> bool | None:
        """True for intra-sentence pairs, False for inter, None when indices are invalid."""
        if not (self._valid(h) and self._valid(t)):
            return None
        return not self.sents[h].isdisjoint(self.sents[t])


class GoldIndex:
    """Gold documents indexed for scoring (build once to score many prediction sets).

    ``score_predictions`` accepts either raw gold documents or a ``GoldIndex``.
    """

    def __init__(self, gold_docs: Iterable[Mapping[str, Any]]):
        self.facts: set[tuple[Any, Any, Any, Any]] = set()  # (title, r, h, t)
        self.docs: dict[str, _DocInfo] = {}
        for doc in gold_docs:
            title = doc["title"]
            # Official script: title2vectexSet[title] = vertexSet (last one wins).
            self.docs[title] = _DocInfo(doc["vertexSet"])
            for label in doc.get("labels", ()):
                self.facts.add((title, label["r"], label["h"], label["t"]))
        # Intra / inter split of the gold facts.
        self.num_intra = 0
        self.num_inter = 0
        for title, _r, h, t in self.facts:
            kind = self.docs[title].is_intra(h, t)
            if kind is True:
                self.num_intra += 1
            elif kind is False:
                self.num_inter += 1

    def __len__(self) -> int:
        return len(self.facts)


def _ratio(num: float, den: float) -> float:
    return num / den if den else 0.0


def prf(correct: int, num_pred: int, num_gold: int) -> tuple[float, float, float]:
    """Precision, recall, F1 with every zero denominator giving 0."""
    p = _ratio(correct, num_pred)
    r = _ratio(correct, num_gold)
    f1 = _ratio(2.0 * p * r, p + r)
    return p, r, f1


def _to_int(x: Any) -> Any:
    """Normalise integer-like indices (e.g. numpy ints) to ``int``; leave others alone."""
    if isinstance(x, int):
        return int(x)
    try:
        return operator.index(x)
    except TypeError:
        return x


def score_predictions(
    predictions: Iterable[Mapping[str, Any]],
    gold_docs: "Iterable[Mapping[str, Any]] | GoldIndex",
    train_docs: Iterable[Mapping[str, Any]] | None = None,
    *,
    train_facts: set[tuple[str, str, str]] | None = None,
) -> dict[str, Any]:
    """Score relation predictions against gold DocRED documents (official rules).

    ``predictions``: the official submission format, dicts with ``title``,
    ``h_idx``, ``t_idx``, ``r`` (extra keys ignored). ``gold_docs``: DocRED
    documents (or a prebuilt :class:`GoldIndex`). ``train_docs`` or a prebuilt
    ``train_facts`` set (from :func:`train_fact_set`) defines the Ign rule;
    with neither, nothing is "in train" and ``ign_f1 == f1``.

    Returns fractions in [0, 1] and counts; see the module docstring.
    """
    if train_docs is not None and train_facts is not None:
        raise ValueError("pass either train_docs or train_facts, not both")
    if train_facts is None:
        train_facts = train_fact_set(train_docs) if train_docs is not None else set()

    gold = gold_docs if isinstance(gold_docs, GoldIndex) else GoldIndex(gold_docs)

    # Rule 2: dedupe on (title, h_idx, t_idx, r); which duplicate survives is
    # irrelevant because only these four fields are scored.
    keys = {
        (p["title"], _to_int(p["h_idx"]), _to_int(p["t_idx"]), p["r"]) for p in predictions
    }

    gold_facts = gold.facts
    docs = gold.docs
    num_pred = len(keys)
    correct = 0
    correct_in_train = 0
    pred_intra = pred_inter = 0
    correct_intra = correct_inter = 0

    for title, h, t, r in keys:
        info = docs.get(title)
        if info is None:  # Rule 3: counted in num_pred only.
            continue
        kind = info.is_intra(h, t)
        if kind is True:
            pred_intra += 1
        elif kind is False:
            pred_inter += 1
        if (title, r, h, t) not in gold_facts:
            continue
        correct += 1
        if kind is True:
            correct_intra += 1
        elif kind is False:
            correct_inter += 1
        if train_facts and kind is not None:
            tail_names = info.names[t]
            if any(
                (n1, n2, r) in train_facts for n1 in info.names[h] for n2 in tail_names
            ):
                correct_in_train += 1

    num_gold = len(gold_facts)
    p, r_, f1 = prf(correct, num_pred, num_gold)
    ign_p = _ratio(correct - correct_in_train, num_pred - correct_in_train)
    ign_f1 = _ratio(2.0 * ign_p * r_, ign_p + r_)
    intra_p, intra_r, intra_f1 = prf(correct_intra, pred_intra, gold.num_intra)
    inter_p, inter_r, inter_f1 = prf(correct_inter, pred_inter, gold.num_inter)

    return {
        "precision": p,
        "recall": r_,
        "f1": f1,
        "ign_precision": ign_p,
        "ign_f1": ign_f1,
        "intra_precision": intra_p,
        "intra_recall": intra_r,
        "intra_f1": intra_f1,
        "inter_precision": inter_p,
        "inter_recall": inter_r,
        "inter_f1": inter_f1,
        "num_predictions": num_pred,
        "num_gold": num_gold,
        "num_correct": correct,
        "num_correct_in_train": correct_in_train,
        "num_intra_predictions": pred_intra,
        "num_inter_predictions": pred_inter,
        "num_intra_gold": gold.num_intra,
        "num_inter_gold": gold.num_inter,
        "num_intra_correct": correct_intra,
        "num_inter_correct": correct_inter,
    }


COUNT_FIELDS = ("num_predictions", "num_correct", "num_correct_in_train", "num_gold")


def document_counts(
    predictions: Iterable[Mapping[str, Any]],
    gold_docs: Sequence[Mapping[str, Any]],
    *,
    train_facts: set[tuple[str, str, str]] | None = None,
) -> list[tuple[int, int, int, int]]:
    """Per gold document, in ``gold_docs``' order: ``(#predictions, #correct, #correct in train,
    #gold facts)`` under the official rules, each document scored alone by :func:`score_predictions`.

    Summed over documents they give the corpus-level counts (F1 and Ign F1 are functions of the
    sums), which is what resampling documents needs. Titles must be unique and every prediction's
    title a gold title: with either broken, a document is not a unit the scores can be split into.
    """
    titles = [doc["title"] for doc in gold_docs]
    repeated = sorted(t for t, n in Counter(titles).items() if n > 1)
    if repeated:
        raise ValueError(f"gold documents share titles ({', '.join(map(repr, repeated[:3]))}); "
                         "per-document counts need one document per title")
    by_title: dict[str, list[Mapping[str, Any]]] = {t: [] for t in titles}
    for pred in predictions:
        if pred["title"] not in by_title:
            raise ValueError(f"a prediction names title {pred['title']!r}, which no gold document has")
        by_title[pred["title"]].append(pred)
    counts = []
    for doc in gold_docs:
        m = score_predictions(by_title[doc["title"]], GoldIndex([doc]), train_facts=train_facts)
        counts.append(tuple(m[k] for k in COUNT_FIELDS))
    return counts


def _f1_from_counts(sums: Any) -> tuple[Any, Any]:
    """F1 and Ign F1 (fractions) from summed counts; works on numpy arrays of sums (last axis 4)."""
    import numpy as np

    pred, correct, in_train, gold = (sums[..., i].astype(np.float64) for i in range(4))
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred > 0, correct / pred, 0.0)
        r = np.where(gold > 0, correct / gold, 0.0)
        ign_p = np.where(pred - in_train > 0, (correct - in_train) / (pred - in_train), 0.0)
        f1 = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
        ign_f1 = np.where(ign_p + r > 0, 2 * ign_p * r / (ign_p + r), 0.0)
    return f1, ign_f1


def paired_bootstrap(
    counts_a: Sequence[Sequence[int]],
    counts_b: Sequence[Sequence[int]],
    *,
    resamples: int = 10000,
    seed: int = 0,
) -> dict[str, Any]:
    """Paired bootstrap over documents of system A against system B on one gold set.

    ``counts_a`` and ``counts_b`` come from :func:`document_counts` on the same gold documents.
    Each resample draws the documents with replacement, the same draw for both systems, and
    recomputes both F1s from the summed counts. Returns, in percent, the observed differences
    ``F1(A) - F1(B)`` and ``Ign F1(A) - Ign F1(B)``, their 95% percentile intervals, and the share
    of resamples in which A is ahead. This measures how much the choice of evaluation documents
    moves a difference, not how much a training seed does.
    """
    import numpy as np

    a = np.asarray(counts_a, dtype=np.int64)
    b = np.asarray(counts_b, dtype=np.int64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 4 or len(a) == 0:
        raise ValueError(f"both systems need (#docs, 4) counts on the same documents, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    f1_diffs, ign_diffs = [], []
    for start in range(0, resamples, 1000):  # blocks keep the index matrix small on large gold sets
        idx = rng.integers(0, len(a), size=(min(1000, resamples - start), len(a)))
        fa, ia = _f1_from_counts(a[idx].sum(axis=1))
        fb, ib = _f1_from_counts(b[idx].sum(axis=1))
        f1_diffs.append(fa - fb)
        ign_diffs.append(ia - ib)
    out: dict[str, Any] = {"documents": len(a), "resamples": resamples, "seed": seed}
    observed = [x - y for x, y in zip(_f1_from_counts(a.sum(axis=0)), _f1_from_counts(b.sum(axis=0)))]
    for name, diffs, obs in (("f1", f1_diffs, observed[0]), ("ign_f1", ign_diffs, observed[1])):
        d = np.concatenate(diffs)
        lo, hi = np.percentile(d, [2.5, 97.5])
        out[f"{name}_diff"] = round(100 * float(obs), 2)
        out[f"{name}_ci95"] = [round(100 * float(lo), 2), round(100 * float(hi), 2)]
        out[f"{name}_a_ahead"] = round(float((d > 0).mean()), 4)
    return out


def compare_submissions(
    predictions: Iterable[Mapping[str, Any]],
    baseline: Iterable[Mapping[str, Any]],
    gold_docs: Sequence[Mapping[str, Any]],
    *,
    train_facts: set[tuple[str, str, str]] | None = None,
    resamples: int = 10000,
) -> dict[str, Any]:
    """``F1(predictions) - F1(baseline)`` and the Ign F1 gap on ``gold_docs`` with their 95%
    intervals: :func:`paired_bootstrap` on both submissions' :func:`document_counts`."""
    counts = [document_counts(p, gold_docs, train_facts=train_facts) for p in (predictions, baseline)]
    return paired_bootstrap(*counts, resamples=resamples)


def format_metrics(metrics: Mapping[str, Any]) -> str:
    """A small readable table of a ``score_predictions`` result, in percent."""

    def pct(key: str) -> str:
        v = metrics.get(key)
        return "   -  " if v is None else f"{100.0 * v:6.2f}"

    def cnt(key: str) -> str:
        v = metrics.get(key)
        return "-" if v is None else str(v)

    rows = [
        ("All", pct("precision"), pct("recall"), pct("f1")),
        ("Ign", pct("ign_precision"), pct("recall"), pct("ign_f1")),
        ("Intra", pct("intra_precision"), pct("intra_recall"), pct("intra_f1")),
        ("Inter", pct("inter_precision"), pct("inter_recall"), pct("inter_f1")),
    ]
    lines = [f"{'':<6} {'P':>6} {'R':>6} {'F1':>6}   (Ign F1 = the Ign row's F1)"]
    lines += [f"{name:<6} {p} {r} {f}" for name, p, r, f in rows]
    lines.append(
        f"predictions={cnt('num_predictions')} gold={cnt('num_gold')} "
        f"correct={cnt('num_correct')} correct_in_train={cnt('num_correct_in_train')}"
    )
    if "num_intra_gold" in metrics:
        lines.append(
            f"intra: pred={cnt('num_intra_predictions')} gold={cnt('num_intra_gold')} "
            f"correct={cnt('num_intra_correct')} | "
            f"inter: pred={cnt('num_inter_predictions')} gold={cnt('num_inter_gold')} "
            f"correct={cnt('num_inter_correct')}"
        )
    return "\n".join(lines)
