"""A checkpoint that does not fit on its disk: one line that says which path ran out of space, how
much the checkpoint needed and how much is free, and that the previous checkpoint stands; the torn
folder is removed and ``latest`` still names the previous one (one process, a stand-in engine)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dsdocre import fsio
from dsdocre.errors import UserError
from dsdocre.savedir import verify_folder
from dsdocre.train import checkpoint


class StandInEngine:
    """Writes the files DeepSpeed writes for one process; ``fail`` makes the next save raise after
    half of them, as torch's writer does when the disk fills."""

    def __init__(self):
        self.fail: BaseException | None = None

    def zero_optimization_stage(self) -> int:
        return 2

    def save_checkpoint(self, save_dir, tag, client_state, save_latest):
        folder = Path(save_dir) / tag
        (folder / "mp_rank_00_model_states.pt").write_bytes(b"m" * 4000)
        if self.fail is not None:
            raise self.fail
        (folder / "zero_pp_rank_0_mp_rank_00_optim_states.pt").write_bytes(b"o" * 8000)


@pytest.fixture
def saved_once(tmp_path):
    engine = StandInEngine()
    checkpoint.save(engine, tmp_path, 1, {"step": 1})
    assert (tmp_path / "checkpoints" / "latest").read_text() == "step00000001"
    return engine, tmp_path


@pytest.mark.parametrize("failure", [RuntimeError("[enforce fail at inline_container.cc:778] . unexpected pos 4096 "
                                                  "vs 4000"),
                                     RuntimeError("basic_ios::clear: iostream error")])
def test_a_full_disk_names_the_path_the_sizes_and_what_stands(saved_once, monkeypatch, failure):
    engine, run_dir = saved_once
    previous = run_dir / "checkpoints" / "step00000001"
    needed = sum(p.stat().st_size for p in previous.iterdir())
    monkeypatch.setattr(fsio, "free_bytes", lambda path: 1234)
    engine.fail = failure
    with pytest.raises(UserError) as raised:
        checkpoint.save(engine, run_dir, 2, {"step": 2})
    message = str(raised.value)
    assert "\n" not in message
    assert str(run_dir / "checkpoints" / "step00000002") in message and "no space left" in message
    assert f"{needed:,} bytes" in message and "1,234 bytes" in message and "free" in message
    assert "the previous checkpoint step00000001 stands" in message
    assert (run_dir / "checkpoints" / "latest").read_text() == "step00000001"
    assert not (run_dir / "checkpoints" / "step00000002").exists()  # the torn save is gone
    assert verify_folder(previous) == []  # and the previous one is whole


def test_an_enospc_from_the_rng_file_is_explained_too(saved_once, monkeypatch):
    import torch

    engine, run_dir = saved_once

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    with pytest.raises(UserError, match=r"step00000002: no space left on the device.*step00000001 stands"):
        checkpoint.save(engine, run_dir, 2, {"step": 2})
    assert (run_dir / "checkpoints" / "latest").read_text() == "step00000001"


def test_another_failure_is_not_called_a_full_disk(saved_once, monkeypatch):
    engine, run_dir = saved_once
    monkeypatch.setattr(fsio, "free_bytes", lambda path: 1 << 40)
    engine.fail = RuntimeError("a bug")
    with pytest.raises(RuntimeError, match="a bug"):
        checkpoint.save(engine, run_dir, 2, {"step": 2})
