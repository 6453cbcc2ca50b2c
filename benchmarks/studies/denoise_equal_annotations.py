"""BERT against BERT+D with equal annotations: the rank model and the classifier both learn from the
same first N training documents of Re-DocRED, so the cut brings no annotation the classifier lacks.

    python -m benchmarks.studies.denoise_equal_annotations [--docs 100] [--keep 3n]
        [--rank-set training.epochs=25 --rank-set model.relation_head=true] [--work runs/equal_annotations]

Steps, each a ``dsdocre`` command (printed before it runs), each skipped when its output and the
command that wrote it (``<step>/dsdocre_step.json``) are already in ``--work``, so a stopped run
continues where it was; an output written by another command stops the run rather than be reused:

1. ``bert``: the fine-tuning recipe (``configs/finetune_redocred.yaml``) on the first N documents;
2. ``rank``: the rank model (``configs/denoise_redocred.yaml`` and ``--rank-set``) on the same N;
3. ``shards_train``, ``shards_valid``, then ``kept_train``, ``kept_valid``: the rank model's top
   ``--keep`` pairs of every document (``dsdocre denoise score``);
4. ``bertd``: the same recipe and budget on the kept pairs, evaluated on valid's kept pairs (a gold
   fact whose pair was dropped counts as missed).

Then both rows' valid P / R / F1 / Ign F1 at their epoch and threshold chosen on valid (optimistic,
both the same way), and BERT+D's gap to BERT with a 95% interval from a paired bootstrap over the
valid documents (``dsdocre evaluate --baseline``'s computation). Ign F1 sets aside the facts of all
of ``train.json``. Writes ``benchmarks/results/denoise_equal_annotations.json`` (percent). About an
hour on 2 CPU cores for 100 documents.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks._common import STEP_STAMP, machine_info, pin_threads, real_data_dir
from benchmarks._common import dsdocre_step as step

ROOT = Path(__file__).resolve().parents[2]
def row(run: Path, gold: list, facts: set) -> tuple[dict, list]:
    """A fine-tuning run's valid metrics (percent) from its chosen epoch's predictions."""
    from dsdocre.evaluation import score_predictions

    predictions = json.loads((run / "valid_predictions.json").read_text())
    m = score_predictions(predictions, gold, train_facts=facts)
    chosen = json.loads((run / "model" / "dsdocre_model.json").read_text())
    metrics = {k: round(100 * m[k], 2) for k in ("precision", "recall", "f1", "ign_f1", "intra_f1", "inter_f1")}
    return {**metrics, "best_epoch": chosen.get("epoch"), "model": str(run / "model")}, predictions


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100, help="training documents both models learn from")
    parser.add_argument("--keep", default="3n", help="pairs kept per document (default: %(default)s)")
    parser.add_argument("--rank-set", action="append", default=[], metavar="KEY=VALUE",
                        help="overrides of configs/denoise_redocred.yaml for the rank model (repeatable)")
    parser.add_argument("--work", default="runs/equal_annotations")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/denoise_equal_annotations.json"))
    args = parser.parse_args()
    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    recipe = ["finetune", "--config", "configs/finetune_redocred.yaml", "--set", f"data.max_train_docs={args.docs}"]

    bert = step(work, "bert", [*recipe, "--output-dir", work / "bert"], "model")
    rank_sets = [x for kv in [f"data.max_train_docs={args.docs}", *args.rank_set] for x in ("--set", kv)]
    rank = step(work, "rank", ["denoise", "train", "--config", "configs/denoise_redocred.yaml", *rank_sets,
                               "--output-dir", work / "rank"], "model")
    kept = {}
    for split in ("train", "valid"):
        shards = step(work, f"shards_{split}", ["shard", "--input", data / f"{split}.json", "--out",
                                                work / f"shards_{split}", "--workers", 0, "--no-progress"],
                      "manifest.json")
        kept[split] = step(work, f"kept_{split}", ["denoise", "score", "--model", rank / "model", "--shards", shards,
                                                   "--out", work / f"kept_{split}", "--keep", args.keep,
                                                   "--workers", 1, "--no-progress"], "manifest.json")
    bertd = step(work, "bertd", [*recipe, "--set", f"data.kept_pairs=[{kept['train']},{kept['valid']}]",
                                 "--output-dir", work / "bertd"], "model")

    from dsdocre.data.scored import read_kept_pairs
    from dsdocre.evaluation import compare_submissions, train_fact_set

    gold = json.loads((data / "valid.json").read_text())
    facts = train_fact_set(json.loads((data / "train.json").read_text()))
    rows, predictions = {}, {}
    for name, run in (("BERT", bert), ("BERT+D", bertd)):
        rows[name], predictions[name] = row(run, gold, facts)
    valid_kept = read_kept_pairs(kept["valid"])
    inside = [(d["title"], lab["h"], lab["t"]) for d in gold for lab in d.get("labels", [])]
    pairs = {d["title"]: {tuple(p) for p in valid_kept.get(d["title"], [])} for d in gold}
    rank_meta = json.loads((rank / "model" / "dsdocre_model.json").read_text())
    machine = machine_info()
    result = {
        "rows": rows,
        "gap": compare_submissions(predictions["BERT+D"], predictions["BERT"], gold, train_facts=facts),
        "training_docs": args.docs, "keep": args.keep, "rank_set": args.rank_set,
        "rank_model": {"path": str(rank / "model"), "epoch": rank_meta.get("epoch"), "valid": rank_meta.get("valid")},
        "valid_gold_facts_inside_cut": round(100 * sum((h, t) in pairs[title] for title, h, t in inside) / len(inside), 2),
        "commands": {p.parent.name: json.loads(p.read_text())["command"] for p in sorted(work.glob(f"*/{STEP_STAMP}"))},
        "threads": threads, "machine": machine, "command": machine["command"], "date": machine["date"],
        "note": "epoch and threshold of each row chosen on valid (optimistic, both the same way); the interval is "
                "over the valid documents, a training seed's share is not in it",
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"\n{'row':<8}{'P':>8}{'R':>8}{'F1':>8}{'Ign F1':>8}{'Intra':>8}{'Inter':>8}")
    for name, r in rows.items():
        print(f"{name:<8}{r['precision']:>8.2f}{r['recall']:>8.2f}{r['f1']:>8.2f}{r['ign_f1']:>8.2f}"
              f"{r['intra_f1']:>8.2f}{r['inter_f1']:>8.2f}")
    gap = result["gap"]
    print(f"BERT+D - BERT: F1 {gap['f1_diff']:+.2f} [{gap['f1_ci95'][0]:+.2f}, {gap['f1_ci95'][1]:+.2f}] "
          f"(ratio {rows['BERT+D']['f1'] / rows['BERT']['f1']:.3f}); valid gold facts inside the cut "
          f"{result['valid_gold_facts_inside_cut']}% -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
