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
from typing import Optional, Union

from dsdocre.config import Section, add_stage_arguments, load_stage_config
from dsdocre.model.classifier import ModelConfig
from dsdocre.train.annotated import fit, load_annotated, prepare, start
from dsdocre.train.config import TrainingConfig
from dsdocre.train.distributed import log


class DataConfig(Section):
    train: str  # annotated training documents (DocRED JSON / JSON Lines)
    valid: str  # annotated documents to choose the epoch and threshold on (gold: read whole)
    # The pre-denoiser's kept pairs ("BERT+D"): scored folders of `dsdocre denoise score` (or JSON files
    # title -> [[h, t], ...]) covering train and valid; null = every ordered pair is a candidate.
    kept_pairs: Union[str, list[str], None] = None
    max_train_docs: Optional[int] = None  # use the first N valid training documents
    # DataLoader processes collating batches ahead of the training thread (persistent, pinned memory
    # on a GPU); null = 2 per process on a GPU, 0 on CPU (where they would take the training's cores)
    loader_workers: Optional[int] = None


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
    finetune(load_stage_config(FinetuneConfig, args))
    return 0


def finetune(config: FinetuneConfig) -> dict:
    """Train, select the best epoch on valid, save it. Returns the best epoch's record (rank 0)."""
    out_dir = start(config)
    import torch

    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.data.examples import build_examples, collate
    from dsdocre.data.scored import read_kept_pairs
    from dsdocre.evaluation import GoldIndex, train_fact_set
    from dsdocre.model import RelationClassifier

    data_cfg, train_cfg, model_cfg = config.data, config.training, config.model

    # ---- data: training documents validated (rejections written down); valid read whole -------
    data = load_annotated(data_cfg, out_dir)
    kept_pairs = read_kept_pairs(data_cfg.kept_pairs)
    encoder_dir = resolve_encoder_dir(model_cfg.encoder)
    tokenizer, added = load_tokenizer(encoder_dir, model_cfg.max_entities)
    train_examples = build_examples(data.train, tokenizer, kept_pairs)
    valid_examples = build_examples(data.valid, tokenizer, kept_pairs)
    facts_in_train = train_fact_set([d.to_json() for d in data.train])
    valid_gold = GoldIndex(d.to_json() for d in data.valid)  # built once, scored every epoch

    # ---- model and engine (resumed from the newest verified checkpoint, if any) ------------------
    def make_model():
        return RelationClassifier(model_cfg, tokenizer, encoder_dir=encoder_dir, added_tokens=added)

    model = make_model()
    if train_cfg.prior_bias_init:
        _init_bias_to_class_priors(model, train_examples)
    def collate_docs(idx: list[int]) -> dict:  # in a loader worker when there are some
        return collate([train_examples[i] for i in idx], tokenizer.pad_id)

    workers = data_cfg.loader_workers
    workers = (2 if torch.cuda.is_available() else 0) if workers is None else workers
    run = prepare(config, model, [len(e.encoded.input_ids) for e in train_examples], out_dir,
                  collate=collate_docs, loader_workers=workers)
    log(f"model: {encoder_dir} + pair bilinear {model_cfg.pair_dim}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; world {run.world}; "
        f"{len(train_examples)} train / {len(valid_examples)} valid documents; {workers} loader workers; "
        f"{run.source.steps_per_epoch()} steps/epoch")

    # ---- the loop: multi-label BCE over the candidate pairs; valid scored after each epoch ------
    def loss_of(batch: dict):
        batch = {k: v.to(run.device, non_blocking=True) for k, v in batch.items()}  # from pinned memory on a GPU
        logits = run.engine(batch)
        mask = batch["pair_mask"].unsqueeze(-1).expand_as(logits)
        return torch.nn.functional.binary_cross_entropy_with_logits(logits[mask].float(), batch["labels"][mask])

    predictions_of_epoch = {}

    def evaluate(record: dict, model) -> tuple[dict, float]:
        record, predictions, f1 = _evaluate(model, record, valid_examples, valid_gold, facts_in_train,
                                            run.micro_batch, run.device)
        predictions_of_epoch["last"] = predictions
        return record, f1

    def save_best(model, record: dict) -> None:
        from dsdocre.inference import write_submission

        model.save_pretrained(out_dir / "model", threshold=record["threshold"], epoch=record["epoch"],
                              valid=record["valid"], train_file=str(data_cfg.train), valid_file=str(data_cfg.valid))
        write_submission(predictions_of_epoch["last"], out_dir / "valid_predictions.json")

    best = fit(run, loss_of, evaluate=evaluate, save_best=save_best, make_model=make_model, name="finetune")
    if not best:
        return {}
    log(f"best epoch {best['epoch']}: valid F1 {best['valid']['f1']:.2f}, Ign F1 {best['valid']['ign_f1']:.2f}; "
        f"model saved to {out_dir / 'model'}"
        + (f"; {data.rejected} rejected training documents listed in {data.rejected_path}" if data.rejected else ""))
    return {**best, "docs_seen": best["samples_seen"], "rejected": data.rejected}


def _evaluate(model, record, valid_examples, valid_gold, facts_in_train, batch_size, device):
    """Score valid with the threshold chosen there. Returns (the record with the valid metrics and
    threshold, the predictions, F1)."""
    from dsdocre.evaluation import score_predictions
    from dsdocre.inference import choose_threshold, decode, predict_probabilities

    probs = predict_probabilities(model, valid_examples, batch_size, model.tokenizer.pad_id, device=device)
    threshold, _ = choose_threshold(valid_examples, probs, len(valid_gold))
    predictions = decode(valid_examples, probs, threshold)
    scores = score_predictions(predictions, valid_gold, train_facts=facts_in_train)
    record = {**record, "threshold": threshold,
              "valid": {k: round(v * 100, 2) if isinstance(v, float) else v for k, v in scores.items()}}
    log(f"epoch {record['epoch']}: loss {record['loss']:.4f}  valid F1 {scores['f1'] * 100:.2f}  "
        f"Ign F1 {scores['ign_f1'] * 100:.2f}  P {scores['precision'] * 100:.2f}  "
        f"R {scores['recall'] * 100:.2f}  (threshold {threshold:.3f}, {record['train_seconds']:.0f}s)")
    return record, predictions, scores["f1"]


def _init_bias_to_class_priors(model, examples) -> None:
    """Start every class at the log-odds of its frequency among the training pairs."""
    import torch

    from dsdocre.data.examples import class_prior_log_odds

    with torch.no_grad():
        model.classifier.bias.copy_(torch.from_numpy(class_prior_log_odds(examples)).to(model.classifier.bias.dtype))
