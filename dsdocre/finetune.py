"""``dsdocre finetune``: train the relation classifier through a DeepSpeed engine.

Reads top to bottom: set-up (config, data, model, engine), the loop, evaluation on valid with the
threshold chosen there, the best epoch's model saved. Outputs in ``output_dir``::

    model/            the best epoch's model (RelationClassifier.save_pretrained); the threshold
                      chosen on valid is stored in its dsdocre_model.json
    metrics.jsonl     one line per epoch: loss, steps, valid P/R/F1/Ign F1/Intra/Inter, threshold, time
    rejected.jsonl    training documents that failed validation, with every reason (absent when none)
    valid_predictions.json   the best epoch's predictions on valid (official submission format)

The valid file is gold: it is read whole (:func:`load_gold_documents`), never with documents left
out. The DeepSpeed JSON named by ``training.deepspeed`` holds the engine's switches (batch size,
accumulation, optimizer, clipping, ZeRO stage, precision). Run with one process as is, or under
the ``deepspeed`` launcher for data parallelism; every stop is agreed by all ranks.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional, Union

from dsdocre.config import Section, add_stage_arguments, load_stage_config
from dsdocre.model.classifier import ModelConfig
from dsdocre.train import distributed
from dsdocre.train.engine import TrainingConfig, log


class DataConfig(Section):
    train: str  # annotated training documents (DocRED JSON / JSON Lines)
    valid: str  # annotated documents to choose the epoch and threshold on (gold: read whole)
    # The pre-denoiser's kept pairs ("BERT+D"): scored folders of `dsdocre denoise score` (or JSON files
    # title -> [[h, t], ...]) covering train and valid; null = every ordered pair is a candidate.
    kept_pairs: Union[str, list[str], None] = None
    max_train_docs: Optional[int] = None  # use the first N valid training documents


class FinetuneTrainingConfig(TrainingConfig):
    prior_bias_init: bool = True  # classifier bias starts at each class's log-odds among training pairs


class FinetuneConfig(Section):
    output_dir: str = "runs/finetune"
    data: DataConfig
    model: ModelConfig = ModelConfig()
    training: FinetuneTrainingConfig = FinetuneTrainingConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "configs/finetune.yaml")


def run(args: argparse.Namespace) -> int:
    result = finetune(load_stage_config(FinetuneConfig, args))
    return 0 if result is not None else 1


def finetune(config: FinetuneConfig) -> dict:
    """Train, select the best epoch on valid, save it. Returns the best epoch's record."""
    distributed.prepare_environment()
    import torch

    from dsdocre.data.documents import load_gold_documents, load_valid_documents
    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.data.scored import read_kept_pairs
    from dsdocre.data.examples import build_examples, collate
    from dsdocre.errors import UserError
    from dsdocre.evaluation import GoldIndex, train_fact_set
    from dsdocre.model import RelationClassifier
    from dsdocre.train.checkpoint import write_records
    from dsdocre.train.engine import (resume_plan, resume_point, run_fingerprint, setup_engine, start,
                                      train_epochs)

    data_cfg, train_cfg, model_cfg = config.data, config.training, config.model
    out_dir = start(train_cfg, config.output_dir)

    # ---- data: training documents validated (rejections written down); valid read whole -------
    rejected_path = out_dir / "rejected.jsonl"
    main = distributed.is_main_process()
    if main:
        rejected_path.unlink(missing_ok=True)
    train_docs, train_rej = load_valid_documents(data_cfg.train, require_labels=True,
                                                 rejected_path=rejected_path if main else None,
                                                 log=log if main else None)
    valid_docs = load_gold_documents(data_cfg.valid, log=log if main else None)
    if not train_docs:
        raise UserError(f"{data_cfg.train}: no usable training documents; see {rejected_path}")
    if data_cfg.max_train_docs:
        train_docs = train_docs[: data_cfg.max_train_docs]
    kept_pairs = read_kept_pairs(data_cfg.kept_pairs)

    encoder_dir = resolve_encoder_dir(model_cfg.encoder)
    tokenizer, added = load_tokenizer(encoder_dir, model_cfg.max_entities)
    train_examples = build_examples(train_docs, tokenizer, kept_pairs)
    valid_examples = build_examples(valid_docs, tokenizer, kept_pairs)
    facts_in_train = train_fact_set([d.to_json() for d in train_docs])
    valid_gold = GoldIndex(d.to_json() for d in valid_docs)  # built once, scored every epoch

    # ---- model and engine ----------------------------------------------------------------
    model = RelationClassifier(model_cfg, tokenizer, encoder_dir=encoder_dir, added_tokens=added)
    if train_cfg.prior_bias_init:
        _init_bias_to_class_priors(model, train_examples)
    # the checkpoint to resume from, if any (verified; chosen before the engine, which it configures)
    fingerprint = run_fingerprint(config)
    plan = resume_plan(train_cfg, out_dir, fingerprint)
    run = setup_engine(model, train_cfg, [len(e.encoded.input_ids) for e in train_examples], "finetune",
                       plan=plan)
    engine, device, micro_batch = run.engine, run.engine.device, run.micro_batch
    log(f"model: {encoder_dir} + pair bilinear {model_cfg.pair_dim}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; world {run.world}; "
        f"{len(train_examples)} train / {len(valid_examples)} valid documents; {run.steps_per_epoch} steps/epoch")

    # ---- the loop: multi-label BCE over the candidate pairs; valid scored after each epoch ------
    def loss_of(idx: list[int]):
        batch = collate([train_examples[i] for i in idx], tokenizer.pad_id, device)
        logits = engine(batch)
        mask = batch["pair_mask"].unsqueeze(-1).expand_as(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask].float(), batch["labels"][mask])

    # ---- resume from the newest checkpoint, if any (model, optimizer, schedule, RNGs, position) ----
    resumed = resume_point(engine, train_cfg, plan)
    metrics_path = out_dir / "metrics.jsonl"
    if main:
        write_records(metrics_path, resumed["records"] if resumed else [])
    best = {"f1": -1.0, "record": None}  # unrounded F1 (the record keeps it rounded); restored on resume

    def evaluate(record: dict, model) -> dict:
        record, f1, saved = _evaluate_and_save(model, record, best["f1"], valid_examples, valid_gold,
                                               facts_in_train, micro_batch, device, out_dir, data_cfg)
        if saved:
            best.update(f1=f1, record=record)
        return record

    summary = train_epochs(engine, train_cfg, batches_of=run.batches_of, loss_of=loss_of, evaluate=evaluate,
                           accumulation=run.accumulation, name="finetune",
                           run_dir=out_dir, resumed=resumed, stage_state=best, fingerprint=fingerprint,
                           make_model=lambda: RelationClassifier(model_cfg, tokenizer, encoder_dir=encoder_dir,
                                                                 added_tokens=added))

    rejected = len(train_rej)
    if not main:
        return {}
    top = best["record"]
    log(f"best epoch {top['epoch']}: valid F1 {top['valid']['f1']:.2f}, Ign F1 {top['valid']['ign_f1']:.2f}; "
        f"model saved to {out_dir / 'model'}"
        + (f"; {rejected} rejected training documents listed in {rejected_path}" if rejected else ""))
    return {**top, "train_seconds_total": summary["train_seconds"], "docs_seen": summary["docs_seen"],
            "steps_total": summary["steps"], "rejected": rejected}


def _evaluate_and_save(model, record, best_f1, valid_examples, valid_gold, facts_in_train, batch_size, device,
                       out_dir: Path, data_cfg: DataConfig):
    """Score valid with the threshold chosen there; save the model when F1 improves.
    Returns (record with valid metrics, best F1 so far, whether this epoch was saved)."""
    from dsdocre.evaluation import score_predictions
    from dsdocre.inference import choose_threshold, decode, predict_probabilities, write_submission

    probs = predict_probabilities(model, valid_examples, batch_size, model.tokenizer.pad_id, device=device)
    threshold, _ = choose_threshold(valid_examples, probs, len(valid_gold))
    predictions = decode(valid_examples, probs, threshold)
    scores = score_predictions(predictions, valid_gold, train_facts=facts_in_train)
    record = {**record, "threshold": threshold,
              "valid": {k: round(v * 100, 2) if isinstance(v, float) else v for k, v in scores.items()}}
    log(f"epoch {record['epoch']}: loss {record['loss']:.4f}  valid F1 {scores['f1'] * 100:.2f}  "
        f"Ign F1 {scores['ign_f1'] * 100:.2f}  P {scores['precision'] * 100:.2f}  "
        f"R {scores['recall'] * 100:.2f}  (threshold {threshold:.3f}, {record['train_seconds']:.0f}s)")
    with open(out_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps(record) + "\n")
    if scores["f1"] <= best_f1:
        return record, best_f1, False
    model.save_pretrained(out_dir / "model", threshold=threshold, epoch=record["epoch"], valid=record["valid"],
                          train_file=str(data_cfg.train), valid_file=str(data_cfg.valid))
    write_submission(predictions, out_dir / "valid_predictions.json")
    return record, scores["f1"], True


def _init_bias_to_class_priors(model, examples) -> None:
    """Start every class at the log-odds of its frequency among the training pairs."""
    import torch

    from dsdocre.data.examples import class_prior_log_odds

    with torch.no_grad():
        model.classifier.bias.copy_(torch.from_numpy(class_prior_log_odds(examples)).to(model.classifier.bias.dtype))
