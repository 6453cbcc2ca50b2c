"""Where each sample of a shard's tar file lies: an index written beside the tar when it is written.

``shard-00000.tar`` gets ``shard-00000.tar.idx``: a NumPy ``.npy`` file of one record per sample,
in the tar's order, ``(key, start, end)``: the sample's key (fixed-width bytes) and the byte range
of its members, headers included. Every writer of this project writes samples in ascending key
order, so a key is found by binary search over the memory-mapped keys and a sample by its ordinal
with one read. Readers map the file (``np.load(mmap_mode="r")``): nothing is scanned at start, and
the pages are shared through the page cache by every process on a node that reads the same shard.

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
# Open shards per pool, two descriptors each (the tar, the index's memory map): a loader's three
# pools (pairs, documents, kept labels) stay well under the usual limit of 1,024 open files.
DEFAULT_MAX_OPEN = 64


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


class IndexedTar:
    """The samples of one tar, by ordinal or by key, through its index (memory-mapped)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.index = np.load(index_path(self.path), mmap_mode="r", allow_pickle=False)
            if self.index.dtype.names != ("key", "start", "end"):
                raise ValueError(f"fields {self.index.dtype.names}")
        except FileNotFoundError:
            raise ShardVerificationError(f"{self.path}: its index {index_path(self.path).name} is missing; re-run the "
                                         "command that wrote the folder") from None
        except ValueError as err:
            raise ShardVerificationError(f"{index_path(self.path)}: not an index of this format ({err}); re-run the "
                                         "command that wrote the folder") from None
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self.index)

    def key(self, i: int) -> str:
        return self.index["key"][i].decode()

    def ordinal(self, key: str) -> int:
        """The sample's position, by binary search over the sorted keys; KeyError when absent."""
        keys = self.index["key"]
        i = int(np.searchsorted(keys, key.encode()))
        if i == len(keys) or keys[i] != key.encode():
            raise KeyError(key)
        return i

    def read(self, i: int) -> dict[str, bytes]:
        """Sample ``i``: ``{"__key__": key, suffix: bytes, ...}`` (one read of its byte range)."""
        key, start, end = self.index[i]
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
            raise ShardVerificationError(f"{self.path}: sample {i} ({sample['__key__']}) is not where its index says "
                                         f"({err}): the shard or its index changed after they were written; re-run "
                                         "the command that wrote the folder") from None
        if len(sample) == 1:
            raise ShardVerificationError(f"{self.path}: sample {i} ({sample['__key__']}) has no members")
        return sample

    def read_key(self, key: str) -> dict[str, bytes]:
        return self.read(self.ordinal(key))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self.index = None


class TarPool:
    """At most ``max_open`` :class:`IndexedTar` open at once; the least recently used is closed first."""

    def __init__(self, max_open: int = DEFAULT_MAX_OPEN):
        if max_open < 1:
            raise ValueError(f"max_open must be at least 1, got {max_open}")
        self.max_open = max_open
        self._open: OrderedDict[Path, IndexedTar] = OrderedDict()

    def get(self, path: str | Path) -> IndexedTar:
        path = Path(path)
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
