"""dsdocre.train.extension_locks: a build lock left by a killed DeepSpeed op build is removed with a
line saying why; a lock a live process holds, or one beside recent build activity, is left with a
line saying what the run waits for."""

from __future__ import annotations

import os
import time

from dsdocre.train.extension_locks import check_extension_locks, extensions_root


def _lock(root, name="cpu_adam", age_s=0.0):
    """``root``/py311_cpu/NAME/lock with a half-built object beside it, last changed ``age_s`` ago."""
    build = root / "py311_cpu" / name
    build.mkdir(parents=True)
    (build / "cpu_adam.o").write_text("")
    lock = build / "lock"
    lock.write_text("")
    then = time.time() - age_s
    for path in (build / "cpu_adam.o", lock, build):
        os.utime(path, (then, then))
    return lock


def test_a_lock_left_by_a_killed_build_is_removed_with_the_reason(tmp_path):
    lock = _lock(tmp_path, age_s=3600)
    lines = []
    assert check_extension_locks(tmp_path, log=lines.append) == [lock]
    assert not lock.exists() and (lock.parent / "cpu_adam.o").exists()  # only the lock goes
    assert len(lines) == 1 and str(lock) in lines[0] and "no process holds it" in lines[0] and "60 min" in lines[0]


def test_a_lock_a_live_process_holds_is_left_and_the_wait_announced(tmp_path):
    lock = _lock(tmp_path, age_s=3600)
    fd = os.open(lock, os.O_RDONLY)  # as torch's FileBaton keeps it open while ninja builds
    try:
        lines = []
        assert check_extension_locks(tmp_path, log=lines.append) == []
    finally:
        os.close(fd)
    assert lock.exists()
    assert len(lines) == 1
    assert f"pid {os.getpid()}" in lines[0] and "building" in lines[0] and str(lock.parent) in lines[0]


def test_an_unheld_lock_beside_recent_build_activity_is_left(tmp_path):
    """Another machine sharing the folder (NFS home) may be building: no local holder proves nothing."""
    lock = _lock(tmp_path, age_s=30)
    lines = []
    assert check_extension_locks(tmp_path, stale_after_s=600, log=lines.append) == []
    assert lock.exists() and len(lines) == 1 and "another machine" in lines[0] and str(lock) in lines[0]


def test_the_extensions_folder_is_torchs_and_no_lock_says_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    assert extensions_root() == tmp_path / "ext"
    lines = []
    assert check_extension_locks(log=lines.append) == [] and lines == []  # no folder yet
    lock = tmp_path / "ext" / "deepspeed_shm_comm" / "lock"  # with the variable set, no py311_cpu level
    lock.parent.mkdir(parents=True)
    lock.write_text("")
    os.utime(lock, (time.time() - 3600,) * 2)
    os.utime(lock.parent, (time.time() - 3600,) * 2)
    assert check_extension_locks(log=lines.append) == [lock] and "deepspeed_shm_comm" in lines[0]
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert extensions_root() == tmp_path / "cache" / "torch_extensions"
