"""dsdocre.train.distributed: the environment a training process prepares before DeepSpeed starts."""

from __future__ import annotations

import os
import sys


def test_the_ninja_beside_the_interpreter_builds_deepspeed_ops(tmp_path, monkeypatch):
    """prepare_environment puts the interpreter's own bin folder (with the ninja DeepSpeed installed)
    first on PATH: a system ninja of another version would discard the op build cache, and the ops
    would recompile on every switch between the two."""
    from dsdocre.train import distributed

    own_bin = tmp_path / "venv" / "bin"
    own_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(own_bin / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("RANK", "0")  # (the rest of prepare_environment is not tested here)
    distributed.prepare_environment()
    assert os.environ["PATH"] == "/usr/bin:/bin"  # no ninja beside it: PATH left alone

    (own_bin / "ninja").write_text("")
    distributed.prepare_environment()
    distributed.prepare_environment()  # idempotent: not prepended twice
    assert os.environ["PATH"] == f"{own_bin}:/usr/bin:/bin"


class FakeCuda:
    """torch.cuda as a machine with ``count`` GPUs shows it, recording the calls in order."""

    def __init__(self, monkeypatch, count: int = 4, capability: tuple[int, int] = (9, 0)):
        import torch

        self.calls, self.device, self.rng = [], 0, None
        for name, fn in {"is_available": lambda: True, "device_count": lambda: count,
                         "set_device": self.set_device, "current_device": lambda: self.device,
                         "get_device_capability": lambda *a: self.record("capability") or capability,
                         "is_bf16_supported": lambda *a, **k: self.record("bf16?") or True,
                         "get_rng_state": lambda *a: self.record("get_rng") or torch.arange(4, dtype=torch.uint8),
                         "set_rng_state": lambda state, *a: self.record("set_rng", state.tolist())}.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def record(self, *call) -> None:
        self.calls.append(call)

    def set_device(self, device: int) -> None:
        self.device = device
        self.record("set_device", device)


def _as_rank(monkeypatch, local_rank: int) -> None:
    monkeypatch.setenv("RANK", str(local_rank))
    monkeypatch.setenv("LOCAL_RANK", str(local_rank))
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)


def test_each_rank_selects_its_gpu_before_any_cuda_query(monkeypatch):
    """prepare_environment sets the GPU from LOCAL_RANK first; the precision query and every
    collective's tensor then land on that GPU, not on GPU 0 of every rank (NCCL's duplicate-GPU
    error on every multi-GPU resume)."""
    import torch
    import torch.distributed as dist

    from dsdocre.train import distributed
    from dsdocre.train.engine import apply_precision

    cuda = FakeCuda(monkeypatch)
    _as_rank(monkeypatch, 3)
    distributed.prepare_environment()
    assert cuda.calls == [("set_device", 3)]
    assert "DS_ACCELERATOR" not in os.environ  # DeepSpeed picks its CUDA accelerator
    assert apply_precision({}, "auto")["bf16"]["enabled"]
    assert cuda.calls == [("set_device", 3), ("capability",)]  # asked of GPU 3, after it was selected
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_backend", lambda *a: "nccl")
    assert distributed.collective_device() == torch.device("cuda", 3)


def test_precision_auto_is_bf16_only_where_the_gpu_has_it(monkeypatch):
    from dsdocre.train.engine import apply_precision

    FakeCuda(monkeypatch, capability=(7, 0))  # a V100: bf16 emulated, slow; fp16 with a loss scaler
    chosen = apply_precision({}, "auto")
    assert chosen["fp16"]["enabled"] and not chosen["bf16"]["enabled"]
    FakeCuda(monkeypatch, capability=(8, 0))  # an A100
    chosen = apply_precision({}, "auto")
    assert chosen["bf16"]["enabled"] and not chosen["fp16"]["enabled"]


def test_more_processes_than_gpus_is_a_clear_error(monkeypatch):
    import pytest

    from dsdocre.errors import UserError
    from dsdocre.train import distributed

    FakeCuda(monkeypatch, count=2)
    _as_rank(monkeypatch, 2)
    with pytest.raises(UserError, match="local rank 2 has no GPU: this node has 2"):
        distributed.prepare_environment()


def test_a_cpu_only_torch_on_a_gpu_machine_says_so(monkeypatch, capsys, tmp_path):
    import torch

    from dsdocre.train import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.version, "cuda", None)
    real_glob = distributed.Path.glob
    monkeypatch.setattr(distributed.Path, "glob", lambda self, pattern: (
        [tmp_path / "nvidia0", tmp_path / "nvidia1"] if str(self) == "/dev" else real_glob(self, pattern)))
    _as_rank(monkeypatch, 0)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    distributed.prepare_environment()
    err = capsys.readouterr().err
    assert "2 NVIDIA GPU(s) but torch" in err and "is a CPU-only build: training runs on the CPU" in err
    assert os.environ["DS_ACCELERATOR"] == "cpu"


def test_checkpoints_carry_the_gpu_rng(monkeypatch):
    """With CUDA, a checkpoint's RNG state holds the GPU generator too and a resume restores it
    (dropout on a GPU draws from it)."""
    from dsdocre.train.checkpoint import rng_state, set_rng_state

    cuda = FakeCuda(monkeypatch)
    state = rng_state()
    assert state["cuda"].tolist() == [0, 1, 2, 3]
    set_rng_state(state)
    assert ("set_rng", [0, 1, 2, 3]) in cuda.calls
