"""Kill-and-resume stress test: pre-training under the deepspeed launcher (2 CPU processes, ZeRO-2)
killed with SIGKILL at random moments, again and again, then run to its end; the final weights are
compared with an undisturbed run's, bit for bit, and the sample log says whether any document pair
was seen twice or never in an epoch.

    python -m benchmarks.kill_resume [--kills 20] [--seed 0] [--epochs 4]

* The run: ``dsdocre pretrain`` on a tiny random BERT (``dsdocre.testing.tiny_bert``: what is tested is
  DeepSpeed's checkpoint and the loop's state, not the encoder) over the synthetic corpus's 15
  fact-joined document pairs, global batch 2 (8 steps an epoch), ``--epochs`` epochs, a checkpoint
  every ``--checkpoint-every`` steps, every rank logging the pair keys of each step it trains.
* A kill: the whole process group (launcher and both ranks) gets SIGKILL once rank 0 has logged a
  step drawn at random from the next few, plus a random delay of up to ``--max-delay`` seconds
  (so kills land inside steps and inside checkpoint writes). One kill in five is instead injected
  inside a checkpoint write (``DSDOCRE_FAULT=kill-after-checkpoint-files@N``: every file written,
  no checksums, ``latest`` not moved).
* After the kills, one more start runs to the end. ``identical``: every tensor of the final
  checkpoint equals the undisturbed run's (``torch.equal``). ``samples_repeated`` /
  ``samples_missed``: over the sample logs (what the resumed runs kept: a killed run's steps after
  its checkpoint are redone, and their log lines with them), pair keys seen more than once in an
  epoch, and pairs of an epoch never seen.

The tests (``tests/train/test_faults.py``) drive the same functions with two kills.
Writes ``benchmarks/results/kill_resume.json`` (and its rows go into docs/reliability.md through
``benchmarks/fault_table.py``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOTAL_PAIRS = 15  # the workspace's fact-joined document pairs
GLOBAL_BATCH = 2


# ---- the workspace: a tiny BERT, its shards and pairs ------------------------------------------
def build_workspace(root: Path) -> Path:
    """Distant synthetic documents sharded for the tests' tiny random BERT and fact-joined."""
    from dsdocre.synth import generate_corpus
    from dsdocre.testing import tiny_bert
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    if (root / "pairs" / "manifest.json").is_file():
        return root
    (root / "encoder").mkdir(parents=True, exist_ok=True)
    encoder = tiny_bert(root / "encoder")
    generate_corpus(root / "corpus", 4, 11, dev_docs=1, test_docs=1, distant_docs=120, progress=False)
    shard_corpus([root / "corpus" / "train_distant.json"], root / "shards", docs_per_shard=30, encoder=encoder,
                 workers=0, progress=False, log=None)
    fact_join(root / "shards", root / "pairs", workers=0, log=None)
    return root


def deepspeed_json(root: Path, stage: int, micro: int, accumulation: int) -> Path:
    cfg = json.loads((ROOT / "configs/deepspeed" / f"pretrain_zero{stage}.json").read_text())
    cfg.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation)
    cfg["optimizer"]["params"]["lr"] = 1e-4
    path = root / f"zero{stage}_{micro}x{accumulation}.json"
    path.write_text(json.dumps(cfg))
    return path


def settings(root: Path, ds_json: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"data.pairs={root / 'pairs'}", f"data.shards={root / 'shards'}", f"model.encoder={root / 'encoder'}",
            "model.window_overlap=8", "model.pair_dim=16", f"training.deepspeed={ds_json}",
            "model.encoder_dropout=0.0", "examples.blank_prob=0.3", "training.log_every=1",
            "training.warmup_ratio=0.0", "training.log_samples=true", *extra]
    return [x for s in sets for x in ("--set", s)] + ["--output-dir", str(out)]


def environment(procs: int, port: int, **extra: str) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", "NUM_PROCS": str(procs), "MASTER_PORT": str(port),
            "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            **extra}


def start(args: list[str], procs: int, port: int, log: Path, **env: str) -> subprocess.Popen:
    """The launcher (``procs`` > 0) or one plain process, in its own process group, output to ``log``."""
    command = ["bash", "launch/deepspeed_pretrain.sh", *args] if procs else \
        [sys.executable, "-m", "dsdocre.cli", "pretrain", *args]
    with open(log, "ab") as f:
        return subprocess.Popen(command, cwd=ROOT, env=environment(max(procs, 1), port, **env), stdout=f,
                                stderr=subprocess.STDOUT, start_new_session=True)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> int:
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise RuntimeError(f"run did not finish in {timeout}s; see {log}")


def wait_for_group(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Wait until every process of ``proc``'s group has exited (the launcher may exit before its
    ranks do: on SIGTERM it returns once the first rank is gone)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes of group {proc.pid} still running after {timeout}s")
        time.sleep(0.05)


def run(args: list[str], procs: int, port: int, log: Path, **env: str) -> int:
    return finish(start(args, procs, port, log, **env), log)


def steps_logged(out: Path, since: float = 0.0) -> int:
    """The last step rank 0 has logged (lines of its sample log), counting only a log written
    after ``since`` (a resumed run first cuts the log back to its checkpoint's step)."""
    path = out / "samples" / "rank-0.jsonl"
    try:
        return len(path.read_text().splitlines()) if path.stat().st_mtime >= since else 0
    except FileNotFoundError:
        return 0


def kill_at_step(proc: subprocess.Popen, out: Path, step: int, delay: float, timeout: float = 600) -> bool:
    """SIGKILL the whole process group ``delay`` seconds after rank 0 logged step ``step`` in this
    start; False when the run ended first."""
    started = time.time()
    deadline = time.monotonic() + timeout
    while steps_logged(out, started) < step:
        if proc.poll() is not None:
            return False
        if time.monotonic() > deadline:
            raise RuntimeError(f"step {step} not reached in {timeout}s")
        time.sleep(0.02)
    time.sleep(delay)
    if proc.poll() is not None:
        return False
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return True


# ---- what a finished run is ---------------------------------------------------------------------
def final_weights(out: Path) -> dict:
    import torch

    latest = (out / "checkpoints" / "latest").read_text().strip()
    return torch.load(out / "checkpoints" / latest / "mp_rank_00_model_states.pt", weights_only=False)["module"]


def same_weights(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def max_difference(a: dict, b: dict) -> float:
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def sample_accounting(out: Path, world: int, epochs: int, total: int = TOTAL_PAIRS) -> dict:
    """Pair keys per epoch over every rank's sample log: how many were seen more than once, how
    many never (0 and 0: each pair exactly once per epoch)."""
    seen: dict[int, Counter] = {e: Counter() for e in range(1, epochs + 1)}
    for rank in range(world):
        for line in (out / "samples" / f"rank-{rank}.jsonl").read_text().splitlines():
            record = json.loads(line)
            seen[record["epoch"]].update(record["keys"])
    repeated = sum(n - 1 for c in seen.values() for n in c.values() if n > 1)
    missed = sum(total - len(c) for c in seen.values())
    return {"repeated": repeated, "missed": missed}


# ---- the stress loop ----------------------------------------------------------------------------
def kill_and_resume(root: Path, out: Path, ds_json: Path, kills: int, rng: random.Random, *, procs: int = 2,
                    port: int = 29711, epochs: int = 2, checkpoint_every: int = 2, max_delay: float = 0.15,
                    save_kill_every: int = 5, log=print) -> list[dict]:
    """Start, kill and restart the run until ``kills`` kills landed, then run it to its end.
    Returns one record per kill (at which step, how, from which step the next start resumed)."""
    total_steps = epochs * -(-TOTAL_PAIRS // GLOBAL_BATCH)
    args = settings(root, ds_json, out, f"training.epochs={epochs}", f"training.checkpoint_every={checkpoint_every}",
                    "training.keep_checkpoints=2")
    records: list[dict] = []
    attempts = 0
    while len(records) < kills:
        attempts += 1
        if attempts > 4 * kills + 10:
            raise RuntimeError("the run kept finishing before it could be killed: use more epochs")
        resumed_from = _latest_step(out)
        torn = save_kill_every and (len(records) + 1) % save_kill_every == 0
        if torn:  # inside the next checkpoint write after the resumed step
            at = (resumed_from // checkpoint_every + 1) * checkpoint_every
            if at >= total_steps:
                torn = False
        if torn:
            proc = start(args, procs, port, out.parent / "log.txt", DSDOCRE_FAULT=f"kill-after-checkpoint-files@{at}")
            code = finish(proc, out.parent / "log.txt")
            landed = code != 0 and _latest_step(out) == resumed_from
            how = f"SIGKILL inside the checkpoint write of step {at} (every file written, no checksums yet)"
        else:
            at = rng.randint(resumed_from + 1, min(resumed_from + 2 * checkpoint_every, total_steps - 1))
            delay = rng.uniform(0, max_delay)
            landed = kill_at_step(start(args, procs, port, out.parent / "log.txt"), out, at, delay)
            how = f"SIGKILL {delay:.2f}s after step {at} was logged"
        port += 1
        if not landed:
            log(f"  the run ended before the kill at step {at}; trying again")
            continue
        records.append({"kill": len(records) + 1, "step": at, "how": how, "resumed_from": resumed_from,
                        "checkpoint_after": _latest_step(out)})
        log(f"  kill {len(records)}: {how}; resumed from step {resumed_from}, newest checkpoint now "
            f"step {records[-1]['checkpoint_after']}")
    code = run(args, procs, port, out.parent / "log.txt")
    if code != 0:
        raise RuntimeError(f"the final start failed ({code}); see {out.parent / 'log.txt'}")
    return records


def _latest_step(out: Path) -> int:
    latest = out / "checkpoints" / "latest"
    return int(latest.read_text().strip()[len("step"):]) if latest.is_file() else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--checkpoint-every", type=int, default=2)
    parser.add_argument("--max-delay", type=float, default=0.15)
    parser.add_argument("--workdir", default="/tmp/dsdocre_kill_resume")
    args = parser.parse_args()

    from benchmarks._common import machine_info

    import shutil

    work = Path(args.workdir)
    root = build_workspace(work / "workspace")
    ds_json = deepspeed_json(root, 2, 1, 1)
    for name in ("reference", "killed"):
        shutil.rmtree(work / name, ignore_errors=True)
        (work / name).mkdir(parents=True)
    started = time.time()
    machine = machine_info()
    print(f"undisturbed reference: 2 processes, ZeRO-2, {args.epochs} epochs")
    reference_args = settings(root, ds_json, work / "reference" / "run", f"training.epochs={args.epochs}",
                              f"training.checkpoint_every={args.checkpoint_every}", "training.keep_checkpoints=1")
    if run(reference_args, 2, 29700, work / "reference" / "log.txt") != 0:
        raise SystemExit(f"the reference run failed; see {work / 'reference' / 'log.txt'}")
    print(f"killed {args.kills} times:")
    records = kill_and_resume(root, work / "killed" / "run", ds_json, args.kills, random.Random(args.seed),
                              epochs=args.epochs, checkpoint_every=args.checkpoint_every, max_delay=args.max_delay)
    reference, killed = final_weights(work / "reference" / "run"), final_weights(work / "killed" / "run")
    accounting = sample_accounting(work / "killed" / "run", 2, args.epochs)
    reference_accounting = sample_accounting(work / "reference" / "run", 2, args.epochs)
    result = {
        "kills": len(records),
        "identical": same_weights(reference, killed),
        "max_abs_difference": max_difference(reference, killed),
        "samples_repeated": accounting["repeated"],
        "samples_missed": accounting["missed"],
        "reference_samples": reference_accounting,
        "world_size": 2,
        "zero_stage": 2,
        "epochs": args.epochs,
        "steps": args.epochs * -(-TOTAL_PAIRS // GLOBAL_BATCH),
        "checkpoint_every": args.checkpoint_every,
        "kills_inside_checkpoint_writes": sum("checkpoint write" in r["how"] for r in records),
        "records": records,
        "wall_seconds": round(time.time() - started, 1),
        "machine": machine,
        "command": machine["command"],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"\n| kills | inside a checkpoint write | identical weights | samples repeated | samples missed |\n"
          f"|---|---|---|---|---|\n| {result['kills']} | {result['kills_inside_checkpoint_writes']} | "
          f"{result['identical']} | {result['samples_repeated']} | {result['samples_missed']} |")
    path = ROOT / "benchmarks" / "results" / "kill_resume.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
