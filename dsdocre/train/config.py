"""The ``training:`` section every training stage's config has (or extends)."""

from __future__ import annotations

from typing import Literal

from dsdocre.config import Section


class TrainingConfig(Section):
    """The ``training:`` section shared by the training stages."""

    deepspeed: str = "configs/deepspeed/finetune.json"  # batch size, AdamW, clipping, ZeRO stage, precision
    head_lr_multiplier: float = 1.0  # heads' learning rate = encoder's x this
    epochs: int = 10
    warmup_ratio: float = 0.06
    max_train_minutes: float = 0  # 0 = no time budget
    max_steps: int = 0  # 0 = no limit; stop after this many optimizer steps in all
    seed: int = 42
    threads: int = 0  # torch threads per process; 0 = torch's default
    # auto: bf16 on a GPU that has it (else fp16 on GPU), fp32 on CPU; "json": as the DeepSpeed JSON says
    precision: Literal["auto", "json", "fp32", "bf16", "fp16"] = "auto"
    # DeepSpeed checkpoints under output_dir/checkpoints (resumable runs). Off by default for the
    # short fine-tuning and rank-model runs: one checkpoint of a MiniLM-sized model with AdamW is ~0.9 GB.
    checkpoints: bool = False
    checkpoint_every: int = 0  # optimizer steps between checkpoints; 0 = after each epoch only
    checkpoint_every_minutes: float = 0  # also checkpoint when this much time passed since the last; 0 = off
    keep_checkpoints: int = 2  # newest checkpoints kept on disk
    resume: bool = True  # continue from output_dir/checkpoints when it holds a checkpoint
    # a step whose loss or gradient is not finite is skipped (counted, logged); this many in a row
    # stop the run with a checkpoint (its weights are those before the fault); 0 = never stop
    max_skipped_steps: int = 5


# What may change between a run and its resumption: how long it runs and how it checkpoints.
RESUMABLE_CHANGES = ("epochs", "max_steps", "max_train_minutes", "resume", "checkpoints", "checkpoint_every",
                     "checkpoint_every_minutes", "keep_checkpoints", "max_skipped_steps")

# DeepSpeed JSON keys a resumed run may change: the batch layout (with the global batch kept) and logging.
ELASTIC_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "steps_per_print", "tensorboard", "wall_clock_breakdown")
