"""The DeepSpeed engine every training stage drives: seeding, the schedule, the engine itself.

A stage builds its model and parameter groups, then calls :func:`build_engine` with its DeepSpeed
JSON (batch size, optimizer, clipping, ZeRO stage, precision live there) and a schedule from
:func:`linear_warmup_decay`. The stage's own loop stays in the stage's file.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np

from dsdocre.train import distributed


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def linear_warmup_decay(total_steps: int, warmup_steps: int) -> Callable[[int], float]:
    """Learning-rate factor: linear warm-up to 1, then linear decay to 0 at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def batch_layout(ds_config: dict) -> tuple[int, int]:
    """(micro-batch size per process, gradient accumulation steps) from the DeepSpeed JSON."""
    return (int(ds_config.get("train_micro_batch_size_per_gpu", 4)),
            int(ds_config.get("gradient_accumulation_steps", 1)))


def build_engine(model, param_groups: list[dict], ds_config: dict, schedule: Callable[[int], float]):
    """A DeepSpeed engine over ``model``; call after :func:`distributed.prepare_environment`.

    DeepSpeed builds the optimizer from its JSON, then calls the scheduler factory with the base
    optimizer (not the ZeRO wrapper) and steps the scheduler itself at accumulation boundaries;
    ``LambdaLR`` keeps the groups' learning-rate ratios.
    """
    import deepspeed
    import torch

    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups, config=ds_config,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
    return engine


def log(message: str) -> None:
    """Print on the main process only."""
    if distributed.is_main_process():
        print(message, flush=True)
