"""dsdocre.data.examples: the batches of an epoch are a function of the global batch, not of the
process layout (disjoint and complete across ranks, the same documents at every step)."""

from __future__ import annotations

import pytest

from dsdocre.errors import UserError


@pytest.mark.parametrize("n", [7, 64, 403])
@pytest.mark.parametrize("world,accumulation", [(1, 1), (2, 1), (1, 2), (3, 2), (4, 1)])
def test_epoch_batches_are_disjoint_and_complete_across_ranks(n, world, accumulation):
    import random

    from dsdocre.data.examples import epoch_batches

    rng = random.Random(n)
    lengths = [rng.randint(5, 900) for _ in range(n)]
    per_rank = [epoch_batches(lengths, 4, 3, 2, r, world, accumulation) for r in range(world)]
    seen = [i for batches in per_rank for b in batches for i in b]
    assert sorted(seen) == list(range(n))  # every document exactly once
    assert len({len(b) for b in per_rank}) == 1  # every rank runs the same number of micro-batches
    assert len(per_rank[0]) % accumulation == 0 and all(len(b) >= 1 for bs in per_rank for b in bs)
    # the same global batches whatever the layout: step k holds the same documents
    one = epoch_batches(lengths, 4, 3, 2, 0, 1, world * accumulation)
    for step in range(len(per_rank[0]) // accumulation):
        together = sorted(i for r in range(world) for b in per_rank[r][step * accumulation:(step + 1) * accumulation]
                          for i in b)
        alone = sorted(i for b in one[step * world * accumulation:(step + 1) * world * accumulation] for i in b)
        assert together == alone


def test_epoch_batches_refuse_too_few_documents():
    from dsdocre.data.examples import epoch_batches

    with pytest.raises(UserError, match="3 documents cannot fill the 4 micro-batches"):
        epoch_batches([5, 6, 7], 2, 0, 1, 0, 2, 2)
