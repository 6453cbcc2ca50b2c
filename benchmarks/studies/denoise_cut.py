"""Where the pre-denoising cut pays: BERT's valid predictions kept only on the rank model's top-k
pairs of each document, for k from N_ent to all pairs: the recall lost at the cut against the
precision gained, and the k that gives the best F1.

    python -m benchmarks.studies.denoise_cut [--bert runs/finetune_redocred/model] [--rank runs/denoise_quality/rank/model]

* Predictions: the "BERT" row's model (``benchmarks/studies/finetune_realdata.py`` writes it and its valid
  predictions, at its threshold chosen on valid, to ``runs/finetune_redocred/``); nothing is
  retrained. The cut is applied at inference only, at that same threshold, so this measures what the
  cut itself does to a fixed classifier (a classifier fine-tuned on the kept pairs, the "BERT+D" row
  of ``denoise_quality.py``, could also move its threshold).
* Rank scores: the rank model of ``benchmarks/studies/denoise_quality.py`` (``runs/denoise_quality/rank/model``)
  scores every ordered entity pair of each valid document (one encoder pass each).
* For each k: official P / R / F1 / Ign F1 (``dsdocre.evaluation``), and the share of valid's gold
  facts whose pair is inside the cut (the ceiling on recall).
* A reference ranker in the same run: the BERT classifier itself, ranking each document's pairs by
  its highest relation probability. It is trained on the same 400 documents with every pair and all
  96 relations, so its share of gold facts inside each cut shows what a ranker of this encoder and
  data reaches; the rank model's figure is set beside it.

Writes ``benchmarks/results/denoise_cut.json`` (percent). Minutes on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info, pin_threads, real_data_dir

from dsdocre.model.rank import top_pairs

ROOT = Path(__file__).resolve().parents[2]
CUTS = ("1n", "1.5n", "2n", "3n", "4n", "6n", "all")


def kept_by(scores, docs, cut) -> set:
    """(title, h, t) of the pairs each document keeps at ``cut`` under ``scores``."""
    kept = set()
    for doc, s in zip(docs, scores):
        n = doc.num_entities
        kept.update((doc.title, h, t) for h, t, _ in top_pairs(s, n * (n - 1) if cut == "all" else cut))
    return kept


def classifier_ranking(model_dir: Path, docs) -> list:
    """Per document, [N, N] scores: the classifier's highest relation probability for each pair."""
    import numpy as np

    from dsdocre.data.examples import build_examples
    from dsdocre.inference import predict_probabilities
    from dsdocre.model import RelationClassifier

    model, _ = RelationClassifier.from_pretrained(model_dir)
    examples = build_examples(docs, model.tokenizer)
    out = []
    for ex, probs in zip(examples, predict_probabilities(model, examples, 4, model.tokenizer.pad_id, progress=False)):
        n = ex.doc.num_entities
        scores = np.full((n, n), -1.0)
        scores[ex.heads, ex.tails] = probs.max(1)
        out.append(scores)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bert", default=str(ROOT / "runs/finetune_redocred"),
                        help="the BERT row's run folder (valid_predictions.json, model/)")
    parser.add_argument("--rank", default=str(ROOT / "runs/denoise_quality/rank/model"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/denoise_cut.json"))
    args = parser.parse_args()
    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    from dsdocre.data.reader import load_valid_documents
    from dsdocre.evaluation import GoldIndex, score_predictions, train_fact_set
    from dsdocre.model import RankModel
    from dsdocre.model.rank import score_documents

    started = time.perf_counter()
    valid, _ = load_valid_documents(data / "valid.json", log=None)
    train, _ = load_valid_documents(data / "train.json", log=None)
    gold = GoldIndex(d.to_json() for d in valid)
    facts_in_train = train_fact_set(d.to_json() for d in train)
    predictions = json.loads((Path(args.bert) / "valid_predictions.json").read_text())
    model, _ = RankModel.from_pretrained(args.rank)
    scores = score_documents(model, [model.tokenizer.encode(d) for d in valid], 4, "cpu")
    scoring_seconds = time.perf_counter() - started
    classifier_scores = classifier_ranking(Path(args.bert) / "model", valid)

    gold_facts = [(d.title, lab["h"], lab["t"]) for d in valid for lab in d.to_json().get("labels", [])]
    rows = {}
    for cut in CUTS:
        kept = kept_by(scores, valid, cut)
        kept_by_classifier = kept_by(classifier_scores, valid, cut)
        inside = [p for p in predictions if (p["title"], p["h_idx"], p["t_idx"]) in kept]
        m = score_predictions(inside, gold, train_facts=facts_in_train)
        rows[cut] = {"precision": round(100 * m["precision"], 2), "recall": round(100 * m["recall"], 2),
                     "f1": round(100 * m["f1"], 2), "ign_f1": round(100 * m["ign_f1"], 2),
                     "predictions_kept": len(inside),
                     "gold_facts_inside": round(100 * sum(f in kept for f in gold_facts) / len(gold_facts), 2),
                     "pairs_kept": len(kept),
                     "gold_facts_inside_classifier_ranking": round(
                         100 * sum(f in kept_by_classifier for f in gold_facts) / len(gold_facts), 2)}
    best = max(CUTS, key=lambda c: rows[c]["f1"])
    machine = machine_info()
    result = {"cuts": rows, "best_k_d": best, "predictions": len(predictions), "gold_facts": len(gold_facts),
              "bert_run": str(Path(args.bert)), "rank_model": str(Path(args.rank)),
              "scoring_seconds": round(scoring_seconds, 1), "threads": threads, "machine": machine,
              "command": machine["command"], "date": machine["date"],
              "note": "inference-time cut of a fixed classifier at its own threshold (chosen on valid): optimistic "
                      "for the no-cut row, as the threshold was tuned for it"}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'k_d':<6}{'P':>8}{'R':>8}{'F1':>8}{'Ign F1':>8}{'gold inside':>13}{'(classifier ranking)':>22}")
    for cut, r in rows.items():
        print(f"{cut:<6}{r['precision']:>8.2f}{r['recall']:>8.2f}{r['f1']:>8.2f}{r['ign_f1']:>8.2f}"
              f"{r['gold_facts_inside']:>13.2f}{r['gold_facts_inside_classifier_ranking']:>22.2f}")
    print(f"best k_d: {best} -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
