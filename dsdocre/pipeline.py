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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="configs/pipeline.yaml", help="pipeline config (YAML); default: %(default)s")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a pipeline config value, e.g. --set synth.docs=200")
    parser.add_argument("--finetune-set", dest="finetune_overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fine-tuning config value, e.g. --finetune-set training.epochs=1")
    parser.add_argument("--encoder", help="a BERT-family model directory (default: the packaged MiniLM)")


def run(args: argparse.Namespace) -> int:
    from dsdocre.config import load_config

    config = load_config(args.config, args.overrides)
    out = Path(config.get("output_dir", "runs/pipeline"))
    started = time.perf_counter()

    # 1. synthetic corpus
    from dsdocre.synth import generate_corpus

    s = config["synth"]
    corpus = out / "corpus"
    print(f"== synth: {s['docs']} annotated + {s['distant_docs']} distant documents -> {corpus}", flush=True)
    generate_corpus(corpus, s["docs"], s["seed"], noise_rate=s["noise_rate"], dev_docs=s["dev_docs"],
                    test_docs=s["test_docs"], distant_docs=s["distant_docs"], progress=False)

    # 2. shard the distantly supervised documents on Ray, then pair documents that share a fact
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    sh = config.get("shard", {})
    print(f"== shard: {corpus / 'train_distant.json'} -> {out / 'shards'}", flush=True)
    summary = shard_corpus([corpus / "train_distant.json"], out / "shards", docs_per_shard=sh.get("docs_per_shard", 100),
                           encoder=args.encoder, workers=sh.get("workers"), progress=False)
    print(f"   {summary.counts}", flush=True)
    fj = config.get("fact_join", {})
    print(f"== fact-join -> {out / 'pairs'}", flush=True)
    fact_join(out / "shards", out / "pairs", max_pairs_per_fact=fj.get("max_pairs_per_fact", 8),
              seed=fj.get("seed", 0), workers=sh.get("workers"))

    # 3. fine-tune
    from dsdocre.finetune import finetune

    ft = load_config(config["finetune"], args.finetune_overrides)
    ft["data"]["train"] = str(corpus / "train_annotated.json")
    ft["data"]["valid"] = str(corpus / "dev.json")
    ft["output_dir"] = str(out / "finetune")
    if args.encoder:
        ft["model"]["encoder"] = args.encoder
    print("== finetune", flush=True)
    finetune(ft)

    # 4. evaluate on the held-out test set
    from dsdocre.evaluation import format_metrics
    from dsdocre.inference import write_submission
    from dsdocre.predict import score_model

    print("== evaluate on the test set", flush=True)
    test_out = out / "test"
    metrics, predictions, threshold = score_model(str(out / "finetune" / "model"), str(corpus / "test.json"),
                                                  corpus / "train_annotated.json")
    write_submission(predictions, test_out / "result.json")
    (test_out / "metrics.json").write_text(json.dumps({**metrics, "threshold": threshold}, indent=2))
    print(format_metrics(metrics))
    print(f"pipeline done in {(time.perf_counter() - started) / 60:.1f} min; outputs under {out}")
    return 0
