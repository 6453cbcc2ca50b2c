"""The skeleton of a stage trained on annotated documents: fine-tuning and the rank model.

Both read validated training documents (rejections written down) and gold valid documents, build
a model on a marker tokenizer, train through :func:`dsdocre.train.loop.train` over
:class:`~dsdocre.train.loop.EpochBatches`, score valid after each epoch and keep the best epoch's
model. A stage file then says only what is its own: the examples, the loss, the valid score and
what it saves::

    out_dir = start(config)
    data = load_annotated(config.data, out_dir)
    ... model, examples, loss_of ...
    run = prepare(config, model, lengths, out_dir)
    best = fit(run, loss_of, evaluate=..., save_best=..., make_model=..., name="finetune")

Outputs every such stage writes in ``output_dir``: ``metrics.jsonl`` (one line per epoch, rewritten
to its checkpoint's records on resume), ``rejected.jsonl`` (training documents that failed
validation, with every reason; absent when none) and ``checkpoints/`` (with ``training.checkpoints``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from dsdocre.errors import UserError
from dsdocre.train import checkpoint, distributed
from dsdocre.train.engine import batch_layout, build_engine, deepspeed_config
from dsdocre.train.engine import start as start_training
from dsdocre.train.loop import EpochBatches, train

METRICS = "metrics.jsonl"
REJECTED = "rejected.jsonl"


def start(config) -> Path:
    """The process world joined, seeds and threads set, the output folder made: the first lines of
    every training stage (``config`` has ``output_dir`` and ``training``)."""
    distributed.prepare_environment()
    return start_training(config.training, config.output_dir)


@dataclass
class AnnotatedData:
    train: list  # validated training documents (dsdocre.data.documents.Document)
    valid: list  # the gold valid documents, whole
    rejected: int  # training documents that failed validation (listed in rejected_path)
    rejected_path: Path


def load_annotated(data, out_dir: Path) -> AnnotatedData:
    """``data.train`` validated with labels required (each rejected document written to
    ``out_dir/rejected.jsonl`` with its reasons), cut to ``data.max_train_docs`` when set;
    ``data.valid`` read whole (gold: no document may be left out)."""
    from dsdocre.data.reader import load_gold_documents, load_valid_documents

    main = distributed.is_main_process()
    log = distributed.log if main else None
    rejected_path = out_dir / REJECTED
    if main:
        rejected_path.unlink(missing_ok=True)
    train_docs, rejected = load_valid_documents(data.train, require_labels=True,
                                                rejected_path=rejected_path if main else None, log=log)
    valid_docs = load_gold_documents(data.valid, log=log)
    if not train_docs:
        raise UserError(f"{data.train}: no usable training documents; see {rejected_path}")
    if data.max_train_docs:
        train_docs = train_docs[: data.max_train_docs]
    return AnnotatedData(train_docs, valid_docs, len(rejected), rejected_path)


@dataclass
class StageRun:
    """A training stage ready for its loop: the engine (resumed when a checkpoint was there), this
    rank's steps, and what the loop needs to save and resume."""

    config: object
    out_dir: Path
    engine: object
    source: EpochBatches
    micro_batch: int
    world: int
    fingerprint: str
    resumed: dict | None

    @property
    def device(self):
        return self.engine.device


def prepare(config, model, lengths: list[int], out_dir: Path, *, collate: Callable[[list[int]], object] | None = None,
            loader_workers: int = 0) -> StageRun:
    """The run's identity, the verified checkpoint to resume from (if any), the engine built from
    the stage's DeepSpeed JSON and restored from that checkpoint, and this rank's epoch batches of
    the ``lengths``' documents; ``metrics.jsonl`` holds the checkpoint's records (none on a fresh start).
    ``collate`` turns a micro-batch's document indices into its batch as the step is built, in
    ``loader_workers`` persistent processes when > 0 (:class:`~dsdocre.train.loop.EpochBatches`)."""
    from dsdocre.data.examples import epoch_batches

    training = config.training
    fingerprint = checkpoint.run_fingerprint(config)
    plan = checkpoint.resume_plan(training, out_dir, fingerprint)  # before the engine, which it configures
    ds_config = deepspeed_config(training, out_dir, plan)
    micro_batch, accumulation = batch_layout(ds_config)
    world, rank = distributed.world_size(), distributed.rank()

    def batches_of(epoch: int) -> list[list[int]]:
        return epoch_batches(lengths, micro_batch, training.seed, epoch, rank, world, accumulation)

    source = EpochBatches(batches_of, accumulation, micro_batch * world * accumulation, prepare=collate,
                          workers=loader_workers)
    engine = build_engine(model, training, ds_config, source.steps_per_epoch())
    resumed = checkpoint.restore(engine, training, plan)
    if distributed.is_main_process():
        checkpoint.write_records(out_dir / METRICS, resumed["records"] if resumed else [])
    return StageRun(config, out_dir, engine, source, micro_batch, world, fingerprint, resumed)


def fit(run: StageRun, loss_of: Callable[[object], object], *,
        evaluate: Callable[[dict, object], tuple[dict, float]], save_best: Callable[[object, dict], None],
        make_model: Callable[[], object], name: str) -> dict:
    """Train through the loop; after each epoch rank 0 runs ``evaluate(record, model)`` (the record
    with its valid metrics, and the score to keep the best epoch by), appends the record to
    ``metrics.jsonl`` and, when the score beats every earlier epoch's, calls ``save_best(model,
    record)``. Returns the best epoch's record with the run's totals (rank 0; {} elsewhere)."""
    best = {"score": float("-inf"), "record": None}  # the stage state: restored on resume

    def on_epoch(record: dict, model) -> dict:
        record, score = evaluate(record, model)
        with open(run.out_dir / METRICS, "a") as f:
            f.write(json.dumps(record) + "\n")
        if score > best["score"]:
            best.update(score=score, record=record)
            save_best(model, record)
        return record

    try:
        summary = train(run.engine, run.config.training, run.source, loss_of, name=name, run_dir=run.out_dir,
                        fingerprint=run.fingerprint, resumed=run.resumed, stage_state=best, on_epoch=on_epoch,
                        make_model=make_model)
    finally:
        run.source.close()
    if not distributed.is_main_process():
        return {}
    return {**best["record"], "train_seconds_total": summary["train_seconds"],
            "samples_seen": summary["samples_seen"], "steps_total": summary["steps"]}
