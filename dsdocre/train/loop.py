"""The one training loop every training stage drives: fine-tuning, the rank model, pre-training.

A stage hands :func:`train` its engine, a step source and a loss::

    source     this rank's steps, resumable (:class:`StepSource`): fine-tuning and the rank model
               use :class:`EpochBatches` over their documents, pre-training
               :class:`dsdocre.data.pretrain_data.PairBatches` over its pair shards
    loss_of    micro-batch -> loss tensor (or :class:`MicroResult` with a weight and outputs)
    on_step    optional, after each optimizer step on every rank (:class:`StepInfo`): metrics
    on_epoch   optional, after each epoch on rank 0: evaluate, keep the best model

The loop does the rest, the same way for every stage: DeepSpeed's backward and step at each
micro-batch, the decisions all ranks agree on after each optimizer step (:class:`StepControl`:
time budget, ``max_steps``, SIGTERM, non-finite steps), checkpoints with one client-state format
(:func:`client_state`), and an exact resume from them: the step source's position, the loop's
totals and records, the stage's own state (``stage_state``, e.g. the best score so far) and every
rank's RNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Protocol

from dsdocre.errors import UserError
from dsdocre.train import checkpoint, distributed, faults
from dsdocre.train.checkpoint import SKIPPED_KEY
from dsdocre.train.config import TrainingConfig
from dsdocre.train.control import StepControl
from dsdocre.train.engine import EvaluationModel, is_numerical_fault, optimizer_step, total_steps

# The client-state format of a checkpoint (:func:`client_state`): refuse to resume another.
STATE_VERSION = 2


class StepSource(Protocol):
    """This rank's optimizer steps, in order, from a position that can be saved and restored.

    Each step has ``epoch``, ``micro_batches`` (a list, as long as the accumulation: DeepSpeed
    counts micro-batches to find the optimizer step) and ``samples`` (this rank's real samples in it).
    """

    global_batch: int  # samples per optimizer step over all ranks: a resume must keep it

    @property
    def epoch(self) -> int: ...  # the epoch of the next step

    def steps_per_epoch(self) -> int: ...

    def __iter__(self) -> Iterator: ...  # the steps from the position to the end of its epoch

    def advance(self) -> None: ...  # one step consumed (after its optimizer step)

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


@dataclass
class DocumentStep:
    """One optimizer step of this rank over annotated documents: ``accumulation`` micro-batches,
    each its document indices or, when the source prepares them, the collated batch."""

    epoch: int
    micro_batches: list
    samples: int  # documents in the step

    def pin_memory(self) -> "DocumentStep":
        """Tensors of prepared micro-batches in page-locked memory (DataLoader's pin_memory calls it)."""
        self.micro_batches = [{k: v.pin_memory() for k, v in m.items()} if isinstance(m, dict) else m
                              for m in self.micro_batches]
        return self


class EpochBatches:
    """A :class:`StepSource` over ``batches_of(epoch)``: this rank's micro-batches of one epoch, a
    pure function of (seed, epoch) and the global batch (:func:`dsdocre.data.examples.epoch_batches`),
    taken ``accumulation`` at a time. The position is (epoch, optimizer steps done in it): a step is
    global, so a resume on another number of processes with the same global batch continues at the
    same documents.

    ``prepare`` (document indices -> batch, e.g. collated tensors) is applied to every micro-batch as
    the step is built; with ``workers`` > 0 the steps are built ahead by that many persistent
    DataLoader processes (:class:`dsdocre.data.loader.StepLoader`), in page-locked memory on a GPU."""

    def __init__(self, batches_of: Callable[[int], list[list[int]]], accumulation: int, global_batch: int,
                 prepare: Callable[[list[int]], object] | None = None, workers: int = 0):
        from dsdocre.data.loader import StepLoader

        self.batches_of, self.accumulation, self.global_batch = batches_of, accumulation, global_batch
        self.prepare = prepare
        self._epoch, self._done = 1, 0
        self._steps = len(batches_of(1)) // accumulation
        self._loader = StepLoader(self._build, workers)

    def _build(self, epoch: int, start: int, worker: int, workers: int) -> Iterator[DocumentStep]:
        batches, k = self.batches_of(epoch), self.accumulation
        for step in range(start + worker, len(batches) // k, workers):
            micro = batches[step * k:(step + 1) * k]
            yield DocumentStep(epoch, [self.prepare(m) for m in micro] if self.prepare else micro,
                               sum(len(m) for m in micro))

    @property
    def epoch(self) -> int:
        return self._epoch

    def steps_per_epoch(self) -> int:
        return self._steps

    def __iter__(self) -> Iterator[DocumentStep]:
        return self._loader(self._epoch, self._done)

    def advance(self) -> None:
        self._done += 1
        if self._done >= self._steps:
            self._epoch, self._done = self._epoch + 1, 0

    def state_dict(self) -> dict:
        return {"epoch": self._epoch, "steps": self._done, "global_batch": self.global_batch}

    def load_state_dict(self, state: dict) -> None:
        self._epoch, self._done = int(state["epoch"]), int(state["steps"])

    def close(self) -> None:
        self._loader.close()


@dataclass
class MicroResult:
    """What a stage's ``loss_of`` returns for one micro-batch, when a bare loss tensor is not enough."""

    loss: object  # the tensor DeepSpeed's backward gets
    weight: float = 1.0  # 0 for padding a rank runs to keep step with the others: not counted
    outputs: dict | None = None  # the model's outputs, for the stage's step metrics
    finite: object = None  # set by the loop: whether the loss is finite (a bool tensor, on the device)


@dataclass
class StepInfo:
    """What ``on_step`` is told after each optimizer step (every rank)."""

    step: int  # optimizer steps done in all
    batch: object  # the source's step (its epoch, micro-batches, samples)
    results: list[MicroResult]  # the real micro-batches (weight > 0); each says whether its loss was finite
    times: dict[str, float]  # seconds: data_wait, forward, backward, optimizer, step
    skipped_total: int  # non-finite steps skipped so far
    finished: bool  # the run stops after this step (its last, or an agreed stop)


@dataclass
class LoopState:
    """The loop's totals: what a checkpoint saves beside the source's position."""

    step: int = 0
    train_seconds: float = 0.0
    samples_seen: int = 0  # this rank's
    records: list[dict] = field(default_factory=list)  # one per epoch (or part of one)
    epoch_loss: list[float] = field(default_factory=lambda: [0.0, 0])  # this rank's finite losses: sum, count
    skipped: int = 0


def client_state(state: LoopState, source: StepSource, stage_state: dict) -> dict:
    """The checkpoint's client state, the same for every stage."""
    return {"version": STATE_VERSION, "step": state.step, "train_seconds": state.train_seconds,
            "samples_seen": state.samples_seen, "records": state.records, "epoch_loss": state.epoch_loss,
            SKIPPED_KEY: state.skipped, "data": source.state_dict(), "global_batch": source.global_batch,
            "stage": stage_state}


def restore_loop(resumed: dict, source: StepSource, stage_state: dict) -> LoopState:
    """The loop's state from a checkpoint's client state; the source continues where it was."""
    if resumed.get("version") != STATE_VERSION:
        raise UserError("the checkpoint was written by an older dsdocre (another loop-state format): start over "
                        "with --set training.resume=false, or use another output_dir")
    if resumed["global_batch"] != source.global_batch:
        raise UserError(f"the checkpoint was written with a global batch of {resumed['global_batch']} samples, this "
                        f"run's is {source.global_batch}: set gradient_accumulation_steps (or the micro-batch) in the "
                        "DeepSpeed JSON so that micro-batch x processes x accumulation stays the same")
    source.load_state_dict(resumed["data"])
    stage_state.update(resumed.get("stage", {}))
    return LoopState(step=resumed["step"], train_seconds=resumed["train_seconds"],
                     samples_seen=resumed["samples_seen"], records=list(resumed["records"]),
                     epoch_loss=list(resumed["epoch_loss"]), skipped=resumed.get(SKIPPED_KEY, 0))


def train(engine, training: TrainingConfig, source: StepSource, loss_of: Callable[[object], object], *,
          name: str = "train", run_dir: str | Path | None = None, fingerprint: str = "",
          resumed: dict | None = None, stage_state: dict | None = None,
          on_step: Callable[[StepInfo], None] | None = None,
          on_epoch: Callable[[dict, object], dict] | None = None,
          make_model: Callable[[], object] | None = None,
          export: Callable[[dict, Path], None] | None = None) -> dict:
    """Train until ``training.epochs`` are done, or the time budget or ``max_steps`` is reached;
    returns the epoch records and totals.

    Every stop is decided at an optimizer-step boundary and agreed by all ranks (each rank's clock
    differs: one leaving alone would leave the others waiting in an all-reduce). After each epoch,
    and at a stop inside one, the epoch's record (mean loss over every rank's micro-batches, steps,
    time) goes to ``on_epoch(record, model)`` on rank 0, which returns it with its metrics; ``model``
    is :class:`EvaluationModel`'s (``make_model`` builds the plain copy ZeRO-3 needs). A failure in
    rank 0's evaluation releases the other ranks, which then fail too.

    Checkpoints (with ``run_dir`` and ``training.checkpoints``): every ``checkpoint_every`` steps,
    every ``checkpoint_every_minutes``, after each evaluated epoch, at a stop and at the end, with the client state of
    :func:`client_state`; ``export(state_dict, folder)`` also writes the model a user loads (with
    checkpoints off, it alone is written at those points). ``resumed`` (from
    :func:`dsdocre.train.checkpoint.restore`) continues the run exactly where its checkpoint left it.
    SIGTERM saves and raises :class:`dsdocre.errors.Interrupted`; a step with a non-finite loss or
    gradient is skipped and counted, and ``max_skipped_steps`` of them in a row save and raise.
    """
    import torch
    from tqdm.auto import tqdm

    main, world = distributed.is_main_process(), distributed.world_size()
    device = engine.device
    budget_s = training.max_train_minutes * 60 or math.inf
    stage_state = stage_state if stage_state is not None else {}
    state = restore_loop(resumed, source, stage_state) if resumed else LoopState()
    checkpoints = run_dir is not None and training.checkpoints
    clock = _PhaseClock(device)
    evaluation_model = EvaluationModel(engine, make_model)
    fp16 = bool(getattr(engine, "fp16_enabled", lambda: False)())
    last_step = total_steps(training, source.steps_per_epoch())

    def save() -> None:
        if checkpoints:
            checkpoint.save(engine, run_dir, state.step, client_state(state, source, stage_state),
                            keep=training.keep_checkpoints, export=export, fingerprint=fingerprint)
            control.saved()
        elif export is not None and run_dir is not None:
            checkpoint.export_only(engine, run_dir, export)

    def end_epoch(epoch: int, due: bool) -> None:
        # every rank's micro-batches, not rank 0's alone (a collective: every rank is here)
        loss_sum, loss_count = distributed.sum_over_ranks(state.epoch_loss)
        record = {"epoch": epoch, "loss": loss_sum / loss_count if loss_count else None, "steps": state.step,
                  "train_seconds": round(state.train_seconds, 1), "samples_seen": state.samples_seen * world}
        if on_epoch is not None:
            model = evaluation_model()  # every rank: a collective under ZeRO-3
            if main:
                try:
                    record = on_epoch(record, model)
                except BaseException:
                    distributed.agree(distributed.FAILED)  # release the other ranks, then fail here
                    raise
            if distributed.agree(distributed.CONTINUE) == distributed.FAILED:
                raise RuntimeError("rank 0 failed while evaluating; see its log")
        state.records.append(record)
        if source.epoch != epoch:  # the epoch is done (a stop inside it resumes inside it)
            state.epoch_loss = [0.0, 0]
        # after an evaluated epoch (its best score is state to keep), at a stop and at the end, or when due
        if on_epoch is not None or due or stop or source.epoch > training.epochs:
            save()

    with StepControl(training) as control:
        control.skipped_total = state.skipped
        stop = bool(training.max_steps) and state.step >= training.max_steps  # resumed from a finished run
        due = False
        while source.epoch <= training.epochs and not stop:
            epoch = source.epoch
            engine.train()
            loss_sum = torch.zeros((), dtype=torch.float64, device=device)  # read once per epoch
            loss_count = torch.zeros((), dtype=torch.int64, device=device)
            bar = tqdm(total=source.steps_per_epoch(), initial=_position_in_epoch(source),
                       desc=f"{name} epoch {epoch}/{training.epochs}", disable=not main)
            steps, shown = iter(source), time.perf_counter()
            while True:
                t0 = time.perf_counter()
                batch = next(steps, None)  # data wait: the time this rank waits for its next step
                if batch is None:
                    break
                t_data = time.perf_counter()
                marks = []  # per micro-batch: before forward, after forward, after backward, after the step
                poisoned = faults.armed("nan-loss", state.step + 1)  # a test's injected numerical fault
                results = []
                losses_finite = torch.ones((), dtype=torch.bool, device=device)  # this step's, on the device
                for i, micro in enumerate(batch.micro_batches):
                    ta = clock.mark()
                    result = loss_of(micro)
                    if not isinstance(result, MicroResult):
                        result = MicroResult(result)
                    loss = result.loss * float("nan") if poisoned else result.loss
                    tb = clock.mark()
                    engine.backward(loss)
                    tc = clock.mark()
                    # DeepSpeed steps the optimizer at the accumulation boundary (a non-finite step is skipped)
                    applied = optimizer_step(engine, boundary=i == len(batch.micro_batches) - 1)
                    marks.append((ta, tb, tc, clock.mark()))
                    result.finite = torch.isfinite(loss.detach())  # kept on the device: no host read per micro-batch
                    losses_finite &= result.finite
                    if result.weight:
                        loss_sum += torch.where(result.finite, loss.detach().double(), 0.0)
                        loss_count += result.finite
                        if not poisoned:
                            results.append(result)
                source.advance()
                state.step += 1
                state.samples_seen += batch.samples
                elapsed = time.perf_counter() - t0
                state.train_seconds += elapsed
                bar.update(1)
                if main and time.perf_counter() - shown >= 2:  # the running loss, read at most every 2 s
                    shown = time.perf_counter()
                    done = [state.epoch_loss[0] + float(loss_sum), state.epoch_loss[1] + int(loss_count)]
                    if done[1]:
                        bar.set_postfix(loss=f"{done[0] / done[1]:.4f}")
                over_steps = bool(training.max_steps) and state.step >= training.max_steps
                fault = is_numerical_fault(applied, fp16, losses_finite)
                stop, due, reason = control.decide(state.step, over_steps or state.train_seconds > budget_s, not fault)
                state.skipped = control.skipped_total
                if on_step is not None:
                    on_step(StepInfo(state.step, batch, results,
                                     {"data_wait": t_data - t0, **clock.phases(marks), "step": elapsed},
                                     control.skipped_total, stop or state.step == last_step))
                if reason in ("sigterm", "nonfinite"):
                    _add_epoch_loss(state, loss_sum, loss_count)
                    save()
                    raise control.interrupted(state.step, reason, checkpoints)
                if stop:
                    break
                if due and source.epoch == epoch:  # at the epoch's end it saves anyway
                    _add_epoch_loss(state, loss_sum, loss_count)
                    save()
            bar.close()
            _add_epoch_loss(state, loss_sum, loss_count)
            end_epoch(epoch, due)
            if stop:
                distributed.log(f"stopping after epoch {epoch} ({state.step} steps): "
                                + ("max_steps reached" if training.max_steps and state.step >= training.max_steps
                                   else f"time budget of {budget_s / 60:.1f} min reached"))
    return {"records": state.records, "steps": state.step, "samples_seen": state.samples_seen * world,
            "skipped_steps": state.skipped, "train_seconds": round(state.train_seconds, 1)}


class _PhaseClock:
    """The seconds of a step's phases (forward, backward, optimizer). On the CPU the host clock;
    on a GPU CUDA events, read once when the step's last one has completed: no synchronize between
    phases (three per micro-batch stalled the host before)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        import torch

        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def phases(self, marks: list[tuple]) -> dict[str, float]:
        if self.cuda and marks:
            marks[-1][-1].synchronize()

        def seconds(a, b) -> float:
            return a.elapsed_time(b) / 1000 if self.cuda else b - a

        return {phase: sum(seconds(m[k], m[k + 1]) for m in marks)
                for k, phase in enumerate(("forward", "backward", "optimizer"))}


def _add_epoch_loss(state: LoopState, loss_sum, loss_count) -> None:
    """Move the device-side sums of the epoch's losses into the loop state (one host read)."""
    state.epoch_loss = [state.epoch_loss[0] + float(loss_sum), state.epoch_loss[1] + int(loss_count)]
    loss_sum.zero_(), loss_count.zero_()


def _position_in_epoch(source) -> int:
    state = source.state_dict()
    return int(state.get("steps", state.get("batches", 0)))
