"""What reopening shards costs the pre-training loader: rank 0 of 2 reads its first ``--pairs``
pair records with both documents and their kept labels (what ``benchmarks/scale.py``'s loader walk
reads), with the pool of open shards at its default (128 per folder) and cut to ``--small-pool``.

At 100k documents the walk touches 100 document shards and 100 scored shards in random order: a
pool of 128 per folder holds them all, a pool of 32 reopens a shard at almost every read, which is
what a corpus of 1M documents (1,000 shards per folder) does to the default pool. The baseline, in
the same run, is the 10k corpus (10 + 10 shards, no reopen). Each measurement is a fresh process
with one thread, run twice (the page cache warm from the first).

    python -m benchmarks.pool_reopen --work /work/scale-work   # the folders scale.py left

Writes ``benchmarks/results/pool_reopen.json``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks._common import CHECKOUT, machine_info, pin_threads, shown

RESULT = CHECKOUT / "benchmarks" / "results" / "pool_reopen.json"


def walk_child(pairs: str, shards: str, encoder: str, limit: int, max_open: int) -> None:
    """In a child process: read ``limit`` pairs of rank 0's epoch through a DocumentStore."""
    import torch

    from dsdocre.data import tar_index
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.data.pretrain_data import PairBatches
    from dsdocre.data.pretrain_examples import DocumentStore

    torch.set_num_threads(1)
    opened = [0]
    original = tar_index.IndexedTar.__init__

    def counting(self, path):
        opened[0] += 1
        original(self, path)

    tar_index.IndexedTar.__init__ = counting
    tokenizer, _ = load_tokenizer(encoder, 128)
    batches = PairBatches(pairs, shards, tokenizer, micro_batch=2, rank=0, world=2, seed=0, checksums=False)
    store = DocumentStore(batches.shard_dir, batches.scored_dir, max_open=max_open)
    done, t0 = 0, time.perf_counter()
    for _, samples in batches.stream.my_batches(1):
        for shard, i in samples:
            record = json.loads(batches.stream.read(shard, i)["pair.json"])
            for side in ("a", "b"):
                store.document(record[side]["shard"], record[side]["key"])
                store.kept(record[side]["shard"], record[side]["key"])
            done += 1
        if done >= limit:
            break
    seconds = time.perf_counter() - t0
    print(json.dumps({"pairs": done, "seconds": round(seconds, 3), "pairs_per_s": round(done / seconds, 1),
                      "shards_opened": opened[0], "reopens_per_pair": round(opened[0] / done, 2)}))


def measure(work: Path, size: int, limit: int, max_open: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.pool_reopen", "--_walk", str(work / f"pairs-{size}"),
               str(work / f"shards-{size}"), str(work / "encoder"), str(limit), str(max_open)]
    runs = [json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    return {**runs[-1], "pairs_per_s_each": [r["pairs_per_s"] for r in runs]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", help="the working folder of a `benchmarks.scale` run (required)")
    parser.add_argument("--sizes", type=int, nargs=2, default=[10_000, 100_000], help="baseline and large corpus")
    parser.add_argument("--pairs", type=int, default=5000, help="pairs read per measurement")
    parser.add_argument("--small-pool", type=int, default=32, help="open shards per folder in the cut pool")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--_walk", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._walk:
        pairs, shards, encoder, limit, max_open = args._walk
        walk_child(pairs, shards, encoder, int(limit), int(max_open))
        return 0
    if not args.work:
        parser.error("--work is required: the working folder of a `python -m benchmarks.scale` run")
    threads = pin_threads(1)
    from dsdocre.data.tar_index import DEFAULT_MAX_OPEN

    work, (base, large) = Path(args.work), args.sizes
    rows = {f"{base} pool {DEFAULT_MAX_OPEN}": measure(work, base, args.pairs, DEFAULT_MAX_OPEN),
            f"{large} pool {DEFAULT_MAX_OPEN}": measure(work, large, args.pairs, DEFAULT_MAX_OPEN),
            f"{large} pool {args.small_pool}": measure(work, large, args.pairs, args.small_pool)}
    reference = rows[f"{base} pool {DEFAULT_MAX_OPEN}"]["pairs_per_s"]
    for row in rows.values():
        row["ratio_to_baseline"] = round(row["pairs_per_s"] / reference, 3)
    print(f"{'corpus, pool':<22}{'pairs/s':>9}{'reopens/pair':>14}{'ratio':>7}")
    for name, row in rows.items():
        print(f"{name:<22}{row['pairs_per_s']:>9.0f}{row['reopens_per_pair']:>14.2f}{row['ratio_to_baseline']:>7.2f}")
    result = {"rows": rows, "baseline": f"{base} pool {DEFAULT_MAX_OPEN}", "pairs": args.pairs, "threads": threads,
              "machine": machine_info(f"python -m benchmarks.pool_reopen {' '.join(sys.argv[1:])}".strip())}
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {shown(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
