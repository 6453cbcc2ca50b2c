"""``dsdocre pipeline``: the main job, end to end, on the embedded synthetic corpus.

Stages run in order and talk only through files under ``output_dir``::

    corpus/     dsdocre synth      annotated + distantly supervised documents (DocRED JSON)
    shards/     dsdocre shard      the distant documents as verified WebDataset shards (Ray)
    pairs/      dsdocre fact-join  document pairs sharing a relational fact (pre-training input)
    finetune/   dsdocre finetune   model/, metrics.jsonl, valid_predictions.json
    test/       dsdocre evaluate   result.json (official submission format), metrics.json

Denoising and pre-training join this chain (between pairs/ and finetune/) as they land.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Optional

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


class PipelineConfig(Section):
    output_dir: str = "runs/pipeline"
    synth: SynthConfig = SynthConfig()
    shard: ShardConfig = ShardConfig()
    fact_join: FactJoinConfig = FactJoinConfig()
    finetune: str = "configs/finetune.yaml"  # its data paths and output_dir are set to this run's
    device: str = "auto"  # where the test set is scored: auto (CUDA when available), cpu, cuda:N


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/pipeline.yaml", help="pipeline config (YAML); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline config value, e.g. --set synth.docs=200")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fine-tuning config value, e.g. --finetune-set training.epochs=1")
    parser.add_argument("--encoder", help="a BERT-family model directory (default: the packaged MiniLM)")


def run(args: argparse.Namespace) -> int:
    from dsdocre.config import load_config

    config = load_config(PipelineConfig, args.config, args.overrides)
    out = Path(config.output_dir)
    started = time.perf_counter()

    # 1. synthetic corpus
    from dsdocre.synth import generate_corpus

    s = config.synth
    corpus = out / "corpus"
    print(f"== synth: {s.docs} annotated + {s.distant_docs} distant documents -> {corpus}", flush=True)
    generate_corpus(corpus, s.docs, s.seed, noise_rate=s.noise_rate, dev_docs=s.dev_docs,
                    test_docs=s.test_docs, distant_docs=s.distant_docs, progress=False)

    # 2. shard the distantly supervised documents on Ray, then pair documents that share a fact
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    print(f"== shard: {corpus / 'train_distant.json'} -> {out / 'shards'}", flush=True)
    summary = shard_corpus([corpus / "train_distant.json"], out / "shards", docs_per_shard=config.shard.docs_per_shard,
                           encoder=args.encoder, workers=config.shard.workers, progress=False)
    print(f"   {summary.counts}", flush=True)
    print(f"== fact-join -> {out / 'pairs'}", flush=True)
    fact_join(out / "shards", out / "pairs", max_pairs_per_fact=config.fact_join.max_pairs_per_fact,
              seed=config.fact_join.seed, workers=config.shard.workers)

    # 3. fine-tune
    from dsdocre.finetune import FinetuneConfig, finetune

    ft = load_config(FinetuneConfig, config.finetune, [
        f"data.train={corpus / 'train_annotated.json'}", f"data.valid={corpus / 'dev.json'}",
        f"output_dir={out / 'finetune'}", *args.finetune_overrides])
    if args.encoder:
        ft.model.encoder = args.encoder
    print("== finetune", flush=True)
    finetune(ft)

    # 4. evaluate on the held-out test set
    from dsdocre.evaluation import format_metrics
    from dsdocre.inference import write_submission
    from dsdocre.predict import score_model

    print("== evaluate on the test set", flush=True)
    test_out = out / "test"
    metrics, predictions, threshold = score_model(str(out / "finetune" / "model"), str(corpus / "test.json"),
                                                  corpus / "train_annotated.json", device=config.device)
    write_submission(predictions, test_out / "result.json")
    (test_out / "metrics.json").write_text(json.dumps({**metrics, "threshold": threshold}, indent=2))
    print(format_metrics(metrics))
    print(f"pipeline done in {(time.perf_counter() - started) / 60:.1f} min; outputs under {out}")
    return 0
