"""Sharding throughput: a plain single-process loop vs Ray with 1 and 2 workers; peak memory.

    python -m benchmarks.shard_throughput [--docs 100000] [--large-gb 1.0]
                                          [--out benchmarks/results/shard_throughput.json]

1. Writes a synthetic corpus (``dsdocre.synth``, DS documents) of ``--docs`` documents as ONE JSON
   array file.
2. Shards it three ways, each in a fresh process, the same work each time (stream, validate,
   tokenize with entity markers, write WebDataset shards + manifest):
   ``single_process`` (``--workers 0``: the same functions in a plain loop, no Ray), ``ray_1`` and
   ``ray_2`` (a local Ray with 1 / 2 CPUs, i.e. 1 / 2 shard tasks at a time).
   Throughput (``docs_per_s``, the acceptance figure) is timed with Ray already started (as when
   joining a running cluster with ``--address``); worker start-up and tokenizer loading (about
   2 s per run: transformers imports torch) are inside it. Reported too: the rate including
   ``ray.init`` and the rate after that warm-up.
3. Peak RSS: the driver's own ``getrusage`` high-water mark, and each worker's, reported by every
   shard task from inside the worker (``ru_maxrss``), so no sampling can miss a peak.
4. ``--large-gb``: a JSON array of at least that many GB (the synthetic documents repeated under
   new titles) is sharded with 2 workers and the peak RSS of driver and workers recorded; the
   file and its shards are deleted afterwards.

The machine is shared (model training runs at times): before each scaling measurement the script
waits (up to ``--max-wait`` seconds) for the 1-minute load average to drop below ``--max-load``
and records the load averages it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import ROOT, machine_info
from sharding.ray_setup import WORKER_ENV

# The same one-thread-per-worker environment the shard workers get; applied to this process and
# its measurement children too, so the single-process baseline is one core as well.
PINNED = WORKER_ENV


# --------------------------------------------------------------------------------------------
# Load
# --------------------------------------------------------------------------------------------
def wait_for_quiet(max_load: float, max_wait: float, log) -> dict:
    """Wait until the 1-minute load average is below ``max_load`` (or give up after ``max_wait`` s)."""
    start = time.time()
    while True:
        load = os.getloadavg()
        if load[0] <= max_load or time.time() - start >= max_wait:
            quiet = load[0] <= max_load
            if not quiet:
                log(f"  load {load[0]:.2f} still above {max_load} after {max_wait:.0f} s: measuring anyway")
            return {"loadavg_before": [round(x, 2) for x in load], "waited_s": round(time.time() - start),
                    "quiet": quiet}
        log(f"  load average {load[0]:.2f} > {max_load}: waiting ...")
        time.sleep(30)


# --------------------------------------------------------------------------------------------
# Corpus
# --------------------------------------------------------------------------------------------
def write_corpus(path: Path, n_docs: int, seed: int = 0, log=print) -> int:
    from tqdm import tqdm

    from dsdocre.synth import get_kb, iter_documents

    kb = get_kb(seed)
    with open(path, "w") as f:
        f.write("[")
        for i, doc in enumerate(tqdm(iter_documents("distant", seed, n_docs, kb=kb), total=n_docs,
                                     desc="synth", mininterval=5, file=sys.stderr)):
            f.write(("," if i else "") + json.dumps(doc, ensure_ascii=False))
        f.write("]")
    return path.stat().st_size


def write_large(src: Path, dst: Path, min_bytes: int) -> tuple[int, int]:
    """Repeat the documents of ``src`` (new titles per round) until the array is ``min_bytes``."""
    from sharding.corpus import iter_document_bytes

    docs = 0
    with open(dst, "w") as f:
        f.write("[")
        round_ = 0
        while f.tell() < min_bytes:
            for raw in iter_document_bytes(src):
                doc = json.loads(raw)
                doc["title"] = f"{doc['title']} (copy {round_})"
                f.write(("," if docs else "") + json.dumps(doc, ensure_ascii=False))
                docs += 1
                if f.tell() >= min_bytes:
                    break
            round_ += 1
        f.write("]")
    return dst.stat().st_size, docs


# --------------------------------------------------------------------------------------------
# One measurement, in a fresh process (clean peak-RSS accounting)
# --------------------------------------------------------------------------------------------
class ProcessSampler:
    """Samples the RSS of this process and all its descendants (Ray's GCS, raylet, agents and
    workers are descendants of a driver that starts a local Ray) once a second: the peak of every
    process kind, so "every process stays under 2 GiB" is checked, not assumed."""

    def __init__(self, interval: float = 1.0):
        import threading

        self.interval, self.peaks, self._stop = interval, {}, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def kind(proc) -> str:
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001 - the process may be gone
            return "other"
        for name in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor.py"):
            if name in cmd:
                return name
        return "ray_worker" if "default_worker" in cmd or cmd.startswith("ray::") else "other"

    def _run(self) -> None:
        import psutil

        me = psutil.Process()
        while not self._stop.is_set():
            try:
                procs = [me] + me.children(recursive=True)
            except psutil.Error:
                procs = [me]
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                except psutil.Error:
                    continue
                k = "driver" if p.pid == me.pid else self.kind(p)
                self.peaks[k] = max(self.peaks.get(k, 0.0), round(rss, 1))
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def measure(input_path: str, out_dir: str, workers: int, docs_per_shard: int) -> dict:
    """Runs in the child: shard once, print one JSON line with the numbers."""
    with ProcessSampler() as sampler:
        result = _measure(input_path, out_dir, workers, docs_per_shard)
    result["sampled_peak_rss_mb_by_process_kind"] = sampler.peaks
    return result


def _measure(input_path: str, out_dir: str, workers: int, docs_per_shard: int) -> dict:
    from sharding.shard import shard_corpus

    t0 = time.perf_counter()
    if workers:
        import ray

        from sharding.ray_setup import connect

        connect(None, workers)  # exactly what `dsdocre shard` does without --address
    ray_start = time.perf_counter() - t0
    summary = shard_corpus([input_path], out_dir, docs_per_shard=docs_per_shard, workers=workers or 0,
                           progress=False, log=None)
    if workers:
        ray.shutdown()
    counts = summary.manifest["counts"]
    return {"docs": counts["input"], "sharded": counts["sharded"], "rejected": counts["rejected"],
            "shards": len(summary.manifest["shards"]), "seconds": round(summary.seconds, 2),
            "warmup_seconds": round(summary.warmup_seconds, 2),
            "ray_init_seconds": round(ray_start, 2), "input_bytes": summary.input_bytes,
            "driver_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "worker_peak_rss_mb": {str(pid): round(kb / 1024, 1) for pid, kb in summary.worker_max_rss_kb.items()}}


def run_child(input_path: Path, out_dir: Path, workers: int, docs_per_shard: int, log) -> dict:
    shutil.rmtree(out_dir, ignore_errors=True)
    env = dict(os.environ)  # main() has applied PINNED to it
    cmd = [sys.executable, "-m", "benchmarks.shard_throughput", "--_child", str(input_path), str(out_dir), str(workers), str(docs_per_shard)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement failed ({workers} workers):\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["docs_per_s"] = round(result["docs"] / result["seconds"], 1)
    result["mb_per_s"] = round(result["input_bytes"] / 2**20 / result["seconds"], 2)
    total = result["seconds"] + result["ray_init_seconds"]
    result["docs_per_s_incl_ray_init"] = round(result["docs"] / total, 1)
    # Once every worker has imported transformers and loaded the tokenizer (a fixed ~2 s per run).
    result["docs_per_s_after_warmup"] = round(result["docs"] / (result["seconds"] - result["warmup_seconds"]), 1)
    log(f"  workers={workers}: {result['docs']} docs in {result['seconds']:.1f} s = {result['docs_per_s']:.0f} "
        f"docs/s, {result['mb_per_s']:.1f} MB/s (ray.init {result['ray_init_seconds']:.1f} s); peak RSS driver "
        f"{result['driver_peak_rss_mb']:.0f} MB, workers {max(result['worker_peak_rss_mb'].values(), default=0):.0f} MB")
    return result


# --------------------------------------------------------------------------------------------
def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--_child":
        _, _, input_path, out_dir, workers, dps = sys.argv
        print(json.dumps(measure(input_path, out_dir, int(workers), int(dps))))
        return 0

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--docs", type=int, default=100_000, help="synthetic documents (default 100000)")
    ap.add_argument("--docs-per-shard", type=int, default=1000)
    ap.add_argument("--large-gb", type=float, default=1.0, help="size of the large-file run (0 = skip)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per configuration (the best is kept)")
    ap.add_argument("--max-load", type=float, default=1.0)
    ap.add_argument("--max-wait", type=float, default=1200.0, help="seconds to wait for a quiet machine")
    ap.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one, deleted)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "shard_throughput.json"))
    args = ap.parse_args()
    os.environ.update(PINNED)
    log = lambda *a: print(*a, flush=True)  # noqa: E731

    work = Path(args.workdir or tempfile.mkdtemp(prefix="dsdocre-shard-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    machine = machine_info(packages=("ray", "transformers", "webdataset", "numpy"))
    result: dict = {"benchmark": "shard_throughput", "command": machine["command"], "date": machine["date"],
                    "machine": machine, "docs_per_shard": args.docs_per_shard}
    try:
        corpus = work / "corpus.json"
        if not corpus.exists():
            log(f"writing {args.docs} synthetic documents to {corpus}")
            write_corpus(corpus, args.docs)
        result["input_bytes"] = corpus.stat().st_size
        log(f"corpus: {result['input_bytes'] / 2**20:.0f} MB")

        runs: dict[str, dict] = {}
        every_run: dict[str, list[float]] = {}
        for name, workers in (("single_process", 0), ("ray_1", 1), ("ray_2", 2)):
            best = None
            for _ in range(args.repeats):
                load = wait_for_quiet(args.max_load, args.max_wait, log)
                r = {**run_child(corpus, work / f"out_{name}", workers, args.docs_per_shard, log), **load,
                     "loadavg_after": [round(x, 2) for x in os.getloadavg()]}
                every_run.setdefault(name, []).append(r["docs_per_s"])
                if best is None or r["seconds"] < best["seconds"]:
                    best = r
            runs[name] = best
        # The three runs wrote the same shards.
        manifests = [json.loads((work / f"out_{n}" / "manifest.json").read_text())["shards"] for n in runs]
        assert manifests[0] == manifests[1] == manifests[2], "single-process and Ray shards differ"
        for n in runs:
            shutil.rmtree(work / f"out_{n}", ignore_errors=True)

        result["docs"] = runs["single_process"]["docs"]
        result["docs_per_s"] = {n: r["docs_per_s"] for n, r in runs.items()}
        result["mb_per_s"] = {n: r["mb_per_s"] for n, r in runs.items()}
        result["docs_per_s_incl_ray_init"] = {n: r["docs_per_s_incl_ray_init"] for n, r in runs.items()}
        result["docs_per_s_after_warmup"] = {n: r["docs_per_s_after_warmup"] for n, r in runs.items()}
        result["docs_per_s_every_repeat"] = every_run
        result["scaling_2_over_1_after_warmup"] = round(
            runs["ray_2"]["docs_per_s_after_warmup"] / runs["ray_1"]["docs_per_s_after_warmup"], 3)
        result["scaling_2_over_1"] = round(runs["ray_2"]["docs_per_s"] / runs["ray_1"]["docs_per_s"], 3)
        single = runs["single_process"]["docs_per_s"]
        result["ray_1_over_single_process"] = round(runs["ray_1"]["docs_per_s"] / single, 3)
        result["ray_2_over_single_process"] = round(runs["ray_2"]["docs_per_s"] / single, 3)
        result["peak_rss_mb"] = {
            "driver": max(r["driver_peak_rss_mb"] for n, r in runs.items() if n != "single_process"),
            "worker_max": max(max(r["worker_peak_rss_mb"].values()) for n, r in runs.items() if n != "single_process"),
            "single_process": runs["single_process"]["driver_peak_rss_mb"]}
        result["runs"] = runs
        result["shards_identical_across_runs"] = True
        log(f"scaling 2/1 workers: {result['scaling_2_over_1']:.2f}x; 2 workers vs single process: "
            f"{result['ray_2_over_single_process']:.2f}x")

        if args.large_gb > 0:
            big = work / "large.json"
            log(f"writing a JSON array of >= {args.large_gb} GB")
            size, n = write_large(corpus, big, int(args.large_gb * 2**30))
            corpus.unlink()  # room on disk for the shards
            load = wait_for_quiet(args.max_load, min(args.max_wait, 300), log)
            r = run_child(big, work / "out_large", 2, args.docs_per_shard, log)
            big.unlink()
            shutil.rmtree(work / "out_large", ignore_errors=True)
            result["large_file"] = {
                "input_bytes": size, "docs": n, "workers": 2, "seconds": r["seconds"], "docs_per_s": r["docs_per_s"],
                "mb_per_s": r["mb_per_s"],
                "peak_rss_mb": {"driver": r["driver_peak_rss_mb"], "worker_max": max(r["worker_peak_rss_mb"].values()),
                                "sampled_by_process_kind": r["sampled_peak_rss_mb_by_process_kind"]},
                "under_2_gib": max(r["driver_peak_rss_mb"], max(r["worker_peak_rss_mb"].values()),
                                   *r["sampled_peak_rss_mb_by_process_kind"].values()) < 2048,
                **load}
            log(f"large file {size / 2**30:.2f} GB: peak RSS driver {r['driver_peak_rss_mb']:.0f} MB, "
                f"workers {max(r['worker_peak_rss_mb'].values()):.0f} MB")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    result["acceptance"] = {
        "scaling_2_over_1_at_least_1_7": result["scaling_2_over_1"] >= 1.7,
        "ray_1_no_slower_than_single_process": result["docs_per_s"]["ray_1"] >= result["docs_per_s"]["single_process"],
        "peak_rss_under_2_gib": bool(result.get("large_file", {}).get("under_2_gib")),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    log(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
