"""The device check's CPU mode (what CI runs, so that the script a GPU window runs cannot rot):
every CUDA-only check is skipped with its reason, every other check passes, and the result file
has the keys the GPU issue reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_the_device_check_runs_in_cpu_mode(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--mode", "cpu", "--out", str(out),
                           "--work", str(tmp_path / "work")], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["mode"] == "cpu" and result["device"]
    from benchmarks.gpu_check import CHECKS

    by_name = {c["name"]: c for c in result["checks"]}
    assert list(by_name) == [name for name, _, _ in CHECKS]
    for name, cuda_only, _ in CHECKS:
        check = by_name[name]
        assert {"name", "status", "reason", "seconds"} <= set(check)
        assert (check["status"], check["reason"]) == (("skipped", "no CUDA") if cuda_only else ("passed", "")), check
    assert by_name["pretrain_zero2_killed_and_resumed"]["identical"] is True
    assert by_name["finetune_then_predict"]["loaded_dtypes"] == ["torch.float32"]
    assert by_name["pair_kernels"]["max_relative_error"]["factored_float32"] < 1e-4
