"""Pre-training throughput on CPU: ZeRO stage 1, 2 and 3, with 1 and 2 processes, same global batch.

    python -m benchmarks.pretrain_throughput [--steps 12] [--skip 2] [--docs 400]

* Data: the synthetic distant corpus (``--docs`` documents), sharded and fact-joined with the
  packaged encoder's tokenizer (139 document pairs for 400 documents); no pre-denoising (the
  throughput does not depend on which labels are positives).
* Model: the packaged MiniLM (6 layers, d = 384) with the three task heads, fp32.
* Each configuration is a real ``dsdocre pretrain`` run under ``launch/deepspeed_pretrain.sh``
  (``NUM_PROCS`` = 1 or 2; one thread per process, so one process is one core) with a global
  batch of 4 document pairs: 1 process x micro-batch 2 x accumulation 2, or 2 processes x
  micro-batch 2. ``--steps`` optimizer steps; the first ``--skip`` are left out (start-up).
* From the run's ``metrics.jsonl`` (rank 0, one line per step): tokens/s and document pairs/s
  (real tokens of both documents of every pair, all ranks), the step time split (data wait,
  forward, backward, optimizer step), and rank 0's peak resident memory.
* Also ZeRO-2 at the paper's pre-training batch of 16 pairs (``--large-steps`` steps): the gradient
  exchange per step is the same, the compute per step 4x.
* The baseline in the same run is ZeRO-1 with 1 process; ratios: 2 processes over 1 per stage.
  Beside it, two independent 1-process runs at once (no communication): what two processes get
  from this machine at all, i.e. the ceiling of the 2-over-1 ratio here.
* Same seed, encoder dropout off: every configuration sees the same global batches, so all six
  should follow one loss curve; the largest difference from ZeRO-1 / 1 process over the run is
  reported (the issue's bar: the same loss within 1e-3 after 20 steps).

On a machine with CUDA (``--gpu``, the default there) it measures instead, under the launcher with
one process per GPU: random BERT-base-sized weights (12 layers, d 768, windows of up to 512 tokens)
in bf16 through ``configs/deepspeed/pretrain_zero2_gpu.json`` (micro-batch 8, 2 loader workers), with
model FLOPs utilization (``benchmarks/flops.py``: 6N + 12 L s d per token, written out there; the
encoder only, so a lower bound). Without CUDA ``gpu`` is null with the reason.
Writes ``benchmarks/results/pretrain_throughput.json``.
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

from benchmarks._common import machine_info, random_bert_base, synthetic_pairs

ROOT = Path(__file__).resolve().parents[1]


def command(root: Path, stage: int, procs: int, steps: int, port: int, name: str,
            global_batch: int = 4) -> tuple[list[str], dict, Path]:
    """A ``dsdocre pretrain`` run under the launcher: micro-batch 2, accumulation to ``global_batch``."""
    cfg = json.loads((ROOT / "configs/deepspeed" / f"pretrain_zero{stage}.json").read_text())
    cfg.update(train_micro_batch_size_per_gpu=2, gradient_accumulation_steps=global_batch // (2 * procs))
    cfg["tensorboard"] = {"enabled": False}
    ds = root / f"{name}.json"
    ds.write_text(json.dumps(cfg))
    out = root / f"run_{name}"
    sets = [f"data.pairs={root / 'pairs'}", f"data.shards={root / 'shards'}", f"training.deepspeed={ds}",
            f"training.max_steps={steps}", "training.log_every=1", "training.checkpoints=false",
            "training.threads=1", "training.resume=false", "model.encoder_dropout=0.0"]
    env = {**os.environ, "NUM_PROCS": str(procs), "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "RAYON_RS_NUM_CPUS": "1", "TOKENIZERS_PARALLELISM": "false",
           "DS_ACCELERATOR": "cpu", "PYTHON": sys.executable, "HF_HUB_OFFLINE": "1"}
    args = ["bash", "launch/deepspeed_pretrain.sh", *[x for s in sets for x in ("--set", s)], "--output-dir", str(out)]
    return args, env, out


def run_config(root: Path, stage: int, procs: int, steps: int, port: int, global_batch: int = 4) -> list[dict]:
    args, env, out = command(root, stage, procs, steps, port, f"zero{stage}_p{procs}_b{global_batch}", global_batch)
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"zero{stage} procs {procs} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def run_independent_pair(root: Path, steps: int, port: int) -> list[list[dict]]:
    """Two single-process ZeRO-1 runs at once, no communication between them: what two processes
    can do on this machine at all (shared memory bandwidth and caches), the ceiling for 2 vs 1."""
    runs = [command(root, 1, 1, steps, port + i, f"independent_{i}") for i in range(2)]
    procs = [subprocess.Popen(a, cwd=ROOT, env=e, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for a, e, _ in runs]
    for p in procs:
        output = p.communicate()[0]
        if p.returncode != 0:
            raise SystemExit(f"independent run failed:\n{output[-3000:]}")
    return [[json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()] for _, _, out in runs]


def summarize(records: list[dict], skip: int) -> dict:
    kept = records[skip:]
    seconds = sum(r["seconds"] for r in kept)
    tokens = sum(r["tokens"] for r in kept)
    pairs = sum(r["pairs_per_s"] * r["seconds"] for r in kept)
    split = {k: round(sum(r[f"{k}_fraction"] * r["seconds"] for r in kept) / seconds, 4)
             for k in ("data_wait", "forward", "backward", "optimizer")}
    return {"tokens_per_s": round(tokens / seconds, 1), "pairs_per_s": round(pairs / seconds, 3),
            "step_seconds": round(seconds / len(kept), 3), "data_wait_fraction": split["data_wait"],
            "time_split": split, "peak_rss_mb": round(max(r["peak_rss_mb"] for r in records), 1),
            "steps_measured": len(kept), "tokens_per_step": round(tokens / len(kept), 1),
            "losses": [round(r["loss"], 6) for r in records]}


def run_gpu(root: Path, steps: int, skip: int, port: int) -> dict:
    """BERT-base-sized random weights in bf16 on every GPU of this machine: tokens/s and MFU."""
    import torch

    from benchmarks.flops import mfu

    gpus = torch.cuda.device_count()
    encoder = random_bert_base(root / "bert_base")
    cfg = json.loads((ROOT / "configs/deepspeed/pretrain_zero2_gpu.json").read_text())
    cfg["tensorboard"] = {"enabled": False}
    (root / "gpu.json").write_text(json.dumps(cfg))
    out = root / "run_gpu"
    sets = [f"data.pairs={root / 'pairs'}", f"data.shards={root / 'shards'}", f"training.deepspeed={root / 'gpu.json'}",
            f"model.encoder={encoder}", "data.loader_workers=2", "training.precision=bf16",
            f"training.max_steps={steps}", "training.epochs=1000", "training.log_every=1", "training.checkpoints=false",
            "training.resume=false"]
    env = {k: v for k, v in os.environ.items() if k not in ("DS_ACCELERATOR", "OMP_NUM_THREADS")}
    env.update(NUM_PROCS=str(gpus), MASTER_PORT=str(port), PYTHON=sys.executable, HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false")
    args = ["bash", "launch/deepspeed_pretrain.sh", *[x for s in sets for x in ("--set", s)], "--output-dir", str(out)]
    proc = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"GPU run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    summary = summarize(records, skip)
    kept = records[skip:]
    docs = 2 * sum(r["pairs_per_s"] * r["seconds"] for r in kept)  # two documents per pair
    window = min(512, sum(r["tokens"] for r in kept) / max(docs, 1))  # mean document length, capped at a window
    encoder_config = json.loads((Path(encoder) / "config.json").read_text())
    name = torch.cuda.get_device_name(0)
    return {"device": name, "gpus": gpus, "model": "random BERT-base-sized encoder + MM/RD/RA heads, bf16",
            "micro_batch": cfg["train_micro_batch_size_per_gpu"], **summary,
            "mean_document_tokens": round(window, 1),
            "mfu": mfu(summary["tokens_per_s"] / gpus, encoder_config, round(window), name)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the measure (start-up)")
    parser.add_argument("--large-steps", type=int, default=6, help="steps of the global-batch-16 runs")
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/pretrain_throughput.json"))
    parser.add_argument("--gpu", action=argparse.BooleanOptionalAction, default=None,
                        help="measure on the GPUs (default: when CUDA is there); --no-gpu: the CPU table")
    args = parser.parse_args()
    import torch

    if args.gpu is None:
        args.gpu = torch.cuda.is_available()
    if args.gpu:  # the GPU entry of the result file (the CPU table, measured on a CPU machine, is kept)
        out = Path(args.out)
        result = json.loads(out.read_text()) if out.is_file() else {"cpu": None}
        result.pop("gpu_note", None)
        with tempfile.TemporaryDirectory(prefix="pretrain_bench_") as tmp:
            synthetic_pairs(Path(tmp), args.docs, docs_per_shard=100)
            result["gpu"] = run_gpu(Path(tmp), args.steps, args.skip, 29690)
        result["gpu"]["machine"] = machine_info()
        result["gpu"]["command"] = result["gpu"]["machine"]["command"]
        g = result["gpu"]
        print(f"{g['device']} x {g['gpus']}: {g['tokens_per_s']:.0f} tokens/s, step {g['step_seconds']:.3f} s, "
              f"data wait {g['data_wait_fraction']:.3f}; MFU {g['mfu']['mfu']}")
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.out}")
        return 0
    machine = machine_info()
    result = {"machine": machine, "command": machine["command"],
              "setup": {"model": "packaged all-MiniLM-L6-v2 + MM/RD/RA heads, fp32", "global_batch_pairs": 4,
                        "steps": args.steps, "skipped_steps": args.skip, "threads_per_process": 1,
                        "peak_rss_mb": "rank 0's peak resident memory (each process holds about as much)"},
              "cpu": {}, "gpu": None, "gpu_note": "no CUDA on this machine: the GPU table was not measured"}
    with tempfile.TemporaryDirectory(prefix="pretrain_bench_") as tmp:
        root = Path(tmp)
        synthetic_pairs(root, args.docs, docs_per_shard=100)
        port = 29700
        for stage in (1, 2, 3):
            row = {}
            for procs in (1, 2):
                t0 = time.perf_counter()
                row[f"procs_{procs}"] = summarize(run_config(root, stage, procs, args.steps, port), args.skip)
                row[f"procs_{procs}"]["wall_seconds"] = round(time.perf_counter() - t0, 1)
                port += 1
            row["procs_2_over_1"] = round(row["procs_2"]["tokens_per_s"] / row["procs_1"]["tokens_per_s"], 3)
            result["cpu"][f"zero{stage}"] = row
        independent_runs = run_independent_pair(root, args.steps, port + 10)
        # The paper's pre-training batch (16 pairs): the same gradient exchange per step, 4x the compute
        large = {f"procs_{p}": summarize(run_config(root, 2, p, args.large_steps, port + 20 + p, 16),
                                         args.skip if args.large_steps > args.skip + 2 else 1)
                 for p in (1, 2)}
    # Same seed, no dropout, same global batches: every configuration should follow one loss curve.
    reference = result["cpu"]["zero1"]["procs_1"]["losses"]
    result["loss_at_last_step"] = {f"{stage}_{procs}": row[procs]["losses"][-1]
                                   for stage, row in result["cpu"].items() for procs in ("procs_1", "procs_2")}
    result["max_loss_difference_vs_zero1_procs_1"] = {
        key: round(max(abs(a - b) for a, b in zip(reference, result["cpu"][key.rsplit("_procs", 1)[0]][
            "procs_" + key.rsplit("_", 1)[1]]["losses"])), 6) for key in result["loss_at_last_step"]}
    independent = [summarize(r, args.skip) for r in independent_runs]
    both = round(sum(r["tokens_per_s"] for r in independent), 1)
    result["independent_pair"] = {
        "what": "two single-process ZeRO-1 runs at once, no communication: the machine's ceiling for 2 processes",
        "tokens_per_s_total": both, "runs": independent,
        "over_one_process": round(both / result["cpu"]["zero1"]["procs_1"]["tokens_per_s"], 3)}
    large["procs_2_over_1"] = round(large["procs_2"]["tokens_per_s"] / large["procs_1"]["tokens_per_s"], 3)
    result["zero2_global_batch_16"] = large
    base = result["cpu"]["zero1"]["procs_1"]["tokens_per_s"]
    for stage, row in result["cpu"].items():
        row["procs_1_over_zero1"] = round(row["procs_1"]["tokens_per_s"] / base, 3)
    print(f"{'config':<14}{'tokens/s':>10}{'pairs/s':>9}{'step s':>8}{'wait':>7}{'fwd':>7}{'bwd':>7}{'opt':>7}{'RSS MB':>8}")
    for stage, row in result["cpu"].items():
        for procs in ("procs_1", "procs_2"):
            r = row[procs]
            t = r["time_split"]
            print(f"{stage + ' ' + procs:<14}{r['tokens_per_s']:>10.1f}{r['pairs_per_s']:>9.3f}{r['step_seconds']:>8.2f}"
                  f"{t['data_wait']:>7.3f}{t['forward']:>7.3f}{t['backward']:>7.3f}{t['optimizer']:>7.3f}"
                  f"{r['peak_rss_mb']:>8.0f}")
        print(f"{stage}: 2 processes / 1 = {row['procs_2_over_1']:.2f}x")
    print(f"ZeRO-2 at the paper's global batch of 16 pairs: 1 process {large['procs_1']['tokens_per_s']:.1f}, "
          f"2 processes {large['procs_2']['tokens_per_s']:.1f} tokens/s = {large['procs_2_over_1']:.2f}x")
    print(f"two independent 1-process runs at once: {result['independent_pair']['tokens_per_s_total']:.1f} tokens/s "
          f"= {result['independent_pair']['over_one_process']:.2f}x one process (the machine's ceiling for 2)")
    print("loss at the last step:", result["loss_at_last_step"])
    print("largest loss difference from zero1 procs_1 over the run:", result["max_loss_difference_vs_zero1_procs_1"])
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
