"""Stale build locks of torch extensions (DeepSpeed's CPU ops), found and removed before training.

DeepSpeed compiles its CPU ops (the shared-memory all-reduce, CPU Adam) with
``torch.utils.cpp_extension``, which guards each build folder with a ``lock`` file: the builder
creates it, keeps it open while ninja runs, and deletes it when done; every other process waits
while it exists. A process killed during the build or the load never deletes it, and from then
on every run waits forever without a word. :func:`check_extension_locks` runs before training:

- a lock some process on this machine holds open is a live build: it says so and leaves it;
- a lock nobody here holds, in a build folder where nothing changed for ``stale_after_s``
  seconds, was left by a killed build: it is removed, with one line saying which and why;
- a lock nobody here holds but with recent changes beside it may be a build on another machine
  that shares this folder (a home directory on NFS): it is left, with a line saying how to clear it.

The extensions folder is torch's: ``$TORCH_EXTENSIONS_DIR`` when set, else
``${XDG_CACHE_HOME:-~/.cache}/torch_extensions`` (with a ``py311_cpu``-style folder inside).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

LOCK_NAME = "lock"  # torch.utils.cpp_extension's FileBaton file in each build folder
# A CPU op builds in 65-100 s on 2 cores; a folder untouched for 10 minutes has no build running.
STALE_AFTER_S = 600.0


@dataclass(frozen=True)
class ExtensionLock:
    path: Path
    holders: tuple[int, ...] | None  # pids on this machine with the lock open; None: cannot tell (no /proc)
    idle_s: float  # seconds since anything in the build folder (the lock included) last changed
    inode: int  # of the lock judged: a new build's lock, created since, is another file

    @property
    def build_dir(self) -> Path:
        return self.path.parent


def extensions_root() -> Path:
    """The folder torch builds extensions under (as torch.utils.cpp_extension chooses it)."""
    if os.environ.get("TORCH_EXTENSIONS_DIR"):
        return Path(os.environ["TORCH_EXTENSIONS_DIR"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(cache) / "torch_extensions"


def _open_files_by_pid(proc: Path = Path("/proc")) -> dict[int, set[str]] | None:
    """pid -> the paths it has open, for every process this user may inspect; None without /proc."""
    if not (proc / "self" / "fd").is_dir():
        return None
    opened: dict[int, set[str]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fds = list((entry / "fd").iterdir())
        except OSError:  # another user's process, or one that just ended
            continue
        paths = set()
        for fd in fds:
            try:
                paths.add(os.readlink(fd))
            except OSError:
                continue
        opened[int(entry.name)] = paths
    return opened


def _last_change(build_dir: Path) -> float:
    """The newest modification time in ``build_dir`` (ninja writes objects and logs there as it goes)."""
    newest = build_dir.stat().st_mtime
    for path in build_dir.rglob("*"):
        try:
            newest = max(newest, path.lstat().st_mtime)
        except OSError:  # removed while we looked
            continue
    return newest


def find_extension_locks(root: str | Path | None = None) -> list[ExtensionLock]:
    """Every build lock under the extensions folder (``root``/NAME/lock or ``root``/py311_cpu/NAME/lock)."""
    root = Path(root) if root is not None else extensions_root()
    paths = sorted({*root.glob(f"*/{LOCK_NAME}"), *root.glob(f"*/*/{LOCK_NAME}")}) if root.is_dir() else []
    if not paths:
        return []  # the usual case: no /proc scan
    opened = _open_files_by_pid()
    now = time.time()
    locks = []
    for path in paths:
        try:
            inode = path.stat().st_ino
            idle = now - _last_change(path.parent)
        except FileNotFoundError:  # released while we looked
            continue
        target = os.path.realpath(path)
        holders = None if opened is None else tuple(sorted(pid for pid, files in opened.items() if target in files))
        locks.append(ExtensionLock(path, holders, idle, inode))
    return locks


def _same_file(lock: ExtensionLock) -> bool:
    try:
        return lock.path.stat().st_ino == lock.inode
    except FileNotFoundError:
        return False


def check_extension_locks(root: str | Path | None = None, *, stale_after_s: float = STALE_AFTER_S,
                          log=print) -> list[Path]:
    """Remove the stale build locks under the extensions folder, saying which and why, and say
    which live ones a build will wait for. Returns the locks removed."""
    removed = []
    for lock in find_extension_locks(root):
        name, folder = lock.build_dir.name, lock.build_dir
        if lock.holders:
            pids = ", ".join(map(str, lock.holders))
            log(f"another process (pid {pids}) is building the torch extension {name} (DeepSpeed's CPU ops) "
                f"in {folder}; waiting for it")
        elif lock.idle_s >= stale_after_s:
            why = "no process holds it" if lock.holders is not None else "no way to see who holds it here"
            if not _same_file(lock):  # removed, or removed and taken by a new build, since it was judged
                continue
            lock.path.unlink(missing_ok=True)
            removed.append(lock.path)
            log(f"removed the stale build lock {lock.path}: {why} and nothing in its folder changed for "
                f"{lock.idle_s / 60:.0f} min (a build of {name} was killed)")
        else:
            log(f"build lock {lock.path} is held by no process on this machine but its folder changed "
                f"{lock.idle_s:.0f} s ago: a build on another machine sharing {folder} may be running; waiting "
                f"(if none is, delete the lock; a run that starts {stale_after_s / 60:.0f} min after the last change "
                "removes it)")
    return removed
