"""``dsdocre denoise``: the pre-denoising stage (Sec. 3.3), between ``shard`` and ``pretrain``.

``denoise train --config configs/denoise.yaml``
    Trains the rank model (:class:`dsdocre.model.RankModel`) with Relation Detection on annotated
    documents: each document gives up to ``positives_per_doc`` labelled pairs, each among
    ``negatives_per_positive`` NA pairs of the same document (0: all of them, scored at once through
    the collapsed bilinear form), softmax cross-entropy over the group.
    With ``model.relation_head`` the pair representation also learns the 97 relation logits
    (auxiliary BCE on every pair, weighted by ``training.relation_loss_weight``).
    Same training core as fine-tuning (engine, schedule, agreed stops, saving). After each epoch
    it scores every pair of the valid documents and keeps the epoch with the best recall of gold
    facts inside the top 2·N_ent pairs. Outputs in ``output_dir``::

        model/          the rank model (save_pretrained layout, task "pair_ranking")
        metrics.jsonl   per epoch: loss, valid recall of gold facts at 2·N and 3·N kept pairs

``denoise score --model DIR --shards DIR --out DIR [--keep 6n] [--address ...]``
    Scores every ordered entity pair of every document of a shard folder on a pool of Ray actors
    (Ray Data ``map_batches``; each actor loads the model once) and writes scored shards: per
    document the top ``--keep`` pairs with their scores. See ``sharding/denoise_score.py`` and
    ``docs/shards.md`` (section 4) for the output format.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import replace
from typing import Callable

import numpy as np
from pydantic import Field, field_validator

from dsdocre.config import Section, add_stage_arguments, load_stage_config
from dsdocre.errors import UserError
from dsdocre.model.rank import RankModelConfig, check_keep_spec
from dsdocre.train.annotated import fit, load_annotated, prepare, start
from dsdocre.train.config import TrainingConfig
from dsdocre.train.distributed import log


class DenoiseDataConfig(Section):
    train: str  # annotated documents the rank model learns from
    valid: str  # annotated documents the epoch is chosen on (recall of gold facts in the kept pairs)
    max_train_docs: int = 0  # 0 = all


class RankTrainingConfig(TrainingConfig):
    positives_per_doc: int = 3  # labelled pairs drawn per document and epoch (the paper's release: 3)
    # NA pairs of the same document beside each positive (release: 5); 0 = every NA pair of the
    # document, all scored in one matrix product (the hardest negatives are always in the group)
    negatives_per_positive: int = Field(5, ge=0)
    # with model.relation_head: weight of the auxiliary multi-label relation loss (BCE over NA + 96
    # relations on every pair, as fine-tuning) added to Relation Detection; needs negatives 0
    relation_loss_weight: float = Field(1.0, ge=0)


class DenoiseConfig(Section):
    output_dir: str = "runs/denoise"
    data: DenoiseDataConfig
    model: RankModelConfig = RankModelConfig()
    training: RankTrainingConfig = RankTrainingConfig()
    select_keep: str = "2n"  # the epoch kept is the one with the best valid recall at this many pairs

    @field_validator("select_keep")
    @classmethod
    def _a_keep_spec(cls, value: str) -> str:
        return check_keep_spec(value)  # "20" or "2n": checked before any epoch trains


# Valid recall reported after every epoch at these cuts (and at select_keep when it is another).
RECALL_SPECS = ("2n", "3n", "20")


def recall_specs(select_keep: str) -> tuple[str, ...]:
    """The cuts valid recall is measured at after each epoch: :data:`RECALL_SPECS` and ``select_keep``."""
    return RECALL_SPECS + (() if select_keep in RECALL_SPECS else (select_keep,))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train the rank model (Relation Detection on annotated documents)",
                           description="Train the pre-denoising rank model through DeepSpeed.")
    add_stage_arguments(train, "configs/denoise.yaml", "training.epochs=1")

    score = sub.add_parser("score", help="score every entity pair of every document of a shard folder, keep the top k",
                           description="Score every ordered entity pair of every document of verified WebDataset "
                                       "shards with a rank model on Ray actors; write the kept pairs as scored shards.")
    score.add_argument("--model", required=True, help="a rank model directory written by `dsdocre denoise train`")
    score.add_argument("--shards", required=True, help="a shard folder written by `dsdocre shard`")
    score.add_argument("--out", required=True, help="output folder for the scored shards and their manifest")
    score.add_argument("--keep", default="6n",
                       help="pairs kept per document: a number (20, for pre-training) or a multiple of the entity "
                            "count (for fine-tuning and evaluation: 6n, where the cut measured best on Re-DocRED "
                            "valid, benchmarks/results/denoise_cut.json; the paper's 2n needs a stronger rank "
                            "model); default: %(default)s")
    score.add_argument("--all-scores", action="store_true", help="also store every pair's score (N x N per document)")
    score.add_argument("--address", help="join the Ray cluster at this address (default: a local Ray)")
    score.add_argument("--workers", type=int, help="scoring actors (default: one per CPU, or per GPU; 0 = in-process)")
    score.add_argument("--batch-size", type=int,
                       help="documents per encoder batch (default: chosen for the device, 4 on CPU, 32 on GPU)")
    score.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda (default: %(default)s)")
    score.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    if args.action == "score":
        from sharding.denoise_score import score_shards

        summary = score_shards(args.model, args.shards, args.out, keep=args.keep, all_scores=args.all_scores,
                               workers=args.workers, address=args.address, batch_size=args.batch_size,
                               device=args.device, progress=args.progress)
        counts = summary["counts"]
        print(f"input {counts['input']} documents = scored {counts['scored']} + rejected {counts['rejected']}; "
              f"{summary['pairs_kept']} pairs kept of {summary['pairs_scored']} -> {args.out}")
        return 0

    train_rank_model(load_stage_config(DenoiseConfig, args))
    return 0


def train_rank_model(config: DenoiseConfig) -> dict:
    """Train the rank model, keep the epoch with the best valid recall, save it. Returns its record."""
    data_cfg, train_cfg, model_cfg = config.data, config.training, config.model
    if model_cfg.relation_head and train_cfg.negatives_per_positive:
        raise UserError("model.relation_head learns from every pair of a document: set "
                        "training.negatives_per_positive: 0 (each positive against all NA pairs)")
    out_dir = start(config)
    import torch

    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.data.examples import build_examples, class_prior_log_odds
    from dsdocre.model import RankModel

    # ---- data: documents with a labelled pair and enough NA pairs to draw from --------------------
    data = load_annotated(data_cfg, out_dir)
    encoder_dir = resolve_encoder_dir(model_cfg.encoder)
    tokenizer, added = load_tokenizer(encoder_dir, model_cfg.max_entities)
    needed = max(train_cfg.negatives_per_positive, 1)  # NA pairs a document must have (0 = all of them: at least one)
    examples = [e for e in build_examples(data.train, tokenizer)
                if (e.labels[:, 0] == 0).any() and (e.labels[:, 0] == 1).sum() >= needed]
    if not examples:
        raise UserError(f"{data_cfg.train}: no document has a labelled pair and {needed} NA pairs to train on")
    log(f"{len(examples)} of {len(data.train)} training documents have a labelled pair and >= {needed} NA pairs")
    valid_encodings = [tokenizer.encode(d) for d in data.valid]

    # ---- model and engine (resumed from the newest verified checkpoint, if any) ------------------
    def make_model():
        return RankModel(model_cfg, tokenizer, encoder_dir=encoder_dir, added_tokens=added)

    model = make_model()
    if model_cfg.relation_head:  # relation logits start at each class's log-odds, as fine-tuning's
        with torch.no_grad():
            model.classifier.bias[1:] = torch.from_numpy(class_prior_log_odds(examples))
    run = prepare(config, model, [len(e.encoded.input_ids) for e in examples], out_dir)
    log(f"rank model: {encoder_dir} + pair bilinear {model_cfg.pair_dim} -> 1 score"
        f"{' + 97 relation logits' if model_cfg.relation_head else ''}; world {run.world}; "
        f"{run.source.steps_per_epoch()} steps/epoch")

    # ---- the loop: softmax cross-entropy over each positive's group; valid recall after each epoch --
    detection = RelationDetectionLoss(examples, tokenizer.pad_id, train_cfg, model_cfg.relation_head,
                                      epoch_of=lambda: run.source.epoch)

    def loss_of(idx: list[int]):
        return detection(run.engine, idx, run.device)

    def evaluate(record: dict, model) -> tuple[dict, float]:
        from dsdocre.model.rank import score_documents

        scores = score_documents(model, valid_encodings, run.micro_batch, run.device)
        record = {**record, "valid": kept_recall(data.valid, scores, recall_specs(config.select_keep))}
        log(f"epoch {record['epoch']}: loss {record['loss']:.4f}  valid recall of gold facts in kept pairs: "
            + ", ".join(f"{k} {v:.2f}" for k, v in record["valid"].items() if k.startswith("fact_recall")))
        return record, record["valid"][f"fact_recall_at_{config.select_keep}"]

    def save_best(model, record: dict) -> None:
        model.save_pretrained(out_dir / "model", epoch=record["epoch"], valid=record["valid"],
                              train_file=str(data_cfg.train), valid_file=str(data_cfg.valid))

    best = fit(run, loss_of, evaluate=evaluate, save_best=save_best, make_model=make_model, name="denoise")
    if not best:
        return {}
    log(f"best epoch {best['epoch']}: valid recall at {config.select_keep} "
        f"{best['valid'][f'fact_recall_at_{config.select_keep}']:.2f}; rank model saved to {out_dir / 'model'}")
    return best


class RelationDetectionLoss:
    """The rank model's training loss on a batch of training documents (indices into ``examples``).

    Per document and epoch up to ``positives_per_doc`` labelled pairs, drawn from (seed, epoch,
    document) so any process layout draws the same; each positive against ``negatives_per_positive``
    sampled NA pairs (softmax cross-entropy over the group) or, with 0, against every NA pair of its
    document (scores of all pairs at once through the collapsed form). With ``relation_head``, one
    pass over every pair: output 0 ranks as with 0 negatives, outputs 1..97 add a multi-label BCE
    weighted by ``relation_loss_weight``. ``forward`` is the DeepSpeed engine or the model itself.
    """

    def __init__(self, examples: list, pad_id: int, training: RankTrainingConfig, relation_head: bool = False,
                 epoch_of: Callable[[], int] = lambda: 1):
        self.examples, self.pad_id, self.training, self.relation_head = examples, pad_id, training, relation_head
        self.epoch_of = epoch_of  # the epoch being trained (the positives drawn depend on it)

    def __call__(self, forward, idx: list[int], device):
        if self.relation_head:
            return self._with_relations(forward, idx, device)
        if self.training.negatives_per_positive == 0:
            return self._all_negatives(forward, idx, device)
        return self._sampled_groups(forward, idx, device)

    def _rng(self, i: int) -> random.Random:
        return random.Random(self.training.seed * 1_000_003 + self.epoch_of() * 10_007 + i)

    def _sampled_groups(self, forward, idx, device):
        import torch

        from dsdocre.data.examples import collate, rank_candidates

        negatives = self.training.negatives_per_positive
        chosen = []
        for i in idx:
            heads, tails, groups = rank_candidates(self.examples[i], self._rng(i), self.training.positives_per_doc,
                                                   negatives)
            chosen.append((replace(self.examples[i], heads=heads, tails=tails,
                                   labels=np.zeros((len(heads), 1), np.float32)), groups))
        scores = forward(collate([c for c, _ in chosen], self.pad_id, device))[..., 0].float()  # [B, P]
        group = 1 + negatives
        grouped = torch.cat([scores[b, :g * group].view(g, group) for b, (_, g) in enumerate(chosen)])
        return torch.nn.functional.cross_entropy(grouped, torch.zeros(len(grouped), dtype=torch.long, device=device))

    def _detection(self, idx, pair_scores_of):
        # each document's sampled positives, each against every NA pair of it
        import torch

        losses = []
        for b, i in enumerate(idx):
            ex = self.examples[i]
            labelled = np.flatnonzero(ex.labels[:, 0] == 0)
            positives = self._rng(i).sample(list(labelled), min(self.training.positives_per_doc, len(labelled)))
            losses.append(positive_among_all_negatives(pair_scores_of(b, ex), positives,
                                                       np.flatnonzero(ex.labels[:, 0] == 1)))
        return torch.cat(losses).mean()

    def _all_negatives(self, forward, idx, device):
        import torch

        from dsdocre.data.examples import collate

        no_pairs = np.zeros(0, np.int64)
        chosen = [replace(self.examples[i], heads=no_pairs, tails=no_pairs, labels=np.zeros((0, 1), np.float32))
                  for i in idx]
        scores = forward(collate(chosen, self.pad_id, device), all_pairs=True).float()  # [B, N, N]
        return self._detection(idx, lambda b, ex: scores[b][torch.as_tensor(ex.heads), torch.as_tensor(ex.tails)])

    def _with_relations(self, forward, idx, device):
        import torch

        from dsdocre.data.examples import collate
        from dsdocre.model.rank import RankModel

        batch = collate([self.examples[i] for i in idx], self.pad_id, device)
        outputs = forward(batch).float()  # [B, P, 98]
        mask = batch["pair_mask"]
        relation_loss = torch.nn.functional.binary_cross_entropy_with_logits(
            RankModel.relation_logits(outputs)[mask], batch["labels"][mask])
        return (self._detection(idx, lambda b, ex: outputs[b, : len(ex.heads), 0])
                + self.training.relation_loss_weight * relation_loss)


def positive_among_all_negatives(pair_scores, positives, negatives):
    """Per positive, the softmax cross-entropy of picking it among itself and every negative:
    ``-log(e^s_p / (e^s_p + Σ_n e^s_n)) = softplus(logsumexp(s_n) - s_p)``, without building the
    groups. ``pair_scores`` [P]; ``positives`` and ``negatives`` index it."""
    import torch

    negative_lse = torch.logsumexp(pair_scores[torch.as_tensor(negatives)], 0)
    return torch.nn.functional.softplus(negative_lse - pair_scores[torch.as_tensor(positives)])


def kept_recall(docs, scores, specs) -> dict:
    """Percent of gold facts (and of gold pairs) whose pair is among each spec's kept pairs; and the
    mean number of pairs kept per document."""
    from dsdocre.model.rank import top_pairs

    out = {}
    for spec in specs:
        facts = kept_facts = pairs = kept_pairs = kept = 0
        for doc, s in zip(docs, scores):
            chosen = {(h, t) for h, t, _ in top_pairs(s, spec)}
            kept += len(chosen)
            gold = {(lab.h, lab.t, lab.r) for lab in doc.labels or ()}
            gold_pairs = {(h, t) for h, t, _ in gold}
            facts += len(gold)
            kept_facts += sum((h, t) in chosen for h, t, _ in gold)
            pairs += len(gold_pairs)
            kept_pairs += len(gold_pairs & chosen)
        out[f"fact_recall_at_{spec}"] = round(100 * kept_facts / max(facts, 1), 2)
        out[f"pair_recall_at_{spec}"] = round(100 * kept_pairs / max(pairs, 1), 2)
        out[f"pairs_kept_per_doc_at_{spec}"] = round(kept / max(len(docs), 1), 2)
    return out
