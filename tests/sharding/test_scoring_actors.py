"""How many Ray scoring actors, and what each takes: fractional GPUs so that any number of workers
fits (a whole GPU each made workers beyond the GPU count wait forever), a clear error for more CPU
workers than the cluster has."""

from __future__ import annotations

import pytest

from dsdocre.errors import UserError
from sharding.denoise_score import ACTORS_PER_GPU, plan_actors


def test_actors_share_the_gpus_in_fractions():
    assert plan_actors(None, 100, 16, 1.0, "auto") == (ACTORS_PER_GPU, 1 / ACTORS_PER_GPU, 0)
    assert plan_actors(6, 100, 16, 2.0, "cuda") == (6, round(2 / 6, 4), 0)  # 6 workers on 2 GPUs: no wait
    assert plan_actors(None, 3, 16, 8.0, "auto") == (3, 1.0, 0)  # never more than a GPU each, nor than shards


def test_cpu_actors_take_a_cpu_each_and_too_many_is_an_error():
    assert plan_actors(None, 100, 8, 0.0, "auto") == (8, 0, 1)
    assert plan_actors(None, 100, 8, 4.0, "cpu") == (8, 0, 1)  # GPUs there, CPU asked for
    with pytest.raises(UserError, match="--workers 12: the Ray cluster has 8 CPUs"):
        plan_actors(12, 100, 8, 0.0, "auto")
    with pytest.raises(UserError, match="the Ray cluster has no GPU"):
        plan_actors(None, 100, 8, 0.0, "cuda")
