"""The training core every training stage drives (fine-tuning, the rank model, pre-training).

A stage builds its model, then calls :func:`build_engine` with its DeepSpeed JSON (batch size,
accumulation, optimizer, clipping, ZeRO stage, precision live there), parameter groups from
:func:`param_groups` and a schedule from :func:`linear_warmup_decay`; :func:`train_epochs` runs
the epochs with the stage's own loss and evaluation, and every stop agreed by all ranks. The
``training:`` section of each stage config is :class:`TrainingConfig` (or extends it).
"""

from __future__ import annotations

import math
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from dsdocre.config import Section
from dsdocre.train import distributed


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


def apply_precision(ds_config: dict, precision: str) -> dict:
    """The DeepSpeed JSON with its ``bf16``/``fp16`` switches set for ``precision``."""
    import torch

    if precision == "json":
        return ds_config
    if precision == "auto":
        if not torch.cuda.is_available():
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    config = dict(ds_config)
    # bf16 has no loss scaler; DeepSpeed then skips a non-finite step only when told to check
    config["bf16"] = {"check_grad_overflow": True, **config.get("bf16", {}), "enabled": precision == "bf16"}
    config["fp16"] = {**config.get("fp16", {}), "enabled": precision == "fp16"}
    return config


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


def param_groups(model, base_lr: float, head_lr_multiplier: float) -> list[dict]:
    """Two groups: the encoder at ``base_lr``, everything else (heads start from scratch) at
    ``base_lr * head_lr_multiplier``."""
    return [
        {"params": [p for n, p in model.named_parameters() if n.startswith("encoder.")], "lr": base_lr},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")],
         "lr": base_lr * head_lr_multiplier},
    ]


def base_learning_rate(ds_config: dict) -> float:
    return float(ds_config.get("optimizer", {}).get("params", {}).get("lr", 1e-5))


@dataclass
class EngineRun:
    """A DeepSpeed engine and this rank's share of the data, as a stage's loop needs them."""

    engine: object
    batches_of: Callable[[int], list[list[int]]]  # epoch -> this rank's micro-batches (document indices)
    micro_batch: int
    accumulation: int
    steps_per_epoch: int  # optimizer steps, a short last step included
    world: int


def setup_engine(model, training: TrainingConfig, lengths: list[int], stage: str, plan=None) -> EngineRun:
    """From the stage's DeepSpeed JSON: the engine (parameter groups, warm-up/decay schedule sized
    to the steps the loop will run) and the deterministic per-rank batches of ``lengths``' documents.
    ``plan`` (:func:`resume_plan`) configures the engine for the checkpoint it will resume from."""
    from dsdocre.config import load_deepspeed_config
    from dsdocre.data.examples import epoch_batches

    ds_config = apply_precision(load_deepspeed_config(training.deepspeed), training.precision)
    if plan is not None:
        ds_config = plan.deepspeed_config(ds_config)
    micro_batch, accumulation = batch_layout(ds_config)
    world, rank = distributed.world_size(), distributed.rank()

    def batches_of(epoch: int) -> list[list[int]]:
        return epoch_batches(lengths, micro_batch, training.seed, epoch, rank, world, accumulation)

    steps_per_epoch = len(batches_of(1)) // accumulation
    total_steps = steps_per_epoch * training.epochs
    if training.max_steps:
        total_steps = min(total_steps, training.max_steps)
    engine = build_engine(model, param_groups(model, base_learning_rate(ds_config), training.head_lr_multiplier),
                          ds_config, linear_warmup_decay(total_steps, int(training.warmup_ratio * total_steps)))
    return EngineRun(engine, batches_of, micro_batch, accumulation, steps_per_epoch, world)


def start(training: TrainingConfig, output_dir: str) -> Path:
    """Seeds, torch threads, the output folder: the first lines of every training stage."""
    import torch

    seed_everything(training.seed)
    torch.set_num_threads(training.threads or torch.get_num_threads())
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_engine(model, param_groups: list[dict], ds_config: dict, schedule: Callable[[int], float]):
    """A DeepSpeed engine over ``model``; call after :func:`distributed.prepare_environment`.

    DeepSpeed builds the optimizer from its JSON, then calls the scheduler factory with the base
    optimizer (not the ZeRO wrapper) and steps the scheduler itself at accumulation boundaries;
    ``LambdaLR`` keeps the groups' learning-rate ratios.
    """
    import deepspeed
    import torch

    if int(ds_config.get("zero_optimization", {}).get("stage", 0)) >= 3:
        for parameter in getattr(model, "external_parameters", list)():
            deepspeed.zero.register_external_parameter(model, parameter)
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=param_groups, config=ds_config,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
    distributed.unlink_cpu_allreduce_buffer()  # also for one process under the launcher
    return engine


def zero_stage(engine) -> int:
    return int(engine.zero_optimization_stage())


@contextmanager
def full_parameters(engine):
    """Inside the block every parameter of ``engine.module`` is whole on every rank: ZeRO-3 keeps
    only a partition of each outside a forward pass; below stage 3 this does nothing. A collective:
    every rank enters."""
    if zero_stage(engine) >= 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def full_state_dict(engine) -> dict | None:
    """The module's whole state dict (CPU copies) on rank 0, None on the other ranks. A collective."""
    with full_parameters(engine):
        if not distributed.is_main_process():
            return None
        return {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()}


class EvaluationModel:
    """What rank 0 evaluates and saves: the engine's module itself below ZeRO stage 3; under
    ZeRO-3 (each rank holds a partition only, and a forward pass on rank 0 alone would wait for
    the others) a plain copy built once by ``make_model`` and refreshed with the gathered weights
    at each call. Call on every rank; returns None on the others."""

    def __init__(self, engine, make_model: Callable[[], "object"] | None):
        self.engine, self.make_model, self.copy = engine, make_model, None

    def __call__(self):
        if zero_stage(self.engine) < 3:
            return self.engine.module if distributed.is_main_process() else None
        if self.make_model is None:
            raise ValueError("under ZeRO-3 the stage must say how to build a plain copy of its model")
        state = full_state_dict(self.engine)
        if state is None:
            return None
        if self.copy is None:
            self.copy = self.make_model()
        self.copy.load_state_dict(state)
        return self.copy.to(self.engine.device)


def log(message: str) -> None:
    """Print on the main process only."""
    if distributed.is_main_process():
        print(message, flush=True)


# What may change between a run and its resumption: how long it runs and how it checkpoints.
RESUMABLE_CHANGES = ("epochs", "max_steps", "max_train_minutes", "resume", "checkpoints", "checkpoint_every",
                     "checkpoint_every_minutes", "keep_checkpoints", "max_skipped_steps")


# DeepSpeed JSON keys a resumed run may change: the batch layout (with the global batch kept,
# :func:`check_global_batch`) and logging.
ELASTIC_KEYS = ("train_micro_batch_size_per_gpu", "gradient_accumulation_steps", "train_batch_size",
                "steps_per_print", "tensorboard", "wall_clock_breakdown")


def run_fingerprint(config) -> str:
    """A run's identity for resumption: its stage config and DeepSpeed JSON, less what a resumed
    run may change (:data:`RESUMABLE_CHANGES`, :data:`ELASTIC_KEYS`, ``output_dir``)."""
    import hashlib
    import json

    from dsdocre.config import to_plain

    from dsdocre.config import load_deepspeed_config

    plain = to_plain(config)
    plain.pop("output_dir", None)
    training = plain.get("training", {})
    for key in RESUMABLE_CHANGES:
        training.pop(key, None)
    if "deepspeed" in training:  # the JSON's content, less how the global batch is cut over processes
        ds_config = load_deepspeed_config(training.pop("deepspeed"))
        training["deepspeed_json"] = {k: v for k, v in ds_config.items() if k not in ELASTIC_KEYS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


# The checkpoint's client-state key for the count of skipped (non-finite) steps. Not "skipped_steps":
# DeepSpeed keeps its own value under that name and leaves it out of the client state it returns.
SKIPPED_KEY = "nonfinite_steps_skipped"


def resume_plan(training: TrainingConfig, run_dir: str | Path, fingerprint: str):
    """The verified checkpoint under ``run_dir`` to resume from (:class:`checkpoint.ResumePlan`), or
    None for a fresh start (no checkpoint, or ``training.resume`` off). Call before building the
    engine (a checkpoint of another world size needs the engine configured for DeepSpeed's universal
    form: pass the plan to :func:`setup_engine`, or apply ``plan.deepspeed_config``). A checkpoint
    of another run (another ``fingerprint``) is refused rather than continued. Every rank calls it."""
    from dsdocre.errors import UserError
    from dsdocre.train import checkpoint

    if not training.resume or not checkpoint.has_checkpoint(run_dir):
        return None
    saved = checkpoint.saved_fingerprint(run_dir)
    if saved != fingerprint:
        raise UserError(f"{run_dir} holds a checkpoint of another run (config fingerprint {saved}, this run's "
                        f"{fingerprint}): use another output_dir, or --set training.resume=false to start over")
    return checkpoint.plan_resume(run_dir)


def resume_point(engine, training: TrainingConfig, plan) -> dict | None:
    """The loop state of ``plan``'s checkpoint restored into ``engine`` (model, optimizer, scheduler,
    every rank's RNG), or None when there is no plan (a fresh start). Every rank calls it."""
    from dsdocre.train import checkpoint

    if plan is None:
        return None
    state = checkpoint.resume_from(engine, plan, training.seed)
    log(f"resuming from {plan.folder}" + (f" (written by {plan.saved_world} processes, read through DeepSpeed's "
                                          "universal checkpoint)" if plan.universal else ""))
    return state


def check_global_batch(resumed: dict, global_batch: int) -> None:
    """A run resumed on another number of processes keeps its global batch (micro-batch x processes x
    accumulation): the data position is counted in global batches."""
    from dsdocre.errors import UserError

    saved = resumed.get("global_batch")
    if saved is not None and saved != global_batch:
        raise UserError(f"the checkpoint was written with a global batch of {saved} samples, this run's is "
                        f"{global_batch}: set gradient_accumulation_steps (or the micro-batch) in the DeepSpeed "
                        "JSON so that micro-batch x processes x accumulation stays the same")


class StepControl:
    """What every rank decides together after each optimizer step, in one all-reduce: stop (time
    budget or ``max_steps`` reached, SIGTERM received by any rank, too many non-finite steps in a
    row) and checkpoint (every ``checkpoint_every`` steps, every ``checkpoint_every_minutes``, or
    before stopping on SIGTERM or a numerical fault).

    SIGTERM (what a preempting scheduler sends; the deepspeed launcher forwards it to each rank in
    turn) only sets a flag here: the ranks finish the step in flight, agree, save and stop, so the
    job exits within one step and one checkpoint, and a rank that has not yet received the signal
    stops with the others. A step DeepSpeed did not apply (its gradient norm was not finite: ZeRO
    checks it, and :func:`optimizer_step` does under stage 0) is counted and logged.
    """

    def __init__(self, training: TrainingConfig):
        import signal
        import threading

        self.training = training
        self.terminated = False
        self.skipped_in_a_row = self.skipped_total = 0
        self.last_save = time.monotonic()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True

    def close(self) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def decide(self, step: int, finished: bool, applied: bool = True) -> tuple[bool, bool, str]:
        """``(stop, save, reason)`` after optimizer step ``step``: ``finished`` is this rank's own
        view (budget or step limit), ``applied`` whether the step changed the weights."""
        every_s = self.training.checkpoint_every_minutes * 60
        time_due = bool(every_s) and time.monotonic() - self.last_save >= every_s
        finished, terminated, time_due, skipped = (bool(x) for x in distributed.agree_flags(
            [int(finished), int(self.terminated), int(time_due), int(not applied)]))
        reason = ""
        if skipped:
            self.skipped_in_a_row += 1
            self.skipped_total += 1
            log(f"step {step}: loss or gradient not finite, step skipped ({self.skipped_in_a_row} in a row, "
                f"{self.skipped_total} in all)")
        else:
            self.skipped_in_a_row = 0
        numerical = bool(self.training.max_skipped_steps) and self.skipped_in_a_row >= self.training.max_skipped_steps
        if terminated:
            reason = "sigterm"
        elif numerical:
            reason = "nonfinite"
        elif finished:
            reason = "finished"
        every = self.training.checkpoint_every
        save = terminated or numerical or time_due or bool(every and step % every == 0)
        return bool(reason), save, reason

    def interrupted(self, step: int, reason: str, checkpointed: bool):
        """The exception that ends a run stopped on SIGTERM or by numerical faults."""
        from dsdocre.errors import Interrupted

        where = "a checkpoint was saved: run the same command again to resume" if checkpointed else \
            "checkpoints are off (training.checkpoints=false): nothing to resume from"
        if reason == "sigterm":
            return Interrupted(f"stopped on SIGTERM after step {step}; {where}", 143)
        return Interrupted(f"stopped after {self.skipped_in_a_row} steps in a row with a non-finite loss or "
                           f"gradient (step {step}; {self.skipped_total} skipped in all); the weights are those "
                           f"before the fault and {where}. Lower the learning rate or check the data of these "
                           "steps", 3)


def optimizer_step(engine, boundary: bool) -> bool:
    """``engine.step()``; returns whether an optimizer step changed the weights (True between
    accumulation boundaries). ZeRO skips a step whose gradient norm is not finite by itself (and
    says so through ``was_step_applied``); without ZeRO (stage 0) the gradients are checked here and
    such a step runs with the optimizer and schedule held still (the gradients are already averaged
    over ranks, so every rank decides the same)."""
    import torch

    if not boundary:
        engine.step()
        return True
    if zero_stage(engine) == 0:
        grads = [p.grad for p in engine.module.parameters() if p.grad is not None]
        if grads and not all(bool(torch.isfinite(g).all()) for g in grads):
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


def train_epochs(engine, training: TrainingConfig, *, batches_of: Callable[[int], list[list[int]]],
                 loss_of: Callable[[list[int]], "object"], evaluate: Callable[[dict, "object"], dict],
                 accumulation: int = 1, name: str = "train", make_model: Callable[[], "object"] | None = None,
                 run_dir: str | Path | None = None, resumed: dict | None = None,
                 stage_state: dict | None = None, fingerprint: str = "") -> dict:
    """The loop: epochs of micro-batches (``batches_of(epoch)``, this rank's document indices),
    ``loss_of(indices)`` forward, DeepSpeed's backward and step, then ``evaluate(record, model)``
    on rank 0 after each epoch (it returns the record with its metrics, and saves what it wants to
    keep); ``model`` is :class:`EvaluationModel`'s (``make_model`` builds the plain copy ZeRO-3 needs).

    Stops at the end of ``training.epochs``, or when the time budget or ``max_steps`` is reached,
    decided at optimizer-step boundaries and agreed by all ranks (each rank's clock differs: one
    leaving alone would leave the others waiting in an all-reduce). A failure in rank 0's
    evaluation releases the other ranks, which then fail too. Returns the epoch records and totals.

    Checkpoints (with ``run_dir``): every ``training.checkpoint_every`` optimizer steps, after each
    epoch's evaluation and at a stop, DeepSpeed's checkpoint with the loop's state (epoch, micro-batches
    done in it, totals, records, and ``stage_state``: the stage's own JSON-able state, e.g. the best
    score so far, updated in place). ``resumed`` (from :func:`resume_point`) continues a run exactly
    where its checkpoint left it: the epoch's batches are a pure function of (seed, epoch), so the
    micro-batches already done are skipped, and the RNGs are those of that moment. A checkpoint of
    another number of processes resumes when the global batch is the same (processes x
    accumulation): the steps done are re-cut over the new ranks.

    Faults (:class:`StepControl`): checkpoints also every ``checkpoint_every_minutes``; SIGTERM
    saves and raises :class:`dsdocre.errors.Interrupted`; a step with a non-finite loss or gradient
    is skipped and counted, and ``max_skipped_steps`` of them in a row save and raise.
    """
    from tqdm.auto import tqdm

    from dsdocre.train import checkpoint, faults

    main = distributed.is_main_process()
    world = distributed.world_size()
    budget_s = training.max_train_minutes * 60 or math.inf
    stage_state = stage_state if stage_state is not None else {}
    loop = {"epoch": 1, "micro_step": 0, "steps": 0, "docs_seen": 0, "train_seconds": 0.0, "records": [],
            "epoch_losses": [], SKIPPED_KEY: 0}
    if resumed:
        loop.update({k: resumed.get(k, v) for k, v in loop.items()})
        stage_state.update(resumed.get("stage", {}))
        saved_world, saved_accumulation = resumed.get("world_size", world), resumed.get("accumulation", accumulation)
        if saved_world * saved_accumulation != world * accumulation:
            from dsdocre.errors import UserError

            raise UserError(f"the checkpoint was written by {saved_world} processes x {saved_accumulation} "
                            f"accumulation steps, this run has {world} x {accumulation}: keep the product (the "
                            "global batch) the same through gradient_accumulation_steps in the DeepSpeed JSON")
        # the position is saved at an optimizer-step boundary: the same steps, cut anew over the ranks
        loop["micro_step"] = loop["micro_step"] // saved_accumulation * accumulation

    control = StepControl(training)
    control.skipped_total = loop[SKIPPED_KEY]

    def save() -> None:
        if run_dir is not None and training.checkpoints:
            checkpoint.save(engine, run_dir, loop["steps"], {**loop, "stage": stage_state, "accumulation": accumulation},
                            keep=training.keep_checkpoints, fingerprint=fingerprint)
            control.saved()

    stop, reason = False, ""
    if training.max_steps and loop["steps"] >= training.max_steps:
        stop = True  # resumed from the checkpoint of a run that already reached max_steps
    evaluation_model = EvaluationModel(engine, make_model)
    try:
        while loop["epoch"] <= training.epochs and not stop:
            epoch = loop["epoch"]
            engine.train()
            started = time.perf_counter()
            seconds_before = loop["train_seconds"]
            losses = loop["epoch_losses"]
            batches = batches_of(epoch)
            bar = tqdm(total=len(batches), initial=loop["micro_step"], desc=f"{name} epoch {epoch}/{training.epochs}",
                       disable=not main)
            for micro_step in range(loop["micro_step"], len(batches)):
                idx = batches[micro_step]
                loss = loss_of(idx)
                if faults.armed("nan-loss", loop["steps"] + 1):
                    loss = loss * float("nan")
                engine.backward(loss)
                boundary = (micro_step + 1) % accumulation == 0
                applied = optimizer_step(engine, boundary)
                if math.isfinite(loss.item()):
                    losses.append(loss.item())
                loop["docs_seen"] += len(idx)
                loop["micro_step"] = micro_step + 1
                bar.update(1)
                if losses:
                    bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
                if not boundary:
                    continue  # decide only at optimizer-step boundaries
                loop["steps"] += 1
                loop["train_seconds"] = seconds_before + time.perf_counter() - started
                over_budget = loop["train_seconds"] > budget_s
                over_steps = bool(training.max_steps) and loop["steps"] >= training.max_steps
                stop, due, reason = control.decide(loop["steps"], over_budget or over_steps, applied)
                loop[SKIPPED_KEY] = control.skipped_total
                if reason in ("sigterm", "nonfinite"):
                    save()
                    raise control.interrupted(loop["steps"], reason, run_dir is not None and training.checkpoints)
                if stop:
                    break
                if due and loop["micro_step"] < len(batches):
                    save()
            bar.close()
            loop["train_seconds"] = seconds_before + time.perf_counter() - started
            steps = loop["steps"]

            # every rank's micro-batches, not rank 0's alone (a collective: every rank is here)
            loss_sum, loss_count = distributed.sum_over_ranks([sum(losses), len(losses)])
            record = {"epoch": epoch, "loss": loss_sum / loss_count if loss_count else None, "steps": steps,
                      "train_seconds": round(loop["train_seconds"], 1), "docs_seen": loop["docs_seen"] * world}
            model = evaluation_model()  # every rank: a collective under ZeRO-3
            if main:
                try:
                    record = evaluate(record, model)
                except BaseException:
                    distributed.agree(distributed.FAILED)  # release the other ranks, then fail here
                    raise
            if distributed.agree(distributed.CONTINUE) == distributed.FAILED:
                raise RuntimeError("rank 0 failed while evaluating; see its log")
            loop["records"].append(record)
            if loop["micro_step"] >= len(batches):  # the epoch is done (a stop inside it resumes inside it)
                loop.update(epoch=epoch + 1, micro_step=0, epoch_losses=[])
            save()
            if stop:
                log(f"stopping after epoch {epoch} ({steps} steps): "
                    + ("max_steps reached" if training.max_steps and steps >= training.max_steps
                       else f"time budget of {budget_s / 60:.1f} min reached"))
    finally:
        control.close()
    return {"records": loop["records"], "steps": loop["steps"], "docs_seen": loop["docs_seen"] * world,
            "skipped_steps": loop[SKIPPED_KEY],
            "train_seconds": round(loop["train_seconds"], 1)}
