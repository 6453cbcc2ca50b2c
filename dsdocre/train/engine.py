"""The DeepSpeed engine every training stage trains through.

A stage reads its DeepSpeed JSON with :func:`deepspeed_config` (batch size, accumulation,
optimizer, clipping, ZeRO stage, precision live there), then :func:`build_engine` gives the engine
with two parameter groups (:func:`param_groups`) and a warm-up/decay schedule sized to the steps
the loop will run. :func:`optimizer_step` is DeepSpeed's step with non-finite steps reported;
:class:`EvaluationModel` is what rank 0 evaluates and saves, under any ZeRO stage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from dsdocre.train import distributed
from dsdocre.train.config import TrainingConfig


def apply_precision(ds_config: dict, precision: str) -> dict:
    """The DeepSpeed JSON with its ``bf16``/``fp16`` switches set for ``precision``."""
    import torch

    if precision == "json":
        return ds_config
    if precision == "auto":
        if not torch.cuda.is_available():
            precision = "fp32"
        else:  # bf16 where the GPU computes it natively (Ampere, compute capability 8.0, and later)
            precision = "bf16" if torch.cuda.get_device_capability() >= (8, 0) else "fp16"
    config = dict(ds_config)
    # bf16 has no loss scaler; DeepSpeed then skips a non-finite step only when told to check
    config["bf16"] = {"check_grad_overflow": True, **config.get("bf16", {}), "enabled": precision == "bf16"}
    config["fp16"] = {**config.get("fp16", {}), "enabled": precision == "fp16"}
    return config


def deepspeed_config(training: TrainingConfig, out_dir: Path, plan=None) -> dict:
    """The stage's DeepSpeed JSON as this run uses it: precision from ``training.precision``, the
    monitor's output under ``out_dir`` unless the JSON names one, and configured for ``plan``'s
    checkpoint (:func:`dsdocre.train.checkpoint.resume_plan`) when the run resumes."""
    from dsdocre.config import load_deepspeed_config

    ds_config = apply_precision(load_deepspeed_config(training.deepspeed), training.precision)
    monitor = ds_config.get("tensorboard", {})
    if monitor.get("enabled") and not monitor.get("output_path"):
        ds_config["tensorboard"] = {**monitor, "output_path": str(out_dir / "tensorboard")}
    return plan.deepspeed_config(ds_config) if plan is not None else ds_config


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


def param_groups(model, base_lr: float, head_lr_multiplier: float) -> list[dict]:
    """Two groups: the encoder at ``base_lr``, everything else (heads start from scratch) at
    ``base_lr * head_lr_multiplier``; a group without parameters is left out."""
    groups = [
        {"params": [p for n, p in model.named_parameters() if n.startswith("encoder.")], "lr": base_lr},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")],
         "lr": base_lr * head_lr_multiplier},
    ]
    return [g for g in groups if g["params"]]


def base_learning_rate(ds_config: dict) -> float:
    return float(ds_config.get("optimizer", {}).get("params", {}).get("lr", 1e-5))


def total_steps(training: TrainingConfig, steps_per_epoch: int) -> int:
    """Optimizer steps the run will take: every epoch's, or ``max_steps`` if fewer."""
    steps = steps_per_epoch * training.epochs
    return min(steps, training.max_steps) if training.max_steps else steps


def start(training: TrainingConfig, output_dir: str) -> Path:
    """Seeds, torch threads, the output folder: the first lines of every training stage."""
    import torch

    distributed.seed_everything(training.seed)
    torch.set_num_threads(training.threads or torch.get_num_threads())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_engine(model, training: TrainingConfig, ds_config: dict, steps_per_epoch: int):
    """A DeepSpeed engine over ``model`` (call after :func:`distributed.prepare_environment`):
    the encoder and head parameter groups, and the warm-up/decay schedule over
    :func:`total_steps`.

    DeepSpeed builds the optimizer from its JSON, then calls the scheduler factory with the base
    optimizer (not the ZeRO wrapper) and steps the scheduler itself at accumulation boundaries;
    ``LambdaLR`` keeps the groups' learning-rate ratios.
    """
    import deepspeed
    import torch

    steps = total_steps(training, steps_per_epoch)
    schedule = linear_warmup_decay(steps, int(training.warmup_ratio * steps))
    groups = param_groups(model, base_learning_rate(ds_config), training.head_lr_multiplier)
    if int(ds_config.get("zero_optimization", {}).get("stage", 0)) >= 3:
        for parameter in getattr(model, "external_parameters", list)():
            deepspeed.zero.register_external_parameter(model, parameter)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds_config,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
    distributed.unlink_cpu_allreduce_buffer()  # also for one process under the launcher
    return engine


class EvaluationModel:
    """What rank 0 evaluates and saves: the engine's module itself below ZeRO stage 3; under
    ZeRO-3 (each rank holds a partition only, and a forward pass on rank 0 alone would wait for
    the others) a plain copy built once by ``make_model`` and refreshed with the gathered weights
    at each call. Call on every rank; returns None on the others."""

    def __init__(self, engine, make_model: Callable[[], "object"] | None):
        self.engine, self.make_model, self.copy = engine, make_model, None

    def __call__(self):
        if distributed.zero_stage(self.engine) < 3:
            return self.engine.module if distributed.is_main_process() else None
        if self.make_model is None:
            raise ValueError("under ZeRO-3 the stage must say how to build a plain copy of its model")
        state = distributed.full_state_dict(self.engine)
        if state is None:
            return None
        if self.copy is None:
            self.copy = self.make_model()
        self.copy.load_state_dict(state)
        return self.copy.to(self.engine.device)


def optimizer_step(engine, boundary: bool) -> bool:
    """``engine.step()``; returns whether an optimizer step changed the weights (True between
    accumulation boundaries). ZeRO skips a step whose gradient norm is not finite by itself (and
    says so through ``was_step_applied``), and so does fp16's loss scaler at any stage (it lowers
    the scale after an overflow); otherwise (stage 0 in fp32 or bf16) the gradients are checked here,
    with one host read, and such a step runs with the optimizer and schedule held still (the
    gradients are already averaged over ranks, so every rank decides the same)."""
    import torch

    if not boundary:
        engine.step()
        return True
    if distributed.zero_stage(engine) == 0 and not engine.fp16_enabled():
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        if grads and not bool(torch.stack([torch.isfinite(g).all() for g in grads]).all()):
            for g in grads:  # zeroed, not dropped: DeepSpeed's clipping expects every gradient
                g.zero_()
            optimizer, scheduler = engine.optimizer, engine.lr_scheduler
            optimizer.step = lambda *a, **k: None  # instance attributes shadow the methods for this call
            if scheduler is not None:
                scheduler.step = lambda *a, **k: None
            try:
                engine.step()
            finally:
                del optimizer.step
                if scheduler is not None:
                    del scheduler.step
            return False
    engine.step()
    return bool(engine.was_step_applied())


def is_numerical_fault(applied: bool, fp16: bool, losses_finite) -> bool:
    """Whether a step that changed no weights counts toward ``max_skipped_steps``. Under fp16 the
    loss scaler skips the steps whose scaled gradient overflowed as its normal way of finding the
    scale (many in a row while it warms up): only a non-finite loss is a fault there.
    ``losses_finite`` (a bool or a device tensor) is read only in that case."""
    if applied:
        return False
    return not fp16 or not bool(losses_finite)
