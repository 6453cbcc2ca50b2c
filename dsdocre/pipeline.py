"""``dsdocre pipeline``: the main job, end to end, on the embedded synthetic corpus.

Stages run in order and talk only through files under ``output_dir``::

    corpus/            dsdocre synth           annotated + distantly supervised documents (DocRED JSON)
    shards/<split>/    dsdocre shard           each split as verified WebDataset shards (Ray)
    denoise/           dsdocre denoise train   the rank model (model/, metrics.jsonl)
    scored/<split>/    dsdocre denoise score   the pairs the rank model keeps per document (Ray Data):
                                               20 per distant document, 2 N_ent per annotated one
    pairs/             dsdocre fact-join       document pairs sharing a relational fact, through
                                               distant labels the denoiser kept (pre-training input)
    heldout/           synth, shard, fact-join held-out distant documents (another seed) and their
                                               pairs: per-task accuracy of pre-training on unseen pairs
    pretrain/          dsdocre pretrain        MM + RD + RA on DeepSpeed: encoder/, checkpoints/,
                                               metrics.jsonl, valid.json (held-out accuracy vs chance)
    finetune/          dsdocre finetune        model/ (from the pre-trained encoder), metrics.jsonl,
                                               valid_predictions.json (on kept pairs)
    test/              dsdocre evaluate        result.json (official submission format), metrics.json

Each stage prints its wall time as it ends, and the run closes with a table of them all.

The paper's rows: ``denoise.enabled`` and ``pretrain.enabled`` both false = "BERT" (every pair a
candidate, the packaged encoder); denoise only = "BERT+D"; both (the default) = "BERT+D+P".
"""

from __future__ import annotations

import argparse
import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Optional

from dsdocre import fsio
from dsdocre.config import Section


class SynthConfig(Section):
    docs: int = 400  # annotated training documents
    dev_docs: int = 80
    test_docs: int = 80
    distant_docs: int = 400  # distantly supervised documents (noise truth kept beside them)
    noise_rate: float = 0.6  # fraction of inter-sentence DS labels that are noise
    seed: int = 0


class ShardConfig(Section):
    docs_per_shard: int = 100  # documents per WebDataset tar
    workers: Optional[int] = 2  # Ray workers (local Ray; 0 = no Ray)


class FactJoinConfig(Section):
    max_pairs_per_fact: int = 8  # cap per fact so that common facts cannot dominate pre-training
    seed: int = 0
    pairs_per_shard: int = 10_000  # target document pairs per pair shard (a small corpus: one shard)


class DenoiseStageConfig(Section):
    enabled: bool = True  # false: no pre-denoising, every ordered pair is a candidate ("BERT")
    config: str = "configs/denoise.yaml"  # the rank model's config; data paths set to this run's
    keep_distant: str = "20"  # pairs kept per distant document (pre-training: 20)
    # pairs kept per annotated document (fine-tuning and evaluation): 6 N_ent, where the cut measured
    # best with our rank model on Re-DocRED valid (benchmarks/results/denoise_cut.json); the paper: 2 N_ent
    keep_annotated: str = "6n"


class PretrainStageConfig(Section):
    enabled: bool = True  # false: fine-tune the packaged encoder directly (no pre-training)
    config: str = "configs/pretrain.yaml"  # its data paths and output_dir are set to this run's
    heldout_distant_docs: int = 200  # distant documents of another seed whose pairs measure the tasks (0 = none)


class PipelineConfig(Section):
    output_dir: str = "runs/pipeline"
    synth: SynthConfig = SynthConfig()
    shard: ShardConfig = ShardConfig()
    fact_join: FactJoinConfig = FactJoinConfig()
    denoise: DenoiseStageConfig = DenoiseStageConfig()
    pretrain: PretrainStageConfig = PretrainStageConfig()
    finetune: str = "configs/finetune.yaml"  # its data paths and output_dir are set to this run's
    device: str = "auto"  # where the test set is scored: auto (CUDA when available), cpu, cuda:N


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/pipeline.yaml", help="pipeline config (YAML); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline config value, e.g. --set synth.docs=200")
    parser.add_argument("--pretrain-set", dest="pretrain_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pre-training config value, e.g. --pretrain-set training.max_steps=10")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fine-tuning config value, e.g. --finetune-set training.epochs=1")
    parser.add_argument("--encoder", help="a BERT-family model directory (default: the packaged MiniLM)")


class StageClock:
    """The wall time of each stage: one line as a stage ends, and a table of all at the close."""

    def __init__(self):
        self.started = time.perf_counter()
        self.seconds: dict[str, float] = {}  # stage -> wall time, in the order they ran

    @contextmanager
    def stage(self, name: str):
        start = time.perf_counter()
        yield
        self.seconds[name] = time.perf_counter() - start
        print(f"   {name}: {self.seconds[name]:.1f} s", flush=True)

    def table(self) -> str:
        total = time.perf_counter() - self.started  # the stages, and what ran between them
        width = max(len(name) for name in [*self.seconds, "total"])
        lines = [f"{'stage':<{width}}  {'time':>9}  share"]
        lines += [f"{name:<{width}}  {s:>7.1f} s  {100 * s / total:4.0f}%" for name, s in self.seconds.items()]
        lines.append(f"{'total':<{width}}  {total:>7.1f} s")
        return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from dsdocre.config import load_config

    config = load_config(PipelineConfig, args.config, args.overrides)
    out = Path(config.output_dir)
    clock = StageClock()

    # 1. synthetic corpus
    from dsdocre.synth import generate_corpus

    s = config.synth
    corpus = out / "corpus"
    print(f"== synth: {s.docs} annotated + {s.distant_docs} distant documents -> {corpus}", flush=True)
    with clock.stage("synth"):
        generate_corpus(corpus, s.docs, s.seed, noise_rate=s.noise_rate, dev_docs=s.dev_docs,
                        test_docs=s.test_docs, distant_docs=s.distant_docs, progress=False)

    # One Ray for every Ray job of the run (each job would otherwise start and stop its own).
    from sharding import ray_setup

    workers = config.shard.workers
    with clock.stage("ray start"):
        started_ray = bool(workers) and ray_setup.connect(None, num_cpus=workers)
    try:
        kept = _shard_denoise_join(config, args, corpus, out, clock)
    finally:
        if started_ray:
            import ray

            ray.shutdown()

    # 5. pre-train on the document pairs (labels the denoiser kept), held-out pairs measured
    encoder = args.encoder
    if config.pretrain.enabled:
        from dsdocre.pretrain import PretrainConfig, pretrain

        heldout = out / "heldout"
        pt = load_config(PretrainConfig, config.pretrain.config, [
            f"data.pairs={out / 'pairs'}", f"data.shards={out / 'shards' / 'train_distant'}",
            # a short run: the exported encoder is what the next stage needs (a checkpoint is ~1 GB)
            f"output_dir={out / 'pretrain'}", "training.resume=false", "training.checkpoints=false",
            *args.pretrain_overrides])
        if config.pretrain.heldout_distant_docs:
            if json.loads((heldout / "pairs" / "manifest.json").read_text())["counts"]["pairs"]:
                pt.data.valid_pairs, pt.data.valid_shards = str(heldout / "pairs"), str(heldout / "shards")
            else:
                print("   the held-out documents share no fact: no held-out pairs to measure the tasks on", flush=True)
        if args.encoder:
            pt.model.encoder = args.encoder
        print("== pretrain: MM + RD + RA on document pairs" + (" (labels the denoiser kept)" if kept else ""),
              flush=True)
        with clock.stage("pretrain"):
            pretrain(pt)
        encoder = str(out / "pretrain" / "encoder")

    # 6. fine-tune (on the kept pairs when pre-denoising is on), from the pre-trained encoder
    from dsdocre.finetune import FinetuneConfig, finetune

    ft = load_config(FinetuneConfig, config.finetune, [
        f"data.train={corpus / 'train_annotated.json'}", f"data.valid={corpus / 'dev.json'}",
        f"output_dir={out / 'finetune'}", "training.resume=false", *args.finetune_overrides])
    if kept:
        ft.data.kept_pairs = [str(kept["train_annotated"]), str(kept["dev"])]
    if encoder:
        ft.model.encoder = encoder
    print("== finetune" + (" (on the denoiser's kept pairs)" if kept else "")
          + (" from the pre-trained encoder" if config.pretrain.enabled else ""), flush=True)
    with clock.stage("finetune"):
        finetune(ft)

    # 7. evaluate on the held-out test set (a gold fact whose pair was not kept counts as missed)
    from dsdocre.evaluation import format_metrics
    from dsdocre.data.scored import read_kept_pairs
    from dsdocre.evaluate import score_model
    from dsdocre.inference import write_submission

    print("== evaluate on the test set", flush=True)
    test_out = out / "test"
    with clock.stage("evaluate"):
        metrics, predictions, threshold = score_model(str(out / "finetune" / "model"), str(corpus / "test.json"),
                                                      corpus / "train_annotated.json", device=config.device,
                                                      kept_pairs=read_kept_pairs(kept["test"]) if kept else None)
        write_submission(predictions, test_out / "result.json")
        fsio.write_json_atomic(test_out / "metrics.json", {**metrics, "threshold": threshold}, indent=2)
    print(format_metrics(metrics))
    print(clock.table())
    print(f"pipeline done in {(time.perf_counter() - clock.started) / 60:.1f} min; outputs under {out}")
    return 0


def _shard_denoise_join(config: PipelineConfig, args: argparse.Namespace, corpus: Path, out: Path,
                        clock: StageClock) -> dict:
    """Stages 2-4: shard every split, train the rank model and keep the top pairs of every
    document, join distant documents through kept labels. Returns split -> scored folder ({} when
    pre-denoising is off)."""
    from dsdocre.config import load_config
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    workers = config.shard.workers
    splits = ["train_distant", "train_annotated", "dev", "test"] if config.denoise.enabled else ["train_distant"]
    for split in splits:
        print(f"== shard: {corpus / (split + '.json')} -> {out / 'shards' / split}", flush=True)
        with clock.stage(f"shard {split}"):
            summary = shard_corpus([corpus / f"{split}.json"], out / "shards" / split,
                                   docs_per_shard=config.shard.docs_per_shard, encoder=args.encoder,
                                   workers=workers, progress=False)
        print(f"   {summary.counts}", flush=True)

    kept: dict = {}
    if config.denoise.enabled:
        from dsdocre.denoise import DenoiseConfig, train_rank_model
        from sharding.denoise_score import score_shards

        dn = load_config(DenoiseConfig, config.denoise.config, [
            f"data.train={corpus / 'train_annotated.json'}", f"data.valid={corpus / 'dev.json'}",
            f"output_dir={out / 'denoise'}", "training.resume=false"])
        if args.encoder:
            dn.model.encoder = args.encoder
        print("== denoise train: the rank model (Relation Detection on annotated documents)", flush=True)
        with clock.stage("denoise train"):
            train_rank_model(dn)
        for split in splits:
            keep = config.denoise.keep_distant if split == "train_distant" else config.denoise.keep_annotated
            print(f"== denoise score: {split}, keep {keep} pairs per document -> {out / 'scored' / split}", flush=True)
            with clock.stage(f"denoise score {split}"):
                manifest = score_shards(out / "denoise" / "model", out / "shards" / split, out / "scored" / split,
                                        keep=keep, workers=workers, progress=False)
            print(f"   {manifest['counts']}; {manifest['pairs_kept']} of {manifest['pairs_scored']} pairs kept",
                  flush=True)
            kept[split] = out / "scored" / split

    print(f"== fact-join -> {out / 'pairs'}" + (" (labels on kept pairs only)" if kept else ""), flush=True)
    with clock.stage("fact-join"):
        fact_join(out / "shards" / "train_distant", out / "pairs",
                  max_pairs_per_fact=config.fact_join.max_pairs_per_fact, seed=config.fact_join.seed,
                  pairs_per_shard=config.fact_join.pairs_per_shard, workers=workers, kept_dir=kept.get("train_distant"))

    if config.pretrain.enabled and config.pretrain.heldout_distant_docs:
        from dsdocre.synth import generate_corpus

        heldout, n = out / "heldout", config.pretrain.heldout_distant_docs
        print(f"== held-out pairs for pre-training: {n} distant documents of seed {config.synth.seed + 1} "
              f"-> {heldout}", flush=True)
        with clock.stage("held-out pairs"):
            generate_corpus(heldout / "corpus", 0, config.synth.seed + 1, noise_rate=config.synth.noise_rate,
                            dev_docs=0, test_docs=0, distant_docs=n, progress=False)
            shard_corpus([heldout / "corpus" / "train_distant.json"], heldout / "shards",
                         docs_per_shard=config.shard.docs_per_shard, encoder=args.encoder, workers=workers,
                         progress=False)
            fact_join(heldout / "shards", heldout / "pairs", max_pairs_per_fact=config.fact_join.max_pairs_per_fact,
                      seed=config.fact_join.seed, pairs_per_shard=config.fact_join.pairs_per_shard, workers=workers)
    return kept
