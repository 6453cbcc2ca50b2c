"""File safety: every file dsdocre writes is written whole or not at all, and a full disk says so.

One way to write a file, used everywhere: the data goes to a temporary name in the target's own
directory, unique to the writer (``<name>.tmp-<pid>-<random>``: never shared by two processes or
two threads, so a retried task never writes into another attempt's file), is flushed and
fsync'ed, renamed over the target, and the directory is fsync'ed so that the rename itself
survives a power loss. A reader sees the old file or the new one, never half of one; a crash or
an exception mid-write leaves the old file as it was and removes the temporary one (a process
killed outright leaves it behind: the stage that writes a folder removes ``*.tmp-*`` when it
starts).

- :func:`write_bytes_atomic`, :func:`write_text_atomic`, :func:`write_json_atomic`: a whole file;
- :func:`atomic_open`: a file object to stream into (JSON Lines, arrays written piece by piece);
- :func:`atomic_path`: a temporary path for writers that open the file themselves (tar writers,
  ``torch.save``);
- :func:`temp_dir`, :func:`fsync_tree`, :func:`fsync_dir`: the parts of a folder written whole
  (:mod:`dsdocre.savedir` swaps such a folder in).

A write that runs out of space (``ENOSPC``, or ``EDQUOT``: a quota) raises a
:class:`~dsdocre.errors.UserError` of one line naming the path, the bytes the write needed (when
known) or had written, the bytes free, and what stands (the previous file, the finished shards);
:func:`explain_disk_full` turns any block's full-disk error into that message.

This module imports only the standard library and :mod:`dsdocre.errors`.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Iterator

from dsdocre.errors import UserError

TEMP_MARK = ".tmp-"  # every temporary name holds it: ``<name>.tmp-<pid>-<random>``
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
# Directories that cannot be fsync'ed on some filesystems (or platforms); nothing to do there.
_NO_DIR_FSYNC = {errno.EINVAL, errno.ENOTSUP, getattr(errno, "EOPNOTSUPP", errno.ENOTSUP), errno.EBADF,
                 errno.EACCES, errno.EPERM, errno.EISDIR}


# --------------------------------------------------------------------------------------------
# Names, hashes, fsync
# --------------------------------------------------------------------------------------------
def temp_path(path: str | Path) -> Path:
    """A fresh temporary name beside ``path``: same directory (so the rename is atomic), unique to
    this process and this call (pid and a random suffix: two threads never share one)."""
    path = Path(path)
    return path.with_name(f"{path.name}{TEMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def sha256_file(path: str | Path, block: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            h.update(chunk)
    return h.hexdigest()


def fsync_file(path: str | Path) -> None:
    """Flush a file written by someone else's code (a tar writer, ``torch.save``) to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(directory: str | Path) -> None:
    """Make the names in ``directory`` (a rename, a new file) durable. A no-op where directories
    cannot be fsync'ed (some filesystems, Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError as err:
        if err.errno in _NO_DIR_FSYNC:
            return
        raise
    try:
        os.fsync(fd)
    except OSError as err:
        if err.errno not in _NO_DIR_FSYNC:
            raise
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """fsync every file under ``root``, then every directory (deepest first, ``root`` last)."""
    root = Path(root)
    directories = [root]
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            continue
        if path.is_dir():
            directories.append(path)
        elif path.is_file():
            fsync_file(path)
    for directory in sorted(directories, key=lambda p: len(p.parts), reverse=True):
        fsync_dir(directory)


def _remove(path: Path) -> None:
    """Remove a temporary file or folder, whatever is there (or nothing)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


# --------------------------------------------------------------------------------------------
# A full disk
# --------------------------------------------------------------------------------------------
def is_disk_full(err: BaseException, path: str | Path | None = None) -> bool:
    """Whether ``err`` is a write that ran out of space (``ENOSPC``) or of quota (``EDQUOT``).

    Also an error of a library that loses the errno but keeps its words ("No space left on
    device"), and, given the ``path`` written, torch's "file write failed" when that filesystem
    has (nearly) no space left: ``torch.save`` raises a RuntimeError, not an OSError."""
    if isinstance(err, UserError):  # already explained (a nested write)
        return False
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in _DISK_FULL
    text = str(err)
    if any(os.strerror(code) in text for code in _DISK_FULL):
        return True
    if path is not None and isinstance(err, RuntimeError) and "write failed" in text:
        free = free_bytes(path)
        return free is not None and free < _NEARLY_FULL
    return False


_NEARLY_FULL = 1 << 20  # bytes: a failed write on a filesystem with less free is taken for a full disk


def _size(n: int) -> str:
    if n < 1024:
        return f"{n:,} bytes"
    value, unit = float(n), "B"
    for unit in ("KiB", "MiB", "GiB", "TiB", "PiB"):
        value /= 1024
        if value < 1024:
            break
    return f"{n:,} bytes ({value:.1f} {unit})"


def free_bytes(path: str | Path) -> int | None:
    """Free bytes on the filesystem that holds ``path`` (or would: its nearest existing parent)."""
    path = Path(os.path.abspath(path))
    for candidate in (path, *path.parents):
        try:
            return shutil.disk_usage(candidate).free
        except OSError:
            continue
    return None


def disk_full_error(path: str | Path, needed_bytes: int | None = None, what_stands: str | None = None, *,
                    written_bytes: int | None = None, cause: BaseException | None = None) -> UserError:
    """The one-line error for a write to ``path`` that ran out of space: the path, the bytes the
    write needed (when known; else the bytes it had written when the disk filled), the bytes free
    (``shutil.disk_usage``), and ``what_stands`` (e.g. "the previous checkpoint stands")."""
    edquot = getattr(errno, "EDQUOT", None)
    quota = cause is not None and edquot is not None and (
        getattr(cause, "errno", None) == edquot or os.strerror(edquot) in str(cause))
    what = "disk quota exceeded" if quota else "no space left on the device"
    if needed_bytes is not None:
        size = f"; the write needed {_size(needed_bytes)}"
    elif written_bytes is not None:
        size = f"; it ran out after writing {_size(written_bytes)} (the size needed is not known)"
    else:
        size = ""
    free = free_bytes(path)
    free_text = f", {_size(free)} free" if free is not None else ""
    if quota and free is not None:
        free_text += " on the filesystem (the quota allows less)"
    stands = (what_stands or f"{Path(path).name} is unchanged (the file there before, if any, stands)").rstrip(".")
    return UserError(f"{path}: {what}{size}{free_text}; {stands}. Free some space (or write elsewhere) "
                     "and run again")


@contextlib.contextmanager
def explain_disk_full(path: str | Path, *, needed: int | None = None, what_stands: str | None = None,
                      cleanup: str | Path | None = None) -> Iterator[None]:
    """Re-raise a full disk inside the block as :func:`disk_full_error` for ``path``; ``cleanup``
    (a partial temporary file or folder) is removed first. Other errors pass through unchanged."""
    try:
        yield
    except Exception as err:  # noqa: BLE001 - re-raised unless the disk is full
        if not is_disk_full(err, path):
            raise
        written = None
        if cleanup is not None:
            cleanup = Path(cleanup)
            with contextlib.suppress(OSError):
                written = cleanup.stat().st_size if cleanup.is_file() else None
            _remove(cleanup)
        raise disk_full_error(path, needed, what_stands, written_bytes=written, cause=err) from err


# --------------------------------------------------------------------------------------------
# Atomic writes
# --------------------------------------------------------------------------------------------
@contextlib.contextmanager
def atomic_path(path: str | Path, *, needed: int | None = None, what_stands: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that opens the file itself (a tar
    writer, ``torch.save``). When the block ends normally the file there is fsync'ed and renamed
    over ``path`` and the directory fsync'ed; when it raises (or the disk fills, see
    :func:`explain_disk_full`) the temporary file is removed and ``path`` is left as it was."""
    with _atomic(path, needed, what_stands, sync=True) as tmp:
        yield tmp


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", *, encoding: str | None = "utf-8", needed: int | None = None,
                what_stands: str | None = None) -> Iterator[IO]:
    """Yield a new file (``mode`` "w" or "wb") to stream into; on a normal exit it is flushed,
    fsync'ed and renamed over ``path`` (see :func:`atomic_path`). ``encoding=None`` in text mode
    means the locale's encoding, as a plain ``open(path, "w")``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open: mode {mode!r}, expected 'w' or 'wb'")
    binary = mode == "wb"
    with _atomic(path, needed, what_stands, sync=False) as tmp:
        with open(tmp, "xb" if binary else "x", **({} if binary else {"encoding": encoding})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())


@contextlib.contextmanager
def _atomic(path: str | Path, needed: int | None, what_stands: str | None, sync: bool) -> Iterator[Path]:
    """The temporary name, then (on a normal exit) fsync when ``sync`` (the caller has not), rename,
    fsync the directory; the temporary file removed whatever happens."""
    path = Path(path)
    tmp = temp_path(path)
    try:
        with explain_disk_full(path, needed=needed, what_stands=what_stands, cleanup=tmp):
            yield tmp
            if sync:
                if not tmp.is_file():
                    raise FileNotFoundError(f"{tmp}: the writer did not create the file it was to write")
                fsync_file(tmp)
            os.replace(tmp, path)
            fsync_dir(path.parent)
    finally:
        if tmp.exists() or tmp.is_symlink():
            _remove(tmp)


def write_bytes_atomic(path: str | Path, data: bytes, *, what_stands: str | None = None) -> Path:
    """Write ``data`` to ``path`` whole or not at all; returns ``path``."""
    path = Path(path)
    with atomic_open(path, "wb", needed=len(data), what_stands=what_stands) as f:
        f.write(data)
    return path


def write_text_atomic(path: str | Path, text: str, *, encoding: str = "utf-8",
                      what_stands: str | None = None) -> Path:
    """Write ``text`` (encoded with ``encoding``) to ``path`` whole or not at all; returns ``path``."""
    return write_bytes_atomic(path, text.encode(encoding), what_stands=what_stands)


def write_json_atomic(path: str | Path, obj, *, indent: int | None = 1, what_stands: str | None = None,
                      **dumps_kwargs) -> Path:
    """``json.dumps(obj, indent=indent, **dumps_kwargs)`` and a newline, written whole or not at
    all (UTF-8); returns ``path``. The manifests' format: the same object gives the same bytes."""
    text = json.dumps(obj, indent=indent, **dumps_kwargs) + "\n"
    return write_text_atomic(path, text, what_stands=what_stands)


# --------------------------------------------------------------------------------------------
# Folders
# --------------------------------------------------------------------------------------------
def temp_dir(folder: str | Path) -> Path:
    """A new, empty temporary folder beside ``folder`` (``<name>.tmp-<pid>-<random>``), for a
    folder written whole and then renamed into place (:func:`dsdocre.savedir.write_atomically`)."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(folder)
    tmp.mkdir()
    return tmp


def stale_temps(path: str | Path) -> list[Path]:
    """Temporary files or folders of ``path`` left by writers that were killed (``<name>.tmp-*``,
    and ``<name>.tmp``, the name older versions used). Only for a path one writer writes at a time."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    found = list(path.parent.glob(f"{_glob_escape(path.name)}{TEMP_MARK}*"))
    old_style = path.with_name(path.name + ".tmp")
    return found + ([old_style] if old_style.exists() else [])


def remove_stale_temps(path: str | Path) -> None:
    """Remove what :func:`stale_temps` finds."""
    for stale in stale_temps(path):
        _remove(stale)


def _glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)
