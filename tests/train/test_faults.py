"""Faults during training, tried for real: pre-training under the deepspeed launcher (2 CPU
processes, ZeRO-2, a tiny random BERT) killed with SIGKILL at random steps and inside a checkpoint
write, stopped by SIGTERM, resumed from a corrupted checkpoint, resumed on another number of
processes, and fed non-finite losses. Each ends with the weights of an undisturbed run (bit for
bit; allclose across world sizes) and every document pair seen once per epoch.

The harness (start, kill at a step, compare) is ``benchmarks/kill_resume.py``'s, whose stress run
does the same 20 times. Each test records what it tried for docs/reliability.md (``fault_record``).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

from benchmarks import kill_resume as kr  # noqa: E402

EPOCHS = 2
STEPS = EPOCHS * 8  # 15 pairs, global batch 2


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return kr.build_workspace(tmp_path_factory.mktemp("faults"))


@pytest.fixture(scope="module")
def zero2(workspace):
    return kr.deepspeed_json(workspace, 2, 1, 1)


def _args(workspace, ds_json, out, *extra):
    return kr.settings(workspace, ds_json, out, f"training.epochs={EPOCHS}", "training.checkpoint_every=2",
                       "training.keep_checkpoints=2", *extra)


@pytest.fixture(scope="module")
def reference(workspace, zero2, tmp_path_factory):
    """The undisturbed run: 2 processes, ZeRO-2, 2 epochs."""
    out = tmp_path_factory.mktemp("reference") / "run"
    code = kr.run(_args(workspace, zero2, out), 2, 29801, out.parent / "log.txt")
    assert code == 0, (out.parent / "log.txt").read_text()[-3000:]
    assert kr.sample_accounting(out, 2, EPOCHS) == {"repeated": 0, "missed": 0}
    return kr.final_weights(out)


def _log(out: Path) -> str:
    return (out.parent / "log.txt").read_text()


def _assert_like_reference(out: Path, reference: dict) -> None:
    assert kr.same_weights(reference, kr.final_weights(out)), "the resumed run's weights differ"
    assert kr.sample_accounting(out, 2, EPOCHS) == {"repeated": 0, "missed": 0}
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), "metrics lost or repeated across the starts"


@pytest.mark.slow
def test_sigkill_at_random_steps_resumes_exactly(workspace, zero2, reference, tmp_path, fault_record):
    """Two SIGKILLs (launcher and both ranks) at random steps, each start resuming from the newest
    checkpoint: the final weights are the undisturbed run's, bit for bit."""
    out = tmp_path / "run"
    kills = kr.kill_and_resume(workspace, out, zero2, 2, random.Random(7), port=29811, epochs=EPOCHS,
                               save_kill_every=0, log=lambda *_: None)
    assert len(kills) == 2 and all(k["resumed_from"] < k["step"] for k in kills)
    assert "resuming from" in _log(out)
    _assert_like_reference(out, reference)
    fault_record(fault="SIGKILL during a step", how="launcher and both ranks (2 processes, ZeRO-2) killed at "
                 "random steps, then started again", times=len(kills),
                 outcome="final weights bit-identical to an undisturbed run; each pair once per epoch")


@pytest.mark.slow
def test_sigkill_inside_a_checkpoint_write_resumes_from_the_previous(workspace, zero2, reference, tmp_path,
                                                                     fault_record):
    """Killed after DeepSpeed wrote every file of step 6's checkpoint but before its checksums:
    `latest` still names step 4, the resume reads step 4, and the next save removes the torn folder."""
    out = tmp_path / "run"
    code = kr.run(_args(workspace, zero2, out), 2, 29821, out.parent / "log.txt",
                  DSDOCRE_FAULT="kill-after-checkpoint-files@6")
    assert code != 0
    ckpt = out / "checkpoints"
    assert (ckpt / "latest").read_text() == "step00000004"
    assert (ckpt / "step00000006" / "mp_rank_00_model_states.pt").is_file()  # DeepSpeed's files are there...
    assert not (ckpt / "step00000006" / "dsdocre_checksums.json").exists()  # ...but never verified
    assert kr.run(_args(workspace, zero2, out), 2, 29822, out.parent / "log.txt") == 0
    assert f"resuming from {ckpt / 'step00000004'}" in _log(out)
    _assert_like_reference(out, reference)
    fault_record(fault="SIGKILL during a checkpoint write", how="every rank killed after DeepSpeed's files, before "
                 "the checksums and `latest` (DSDOCRE_FAULT)", times=1,
                 outcome="resumed from the previous checkpoint; final weights bit-identical")


@pytest.mark.slow
def test_sigterm_checkpoints_and_a_corrupted_checkpoint_is_refused(workspace, zero2, reference, tmp_path,
                                                                   fault_record):
    """SIGTERM to every process (as a preempting scheduler sends it): the ranks agree, checkpoint
    the step they are at and exit. Then that checkpoint is corrupted (one byte of rank 1's
    optimizer partition): the resume refuses it, says why, and continues from the one before;
    the run still ends with the undisturbed weights."""
    out = tmp_path / "run"
    proc = kr.start(_args(workspace, zero2, out), 2, 29831, out.parent / "log.txt")
    started = time.time()
    while kr.steps_logged(out, started) < 5:
        assert proc.poll() is None, _log(out)[-3000:]
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=120)
    kr.wait_for_group(proc, timeout=120)  # every rank gone: bounded by the step in flight and one checkpoint
    log = _log(out)
    assert "stopped on SIGTERM after step" in log, log[-3000:]
    stopped = int(log.split("stopped on SIGTERM after step ")[1].split(";")[0])
    folder = out / "checkpoints" / f"step{stopped:08d}"
    assert (out / "checkpoints" / "latest").read_text() == folder.name  # saved at the step it stopped
    assert kr.steps_logged(out) == stopped
    fault_record(fault="SIGTERM (preemption)", how="SIGTERM to the launcher and both ranks mid-run", times=1,
                 outcome=f"all ranks stopped after step {stopped} with a verified checkpoint of it, exit code 143")

    victim = folder / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    assert kr.run(_args(workspace, zero2, out), 2, 29832, out.parent / "log.txt") == 0
    log = _log(out)
    assert f"checkpoint {folder} refused: {victim} fails its sha256 check" in log
    assert "resuming from the older checkpoint" in log
    _assert_like_reference(out, reference)
    fault_record(fault="corrupted checkpoint", how="one byte flipped in a rank's ZeRO optimizer partition of the "
                 "newest checkpoint", times=1,
                 outcome="refused by its sha256 with the file named; resumed from the previous checkpoint; "
                 "final weights bit-identical")


@pytest.mark.slow
def test_resume_on_another_number_of_processes(workspace, zero2, reference, tmp_path, fault_record):
    """2 processes -> 1 process (accumulation 2: the same global batch) -> 2 processes, through
    DeepSpeed's universal checkpoint: every pair once per epoch, and the weights of the
    undisturbed 2-process run up to summation order."""
    out = tmp_path / "run"
    one = kr.deepspeed_json(workspace, 2, 1, 2)
    stop_soon = "training.max_train_minutes=0.0001"  # stops (and checkpoints) after the first step of a start
    assert kr.run(_args(workspace, zero2, out, stop_soon), 2, 29841, out.parent / "log.txt") == 0
    assert kr.run(_args(workspace, one, out, stop_soon), 0, 29842, out.parent / "log.txt") == 0
    assert kr.run(_args(workspace, zero2, out), 2, 29843, out.parent / "log.txt") == 0
    log = _log(out)
    assert "written by 2 processes, read through DeepSpeed's universal checkpoint" in log
    assert "written by 1 processes, read through DeepSpeed's universal checkpoint" in log
    assert "rank 1 has no RNG state" in log
    keys = _all_keys(out)  # the 1-process start logged its whole global batches as rank 0
    for epoch in range(1, EPOCHS + 1):
        assert sorted(keys[epoch]) == sorted(set(keys[epoch])) and len(keys[epoch]) == kr.TOTAL_PAIRS
    difference = kr.max_difference(reference, kr.final_weights(out))
    assert difference < 1e-4, difference
    # a changed global batch is refused, not silently re-cut
    bad = kr.deepspeed_json(workspace, 2, 1, 1)
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain",
                           *_args(workspace, bad, out, "training.epochs=3")], cwd=ROOT,
                          env=kr.environment(1, 29844), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2 and "global batch of 2 samples, this run's is 1" in proc.stderr, proc.stderr[-2000:]
    fault_record(fault="resume on another world size", how="2 processes -> 1 (accumulation 2) -> 2, ZeRO-2, "
                 "DeepSpeed universal checkpoint", times=2,
                 outcome=f"each pair once per epoch; largest weight difference from the undisturbed run "
                 f"{difference:.1e}; a changed global batch refused with the numbers")


def _all_keys(out: Path) -> dict[int, list[str]]:
    keys: dict[int, list[str]] = {e: [] for e in range(1, EPOCHS + 1)}
    for path in sorted((out / "samples").glob("rank-*.jsonl")):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            keys[record["epoch"]] += record["keys"]
    return keys


@pytest.mark.slow
def test_non_finite_losses_are_skipped_then_stop_the_run(workspace, tmp_path, fault_record):
    """One process: a NaN loss at step 3 is skipped (weights untouched, counted in metrics); NaN
    at every step from 3 stops the run after 3 in a row with exit code 3, a clear message and a
    checkpoint whose weights are those before the fault."""
    one = kr.deepspeed_json(workspace, 2, 2, 1)
    out = tmp_path / "once"
    code = kr.run(_args(workspace, one, out, "training.epochs=1", "training.checkpoint_every=1",
                        "training.keep_checkpoints=10"), 0, 29851, out.parent / "log.txt", DSDOCRE_FAULT="nan-loss@3")
    assert code == 0, _log(out)[-3000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["skipped_steps"] for m in metrics] == [0, 0] + [1] * 6
    weights = {s: _weights(out, s) for s in (2, 3, 4)}
    assert kr.same_weights(weights[2], weights[3]) and not kr.same_weights(weights[3], weights[4])
    assert all(bool(v.isfinite().all()) for v in weights[4].values() if v.is_floating_point())

    out = tmp_path / "always"
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain",
                           *_args(workspace, one, out, "training.epochs=1", "training.checkpoint_every=1",
                                  "training.keep_checkpoints=10", "training.max_skipped_steps=3")],
                          cwd=ROOT, env=kr.environment(1, 29852, DSDOCRE_FAULT="nan-loss@3-99"),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "stopped after 3 steps in a row with a non-finite loss or gradient (step 5" in proc.stderr
    assert (out / "checkpoints" / "latest").read_text() == "step00000005"
    assert kr.same_weights(_weights(out, 2), _weights(out, 5))
    again = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain",  # the fault gone: resumed
                            *_args(workspace, one, out, "training.epochs=1", "training.checkpoint_every=1",
                                   "training.keep_checkpoints=10", "training.max_skipped_steps=3")],
                           cwd=ROOT, env=kr.environment(1, 29853), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, 9))
    assert [m["skipped_steps"] for m in metrics] == [0, 0, 1, 2, 3, 3, 3, 3]  # the count survives the resume
    fault_record(fault="non-finite loss", how="NaN loss injected at one step, then at every step (1 process, ZeRO-2)",
                 times=4, outcome="each such step skipped and counted; 3 in a row stop the run (exit 3) with a "
                 "checkpoint holding the weights from before the fault")


def _weights(out: Path, step: int) -> dict:
    import torch

    return torch.load(out / "checkpoints" / f"step{step:08d}" / "mp_rank_00_model_states.pt",
                      weights_only=False)["module"]


def test_a_damaged_exported_model_is_refused(tmp_path, fault_record):
    """The exported encoder carries checksums: a flipped byte is refused with the file named, and
    a swap killed between its two renames is repaired on the next read."""
    from conftest import tiny_bert

    from dsdocre.data.encoding import resolve_encoder_dir
    from dsdocre.errors import UserError
    from dsdocre.savedir import write_atomically

    source = tmp_path / "source"
    source.mkdir()
    tiny_bert(source)
    folder = tmp_path / "encoder"
    write_atomically(lambda tmp: [(tmp / p.name).write_bytes(p.read_bytes()) for p in source.iterdir()], folder)
    assert resolve_encoder_dir(str(folder)) == str(folder)
    weights = folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(UserError, match="model.safetensors fails its sha256 check"):
        resolve_encoder_dir(str(folder))
    weights.write_bytes(data[:-100])
    with pytest.raises(UserError, match="bytes"):
        resolve_encoder_dir(str(folder))
    folder.rename(folder.with_name("encoder.old"))  # killed between the renames of a swap
    with pytest.raises(UserError):  # recovered, then still refused: the old copy was the damaged one
        resolve_encoder_dir(str(folder))
    assert folder.is_dir()
    fault_record(fault="corrupted exported model", how="a byte flipped / the file truncated in the exported "
                 "encoder; a swap killed between its renames", times=3,
                 outcome="refused with the file named; the interrupted swap repaired")


def test_step_control_decides_saves_and_stops():
    """The per-step decision (one process): checkpoint every N steps and every M minutes; SIGTERM
    turns into a save and a stop at the next step, not into death; non-finite steps in a row stop."""
    from dsdocre.train.config import TrainingConfig
    from dsdocre.train.control import StepControl

    previous = signal.getsignal(signal.SIGTERM)
    control = StepControl(TrainingConfig(checkpoint_every=3, checkpoint_every_minutes=0.5, max_skipped_steps=2))
    try:
        assert control.decide(1, False) == (False, False, "")
        assert control.decide(3, False) == (False, True, "")  # every 3 steps
        control.last_save -= 31  # half a minute since the last save
        assert control.decide(4, False) == (False, True, "")
        control.saved()
        assert control.decide(5, False, applied=False) == (False, False, "")  # one skipped step
        assert control.decide(6, False, applied=False) == (True, True, "nonfinite")  # two in a row
        assert control.skipped_total == 2
        os.kill(os.getpid(), signal.SIGTERM)  # handled: the process lives on
        assert control.decide(7, False) == (True, True, "sigterm")
        assert control.interrupted(7, "sigterm", True).exit_code == 143
    finally:
        control.close()
    assert signal.getsignal(signal.SIGTERM) == previous  # the handler is put back


def test_the_resumed_checkpoint_is_the_newest_that_verifies(tmp_path):
    """Which checkpoint a resume reads (one process, files only): `latest` when it verifies; the
    newest older one that verifies when `latest` is damaged; never a torn folder newer than
    `latest`; an error when none verifies; a complete checkpoint of an older dsdocre (no checksums)
    with a warning."""
    from dsdocre.errors import UserError
    from dsdocre.savedir import write_checksums
    from dsdocre.train.checkpoint import plan_resume

    ckpt = tmp_path / "checkpoints"

    def make(step: int, checksums: bool = True) -> Path:
        folder = ckpt / f"step{step:08d}"
        folder.mkdir(parents=True)
        for name in ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_optim_states.pt", "rng-rank0.pt"):
            (folder / name).write_bytes(os.urandom(64))
        if checksums:
            write_checksums(folder, step=step, world_size=1, zero_stage=2)
        return folder

    make(2), make(4)
    (ckpt / "latest").write_text("step00000004")
    make(6, checksums=False)  # a torn save newer than `latest`
    assert plan_resume(tmp_path).step == 4
    optim = ckpt / "step00000004" / "zero_pp_rank_0_mp_rank_00_optim_states.pt"
    optim.write_bytes(optim.read_bytes()[:-1] + b"\x00")
    plan = plan_resume(tmp_path)
    assert plan.step == 2 and not plan.universal
    (ckpt / "step00000002" / "rng-rank0.pt").unlink()
    with pytest.raises(UserError, match="no checkpoint under .* passes verification .*rng-rank0.pt is missing"):
        plan_resume(tmp_path)
    legacy = tmp_path / "legacy"
    ckpt = legacy / "checkpoints"
    make(8, checksums=False)
    (ckpt / "latest").write_text("step00000008")
    assert plan_resume(legacy).step == 8


_SKIP_SCRIPT = r"""
import json, sys, torch
from dsdocre.train import distributed
distributed.prepare_environment()
from dsdocre.train.config import TrainingConfig
from dsdocre.train.engine import build_engine, optimizer_step
results = {}
for stage in (0, 2):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    ds = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1, "gradient_clipping": 1.0,
          "optimizer": {"type": "AdamW", "params": {"lr": 0.1, "torch_adam": True}},
          "zero_optimization": {"stage": stage}, "steps_per_print": 10**6}
    engine = build_engine(model, TrainingConfig(warmup_ratio=0.0), ds, steps_per_epoch=1000)
    before = [p.detach().clone() for p in engine.module.parameters()]
    x = torch.ones(1, 4)
    engine.backward(engine(x).sum() * float("nan"))
    skipped = not optimizer_step(engine, boundary=True)
    unchanged = all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))
    engine.backward(engine(x).sum())
    applied = optimizer_step(engine, boundary=True)
    moved = not all(torch.equal(a, b) for a, b in zip(before, engine.module.parameters()))
    finite = all(bool(p.isfinite().all()) for p in engine.module.parameters())
    results[stage] = [skipped, unchanged, applied, moved, finite]
print(json.dumps(results))
"""


def test_a_non_finite_step_is_skipped_with_and_without_zero():
    """``optimizer_step`` on a NaN loss: without ZeRO (stage 0, dsdocre's own check) and under ZeRO-2
    (DeepSpeed's): the step reports not applied and the weights stay; the next finite step applies."""
    proc = subprocess.run([sys.executable, "-c", _SKIP_SCRIPT], cwd=ROOT, env=kr.environment(1, 29861),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == {"0": [True] * 5, "2": [True] * 5}, results
