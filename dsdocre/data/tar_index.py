"""Where each sample of a shard's tar file lies: an index written beside the tar when it is written.

``shard-00000.tar`` gets ``shard-00000.tar.idx``: a NumPy ``.npy`` file of one record per sample,
in the tar's order, ``(key, start, end)``: the sample's key (fixed-width bytes) and the byte range
of its members, headers included. Every writer of this project writes samples in ascending key
order, so a key is found by binary search over the keys and a sample by its ordinal with one
read. Readers read the records they need with ``pread``: nothing is scanned or loaded at start,
and the pages are shared through the page cache by every process on a node that reads the same
shard.

:class:`IndexedTar` reads samples through it; :class:`TarPool` keeps a bounded number of them open
(least recently used closed first), so open files do not grow with the number of shards.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from dsdocre import fsio
from dsdocre.data.manifest import ShardVerificationError

INDEX_SUFFIX = ".idx"
# Open shards per pool, two descriptors each (the tar, its index): a loader's three pools (pairs,
# documents, kept labels) stay under the usual limit of 1,024 open files. A reopen costs two open()
# calls and a fstat (an index's layout is parsed once per process and kept).
DEFAULT_MAX_OPEN = 128


def index_path(tar_path: str | Path) -> Path:
    return Path(f"{tar_path}{INDEX_SUFFIX}")


def build_index(tar_path: str | Path) -> np.ndarray:
    """The index records of a finished tar (scanned once, by its writer, while it is in the page cache)."""
    keys, starts, ends = [], [], []
    with tarfile.open(tar_path) as tf:
        for info in tf:
            if not info.isfile():
                continue
            key = info.name.partition(".")[0]  # WebDataset: the key ends at the first dot
            end = info.offset_data + -(-info.size // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE
            if keys and keys[-1] == key:
                ends[-1] = end
                continue
            if keys and key <= keys[-1]:
                raise ValueError(f"{tar_path}: sample {key} after {keys[-1]}: samples must be written once each, in "
                                 "ascending key order, for the index to find them")
            keys.append(key)
            starts.append(info.offset)
            ends.append(end)
    width = max([len(k.encode()) for k in keys] + [1])
    records = np.zeros(len(keys), dtype=[("key", f"S{width}"), ("start", "<i8"), ("end", "<i8")])
    records["key"] = [k.encode() for k in keys]
    records["start"], records["end"] = starts, ends
    return records


def write_index(tar_path: str | Path, *, what_stands: str | None = None) -> dict:
    """Write ``<tar>.idx`` for a finished tar, atomically; its manifest entry {name, bytes, sha256, samples}."""
    records = build_index(tar_path)
    path = index_path(tar_path)
    buffer = io.BytesIO()
    np.save(buffer, records, allow_pickle=False)
    fsio.write_bytes_atomic(path, buffer.getvalue(), what_stands=what_stands)
    return {"name": path.name, "bytes": path.stat().st_size, "sha256": fsio.sha256_file(path), "samples": len(records)}


class _IndexLayout:
    """Where the records of one ``.idx`` file lie: its record dtype, header size and count (parsed
    once per file and kept: a few dozen bytes per shard, so a reopened shard costs two ``open``s)."""

    _known: dict[tuple, "_IndexLayout"] = {}

    def __init__(self, path: str):
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, fortran, dtype = read_header(f)
            self.offset = f.tell()
        if dtype.names != ("key", "start", "end") or len(shape) != 1 or fortran:
            raise ValueError(f"fields {dtype.names}, shape {shape}")
        self.dtype, self.count = dtype, shape[0]

    @classmethod
    def of(cls, path: str, fd: int) -> "_IndexLayout":
        st = os.fstat(fd)  # of the open index: a rewritten one is parsed again
        key = (path, st.st_size, st.st_mtime_ns)
        layout = cls._known.get(key)
        if layout is None:
            layout = cls._known[key] = cls(path)
        return layout


class IndexedTar:
    """The samples of one tar, by ordinal or by key, through its index.

    A record is read with ``pread``, not mapped: a mapped file holds a second descriptor and costs
    a ``mmap`` at every (re)open, and a reader that visits thousands of shards in random order
    reopens them often (the pool below is bounded); ``pread`` goes through the same page cache,
    shared by every process of the node. A lookup by key reads the index's keys once, while the
    shard is open (a document shard's are a few KB), and searches them in NumPy."""

    def __init__(self, path: str | Path):
        self.name = os.fspath(path)  # a str: a reopen builds no Path (they cost more than the two open()s)
        index = self.name + INDEX_SUFFIX
        self._fd = self._index_fd = None
        self._keys = None
        try:
            self._index_fd = os.open(index, os.O_RDONLY)
            self.layout = _IndexLayout.of(index, self._index_fd)
        except FileNotFoundError:
            raise ShardVerificationError(f"{self.name}: its index {Path(index).name} is missing; re-run the "
                                         "command that wrote the folder") from None
        except ValueError as err:
            self.close()
            raise ShardVerificationError(f"{index}: not an index of this format ({err}); re-run the "
                                         "command that wrote the folder") from None
        self._fd = os.open(self.name, os.O_RDONLY)

    @property
    def path(self) -> Path:
        return Path(self.name)

    def __len__(self) -> int:
        return self.layout.count

    def _records(self, first: int, count: int) -> np.ndarray:
        size = self.layout.dtype.itemsize
        data = os.pread(self._index_fd, size * count, self.layout.offset + first * size)
        if len(data) != size * count:
            raise ShardVerificationError(f"{self.name}{INDEX_SUFFIX}: records {first}..{first + count - 1} are cut "
                                         "short; re-run the command that wrote the folder")
        return np.frombuffer(data, dtype=self.layout.dtype)

    def key(self, i: int) -> str:
        return self._records(i, 1)[0]["key"].decode()

    def ordinal(self, key: str) -> int:
        """The sample's position, by binary search over the sorted keys; KeyError when absent."""
        if self._keys is None:
            self._keys = self._records(0, len(self))["key"].copy()
        wanted = key.encode()
        # numpy's fixed-width bytes compare as the keys were sorted when written
        i = int(np.searchsorted(self._keys, wanted))
        if i == len(self._keys) or self._keys[i] != wanted:
            raise KeyError(key)
        return i

    def read(self, i: int) -> dict[str, bytes]:
        """Sample ``i``: ``{"__key__": key, suffix: bytes, ...}`` (one read of its byte range)."""
        key, start, end = self._records(i, 1)[0]
        data = os.pread(self._fd, int(end - start), int(start))
        sample = {"__key__": key.decode()}
        try:
            if len(data) != end - start:
                raise tarfile.ReadError(f"{end - start} bytes expected, {len(data)} there")
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
                for info in tf:
                    name, _, suffix = info.name.partition(".")
                    if name != sample["__key__"]:
                        raise tarfile.ReadError(f"member {info.name} where the index says {sample['__key__']}")
                    sample[suffix] = tf.extractfile(info).read()
        except (tarfile.TarError, EOFError, UnicodeDecodeError) as err:
            raise ShardVerificationError(f"{self.name}: sample {i} ({sample['__key__']}) is not where its index says "
                                         f"({err}): the shard or its index changed after they were written; re-run "
                                         "the command that wrote the folder") from None
        if len(sample) == 1:
            raise ShardVerificationError(f"{self.name}: sample {i} ({sample['__key__']}) has no members")
        return sample

    def read_key(self, key: str) -> dict[str, bytes]:
        return self.read(self.ordinal(key))

    def close(self) -> None:
        for name in ("_fd", "_index_fd"):
            fd = getattr(self, name, None)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
        self._keys = None


class TarPool:
    """At most ``max_open`` :class:`IndexedTar` open at once; the least recently used is closed first."""

    def __init__(self, max_open: int = DEFAULT_MAX_OPEN):
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.max_open = max_open
        self._open: OrderedDict[str, IndexedTar] = OrderedDict()

    def get(self, path: str | Path) -> IndexedTar:
        path = os.fspath(path)
        tar = self._open.get(path)
        if tar is not None:
            self._open.move_to_end(path)
            return tar
        if len(self._open) >= self.max_open:
            _, oldest = self._open.popitem(last=False)
            oldest.close()
        tar = self._open[path] = IndexedTar(path)
        return tar

    @property
    def open_count(self) -> int:
        return len(self._open)

    def close(self) -> None:
        while self._open:
            self._open.popitem()[1].close()
