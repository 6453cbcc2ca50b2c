"""Steps built ahead of the training loop by persistent DataLoader worker processes.

Every step source (fine-tuning's epoch batches, pre-training's pair batches) can say which steps
of an epoch loader worker ``w`` of ``W`` builds: every ``W``-th from the position on, the order in
which ``torch.utils.data.DataLoader`` hands its workers' outputs back. :class:`StepLoader` runs that
``build(epoch, start, worker, workers)`` in the workers and yields the steps in order.

Why this shape: the workers are started once per run (``persistent_workers``), not once per epoch,
so whatever a worker opened (shard indexes, document stores) is built once. A
persistent worker keeps the dataset object it was started with, so the position it starts from is
not in that object: the loader writes (epoch, first step) into a small shared-memory tensor before
each pass and the workers read it when the pass begins. On a GPU the steps come back in page-locked
memory (``pin_memory``), so their copy to the device does not block the training thread.
"""

from __future__ import annotations

from typing import Callable, Iterator

import torch

BuildSteps = Callable[[int, int, int, int], Iterator]  # (epoch, first step, worker, workers) -> steps


class StepLoader:
    """``loader(epoch, start)`` yields the steps of ``epoch`` from step ``start`` on, built in
    ``workers`` persistent processes (0: in this process, no DataLoader at all)."""

    def __init__(self, build: BuildSteps, workers: int = 0, pin_memory: bool | None = None, prefetch: int = 2):
        if workers < 0:
            raise ValueError(f"loader workers must be 0 or more, got {workers}")
        self.build, self.workers, self.prefetch = build, workers, prefetch
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
        self._position = torch.zeros(2, dtype=torch.long).share_memory_()
        self._loader = None

    def __call__(self, epoch: int, start: int = 0) -> Iterator:
        if self.workers == 0:
            yield from self.build(epoch, start, 0, 1)
            return
        self._position[0], self._position[1] = epoch, start
        if self._loader is None:
            self._loader = torch.utils.data.DataLoader(
                _PositionedSteps(self.build, self._position), batch_size=None, num_workers=self.workers,
                collate_fn=_as_is, prefetch_factor=self.prefetch, persistent_workers=True,
                pin_memory=self.pin_memory)
        yield from self._loader

    def close(self) -> None:
        """Stop the worker processes (they also stop with this process)."""
        iterator = getattr(self._loader, "_iterator", None)
        if iterator is not None:
            iterator._shutdown_workers()
        self._loader = None


def _as_is(step):
    return step


class _PositionedSteps(torch.utils.data.IterableDataset):
    """A worker's share of one pass, from the position the loader wrote before the pass began."""

    def __init__(self, build: BuildSteps, position: torch.Tensor):
        self.build, self.position = build, position

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        epoch, start = (int(v) for v in self.position.tolist())
        return self.build(epoch, start, worker, workers)
