"""Does each pre-training task learn? Held-out per-task accuracy before and after a short run.

    python -m benchmarks.studies.pretrain_tasks [--docs 800] [--heldout-docs 400] [--epochs 1]

* Training pairs: ``--docs`` synthetic distant documents (seed 0), sharded and fact-joined over every
  distant label (no pre-denoising: this measures the tasks, not the denoiser).
* Held-out pairs: ``--heldout-docs`` distant documents of another seed (another hidden knowledge
  base, so no document, entity or fact is shared with training), sharded and fact-joined the same way.
* ``dsdocre pretrain`` with ``configs/pretrain.yaml`` (packaged MiniLM, all five sub-tasks, alpha 0.7,
  k_n 5) for ``--epochs`` epochs, one process on all cores. Its ``valid.json`` holds each task's
  accuracy on the held-out pairs before training (the untrained encoder, heads at their random
  start) and after, beside chance (a uniform guess among each instance's real candidates).

Writes ``benchmarks/results/pretrain_tasks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import machine_info, pin_threads, synthetic_pairs

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--heldout-docs", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/pretrain_tasks.json"))
    args = parser.parse_args()
    threads = pin_threads()
    with tempfile.TemporaryDirectory(prefix="pretrain_tasks_") as tmp:
        root = Path(tmp)
        pairs = synthetic_pairs(root / "train", args.docs, 0, docs_per_shard=200)
        heldout_pairs = synthetic_pairs(root / "heldout", args.heldout_docs, 1, docs_per_shard=200)
        sets = [f"data.pairs={root / 'train' / 'pairs'}", f"data.shards={root / 'train' / 'shards'}",
                f"data.valid_pairs={root / 'heldout' / 'pairs'}", f"data.valid_shards={root / 'heldout' / 'shards'}",
                f"training.epochs={args.epochs}", "training.resume=false", "training.checkpoint_every=100000"]
        env = {**os.environ, "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain", "--config", "configs/pretrain.yaml",
                               *[x for s in sets for x in ("--set", s)], "--output-dir", str(root / "run")],
                              cwd=ROOT, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stdout[-3000:] + proc.stderr[-3000:])
        seconds = time.perf_counter() - t0
        valid = json.loads((root / "run" / "valid.json").read_text())
        steps = [json.loads(x) for x in (root / "run" / "metrics.jsonl").read_text().splitlines()][-1]["step"]
    tasks = {t: {"chance": valid["after"][t]["chance"], "untrained": valid["before"][t]["accuracy"],
                 "trained": valid["after"][t]["accuracy"], "instances": valid["after"][t]["instances"]}
             for t in valid["after"]}
    for row in tasks.values():
        row["trained_over_chance"] = round(row["trained"] / row["chance"], 2)
    machine = machine_info()
    result = {"machine": machine, "command": machine["command"], "threads": threads,
              "setup": {"train_documents": args.docs, "train_pairs": pairs, "heldout_documents": args.heldout_docs,
                        "heldout_pairs": heldout_pairs, "epochs": args.epochs, "steps": steps,
                        "config": "configs/pretrain.yaml", "wall_seconds": round(seconds, 1)},
              "tasks": tasks}
    print(f"{pairs} training pairs, {heldout_pairs} held-out pairs; {steps} steps in {seconds / 60:.1f} min")
    print(f"{'task':<10}{'chance':>8}{'untrained':>11}{'trained':>9}{'x chance':>10}{'instances':>11}")
    for task, row in tasks.items():
        print(f"{task:<10}{row['chance']:>8.1f}{row['untrained']:>11.1f}{row['trained']:>9.1f}"
              f"{row['trained_over_chance']:>10.2f}{row['instances']:>11}")
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
