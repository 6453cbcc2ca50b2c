"""A deterministic, resumable sample stream over verified WebDataset shards, split over processes.

What a training loop needs from its data, and what WebDataset alone does not track (a mid-epoch
position, webdataset #271), in the manner of mosaicml/streaming:

* **One global order per epoch**, a pure function of (manifest, seed, epoch): the shards in a
  shuffled order, the samples of each shard in a shuffled order (``shuffle=False``: manifest order).
* **Global batches, then ranks.** The order is cut into global batches of ``global_batch``
  samples; rank ``r`` of ``world`` takes the ``r``-th slice of each (its micro-batch), and a
  loader worker ``w`` of ``workers`` takes the rank's micro-batches ``w, w + workers, ...``, which
  is the order in which ``torch.utils.data.DataLoader`` hands them back. No sample is given to two
  consumers and none is skipped: the last, smaller global batch is split as evenly as possible.
* **Position = global batches consumed** in the epoch. After each step every rank has consumed the
  same prefix of the global order, so :meth:`SampleStream.state_dict` is ``{"epoch",
  "batches"}`` and a stream with another ``world`` (the same ``global_batch``) resumes exactly
  where the old one stopped: no sample lost or repeated.
* **Random access.** Samples are read by key through a per-shard index of tar member offsets
  (:class:`TarIndex`, built from the tar headers once per shard), so a rank reads only its own
  samples instead of streaming every shard.
"""

from __future__ import annotations

import random
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dsdocre.data import manifest as mf
from dsdocre.errors import UserError


class TarIndex:
    """Member offsets of one tar file: ``key -> {suffix: (offset, size)}``, then reads by seek.

    A file that is not a readable tar, or a member that reaches past its end, raises
    :class:`~dsdocre.data.manifest.ShardVerificationError` naming the file (readers that skip
    checksum verification still get a clear error, never a half-read sample)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        self.members: dict[str, dict[str, tuple[int, int]]] = {}
        self.keys: list[str] = []
        try:
            size = Path(self.path).stat().st_size
            with tarfile.open(self.path) as tf:
                for info in tf:
                    if not info.isfile():
                        continue
                    if info.offset_data + info.size > size:
                        raise tarfile.ReadError(f"member {info.name} ends past the end of the file")
                    key, _, suffix = info.name.partition(".")  # WebDataset: the key ends at the first dot
                    if key not in self.members:
                        self.members[key] = {}
                        self.keys.append(key)
                    self.members[key][suffix] = (info.offset_data, info.size)
        except (tarfile.TarError, EOFError, UnicodeDecodeError) as err:
            raise mf.ShardVerificationError(f"{self.path}: not a readable tar file ({err}): the shard is damaged; "
                                            "re-run the command that wrote it") from None
        self._file = None

    def read(self, key: str) -> dict[str, bytes]:
        if self._file is None:
            self._file = open(self.path, "rb")
        sample = {"__key__": key}
        for suffix, (offset, size) in self.members[key].items():
            self._file.seek(offset)
            sample[suffix] = self._file.read(size)
            if len(sample[suffix]) != size:
                raise mf.ShardVerificationError(f"{self.path}: sample {key}.{suffix} is cut short (the file changed "
                                                "after it was indexed); re-run the command that wrote it")
        return sample

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


@dataclass(frozen=True)
class Position:
    epoch: int
    batches: int  # global batches of this epoch already consumed


class SampleStream:
    """This consumer's samples of a verified shard folder, in step order, resumable (see module doc).

    ``global_batch``: samples per optimizer step over all ranks (micro-batch x world x accumulation);
    keep it fixed across world sizes for an exact elastic resume. ``rank``/``world``: data-parallel
    process; ``worker``/``workers``: loader worker within the rank.
    """

    def __init__(self, shard_dir: str | Path, global_batch: int, *, seed: int = 0, rank: int = 0, world: int = 1,
                 worker: int = 0, workers: int = 1, shuffle: bool = True, verify: bool = True,
                 expected_format: str = mf.FORMAT):
        self.dir = Path(shard_dir)
        manifest = (mf.verify if verify else mf.load)(self.dir, expected_format)
        # document shards count "docs", fact-join pair shards "pairs"
        self.shards = []
        for i, s in enumerate(manifest["shards"]):
            count = s.get("docs", s.get("pairs"))
            if not (isinstance(count, int) and not isinstance(count, bool) and count >= 0):
                raise mf.ShardVerificationError(f"{self.dir / mf.MANIFEST}: manifest field shards[{i}]: no sample "
                                                f"count (docs or pairs), got {count!r}"[:300])
            self.shards.append((s["name"], count))
        self.total = sum(n for _, n in self.shards)
        if global_batch < world:
            raise UserError(f"a global batch of {global_batch} samples cannot give each of {world} processes one")
        if self.total < world * workers:
            raise UserError(f"{self.dir}: {self.total} samples cannot feed {world} processes x {workers} loader "
                            "workers one sample each; use fewer processes or workers, or more data")
        self.global_batch, self.seed, self.shuffle = global_batch, seed, shuffle
        self.rank, self.world, self.worker, self.workers = rank, world, worker, workers
        self.position = Position(epoch=1, batches=0)
        self._indexes: dict[str, TarIndex] = {}

    # ---- the order ----------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> list[tuple[int, int]]:
        """(shard index, sample index in that shard) of every sample, in this epoch's global order."""
        rng = random.Random(self.seed * 1_000_003 + epoch)
        shard_order = list(range(len(self.shards)))
        if self.shuffle:
            rng.shuffle(shard_order)
        order = []
        for s in shard_order:
            inner = list(range(self.shards[s][1]))
            if self.shuffle:
                random.Random(f"{self.seed}/{epoch}/{self.shards[s][0]}").shuffle(inner)
            order.extend((s, i) for i in inner)
        return order

    def batches_per_epoch(self) -> int:
        return -(-self.total // self.global_batch)

    def my_batches(self, epoch: int, start: int = 0, worker: int | None = None,
                   workers: int | None = None) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """(global batch number, this consumer's samples of it) from global batch ``start`` on;
        ``worker``/``workers`` override the stream's own (a loader worker of this rank)."""
        worker = self.worker if worker is None else worker
        workers = self.workers if workers is None else workers
        order = self.epoch_order(epoch)
        for b in range(start, self.batches_per_epoch()):
            step = order[b * self.global_batch:(b + 1) * self.global_batch]
            mine = np.array_split(np.arange(len(step)), self.world)[self.rank]
            # a loader worker serves every workers-th micro-batch of its rank
            if (b - start) % workers == worker:
                yield b, [step[i] for i in mine]

    # ---- reading ------------------------------------------------------------------------------
    def _index(self, shard: int) -> TarIndex:
        name, count = self.shards[shard]
        if name not in self._indexes:
            index = TarIndex(self.dir / name)
            if len(index.keys) != count:  # the order would skip samples, or index past the last one
                index.close()
                raise mf.ShardVerificationError(f"{self.dir / name}: holds {len(index.keys)} samples, the manifest "
                                                f"says {count}; re-run the command that wrote {self.dir}")
            self._indexes[name] = index
        return self._indexes[name]

    def read(self, shard: int, i: int) -> dict[str, bytes]:
        index = self._index(shard)
        return index.read(index.keys[i])

    def __iter__(self) -> Iterator[list[dict[str, bytes]]]:
        """This consumer's micro-batches (lists of raw samples) from the current position to the
        end of the epoch. Call :meth:`advance` after each optimizer step (a loop, not the reader,
        knows what was consumed)."""
        for _, samples in self.my_batches(self.position.epoch, self.position.batches):
            yield [self.read(s, i) for s, i in samples]

    # ---- position -----------------------------------------------------------------------------
    def advance(self, batches: int = 1) -> None:
        """``batches`` more global batches consumed; rolls over to the next epoch at its end."""
        done = self.position.batches + batches
        epoch = self.position.epoch
        while done >= self.batches_per_epoch():
            done -= self.batches_per_epoch()
            epoch += 1
        self.position = Position(epoch, done)

    def state_dict(self) -> dict:
        return {"epoch": self.position.epoch, "batches": self.position.batches, "global_batch": self.global_batch,
                "seed": self.seed, "samples": self.total}

    def load_state_dict(self, state: dict) -> None:
        for key in ("global_batch", "seed", "samples"):
            if state[key] != getattr(self, {"samples": "total"}.get(key, key)):
                raise UserError(f"cannot resume this stream: the saved {key} is {state[key]}, this stream has "
                                f"{getattr(self, {'samples': 'total'}.get(key, key))} (same data, seed and global "
                                "batch are needed for an exact resume)")
        self.position = Position(int(state["epoch"]), int(state["batches"]))

    def close(self) -> None:
        for index in self._indexes.values():
            index.close()
