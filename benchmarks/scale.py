"""Scale benchmark: synthetic distant corpora of growing size through every stage of the
pre-training input, with the peak memory of every process kind, and a launcher run killed and
resumed on the largest pair set.

    python -m benchmarks.scale [--sizes 10000 30000 100000] [--wide-cap 64] [--work DIR]
    python -m benchmarks.scale --small        # a few hundred documents: what CI runs

Each size is a prefix of the largest corpus (``dsdocre synth``), so one rank model serves all.
The rank model and the pre-training encoder are the tests' tiny random BERT with the packaged
tokenizer (``dsdocre.testing.tiny_bert``): what grows with the corpus is the data path (files,
indexes, orders, verification), not the encoder's cost per document, which
``benchmarks/denoise_throughput.py`` and ``benchmarks/pretrain_throughput.py`` measure on the
real encoder. Per size, each stage runs as its own process tree, sampled once a second:

* ``shard`` (Ray, 2 workers), ``score`` (``dsdocre denoise score --keep 20``, 2 Ray actors),
  ``fact_join`` (kept labels, the default cap; at the largest size also ``--wide-cap``);
* ``loader``: the pre-training loader alone, rank 0 of a world of 2 and of 16, with 0 and 2
  loader workers: construction time, time to its first step, then a walk over the rank's whole
  epoch (more epochs until ``--min-walk-pairs`` pairs) that reads every pair record and both
  documents of each pair with their kept labels (touching every pair shard, document shard and
  scored shard, without the per-step tensor work), with peak RSS and open files;
* ``launch``: ``launch/deepspeed_pretrain.sh`` with 2 processes (ZeRO-2) for 2 steps, launched
  ``--startup-repeats`` times: each rank's seconds from process start to the end of set-up, data
  (sizes checked, loader built), engine, verified (the ranks' shares of the hashing agreed on) and
  its first step, the median of the launches (``startup/rank-N.json``), and ``hash_s``, the
  seconds the rank spent hashing its share in the background.

At the largest size, the launcher trains ``--steps`` steps undisturbed, and again killed with
SIGKILL once rank 0 logged step ``--kill-at`` and resumed: the weights must be identical, and the
pair keys of every step the same as the undisturbed run's (``repeated`` / ``missed`` count the
differences). Writes ``benchmarks/results/scale.json`` (``--out``); every number in it is measured.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from benchmarks._common import ROOT, machine_info, pin_threads, shown
from benchmarks.shard_throughput import ProcessSampler

RESULT = ROOT / "benchmarks/results/scale.json"
LOADER_LAYOUTS = [(2, 0), (2, 2), (16, 0), (16, 2)]  # (world, loader workers) of the rank-0 measurement


# ---- sampling a process tree -----------------------------------------------------------------------
class TreeSampler(ProcessSampler):
    """Peak RSS (MiB) per process kind of the tree under ``root_pid`` (not this process's), sampled
    every ``interval`` seconds, and the most files any one process had open; the thread and the
    context manager are :class:`benchmarks.shard_throughput.ProcessSampler`'s."""

    def __init__(self, root_pid: int, interval: float = 0.5):
        super().__init__(interval)
        self.root, self.max_open_files = root_pid, 0

    @staticmethod
    def kind(proc, parent_cmd: str | None) -> str:
        try:
            cmd = " ".join(proc.cmdline())
        except Exception:  # noqa: BLE001 - the process may be gone
            return "other"
        for name in ("gcs_server", "raylet", "dashboard", "runtime_env", "log_monitor", "monitor.py"):
            if name in cmd:
                return f"ray_{name.removesuffix('.py')}"
        if "default_worker" in cmd or cmd.startswith("ray::"):
            return "ray_worker"
        if "deepspeed.launcher" in cmd or cmd.rstrip().endswith("deepspeed") or "/deepspeed " in cmd:
            return "launcher"
        if "--local_rank" in cmd or "dsdocre.cli pretrain" in cmd:
            # DataLoader workers are forks of a rank: the same command line as their parent
            return "loader_worker" if parent_cmd == cmd else "training_rank"
        if "benchmarks.scale --_loader" in cmd:
            return "loader_worker" if parent_cmd == cmd else "loader"
        if "dsdocre.cli" in cmd:
            return "driver"
        return "other"

    def _run(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.root)
        except psutil.Error:
            return
        while not self._stop.is_set():
            try:
                procs = [root] + root.children(recursive=True)
            except psutil.Error:
                procs = []
            for p in procs:
                try:
                    rss = p.memory_info().rss / 2**20
                    parent = p.parent()
                    parent_cmd = " ".join(parent.cmdline()) if parent else None
                    kind = self.kind(p, parent_cmd)
                    self.max_open_files = max(self.max_open_files, p.num_fds())
                except psutil.Error:
                    continue
                if kind in ("other",) and p.pid != self.root:
                    continue  # bash wrappers and the like
                self.peaks[kind] = max(self.peaks.get(kind, 0.0), round(rss, 1))
            self._stop.wait(self.interval)


def environment(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "TOKENIZERS_PARALLELISM": "false",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **extra}


def run_sampled(command: list[str], log: Path, **env) -> dict:
    """Run ``command`` (its own process group), sampling its tree; wall seconds and peaks."""
    started = time.perf_counter()
    with open(log, "ab") as f:
        proc = subprocess.Popen(command, cwd=ROOT, env=environment(**env), stdout=f, stderr=subprocess.STDOUT,
                                start_new_session=True)
        with TreeSampler(proc.pid) as sampler:
            code = proc.wait()
    if code != 0:
        raise RuntimeError(f"{' '.join(map(str, command))} failed ({code}); see {log}")
    return {"wall_s": round(time.perf_counter() - started, 2), "peak_rss_mb": dict(sorted(sampler.peaks.items())),
            "max_open_files": sampler.max_open_files}


def dsdocre(*args) -> list[str]:
    return [sys.executable, "-m", "dsdocre.cli", *map(str, args)]


# ---- the corpus and the models ------------------------------------------------------------------
def prepare(work: Path, sizes: list[int], log) -> dict:
    """The largest corpus once (synth), its prefixes, the tiny encoder and a rank model trained on it."""
    from dsdocre.synth import generate_corpus
    from dsdocre.testing import tiny_bert

    corpus = work / "corpus"
    if not (corpus / "train_distant.json").is_file():
        log(f"synth: {max(sizes)} distant documents")
        generate_corpus(corpus, 60, 3, dev_docs=20, test_docs=0, distant_docs=max(sizes), progress=False)
    docs = None
    for n in sizes:
        prefix = work / f"distant-{n}.json"
        if not prefix.is_file():
            docs = docs or json.loads((corpus / "train_distant.json").read_text())
            prefix.write_text(json.dumps(docs[:n]))
    encoder = work / "encoder"
    if not (encoder / "config.json").is_file():
        encoder.mkdir(parents=True, exist_ok=True)
        tiny_bert(encoder)
    rank_model = work / "rank_model"
    if not (rank_model / "model").is_dir():
        log("rank model: the tiny encoder trained for one epoch on the synthetic annotated documents")
        subprocess.run(dsdocre("denoise", "train", "--encoder", encoder, "--set", f"data.train={corpus / 'train_annotated.json'}",
                               "--set", f"data.valid={corpus / 'dev.json'}", "--set", "training.epochs=1",
                               "--set", "model.pair_dim=16", "--set", "model.window_overlap=8",
                               "--output-dir", rank_model), cwd=ROOT, env=environment(), check=True,
                       stdout=subprocess.DEVNULL)
    return {"encoder": encoder, "rank_model": rank_model / "model"}


# ---- the loader alone ---------------------------------------------------------------------------
def loader_child(pairs: str, shards: str, encoder: str, world: int, workers: int, min_pairs: int) -> None:
    """In a child process: rank 0 of ``world`` builds the loader, its first step, then walks whole
    epochs until it has read at least ``min_pairs`` pairs (one epoch of a small rank share takes
    less than a second: too short to time against a larger one)."""
    import resource

    import torch

    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.data.pretrain_data import PairBatches
    from dsdocre.data.pretrain_examples import DocumentStore

    class WalkingBatches(PairBatches):
        """The loader with its step building replaced, once ``walk`` is set, by reading each pair
        record and both its documents and kept labels: the memory the loader's own structures
        take (indexes, orders, open shards), not that of a batch's tensors."""

        walk = False

        def build_step(self, epoch, batch, samples):
            if not self.walk:
                return super().build_step(epoch, batch, samples)
            if self._store is None:
                self._store = DocumentStore(self.shard_dir, self.scored_dir)
            for s, i in samples:
                record = json.loads(self.stream.read(s, i)["pair.json"])
                for side in ("a", "b"):
                    self._store.document(record[side]["shard"], record[side]["key"])
                    self._store.kept(record[side]["shard"], record[side]["key"])
            return len(samples)

    torch.set_num_threads(1)
    tokenizer, _ = load_tokenizer(encoder, 128)
    t0 = time.perf_counter()
    batches = WalkingBatches(pairs, shards, tokenizer, micro_batch=2, rank=0, world=world, seed=0, workers=workers)
    constructed = time.perf_counter() - t0
    first = next(batches._build(1, 0, 0, 1))  # a real step, in this process: examples built and collated
    first_step = time.perf_counter() - t0
    batches.walk = True  # before the loader workers start (they are forks of this process)
    walked, epochs = 0, 0
    while epochs == 0 or walked < min_pairs:
        walked += sum(batches)  # every sample of this rank's epoch: records, documents and kept labels read
        batches.stream.advance(batches.steps_per_epoch())  # on to the next epoch (its own order)
        epochs += 1
    walk_s = time.perf_counter() - t0 - first_step
    batches.close()
    print(json.dumps({"construct_s": round(constructed, 3), "first_step_s": round(first_step, 3),
                      "walk_s": round(walk_s, 4), "pairs_walked": walked, "epochs_walked": epochs,
                      "first_step_pairs": first.pairs,
                      "max_rss_mb_self": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))


def measure_loader(work: Path, pairs: Path, shards: Path, encoder: Path, world: int, workers: int,
                  min_pairs: int) -> dict:
    log = work / "logs" / f"loader-{pairs.name}-w{world}-k{workers}.txt"
    command = [sys.executable, "-m", "benchmarks.scale", "--_loader", str(pairs), str(shards), str(encoder),
               str(world), str(workers), str(min_pairs)]
    result = run_sampled(command, log, OMP_NUM_THREADS="1")
    numbers = json.loads(log.read_text().strip().splitlines()[-1])
    return {**numbers, **result}


# ---- the launcher -------------------------------------------------------------------------------
def _pretrain_args(pairs: Path, shards: Path, encoder: Path, out: Path, *extra: str) -> list[str]:
    ds = json.loads((ROOT / "configs/deepspeed/pretrain_zero2.json").read_text())
    ds.update(train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=1)
    ds_json = out.parent / f"{out.name}-zero2.json"
    ds_json.write_text(json.dumps(ds))
    sets = [f"data.pairs={pairs}", f"data.shards={shards}", f"model.encoder={encoder}", "model.window_overlap=8",
            "model.pair_dim=16", f"training.deepspeed={ds_json}", "model.encoder_dropout=0.0",
            "training.log_every=1", "training.warmup_ratio=0.0", "training.log_samples=true", *extra]
    return [x for s in sets for x in ("--set", s)] + ["--output-dir", str(out)]


def launch(args: list[str], log: Path, port: int) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(["bash", "launch/deepspeed_pretrain.sh", *args], cwd=ROOT, stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True,
                                env=environment(NUM_PROCS="2", MASTER_PORT=str(port), OMP_NUM_THREADS="1",
                                                PYTHON=sys.executable))


def measure_startup(work: Path, size: int, pairs: Path, shards: Path, encoder: Path, port: int,
                    repeats: int) -> dict:
    """``repeats`` launches of 2 steps; per rank, the median of each phase's end (a start takes 7-9 s
    on this machine, and one launch varies by about a second: imports, the process group)."""
    runs = []
    peaks: dict[str, float] = {}
    max_open = 0
    for repeat in range(repeats):
        out = work / "runs" / f"startup-{size}"
        shutil.rmtree(out, ignore_errors=True)
        out.parent.mkdir(parents=True, exist_ok=True)
        args = _pretrain_args(pairs, shards, encoder, out, "training.max_steps=2", "training.checkpoints=false")
        log = work / "logs" / f"startup-{size}.txt"
        proc = launch(args, log, port + 100 * repeat)
        with TreeSampler(proc.pid) as sampler:
            code = proc.wait()
        if code != 0:
            raise RuntimeError(f"the launcher failed ({code}); see {log}")
        runs.append({f"rank{r}": json.loads((out / "startup" / f"rank-{r}.json").read_text()) for r in range(2)})
        for kind, mb in sampler.peaks.items():
            peaks[kind] = max(peaks.get(kind, 0.0), mb)
        max_open = max(max_open, sampler.max_open_files)
    ranks = {}
    for rank in runs[0]:
        phases = runs[0][rank]["seconds_since_process_start"]
        ranks[rank] = {p: round(statistics.median(r[rank]["seconds_since_process_start"][p] for r in runs), 3)
                       for p in phases}
        ranks[rank]["hash_s"] = round(statistics.median(r[rank].get("hash_s", 0.0) for r in runs), 3)
    return {"ranks": ranks, "repeats": repeats,
            "first_step_each": {rank: [r[rank]["seconds_since_process_start"]["first_step"] for r in runs]
                                for rank in runs[0]},
            "peak_rss_mb": dict(sorted(peaks.items())), "max_open_files": max_open}


def _step_keys(out: Path) -> dict[int, list]:
    keys: dict[int, list] = {}
    for rank in range(2):
        for line in (out / "samples" / f"rank-{rank}.jsonl").read_text().splitlines():
            record = json.loads(line)
            keys.setdefault(record["step"], []).extend(record["keys"])
    return keys


def kill_and_resume(work: Path, pairs: Path, shards: Path, encoder: Path, steps: int, kill_at: int,
                    port: int, log_fn) -> dict:
    from benchmarks.kill_resume import final_weights, kill_at_step, same_weights

    runs = work / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    extra = (f"training.max_steps={steps}", f"training.checkpoint_every={kill_at // 2 or 1}",
             "training.keep_checkpoints=2")
    whole, cut = runs / "whole", runs / "cut"
    for folder in (whole, cut):
        shutil.rmtree(folder, ignore_errors=True)
    log = work / "logs" / "kill_resume.txt"
    log_fn(f"launch: {steps} steps undisturbed")
    proc = launch(_pretrain_args(pairs, shards, encoder, whole, *extra), log, port)
    with TreeSampler(proc.pid) as sampler:
        if proc.wait() != 0:
            raise RuntimeError(f"the undisturbed run failed; see {log}")
    whole_launch = {"ranks": {}, "repeats": 1, "from": "the undisturbed run of the kill/resume test",
                    "peak_rss_mb": dict(sorted(sampler.peaks.items())), "max_open_files": sampler.max_open_files}
    for r in range(2):
        startup = json.loads((whole / "startup" / f"rank-{r}.json").read_text())
        whole_launch["ranks"][f"rank{r}"] = {**startup["seconds_since_process_start"], "hash_s": startup["hash_s"]}
    log_fn(f"launch: killed with SIGKILL after step {kill_at}, then resumed")
    killed = kill_at_step(launch(_pretrain_args(pairs, shards, encoder, cut, *extra), log, port + 1), cut, kill_at,
                          0.05)
    if launch(_pretrain_args(pairs, shards, encoder, cut, *extra), log, port + 2).wait() != 0:
        raise RuntimeError(f"the resumed run failed; see {log}")
    a, b = _step_keys(whole), _step_keys(cut)
    seen_a = Counter(k for keys in a.values() for k in keys)
    seen_b = Counter(k for keys in b.values() for k in keys)
    resumed = json.loads((cut / "startup" / "rank-0.json").read_text())["seconds_since_process_start"]
    return {"identical": killed and same_weights(final_weights(whole), final_weights(cut)) and a == b,
            "killed": killed, "steps": steps, "kill_at": kill_at,
            "repeated": sum((seen_b - seen_a).values()), "missed": sum((seen_a - seen_b).values()),
            "resume_startup_rank0": resumed, "whole_launch": whole_launch}


# ---- the stages, per size -------------------------------------------------------------------------
def stage_row(work: Path, name: str, command: list[str], count_of, unit: str, **env) -> dict:
    log = work / "logs" / f"{name}.txt"
    result = run_sampled(command, log, **env)
    count = count_of()
    result.update({unit: count, f"{unit}_per_s": round(count / result["wall_s"], 1)})
    return result


def run_size(work: Path, size: int, models: dict, wide_cap: int | None, layout: dict, log,
             data_rows: dict | None = None) -> dict:
    """One size: the data stages (or, ``data_rows``, their rows from an earlier run whose folders are
    still in ``work``), then the loader over each pair set."""
    row = dict(data_rows) if data_rows else run_data_stages(work, size, models, wide_cap, layout, log)
    shards = work / f"shards-{size}"
    for name in ("fact_join", "fact_join_wide"):
        if name not in row:
            continue
        folder = work / (f"pairs-{size}" if name == "fact_join" else f"pairs-{size}-wide")
        # the wide pair set (the pair load of ~1M documents): the extremes only, for time
        layouts = layout["loader_layouts"]
        if name != "fact_join":  # 2 layouts of 4 (full run), 1 of 2 (--small: CI's time)
            layouts = [layouts[0], layouts[-1]] if len(layouts) > 2 else layouts[:1]
        for world, workers in dict.fromkeys(layouts):
            log(f"[{size}] loader over {folder.name}: rank 0 of {world}, {workers} loader workers")
            row.setdefault(f"loader_{name.removeprefix('fact_join').strip('_') or 'default'}", {})[
                f"world{world}_workers{workers}"] = measure_loader(work, folder, shards, models["encoder"], world,
                                                                   workers, layout["min_walk_pairs"])
    return row


def warm_up(work: Path, models: dict, layout: dict, log) -> None:
    """Shard and score 1,000 documents once, unmeasured: the first Ray start and model load after
    the machine sat idle (cold binaries, libraries and page cache) would otherwise be charged to the
    smallest size alone and make the larger ones look faster per document than they are."""
    warm = work / "warmup"
    shutil.rmtree(warm, ignore_errors=True)
    warm.mkdir(parents=True)
    first = next(p for p in sorted(work.glob("distant-*.json"), key=lambda p: int(p.stem.split("-")[1])))
    (warm / "docs.json").write_text(json.dumps(json.loads(first.read_text())[:1000]))
    log("warm-up: shard and score 1,000 documents (not measured)")
    for command in (dsdocre("shard", "--input", warm / "docs.json", "--out", warm / "shards", "--encoder",
                            models["encoder"], "--workers", layout["stage_workers"], "--docs-per-shard",
                            layout["docs_per_shard"], "--no-progress"),
                    dsdocre("denoise", "score", "--model", models["rank_model"], "--shards", warm / "shards",
                            "--out", warm / "scored", "--keep", 20, "--workers", layout["stage_workers"],
                            "--no-progress")):
        subprocess.run(command, cwd=ROOT, env=environment(OMP_NUM_THREADS="1"), check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shutil.rmtree(warm, ignore_errors=True)


def run_data_stages(work: Path, size: int, models: dict, wide_cap: int | None, layout: dict, log) -> dict:
    from dsdocre.data import manifest as mf

    row: dict = {}
    shards, scored, pairs = work / f"shards-{size}", work / f"scored-{size}", work / f"pairs-{size}"
    for folder in (shards, scored, pairs):
        shutil.rmtree(folder, ignore_errors=True)
    log(f"[{size}] shard")
    row["shard"] = stage_row(work, f"shard-{size}", dsdocre("shard", "--input", work / f"distant-{size}.json", "--out", shards,
                                                            "--encoder", models["encoder"],
                                                            "--workers", layout["stage_workers"],
                                                            "--docs-per-shard", layout["docs_per_shard"],
                                                            "--no-progress"),
                             lambda: mf.load(shards)["counts"]["sharded"], "docs")
    manifest = mf.load(shards)
    row["shard"].update(files=len(manifest["shards"]), rejected=manifest["counts"]["rejected"])
    log(f"[{size}] denoise score --keep 20")
    row["score"] = stage_row(work, f"score-{size}", dsdocre("denoise", "score", "--model", models["rank_model"],
                                                            "--shards", shards, "--out", scored, "--keep", 20,
                                                            "--workers", layout["stage_workers"], "--no-progress"),
                             lambda: mf.load(scored, "dsdocre-scored", 2)["counts"]["scored"], "docs")
    log(f"[{size}] fact-join")
    pair_sets = [("fact_join", pairs, [])]
    if wide_cap:
        pair_sets.append(("fact_join_wide", work / f"pairs-{size}-wide", ["--max-pairs-per-fact", wide_cap]))
    for name, folder, extra in pair_sets:
        shutil.rmtree(folder, ignore_errors=True)
        row[name] = stage_row(work, f"{name}-{size}", dsdocre("fact-join", "--shards", shards, "--out", folder,
                                                              "--kept", scored, "--workers", layout["stage_workers"],
                                                              "--pairs-per-shard", layout["pairs_per_shard"], *extra),
                              lambda folder=folder: mf.load(folder, "dsdocre-pairs")["counts"]["pairs"], "pairs")
        manifest = mf.load(folder, "dsdocre-pairs")
        row[name].update(files=len(manifest["shards"]), facts=manifest["counts"]["facts"])
    return row


def summarize(sizes: list[int], rows: dict, resume: dict | None) -> dict:
    small, large = str(min(sizes)), str(max(sizes))
    rss_growth, throughput = {}, {}
    marginal = {}
    for stage, unit in (("shard", "docs"), ("score", "docs"), ("fact_join", "pairs")):
        throughput[stage] = round(rows[large][stage][f"{unit}_per_s"] / rows[small][stage][f"{unit}_per_s"], 3)
        # Wall throughput includes each run's fixed start (Ray, imports, the model): it flatters the
        # largest size. The marginal rate between consecutive sizes has no fixed part: its ratio,
        # last interval over first, is the test for a stage whose cost grows faster than its input.
        if len(sizes) >= 3:
            rates = []
            for n0, n1 in zip(sizes, sizes[1:]):
                r0, r1 = rows[str(n0)][stage], rows[str(n1)][stage]
                dt = r1["wall_s"] - r0["wall_s"]
                rates.append((r1[unit] - r0[unit]) / dt if dt > 0 else None)
            marginal[stage] = round(rates[-1] / rates[0], 3) if None not in rates and rates[0] else None
        for kind, mb in rows[large][stage]["peak_rss_mb"].items():
            if kind in rows[small][stage]["peak_rss_mb"]:
                rss_growth[f"{stage}/{kind}"] = round(mb / rows[small][stage]["peak_rss_mb"][kind], 3)
    for layout in rows[large]["loader_default"]:
        a, b = rows[small]["loader_default"][layout], rows[large]["loader_default"][layout]
        for kind in b["peak_rss_mb"]:
            if kind in a["peak_rss_mb"]:
                rss_growth[f"loader {layout}/{kind}"] = round(b["peak_rss_mb"][kind] / a["peak_rss_mb"][kind], 3)
        throughput[f"loader {layout} walk"] = round((b["pairs_walked"] / max(b["walk_s"], 1e-4)) /
                                                    (a["pairs_walked"] / max(a["walk_s"], 1e-4)), 3)
    for kind in rows[large]["launch"]["peak_rss_mb"]:
        if kind in rows[small]["launch"]["peak_rss_mb"]:
            rss_growth[f"launch/{kind}"] = round(rows[large]["launch"]["peak_rss_mb"][kind]
                                                 / rows[small]["launch"]["peak_rss_mb"][kind], 3)
    first_step = {r: {str(n): rows[str(n)]["launch"]["ranks"][r]["first_step"] for n in sizes}
                  for r in ("rank0", "rank1")}
    # The loader's memory per document and per pair: rank 0 of 2 without workers, its peak RSS
    # against the corpus (default cap), and at the largest size against the pair count (wide cap).
    base = "world2_workers0"
    rss = {n: rows[str(n)]["loader_default"][base]["peak_rss_mb"]["loader"] for n in sizes}
    pairs = {n: rows[str(n)]["fact_join"]["pairs"] for n in sizes}
    per_pair = None
    if "loader_wide" in rows[large]:
        wide = rows[large]["loader_wide"][base]["peak_rss_mb"]["loader"]
        extra_pairs = rows[large]["fact_join_wide"]["pairs"] - pairs[max(sizes)]
        per_pair = round((wide - rss[max(sizes)]) * 2**20 / extra_pairs, 2) if extra_pairs > 0 else None
    docs_delta = max(sizes) - min(sizes)
    per_doc_total = (rss[max(sizes)] - rss[min(sizes)]) * 2**20
    per_doc = round((per_doc_total - (per_pair or 0) * (pairs[max(sizes)] - pairs[min(sizes)])) / docs_delta, 2)
    return {"rss_growth": rss_growth, "throughput_ratio": throughput, "marginal_throughput_ratio": marginal,
            "first_step_s": first_step,
            "loader_bytes_per_doc": per_doc, "loader_bytes_per_pair": per_pair,
            "resume": {k: resume[k] for k in ("identical", "repeated", "missed")} if resume else None}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000, 100_000])
    parser.add_argument("--wide-cap", type=int, default=64,
                        help="--max-pairs-per-fact of the second join at the largest size (many more pairs)")
    parser.add_argument("--steps", type=int, default=60, help="launcher run on the largest pair set")
    parser.add_argument("--docs-per-shard", type=int, default=1000, help="dsdocre shard --docs-per-shard")
    parser.add_argument("--stage-workers", type=int, default=2,
                        help="--workers of shard, denoise score and fact-join (Ray; 0 = in-process)")
    parser.add_argument("--pairs-per-shard", type=int, default=10_000, help="dsdocre fact-join --pairs-per-shard")
    parser.add_argument("--kill-at", type=int, default=30, help="SIGKILL once rank 0 logged this step")
    parser.add_argument("--small", action="store_true", help="a few hundred documents (CI): 150 and 450, 8 steps")
    parser.add_argument("--work", default=None, help="working folder (default: a fresh temporary one)")
    parser.add_argument("--out", default=str(RESULT))
    parser.add_argument("--port", type=int, default=29841)
    parser.add_argument("--reuse-rows", action="store_true",
                        help="keep the sizes an earlier run in --work measured (its rows.json); run the rest")
    parser.add_argument("--reuse-data", action="store_true",
                        help="keep the data stages' rows and folders of an earlier run in --work (rows.json); "
                             "measure the loader, the launcher start-up and the kill/resume again")
    parser.add_argument("--startup-repeats", type=int, default=3,
                        help="launches per size for the start-up (the median of each phase is reported)")
    parser.add_argument("--min-walk-pairs", type=int, default=4000,
                        help="the loader walks whole epochs of its rank's share until it has read this many pairs")
    parser.add_argument("--_loader", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._loader:
        pairs, shards, encoder, world, workers, min_pairs = args._loader
        loader_child(pairs, shards, encoder, int(world), int(workers), int(min_pairs))
        return 0
    layout = {"docs_per_shard": args.docs_per_shard, "pairs_per_shard": args.pairs_per_shard,
              "loader_layouts": LOADER_LAYOUTS, "stage_workers": args.stage_workers,
              "min_walk_pairs": args.min_walk_pairs, "startup_repeats": args.startup_repeats}
    if args.small:  # too few pairs for 16 ranks: the world of 2 only; the data stages in-process (no Ray start)
        args.sizes, args.steps, args.kill_at, args.wide_cap = [150, 450], 8, 4, 16
        layout = {"docs_per_shard": 50, "pairs_per_shard": 100, "loader_layouts": [(2, 0), (2, 2)], "stage_workers": 0,
                  "min_walk_pairs": 0, "startup_repeats": 1}
    sizes = sorted(set(args.sizes))
    threads = pin_threads(1)  # "1 worker" is one core: Ray workers and ranks each get one thread
    import tempfile

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="dsdocre-scale-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    models = prepare(work, sizes, log)
    if not args.small and not args.reuse_data:
        warm_up(work, models, layout, log)
    rows, port = {}, args.port
    saved = json.loads((work / "rows.json").read_text()) if args.reuse_rows and (work / "rows.json").is_file() else {}
    if args.reuse_data and (work / "rows.json").is_file():
        saved_data = json.loads((work / "rows.json").read_text())
    else:
        saved_data = {}
    reused_data = []
    for n in sizes:
        if "launch" in saved.get(str(n), {}):  # measured by an earlier run of this command in --work
            log(f"[{n}] reusing the rows measured earlier ({work / 'rows.json'})")
            rows[str(n)] = saved[str(n)]
            continue
        data_rows = {k: v for k, v in saved_data.get(str(n), {}).items()
                     if k in ("shard", "score", "fact_join", "fact_join_wide")} or None
        if data_rows:
            log(f"[{n}] reusing the data stages' rows and folders of an earlier run ({work / 'rows.json'})")
            reused_data.append(str(n))
        rows[str(n)] = run_size(work, n, models, args.wide_cap if n == max(sizes) else None, layout, log, data_rows)
        if args.small and n == max(sizes):  # CI's time: the kill/resume test's undisturbed run serves
            continue
        log(f"[{n}] launcher start-up (2 processes, ZeRO-2, 2 steps) x {layout['startup_repeats']}")
        rows[str(n)]["launch"] = measure_startup(work, n, work / f"pairs-{n}", work / f"shards-{n}", models["encoder"],
                                                 port, layout["startup_repeats"])
        port += 1
        (work / "rows.json").write_text(json.dumps(rows, indent=1))  # what is measured so far, should a later size fail
    large = max(sizes)
    pairs_large = work / f"pairs-{large}-wide" if args.wide_cap else work / f"pairs-{large}"
    resume = kill_and_resume(work, pairs_large, work / f"shards-{large}", models["encoder"], args.steps,
                             args.kill_at, port, log)
    whole_launch = resume.pop("whole_launch")
    if "launch" not in rows[str(large)]:  # --small: the largest size's start-up is the undisturbed run's
        rows[str(large)]["launch"] = whole_launch
    result = {"sizes": sizes, **{str(n): rows[str(n)] for n in sizes}, **summarize(sizes, rows, resume),
              "kill_resume": resume, "layout": layout, "reused_rows": sorted(saved), "reused_data_rows": reused_data,
              "threads": threads, "work": str(work),
              "machine": machine_info(f"python -m benchmarks.scale {' '.join(sys.argv[1:])}".strip()),
              "note": "tiny random BERT (packaged tokenizer) as rank model and encoder: the data path's cost, "
                      "not the encoder's; RSS in MiB, peak over a sampling every 0.5 s"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"wrote {shown(args.out)}")
    return 0


def print_table(result: dict) -> None:
    sizes = result["sizes"]
    print(f"{'stage':<12}" + "".join(f"{n:>22}" for n in sizes))
    for stage, unit in (("shard", "docs"), ("score", "docs"), ("fact_join", "pairs")):
        cells = [f"{result[str(n)][stage][f'{unit}_per_s']:>9.1f} {unit}/s {max(result[str(n)][stage]['peak_rss_mb'].values()):>5.0f}MB"
                 for n in sizes]
        print(f"{stage:<12}" + "".join(f"{c:>22}" for c in cells))
    print("throughput ratio (largest / smallest):", result["throughput_ratio"])
    print("RSS growth (largest / smallest):", result["rss_growth"])
    print("first step (s since process start):", result["first_step_s"])
    print("resume:", result["resume"])


if __name__ == "__main__":
    raise SystemExit(main())
