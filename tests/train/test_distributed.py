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
