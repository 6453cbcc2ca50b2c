"""How the rank model's recall grows with its annotated documents, and how many it would need for
a given recall at 2·N_ent.

    python -m benchmarks.studies.denoise_learning_curve [--docs 100 200] [--epochs 25]
        [--recorded benchmarks/results/denoise_quality_rank_25_epochs.json] [--bar 85] [--target-docs 3053]

For each ``--docs N`` the rank model (``configs/denoise_redocred.yaml``) is trained on the first N
documents of Re-DocRED ``train.json`` for ``--epochs`` epochs, each run a ``dsdocre denoise train``
step under ``--work`` that is skipped when its output and the command that wrote it are already
there (a stopped run continues). ``--recorded FILE`` adds a point measured earlier by
``benchmarks/studies/denoise_quality.py --rank-run`` (its result file holds the run's config and recall per
epoch); it is refused unless it was trained with the same config apart from the document count.

Each point is the recall of valid's gold facts inside the rank model's top 2·N_ent (and 3·N_ent)
pairs at the epoch chosen on valid (optimistic, every point the same way). The curve
``recall = a + b·log2(docs)`` is fitted by least squares; reported are the gain per doubling of
the documents, the recall it extrapolates at ``--target-docs`` (3,053: DocRED's training set, the
paper's), and the documents it would take to reach ``--bar``. Beside it, the ceiling: the share of
gold facts that the best possible choice of 2·N_ent pairs holds (an oracle that keeps each
document's pairs with the most gold facts). A log-linear curve cannot pass that ceiling, and real
curves bend below the line as they near it, so the documents it names for the bar are a lower bound.

Writes ``benchmarks/results/denoise_learning_curve.json`` (percent). At 25 epochs on 2 CPU cores a
rank model took 18 minutes on 100 documents and 31 on 200.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from benchmarks._common import (dsdocre_step, machine_info, pin_threads, read_metrics, real_data_dir,
                               recall_per_epoch, shown)

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/denoise_redocred.yaml"


def oracle_recall(documents: list[dict], per_entity: float) -> float:
    """Percent of gold facts inside the best ``per_entity``·N_ent ordered pairs of each document
    (as many pairs as ``dsdocre denoise score --keep {per_entity}n`` keeps)."""
    from dsdocre.model.rank import keep_count

    inside = total = 0
    for doc in documents:
        facts_per_pair: dict[tuple[int, int], int] = {}
        for label in doc.get("labels", []):
            pair = (label["h"], label["t"])
            facts_per_pair[pair] = facts_per_pair.get(pair, 0) + 1
        keep = keep_count(f"{per_entity}n", len(doc["vertexSet"]))
        inside += sum(sorted(facts_per_pair.values(), reverse=True)[:keep])
        total += sum(facts_per_pair.values())
    return round(100 * inside / total, 2)


def trained_point(run: Path, docs: int, command: list[str]) -> dict:
    """A finished run's point: the chosen epoch's recall (dsdocre_model.json) and its curve by epoch."""
    meta = json.loads((run / "model" / "dsdocre_model.json").read_text())
    records = read_metrics(run)
    [chosen] = [r for r in records if r["epoch"] == meta["epoch"]][-1:]
    return {"docs": docs, "recall_at_2n": chosen["valid"]["fact_recall_at_2n"],
            "recall_at_3n": chosen["valid"]["fact_recall_at_3n"], "best_epoch": meta["epoch"],
            "recall_per_epoch": recall_per_epoch(records), "train_seconds": records[-1]["train_seconds"],
            "model": shown(run / "model"), "source": "measured by this script", "command": command}


def recorded_point(path: Path, train_docs: int, epochs: int) -> dict:
    """A point from a ``denoise_quality.py --rank-run`` result file, if its config matches this curve's."""
    result = json.loads(path.read_text())
    rank = result["rank_model"]
    config = rank["config"]
    from dsdocre.config import load_config
    from dsdocre.denoise import DenoiseConfig

    ours = load_config(DenoiseConfig, ROOT / CONFIG, [f"training.epochs={epochs}"])
    for section in ("model", "training"):
        want = getattr(ours, section).model_dump()
        theirs = {k: v for k, v in config[section].items() if k in want}
        differing = sorted(k for k in theirs if theirs[k] != want[k])
        if differing:
            raise SystemExit(f"--recorded {path}: {section} differs from {CONFIG} with training.epochs={epochs} "
                             f"in {', '.join(f'{k} ({theirs[k]!r} vs {want[k]!r})' for k in differing)}")
    docs = config["data"].get("max_train_docs") or train_docs
    return {"docs": docs, "recall_at_2n": result["valid_recall_at_2n"], "recall_at_3n": result["valid_recall_at_3n"],
            "best_epoch": rank["best_epoch"], "recall_per_epoch": rank["recall_per_epoch"],
            "train_seconds": rank["train_seconds"], "model": config["output_dir"] + "/model",
            "source": f"recorded in {path} ({result['date']})", "command": result["command"]}


def fit_log2(points: list[dict], key: str) -> tuple[float, float]:
    """Least-squares a, b of ``key = a + b·log2(docs)``."""
    xs = [math.log2(p["docs"]) for p in points]
    ys = [p[key] for p in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, nargs="*", default=[100, 200],
                        help="training-document counts to train a rank model on (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=25, help="epochs of every rank model (default: %(default)s)")
    parser.add_argument("--recorded", type=Path, action="append", default=[], metavar="FILE",
                        help="a denoise_quality.py --rank-run result to add as a point (repeatable)")
    parser.add_argument("--bar", type=float, default=85.0, help="recall at 2·N_ent asked for (default: %(default)s)")
    parser.add_argument("--target-docs", type=int, default=3053,
                        help="document count to extrapolate to (default: %(default)s, DocRED's training set)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "denoise_learning_curve")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/denoise_learning_curve.json")
    args = parser.parse_args()
    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    train = json.loads((data / "train.json").read_text())
    valid = json.loads((data / "valid.json").read_text())
    if any(not 0 < n <= len(train) for n in args.docs):
        raise SystemExit(f"--docs: each count must be within 1..{len(train)} (the documents in train.json)")

    points = [recorded_point(path, len(train), args.epochs) for path in args.recorded]
    args.work.mkdir(parents=True, exist_ok=True)
    for docs in args.docs:
        command = ["denoise", "train", "--config", CONFIG, "--set", f"data.max_train_docs={docs}",
                   "--set", f"training.epochs={args.epochs}", "--output-dir", args.work / f"rank_{docs}_docs"]
        run = dsdocre_step(args.work, f"rank_{docs}_docs", command, "model")
        points.append(trained_point(run, docs, ["dsdocre", *(shown(x) if isinstance(x, Path) else str(x) for x in command)]))
    points.sort(key=lambda p: p["docs"])
    if len({p["docs"] for p in points}) < 2:
        raise SystemExit("a curve needs points at two or more document counts (--docs, --recorded)")

    fits = {}
    for key in ("recall_at_2n", "recall_at_3n"):
        a, b = fit_log2(points, key)
        fits[key] = {"intercept": round(a, 3), "gain_per_doubling": round(b, 2),
                     f"at_{args.target_docs}_docs": round(a + b * math.log2(args.target_docs), 2),
                     "residuals": [round(p[key] - (a + b * math.log2(p["docs"])), 2) for p in points]}
    a, b = fits["recall_at_2n"]["intercept"], fits["recall_at_2n"]["gain_per_doubling"]
    docs_for_bar = round(2 ** ((args.bar - a) / b)) if b > 0 else None
    machine = machine_info()
    result = {
        "points": points, "fit": fits, "bar": args.bar, "target_docs": args.target_docs,
        "docs_for_bar_at_2n": docs_for_bar,
        "oracle_recall": {"2n": oracle_recall(valid, 2), "3n": oracle_recall(valid, 3)},
        "epochs": args.epochs, "config": CONFIG, "threads": threads,
        "machine": machine, "command": machine["command"], "date": machine["date"],
        "note": "each point's epoch chosen on valid by its recall at 2n (optimistic, every point the same way); "
                "the fit is log-linear in the document count, so the documents it names for the bar are a lower "
                "bound (curves bend below the line near the ceiling)",
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'training docs':>14}{'recall@2n':>11}{'recall@3n':>11}{'best epoch':>12}  source")
    for p in points:
        print(f"{p['docs']:>14}{p['recall_at_2n']:>11.2f}{p['recall_at_3n']:>11.2f}{p['best_epoch']:>12}  {p['source']}")
    f2 = fits["recall_at_2n"]
    print(f"fit at 2n: {f2['gain_per_doubling']:+.2f} per doubling of the documents, "
          f"{f2[f'at_{args.target_docs}_docs']:.2f} at {args.target_docs} documents "
          f"(ratio to the largest point measured: {f2[f'at_{args.target_docs}_docs'] / points[-1]['recall_at_2n']:.3f}); "
          f"{args.bar:g} needs about {docs_for_bar} documents; oracle ceiling {result['oracle_recall']['2n']:.2f} "
          f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
