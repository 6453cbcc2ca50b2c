"""Shared fixtures. Tests run offline on the packaged encoder and never need a GPU."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

# Tiny random encoders (no download), built by the package's helpers for tests and benchmarks;
# tests import them from here.
from dsdocre.testing import tiny_bert, tiny_roberta  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def encoder_dir() -> str:
    from dsdocre.data.encoding import default_encoder_dir

    return default_encoder_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "redocred" / "train.json").exists():
        pytest.skip(f"real data not present at {SHARED_DATA} (only CI and developers have ../shared)")
    return SHARED_DATA


# ---- several processes under the deepspeed launcher ----------------------------------------------
def launch_stage(stage: str, *args, procs: int = 2, port: int = 29617):
    """``launch/deepspeed_stage.sh STAGE ARGS`` with ``procs`` processes on this machine (CPU, gloo)."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "NUM_PROCS": str(procs), "MASTER_PORT": str(port),
           "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "launch/deepspeed_stage.sh", stage, *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def deepspeed_config(tmp_path: Path, name: str, micro: int, accumulation: int, base: str = "finetune_zero2.json") -> Path:
    """A copy of ``configs/deepspeed/BASE`` with another micro-batch and accumulation."""
    import json

    cfg = json.loads((ROOT / "configs/deepspeed" / base).read_text())
    cfg.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation)
    (tmp_path / name).write_text(json.dumps(cfg))
    return tmp_path / name


def assert_same_saved_weights(model_a: Path, model_b: Path) -> None:
    """Two saved models (``save_pretrained`` layout) hold the same non-empty tensors, to float tolerance."""
    from safetensors.torch import load_file

    for pattern in ("heads.safetensors", "encoder/*.safetensors"):
        a, b = (load_file(str(next(m.glob(pattern)))) for m in (model_a, model_b))
        assert a.keys() == b.keys() and a, pattern
        for name in a:
            assert torch.allclose(a[name].float(), b[name].float(), atol=2e-5, rtol=1e-4), f"{pattern}: {name}"


# ---- the fault table (docs/reliability.md) ------------------------------------------------------
@pytest.fixture
def fault_record(request):
    """``fault_record(fault=..., how=..., times=N, outcome=..., lost=0)``: a fault this test tried
    and what happened, appended to the JSON-lines file named by ``DSDOCRE_FAULT_LOG`` (set by
    ``python -m benchmarks.fault_table``, which builds docs/reliability.md from it). Call it after the
    test's assertions: a failing test records nothing. Without the variable it does nothing."""
    import json

    def record(*, fault: str, how: str, times: int, outcome: str, lost: int | str = 0) -> None:
        path = os.environ.get("DSDOCRE_FAULT_LOG")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"fault": fault, "how": how, "times": times, "outcome": outcome,
                                    "lost": lost, "test": request.node.nodeid}) + "\n")

    return record
