"""The resumable sample stream: one global order per (seed, epoch), split over ranks and loader
workers with no overlap and no gap, exact resumption (also on another number of processes), and
random access through the tar index giving WebDataset's own samples."""

from __future__ import annotations

import pytest

from dsdocre.data.stream import SampleStream
from dsdocre.data.tar_index import IndexedTar
from dsdocre.errors import UserError


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from dsdocre.synth import generate_corpus
    from sharding.shard import shard_corpus

    root = tmp_path_factory.mktemp("stream")
    generate_corpus(root / "corpus", 4, 1, dev_docs=1, test_docs=1, distant_docs=23, progress=False)
    shard_corpus([root / "corpus" / "train_distant.json"], root / "shards", docs_per_shard=5, workers=0,
                 progress=False, log=None)
    return root / "shards"


def keys_of(stream: SampleStream, epoch: int) -> list[list[str]]:
    stream.position = type(stream.position)(epoch, 0)
    return [[s["__key__"] for s in batch] for batch in stream]


@pytest.mark.parametrize("world,workers", [(1, 1), (2, 1), (3, 2), (2, 3)])
def test_every_sample_once_per_epoch_over_ranks_and_workers(shards, world, workers):
    consumers = [SampleStream(shards, 6, seed=3, rank=r, world=world, worker=w, workers=workers)
                 for r in range(world) for w in range(workers)]
    seen = [k for c in consumers for batch in keys_of(c, 2) for k in batch]
    assert len(seen) == 23 and len(set(seen)) == 23  # no overlap, no gap
    assert set(seen) == {k for batch in keys_of(SampleStream(shards, 6, seed=3), 2) for k in batch}
    per_rank = [sum(len(b) for w in range(workers) for b in keys_of(consumers[r * workers + w], 2))
                for r in range(world)]
    assert max(per_rank) - min(per_rank) <= 4  # the last, short global batch split as evenly as possible


def test_order_is_a_function_of_seed_and_epoch(shards):
    one = SampleStream(shards, 4, seed=1)
    assert keys_of(one, 1) == keys_of(SampleStream(shards, 4, seed=1), 1)
    assert keys_of(one, 1) != keys_of(one, 2)
    assert keys_of(one, 1) != keys_of(SampleStream(shards, 4, seed=2), 1)
    plain = [k for b in keys_of(SampleStream(shards, 4, shuffle=False), 1) for k in b]
    assert plain == sorted(plain)  # manifest order when not shuffled


@pytest.mark.parametrize("before,after", [(2, 2), (2, 1), (1, 2), (1, 3)])
def test_resume_mid_epoch_on_another_world_size_loses_and_repeats_nothing(shards, before, after):
    global_batch = 6
    first = [SampleStream(shards, global_batch, seed=5, rank=r, world=before) for r in range(before)]
    consumed = []
    iterators = [iter(s) for s in first]
    for _ in range(2):  # two optimizer steps
        for it in iterators:
            consumed += [s["__key__"] for s in next(it)]
        for s in first:
            s.advance()
    state = first[0].state_dict()
    assert state["epoch"] == 1 and state["batches"] == 2
    resumed = [SampleStream(shards, global_batch, seed=5, rank=r, world=after) for r in range(after)]
    for s in resumed:
        s.load_state_dict(state)
    rest = [s["__key__"] for stream in resumed for batch in stream for s in batch]
    assert len(consumed) == 2 * global_batch
    assert sorted(consumed + rest) == sorted(k for b in keys_of(SampleStream(shards, 6, seed=5), 1) for k in b)


def test_position_rolls_over_epochs_and_refuses_another_stream(shards):
    stream = SampleStream(shards, 6, seed=0)
    assert stream.batches_per_epoch() == 4
    stream.advance(5)
    assert stream.state_dict()["epoch"] == 2 and stream.state_dict()["batches"] == 1
    with pytest.raises(UserError, match="saved global_batch is 6"):
        SampleStream(shards, 8, seed=0).load_state_dict(stream.state_dict())


def test_too_few_samples_for_the_world_is_a_clear_error(shards):
    with pytest.raises(UserError, match="23 samples cannot feed 8 processes x 3 loader workers"):
        SampleStream(shards, 24, world=8, workers=3)
    with pytest.raises(UserError, match="global batch of 2 samples cannot give each of 4 processes"):
        SampleStream(shards, 2, world=4)


def test_tar_index_reads_what_webdataset_reads(shards):
    import webdataset as wds

    path = sorted(shards.glob("shard-*.tar"))[1]
    index = IndexedTar(path)  # written by `dsdocre shard` beside the tar
    for i, sample in enumerate(wds.WebDataset([str(path)], shardshuffle=False, empty_check=False)):
        by_key, by_ordinal = index.read_key(sample["__key__"]), index.read(i)
        assert by_key == by_ordinal
        assert by_key["json"] == sample["json"] and by_key["enc.json"] == sample["enc.json"]
    assert len(index) == 5
    index.close()


def _whole_order(stream: SampleStream, epoch: int) -> list[tuple[int, int]]:
    """The order as the stream built it before it was computed on demand: a whole list."""
    import random

    rng = random.Random(stream.seed * 1_000_003 + epoch)
    shard_order = list(range(len(stream.shards)))
    rng.shuffle(shard_order)
    order = []
    for s in shard_order:
        inner = list(range(stream.shards[s][1]))
        random.Random(f"{stream.seed}/{epoch}/{stream.shards[s][0]}").shuffle(inner)
        order.extend((s, i) for i in inner)
    return order


@pytest.mark.parametrize("seed", [0, 7])
def test_the_order_on_demand_is_the_whole_list_order(shards, seed):
    """Drawn per shard when a step reaches it, the order is the one the whole list gave: runs
    started before the change resume onto the same samples, and results stay reproducible."""
    stream = SampleStream(shards, 4, seed=seed, world=2)
    for epoch in (1, 2, 5):
        whole = _whole_order(stream, epoch)
        assert stream.epoch_order(epoch) == whole
        assert [stream.sample_at(epoch, p) for p in reversed(range(len(whole)))] == whole[::-1]  # any access order
        for b, mine in stream.my_batches(epoch):
            step = whole[b * 4:(b + 1) * 4]
            assert mine == step[:(len(step) + 1) // 2]  # rank 0's half of each global batch
