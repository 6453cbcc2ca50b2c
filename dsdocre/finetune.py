"""``dsdocre finetune``: train the relation classifier through a DeepSpeed engine.

Reads top to bottom: set-up (config, data, model, engine), the loop, evaluation on valid with the
threshold chosen there, checkpoint of the best epoch. Outputs in ``output_dir``::

    model/            the best epoch's model (RelationClassifier.save_pretrained); the threshold
                      chosen on valid is stored in its dsdocre_model.json
    metrics.jsonl     one line per epoch: loss, valid P/R/F1/Ign F1/Intra/Inter, threshold, time
    rejected.jsonl    documents that failed validation, with every reason (absent when none)
    valid_predictions.json   the best epoch's predictions on valid (official submission format)

The DeepSpeed JSON named by ``training.deepspeed`` holds the engine's switches (batch size,
optimizer, clipping, ZeRO stage, precision). Run with one process as is, or under the
``deepspeed`` launcher for data parallelism.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from pathlib import Path

import numpy as np

from dsdocre.train import distributed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/finetune.yaml", help="stage config (YAML); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set training.epochs=3 (repeatable)")
    parser.add_argument("--encoder", help="a BERT-family model directory (overrides model.encoder)")
    parser.add_argument("--output-dir", help="overrides output_dir")


def run(args: argparse.Namespace) -> int:
    from dsdocre.config import load_config

    config = load_config(args.config, args.overrides)
    if args.encoder:
        config.setdefault("model", {})["encoder"] = args.encoder
    if args.output_dir:
        config["output_dir"] = args.output_dir
    result = finetune(config)
    return 0 if result is not None else 1


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _log(message: str) -> None:
    if distributed.is_main_process():
        print(message, flush=True)


def finetune(config: dict) -> dict:
    """Train, select the best epoch on valid, save it. Returns the best epoch's record."""
    distributed.prepare_environment()
    import deepspeed
    import torch

    from dsdocre.config import load_deepspeed_config
    from dsdocre.data.examples import build_examples, collate, epoch_batches
    from dsdocre.data.documents import load_valid_documents
    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.evaluation import GoldIndex, score_predictions, train_fact_set
    from dsdocre.inference import choose_threshold, decode, predict_probabilities, write_submission
    from dsdocre.model import ModelConfig, RelationClassifier

    data_cfg, train_cfg = config["data"], config.get("training", {})
    out_dir = Path(config.get("output_dir", "runs/finetune"))
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(train_cfg.get("seed", 42))
    _seed_everything(seed)
    torch.set_num_threads(int(train_cfg.get("threads", 0)) or torch.get_num_threads())

    # ---- data: validated, rejected documents written down, never dropped silently -------------
    rejected_path = out_dir / "rejected.jsonl"
    rejected_path.unlink(missing_ok=True)
    log = _log if distributed.is_main_process() else None
    train_docs, train_rej = load_valid_documents(data_cfg["train"], require_labels=True,
                                                 rejected_path=rejected_path, log=log)
    valid_docs, valid_rej = load_valid_documents(data_cfg["valid"], require_labels=True,
                                                 rejected_path=rejected_path, log=log)
    if not train_docs or not valid_docs:
        raise SystemExit(f"no usable documents (train {len(train_docs)}, valid {len(valid_docs)}); "
                         f"see {rejected_path}")
    if data_cfg.get("max_train_docs"):
        train_docs = train_docs[: int(data_cfg["max_train_docs"])]
    kept_pairs = _load_kept_pairs(data_cfg.get("kept_pairs"))

    model_cfg = ModelConfig.from_dict(config.get("model", {}))
    encoder_dir = resolve_encoder_dir(model_cfg.encoder)
    tokenizer, added = load_tokenizer(encoder_dir, model_cfg.max_entities)
    train_examples = build_examples(train_docs, tokenizer, kept_pairs)
    valid_examples = build_examples(valid_docs, tokenizer, kept_pairs)
    facts_in_train = train_fact_set([d.to_json() for d in train_docs])
    valid_gold = GoldIndex(d.to_json() for d in valid_docs)  # built once, scored every epoch
    num_valid_gold = len(valid_gold)

    # ---- model and engine ----------------------------------------------------------------
    model = RelationClassifier(model_cfg, encoder_dir=encoder_dir, added_tokens=added)
    model.special_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    if train_cfg.get("prior_bias_init", True):
        _init_bias_to_class_priors(model, train_examples)
    ds_config = load_deepspeed_config(train_cfg.get("deepspeed", "configs/deepspeed/finetune.json"))
    if int(ds_config.get("zero_optimization", {}).get("stage", 0)) >= 3:
        # Rank 0 evaluates and saves alone; ZeRO-3 would need every rank in each forward pass.
        raise SystemExit("finetune supports ZeRO stages 0-2 (the classifier fits on one device); "
                         f"{train_cfg.get('deepspeed')} asks for stage 3")
    base_lr = float(ds_config.get("optimizer", {}).get("params", {}).get("lr", 1e-5))
    head_lr = base_lr * float(train_cfg.get("head_lr_multiplier", 1.0))
    groups = [
        {"params": [p for n, p in model.named_parameters() if n.startswith("encoder.")], "lr": base_lr},
        {"params": [p for n, p in model.named_parameters() if not n.startswith("encoder.")], "lr": head_lr},
    ]
    micro_batch = int(ds_config.get("train_micro_batch_size_per_gpu", 4))
    accumulation = int(ds_config.get("gradient_accumulation_steps", 1))
    world, rank = distributed.world_size(), distributed.rank()
    epochs = int(train_cfg.get("epochs", 10))
    lengths = [len(e.encoded.input_ids) for e in train_examples]
    # optimizer steps per epoch, counted on the batches the loop really runs (a partial last batch too)
    steps_per_epoch = max(1, len(epoch_batches(lengths, micro_batch, seed, 1, rank, world)) // accumulation)
    total_steps = steps_per_epoch * epochs
    warmup = int(float(train_cfg.get("warmup_ratio", 0.06)) * total_steps)

    def schedule(step: int) -> float:  # linear warm-up, then linear decay; keeps group lr ratios
        if step < warmup:
            return (step + 1) / max(1, warmup)
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    # DeepSpeed builds the optimizer from its JSON, then calls this factory with the base optimizer
    # (not the ZeRO wrapper) and steps the scheduler itself at gradient-accumulation boundaries.
    engine, _, _, _ = deepspeed.initialize(
        model=model, model_parameters=groups, config=ds_config,
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule))
    device = engine.device
    _log(f"model: {encoder_dir} + pair bilinear {model_cfg.pair_dim}; "
         f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; world {world}; "
         f"{len(train_examples)} train / {len(valid_examples)} valid documents; {steps_per_epoch} steps/epoch")

    # ---- the loop ----------------------------------------------------------------------------
    from tqdm.auto import tqdm

    budget_s = float(train_cfg.get("max_train_minutes", 0)) * 60 or math.inf
    metrics_path = out_dir / "metrics.jsonl"
    if distributed.is_main_process():
        metrics_path.unlink(missing_ok=True)
    best: dict | None = None
    best_f1 = -1.0  # unrounded: the record keeps F1 rounded for display
    train_seconds = 0.0
    docs_seen = 0
    for epoch in range(1, epochs + 1):
        engine.train()
        started = time.perf_counter()
        batches = epoch_batches(lengths, micro_batch, seed, epoch, rank, world)
        losses = []
        bar = tqdm(batches, desc=f"epoch {epoch}/{epochs}", disable=not distributed.is_main_process())
        for step, idx in enumerate(bar):
            batch = {k: v.to(device) for k, v in collate([train_examples[i] for i in idx], tokenizer.pad_id).items()}
            logits = engine(batch)
            mask = batch["pair_mask"].unsqueeze(-1).expand_as(logits)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits[mask].float(), batch["labels"][mask])
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
            docs_seen += len(idx) * world
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if train_seconds + time.perf_counter() - started > budget_s:
                break
        train_seconds += time.perf_counter() - started

        # ---- evaluation on valid: the threshold is chosen there ----------------------------
        record = {"epoch": epoch, "loss": float(np.mean(losses)) if losses else None,
                  "train_seconds": round(train_seconds, 1), "docs_seen": docs_seen}
        if distributed.is_main_process():
            probs = predict_probabilities(engine.module, valid_examples, micro_batch, tokenizer.pad_id,
                                          device=device)
            threshold, _ = choose_threshold(valid_examples, probs, num_valid_gold)
            predictions = decode(valid_examples, probs, threshold)
            scores = score_predictions(predictions, valid_gold, train_facts=facts_in_train)
            record.update(threshold=threshold, valid={k: round(v * 100, 2) if isinstance(v, float) else v
                                                      for k, v in scores.items()})
            _log(f"epoch {epoch}: loss {record['loss']:.4f}  valid F1 {scores['f1'] * 100:.2f}  "
                 f"Ign F1 {scores['ign_f1'] * 100:.2f}  P {scores['precision'] * 100:.2f}  "
                 f"R {scores['recall'] * 100:.2f}  (threshold {threshold:.3f}, {train_seconds:.0f}s)")
            with open(metrics_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if scores["f1"] > best_f1:
                best, best_f1 = record, scores["f1"]
                engine.module.save_pretrained(out_dir / "model", tokenizer=tokenizer.tokenizer, threshold=threshold,
                                              tokenizer_fingerprint=tokenizer.fingerprint(), epoch=epoch,
                                              valid=record["valid"], train_file=str(data_cfg["train"]),
                                              valid_file=str(data_cfg["valid"]))
                write_submission(predictions, out_dir / "valid_predictions.json")
        if world > 1:
            import deepspeed.comm as dist

            dist.barrier()
        if train_seconds > budget_s:
            _log(f"time budget of {budget_s / 60:.0f} min reached after epoch {epoch}")
            break

    rejected = len(train_rej) + len(valid_rej)
    if distributed.is_main_process():
        _log(f"best epoch {best['epoch']}: valid F1 {best['valid']['f1']:.2f}, Ign F1 {best['valid']['ign_f1']:.2f}; "
             f"model saved to {out_dir / 'model'}"
             + (f"; {rejected} rejected documents listed in {rejected_path}" if rejected else ""))
        best = {**best, "train_seconds_total": round(train_seconds, 1), "docs_seen": docs_seen,
                "rejected": rejected}
    return best if best is not None else {}


def _init_bias_to_class_priors(model, examples) -> None:
    """Start every class at the log-odds of its frequency among the training pairs.

    Positives are ~0.1% of (pair, relation) cells; from a zero bias (p = 0.5 everywhere) Adam moves
    the bias ~lr per step, so the first epochs would be spent pushing every logit down.
    """
    import torch

    counts = sum(e.labels.sum(0) for e in examples)
    total = sum(len(e.labels) for e in examples)
    prior = np.clip(counts / max(total, 1), 1e-6, 1 - 1e-6)
    with torch.no_grad():
        model.classifier.bias.copy_(torch.from_numpy(np.log(prior / (1 - prior))).to(model.classifier.bias.dtype))


def _load_kept_pairs(path: str | None) -> dict | None:
    """The pre-denoiser's kept pairs (title -> [[h, t], ...]); None = every ordered pair."""
    if not path:
        return None
    return json.loads(Path(path).read_text())
