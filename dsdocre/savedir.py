"""Directories written whole or not at all, and verified when read: checkpoints, the exported
encoder, saved models.

A directory is written into a temporary folder beside it (``<name>.tmp-<pid>-<random>``,
:func:`dsdocre.fsio.temp_dir`), given a checksum file (size and sha256 of every file), fsync'ed
whole and swapped in with renames; a kill at any moment leaves either the old directory or the
new one (a kill between the two renames leaves ``<name>.old``, which :func:`recover` puts back;
the next save removes a killed save's temporary folder). A full disk stops the save with one
line (:func:`dsdocre.fsio.disk_full_error`), the old directory standing. One process writes a
given directory at a time. A reader calls :func:`require_sound` (or :func:`verify_folder`): a
directory whose files do not match their checksums is refused with what is wrong, never loaded
half.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Callable

from dsdocre import fsio
from dsdocre.errors import UserError
from dsdocre.fsio import fsync_dir, sha256_file

CHECKSUMS = "dsdocre_checksums.json"


def write_checksums(folder: Path, **meta) -> None:
    """Size and sha256 of every file under ``folder``, written last (atomically)."""
    files = {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != CHECKSUMS}
    fsio.write_json_atomic(folder / CHECKSUMS, {**meta, "files": files}, indent=1)


def verify_folder(folder: Path) -> list[str]:
    """What is wrong with ``folder`` against its checksum file (empty: sound)."""
    sums = folder / CHECKSUMS
    if not sums.is_file():
        return [f"{folder} has no {CHECKSUMS} (a save that did not finish)"]
    try:
        files = json.loads(sums.read_text())["files"]
    except (ValueError, KeyError) as e:
        return [f"{sums} is unreadable ({e})"]
    problems = []
    for name, want in files.items():
        path = folder / name
        if not path.is_file():
            problems.append(f"{path} is missing")
        elif path.stat().st_size != want["bytes"]:
            problems.append(f"{path} has {path.stat().st_size} bytes, {want['bytes']} were written")
        elif sha256_file(path) != want["sha256"]:
            problems.append(f"{path} fails its sha256 check (altered or corrupted)")
    return problems


def recover(folder: Path) -> None:
    """Put back ``<folder>.old`` when a kill came between the two renames of a swap."""
    old = folder.with_name(folder.name + ".old")
    if not folder.exists() and old.is_dir():
        os.replace(old, folder)
        fsync_dir(folder.parent)


def require_sound(folder: str | Path, what: str = "model directory") -> None:
    """Refuse (UserError) a directory whose checksum file it does not match. A directory without a
    checksum file (a model from elsewhere, or saved by an older dsdocre) is taken as it is."""
    folder = Path(folder)
    recover(folder)
    if not (folder / CHECKSUMS).is_file():
        return
    problems = verify_folder(folder)
    if problems:
        raise UserError(f"{what} {folder} is damaged: {'; '.join(problems[:3])}"
                        + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else "")
                        + "; write it again (the run that made it re-exports from its newest checkpoint)")


def write_atomically(write: Callable[[Path], None], folder: Path, *, what_stands: str | None = None,
                     **meta) -> None:
    """``write(tmp)`` into a fresh temporary folder, checksum it, fsync it, then swap it in:
    complete or absent. ``meta`` goes into the checksum file; ``what_stands`` is said when the
    disk fills (default: the directory as it was stands)."""
    folder = Path(folder)
    recover(folder)
    fsio.remove_stale_temps(folder)  # a save that was killed
    tmp = fsio.temp_dir(folder)
    stands = what_stands or (f"{folder} as it was before this save stands" if folder.exists()
                             else f"nothing was written to {folder}")
    try:
        with fsio.explain_disk_full(folder, what_stands=stands):
            write(tmp)
            write_checksums(tmp, **meta)
            fsio.fsync_tree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
        shutil.rmtree(old)
    else:
        os.replace(tmp, folder)
        fsync_dir(folder.parent)
