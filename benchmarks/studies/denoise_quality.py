"""How well pre-denoising works: recall of gold facts in the kept pairs, noise separation on the
synthetic corpus, and fine-tuning with and without it ("BERT" vs "BERT+D").

    python -m benchmarks.studies.denoise_quality [--skip-finetune] [--keep 6n] [--rank-run DIR]

1. The rank model (configs/denoise_redocred.yaml) is trained on ``../shared/data/redocred/train.json``
   and the epoch chosen on ``valid.json``; the recall of valid's gold facts inside the kept 2·N_ent
   and 3·N_ent pairs is that epoch's. ``--rank-run DIR`` uses the model a finished
   ``dsdocre denoise train --config configs/denoise_redocred.yaml --output-dir DIR`` left instead of
   training one here (its epoch, recall and training time are read from DIR).
2. On the synthetic corpus (``dsdocre synth``, seed 0, the pipeline's sizes) a rank model trained on
   its annotated documents scores the distantly supervised ones; the corpus keeps the truth of
   every distant label (stated in the text, or noise). Reported: of the labels on dropped pairs,
   the share that is noise (noise_precision); of all noise labels, the share dropped (noise_recall);
   of the stated labels, the share kept.
3. "BERT+D": the fine-tuning recipe of ``benchmarks/studies/finetune_realdata.py`` (configs/finetune_redocred.yaml,
   same encoder, epochs and time budget) on the kept pairs of train and valid; a gold fact whose pair
   was dropped counts as missed. "BERT" is ``benchmarks/results/finetune_realdata.json`` (run it
   first, on the same machine). Epoch and threshold are chosen on valid, so both are optimistic.

Writes ``benchmarks/results/denoise_quality.json`` (percent). Takes about an hour on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from benchmarks._common import machine_info, pin_threads, read_metrics, real_data_dir, recall_per_epoch

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("precision", "recall", "f1", "ign_f1", "intra_f1", "inter_f1")


def shard_and_score(model_dir: Path, doc_file: Path, work: Path, keep: str) -> Path:
    from sharding.denoise_score import score_shards
    from sharding.shard import shard_corpus

    name = doc_file.stem
    shard_corpus([doc_file], work / "shards" / name, docs_per_shard=100, workers=0, progress=False, log=None)
    score_shards(model_dir, work / "shards" / name, work / "scored" / f"{name}-{keep}", keep=keep, workers=0,
                 progress=False)
    return work / "scored" / f"{name}-{keep}"


def synthetic_noise_separation(work: Path, keep: str, docs: int, rank_overrides: list[str]) -> dict:
    from dsdocre.config import load_config
    from dsdocre.data.scored import load_kept_pairs
    from dsdocre.denoise import DenoiseConfig, train_rank_model
    from dsdocre.synth import generate_corpus

    corpus = work / "synthetic"
    generate_corpus(corpus, docs, 0, noise_rate=0.6, dev_docs=docs // 5, test_docs=docs // 5, distant_docs=docs,
                    progress=False)
    config = load_config(DenoiseConfig, ROOT / "configs/denoise.yaml", [
        f"data.train={corpus / 'train_annotated.json'}", f"data.valid={corpus / 'dev.json'}",
        f"output_dir={work / 'synthetic_rank'}", *rank_overrides])
    record = train_rank_model(config)
    scored = shard_and_score(work / "synthetic_rank" / "model", corpus / "train_distant.json", work, keep)
    kept = load_kept_pairs(scored)
    counts = {"stated_labels": 0, "stated_labels_kept": 0, "noise_labels": 0, "noise_labels_dropped": 0}
    for line in (corpus / "train_distant_truth.jsonl").read_text().splitlines():
        truth = json.loads(line)
        pairs = {tuple(p) for p in kept[truth["title"]]}
        for h, t, _ in truth["stated"]:
            counts["stated_labels"] += 1
            counts["stated_labels_kept"] += (h, t) in pairs
        for h, t, _ in truth["noise"]:
            counts["noise_labels"] += 1
            counts["noise_labels_dropped"] += (h, t) not in pairs
    dropped = counts["noise_labels_dropped"] + counts["stated_labels"] - counts["stated_labels_kept"]
    return {"keep": keep, "rank_model_valid": record["valid"], **counts,
            "noise_precision": round(100 * counts["noise_labels_dropped"] / max(dropped, 1), 2),
            "noise_recall": round(100 * counts["noise_labels_dropped"] / max(counts["noise_labels"], 1), 2),
            "stated_kept": round(100 * counts["stated_labels_kept"] / max(counts["stated_labels"], 1), 2)}


def earlier_baselines(out: Path) -> dict | None:
    """With --skip-release-recipe: the rank models the previous result file measured (the release's
    sampling, and the rank model it reported), marked as from that run, so the baselines stay beside
    the new figure; None when there is no such file."""
    if not out.exists():
        return None
    old = json.loads(out.read_text())
    if old.get("release_recipe") is None:
        return None
    earlier = old["release_recipe"]
    if "measured" not in earlier:
        earlier = {**earlier, "measured": f"in the run of {old.get('date')} (not re-run here)",
                   "that_run_rank_model": {"valid_recall_at_2n": old["valid_recall_at_2n"],
                                           "valid_recall_at_3n": old["valid_recall_at_3n"],
                                           "training": old["rank_model"]["config"]["training"],
                                           "train_seconds": old["rank_model"]["train_seconds"]}}
    return earlier


def finished_rank_run(run: Path, data: Path) -> dict:
    """The record of a finished ``dsdocre denoise train`` run (the saved epoch's, with the run's
    training seconds); refuses one trained or chosen on other files."""
    meta = json.loads((run / "model" / "dsdocre_model.json").read_text())
    for key, name in (("train_file", "train.json"), ("valid_file", "valid.json")):
        if Path(meta[key]).resolve() != (data / name).resolve():
            raise SystemExit(f"--rank-run {run}: its model was trained with {key} {meta[key]}, not {data / name}")
    records = read_metrics(run)
    [record] = [r for r in records if r["epoch"] == meta["epoch"]][-1:]
    return {**record, "train_seconds_total": records[-1]["train_seconds"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", default="6n",
                        help="pairs kept per annotated document for BERT+D (default: %(default)s, the stage's "
                        "default, chosen by benchmarks/studies/denoise_cut.py)")
    parser.add_argument("--rank-run", metavar="DIR",
                        help="a finished `dsdocre denoise train` output folder on train.json/valid.json: use its "
                        "model instead of training one (with the same --rank-set values, which are recorded)")
    parser.add_argument("--synthetic-keep", default="20", help="pairs kept per synthetic distant document")
    parser.add_argument("--work", default=str(ROOT / "runs" / "denoise_quality"))
    parser.add_argument("--skip-finetune", action="store_true", help="measure the denoiser only (no BERT+D row)")
    parser.add_argument("--skip-synthetic", action="store_true",
                        help="do not measure noise separation on the synthetic corpus (its rank model would take "
                        "the same --rank-set values, e.g. a real-data schedule of many epochs)")
    parser.add_argument("--skip-release-recipe", action="store_true",
                        help="do not train the baseline rank model with the paper release's sampling")
    parser.add_argument("--bert", default=str(ROOT / "benchmarks/results/finetune_realdata.json"),
                        help="the BERT row's result file (benchmarks/studies/finetune_realdata.py)")
    parser.add_argument("--synthetic-docs", type=int, default=400, help="synthetic annotated (and distant) documents")
    parser.add_argument("--rank-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a rank model config value (both rank models)")
    parser.add_argument("--finetune-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a fine-tuning config value (the BERT+D row)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/denoise_quality.json"))
    args = parser.parse_args()
    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    from dsdocre.config import load_config, to_plain
    from dsdocre.denoise import DenoiseConfig, train_rank_model
    from dsdocre.finetune import FinetuneConfig, finetune

    work = Path(args.work)
    started = time.perf_counter()
    # 1. the rank model on real data; recall of valid's gold facts in the kept pairs
    rank_cfg = load_config(DenoiseConfig, ROOT / "configs/denoise_redocred.yaml", [
        f"data.train={data / 'train.json'}", f"data.valid={data / 'valid.json'}", f"output_dir={work / 'rank'}",
        *args.rank_set])
    if args.rank_run:
        rank = finished_rank_run(Path(args.rank_run), data)
        rank_seconds = rank["train_seconds_total"]
        rank_cfg.output_dir = str(Path(args.rank_run))
    else:
        rank = train_rank_model(rank_cfg)
        rank_seconds = time.perf_counter() - started
    print(f"rank model: best epoch {rank['epoch']}, valid {rank['valid']}", flush=True)
    # the baseline in the same run: the paper release's sampling (3 positives x 5 negatives per
    # document and epoch) for 4 epochs
    release_cfg = load_config(DenoiseConfig, ROOT / "configs/denoise_redocred.yaml", [
        f"data.train={data / 'train.json'}", f"data.valid={data / 'valid.json'}",
        f"output_dir={work / 'rank_release_recipe'}", "training.positives_per_doc=3",
        "training.negatives_per_positive=5", "training.epochs=4",
        *args.rank_set]) if not args.skip_release_recipe else None
    release = train_rank_model(release_cfg) if release_cfg else None

    # 2. noise separation on the synthetic distant corpus
    synthetic = None if args.skip_synthetic else \
        synthetic_noise_separation(work, args.synthetic_keep, args.synthetic_docs, args.rank_set)
    print(f"synthetic: {synthetic}", flush=True)

    # 3. BERT+D: the finetune_realdata recipe on the kept pairs
    result = {"k_d": args.keep, "valid_recall_at_2n": rank["valid"]["fact_recall_at_2n"],
              "valid_recall_at_3n": rank["valid"]["fact_recall_at_3n"], "rank_model": {
                  "best_epoch": rank["epoch"], "valid": rank["valid"], "train_seconds": rank["train_seconds_total"],
                  "wall_seconds": round(rank_seconds, 1), "config": to_plain(rank_cfg),
                  "recall_per_epoch": recall_per_epoch(read_metrics(rank_cfg.output_dir))},
              "release_recipe": earlier_baselines(Path(args.out)) if release is None else {
                  "valid_recall_at_2n": release["valid"]["fact_recall_at_2n"],
                  "valid_recall_at_3n": release["valid"]["fact_recall_at_3n"], "best_epoch": release["epoch"],
                  "valid": release["valid"], "train_seconds": release["train_seconds_total"],
                  "config": to_plain(release_cfg)},
              "synthetic": synthetic}
    if not args.skip_finetune:
        kept = [shard_and_score(Path(rank_cfg.output_dir) / "model", data / f"{split}.json", work, args.keep)
                for split in ("train", "valid")]
        ft_cfg = load_config(FinetuneConfig, ROOT / "configs/finetune_redocred.yaml", [
            f"data.train={data / 'train.json'}", f"data.valid={data / 'valid.json'}",
            f"output_dir={work / 'finetune_bert_d'}", *args.finetune_set])
        ft_cfg.data.kept_pairs = [str(k) for k in kept]
        t0 = time.perf_counter()
        best = finetune(ft_cfg)
        bert = json.loads(Path(args.bert).read_text())
        result.update({
            "valid_f1": {"BERT": bert["valid"]["f1"], "BERT+D": best["valid"]["f1"]},
            "valid_ign_f1": {"BERT": bert["valid"]["ign_f1"], "BERT+D": best["valid"]["ign_f1"]},
            "valid": {"BERT": bert["valid"], "BERT+D": {k: best["valid"][k] for k in KEYS}},
            "bert_d": {"best_epoch": best["epoch"], "threshold": best["threshold"],
                       "train_seconds": best["train_seconds_total"], "wall_seconds": round(time.perf_counter() - t0, 1),
                       "config": to_plain(ft_cfg)},
            "bert_result": {"file": str(Path(args.bert).relative_to(ROOT)), "date": bert.get("date"),
                            "best_epoch": bert["best_epoch"]},
        })
    else:
        bert = json.loads(Path(args.bert).read_text())
        result.update({
            "valid_f1": {"BERT": bert["valid"]["f1"], "BERT+D": None},
            "valid_ign_f1": {"BERT": bert["valid"]["ign_f1"], "BERT+D": None},
            "bert_result": {"file": str(Path(args.bert).relative_to(ROOT)), "date": bert.get("date"),
                            "best_epoch": bert["best_epoch"]},
            "bert_d_pending": (f"BERT+D not run (--skip-finetune): the rank model keeps "
                               f"{result['valid_recall_at_2n']}% of valid's gold facts inside its 2 N_ent pairs, so "
                               "the row would measure that recall loss first. Run without --skip-finetune to fill it."),
        })
    machine = machine_info()
    result.update(threads=threads, machine=machine, command=machine["command"], date=machine["date"],
                  note="epochs and thresholds chosen on valid: the valid figures are optimistic")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))

    print(f"\nrecall of valid gold facts in kept pairs: 2n {result['valid_recall_at_2n']:.2f}  "
          f"3n {result['valid_recall_at_3n']:.2f}")
    if release:
        print(f"  (release sampling, 3 x 5 per document, 4 epochs: 2n {release['valid']['fact_recall_at_2n']:.2f}  "
              f"3n {release['valid']['fact_recall_at_3n']:.2f})")
    if synthetic:
        print(f"synthetic distant labels (keep {synthetic['keep']}): noise precision {synthetic['noise_precision']:.2f}  "
              f"noise recall {synthetic['noise_recall']:.2f}  stated kept {synthetic['stated_kept']:.2f}")
    if result["valid_f1"]["BERT+D"] is not None:  # None with --skip-finetune
        print(f"{'':<8}{'F1':>8}{'Ign F1':>8}")
        for row in ("BERT", "BERT+D"):
            print(f"{row:<8}{result['valid_f1'][row]:>8.2f}{result['valid_ign_f1'][row]:>8.2f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
