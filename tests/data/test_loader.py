"""dsdocre.data.loader.StepLoader: persistent workers give the in-process order, from any position."""

import os

import pytest
import torch

from dsdocre.data.loader import StepLoader
from dsdocre.train.loop import EpochBatches


def _build(epoch, start, worker, workers):
    for step in range(start + worker, 7, workers):
        yield {"epoch": epoch, "step": step, "pid": os.getpid()}


def test_workers_keep_the_in_process_order_from_any_position():
    loader = StepLoader(_build, workers=2, pin_memory=False)
    try:
        for epoch, start in ((1, 0), (1, 3), (2, 0), (2, 6)):
            inline = [(s["epoch"], s["step"]) for s in _build(epoch, start, 0, 1)]
            assert [(s["epoch"], s["step"]) for s in loader(epoch, start)] == inline
    finally:
        loader.close()


def test_workers_persist_across_passes():
    loader = StepLoader(_build, workers=2, pin_memory=False)
    try:
        first = {s["pid"] for s in loader(1, 0)}
        partial = loader(2, 0)
        next(partial)  # a pass left unfinished (a stop mid-epoch) does not spoil the next
        second = {s["pid"] for s in loader(3, 0)}
    finally:
        loader.close()
    assert len(first) == 2 and os.getpid() not in first
    assert second == first  # the same two processes: started once, not once per pass


def test_epoch_batches_prepare_in_workers_equals_in_process():
    def batches_of(epoch):
        return [[epoch * 100 + i, i] for i in range(6)]

    def prepare(idx):
        return {"ids": torch.tensor(idx)}

    def steps(workers, done=0):
        source = EpochBatches(batches_of, accumulation=2, global_batch=4, prepare=prepare, workers=workers)
        source.load_state_dict({"epoch": 2, "steps": done})
        try:
            return [(s.epoch, s.samples, [m["ids"].tolist() for m in s.micro_batches]) for s in source]
        finally:
            source.close()

    assert steps(0) == [(2, 4, [[200, 0], [201, 1]]), (2, 4, [[202, 2], [203, 3]]), (2, 4, [[204, 4], [205, 5]])]
    assert steps(2) == steps(0)
    assert steps(2, done=1) == steps(0)[1:]


def test_negative_workers_are_refused():
    with pytest.raises(ValueError, match="0 or more"):
        StepLoader(_build, workers=-1)
