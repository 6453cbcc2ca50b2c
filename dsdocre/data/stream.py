"""A deterministic, resumable sample stream over verified WebDataset shards, split over processes.

What a training loop needs from its data, and what WebDataset alone does not track (a mid-epoch
position, webdataset #271), in the manner of mosaicml/streaming:

* **One global order per epoch**, a pure function of (manifest, seed, epoch): the shards in a
  shuffled order, the samples of each shard in a shuffled order (``shuffle=False``: manifest order).
  It is never held whole: a position is mapped to its shard through the shards' cumulative counts,
  and a shard's own order is drawn from (seed, epoch, shard) when a step first reaches it, so the
  memory it takes is one shard's, whatever the size of the corpus.
* **Global batches, then ranks.** The order is cut into global batches of ``global_batch``
  samples; rank ``r`` of ``world`` takes the ``r``-th slice of each (its micro-batch), and a
  loader worker ``w`` of ``workers`` takes the rank's micro-batches ``w, w + workers, ...``, which
  is the order in which ``torch.utils.data.DataLoader`` hands them back. No sample is given to two
  consumers and none is skipped: the last, smaller global batch is split as evenly as possible.
* **Position = global batches consumed** in the epoch. After each step every rank has consumed the
  same prefix of the global order, so :meth:`SampleStream.state_dict` is ``{"epoch",
  "batches"}`` and a stream with another ``world`` (the same ``global_batch``) resumes exactly
  where the old one stopped: no sample lost or repeated.
* **Random access.** Samples are read by ordinal through the member index written beside each
  tar (:mod:`dsdocre.data.tar_index`, read with ``pread``, nothing scanned at start), with a bounded
  pool of open shards, so a rank reads only its own samples instead of streaming every shard.
"""

from __future__ import annotations

import os
import random
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from dsdocre.data import manifest as mf
from dsdocre.data.tar_index import DEFAULT_MAX_OPEN, TarPool
from dsdocre.errors import UserError


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
                 checksums: bool = True, expected_format: str = mf.FORMAT, max_open: int = DEFAULT_MAX_OPEN):
        self.dir = Path(shard_dir)
        # verify: every file checked against the manifest, by sha256 (or, checksums=False, by size:
        # a process that trusts the verification another one made); verify=False: the manifest only.
        manifest = (mf.verify(self.dir, expected_format, checksums=checksums) if verify
                    else mf.load(self.dir, expected_format))
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
        self._tars = TarPool(max_open)
        self._orders: OrderedDict[tuple[int, int], object] = OrderedDict()  # (epoch, shard) -> its sample order

    # ---- the order ----------------------------------------------------------------------------
    def _shard_order(self, epoch: int) -> tuple[list[int], np.ndarray]:
        """The shards in this epoch's order, and where each begins in the global order."""
        cached = self._orders.get((epoch, -1))
        if cached is None:
            shard_order = list(range(len(self.shards)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(shard_order)
            starts = np.zeros(len(shard_order) + 1, dtype=np.int64)
            np.cumsum([self.shards[s][1] for s in shard_order], out=starts[1:])
            cached = self._remember((epoch, -1), (shard_order, starts))
        return cached

    def _inner_order(self, epoch: int, shard: int) -> list[int]:
        """The order of one shard's samples in this epoch (drawn when first needed, a few kept)."""
        cached = self._orders.get((epoch, shard))
        if cached is None:
            cached = list(range(self.shards[shard][1]))
            if self.shuffle:
                random.Random(f"{self.seed}/{epoch}/{self.shards[shard][0]}").shuffle(cached)
            cached = self._remember((epoch, shard), cached)
        return cached

    def _remember(self, key, value):
        self._orders[key] = value
        self._orders.move_to_end(key)
        while len(self._orders) > 8:  # the epoch's shard order and the shards the current steps span
            self._orders.popitem(last=False)
        return value

    def sample_at(self, epoch: int, position: int) -> tuple[int, int]:
        """(shard index, sample index in that shard) at ``position`` of this epoch's global order."""
        shard_order, starts = self._shard_order(epoch)
        k = int(np.searchsorted(starts, position, side="right")) - 1
        shard = shard_order[k]
        return shard, self._inner_order(epoch, shard)[position - int(starts[k])]

    def epoch_order(self, epoch: int) -> list[tuple[int, int]]:
        """(shard index, sample index in that shard) of every sample, in this epoch's global order
        (whole: for tests and small folders; the stream itself never builds it)."""
        return [self.sample_at(epoch, p) for p in range(self.total)]

    def batches_per_epoch(self) -> int:
        return -(-self.total // self.global_batch)

    def my_batches(self, epoch: int, start: int = 0, worker: int | None = None,
                   workers: int | None = None) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """(global batch number, this consumer's samples of it) from global batch ``start`` on;
        ``worker``/``workers`` override the stream's own (a loader worker of this rank)."""
        worker = self.worker if worker is None else worker
        workers = self.workers if workers is None else workers
        # a loader worker serves every workers-th micro-batch of its rank
        for b in range(start + worker, self.batches_per_epoch(), workers):
            first = b * self.global_batch
            size = min(self.global_batch, self.total - first)
            mine = np.array_split(np.arange(size), self.world)[self.rank]
            yield b, [self.sample_at(epoch, first + int(i)) for i in mine]

    # ---- reading ------------------------------------------------------------------------------
    def read(self, shard: int, i: int) -> dict[str, bytes]:
        name, count = self.shards[shard]
        tar = self._tars.get(os.path.join(self.dir, name))
        if len(tar) != count:  # the order would skip samples, or index past the last one
            raise mf.ShardVerificationError(f"{self.dir / name}: its index holds {len(tar)} samples, the manifest "
                                            f"says {count}; re-run the command that wrote {self.dir}")
        return tar.read(i)

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
        self._tars.close()
