"""``dsdocre evaluate``: P, R, F1, Ign F1, Intra / Inter F1 exactly as DocRED's official scorer
computes them (the scorer is :mod:`dsdocre.evaluation`; this is the command around it).

It scores either a saved model run on annotated documents (``--model``) or an existing submission
file (``--predictions``). The gold file is scored whole, as the official script scores it: a
duplicated label counts once (with a warning), and a document that cannot be scored stops the
command with an error naming it. A submission's predictions whose title is no gold document's count
as wrong, as the official script counts them; their number is reported, since titles that match
nothing usually mean the wrong gold file. With ``--baseline`` (a second submission on the same
gold) it also prints the F1 and Ign F1 gaps with a 95% interval from a paired bootstrap over the
gold documents: how much the choice of evaluation documents could move the gap (a training seed's
share is not in it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dsdocre import fsio
from dsdocre.errors import UserError

# Titles quoted in the warning about predictions that name no gold document.
SHOWN_UNKNOWN_TITLES = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from dsdocre.predict import add_model_arguments

    add_model_arguments(parser, "annotated documents to score against (default: the model run's valid file)",
                        "; a gold fact whose pair was dropped counts as missed")
    parser.add_argument("--predictions", help="score this submission file instead of running a model")
    parser.add_argument("--train", help="training annotations for Ign F1 (facts seen in training are ignored)")
    parser.add_argument("--baseline", metavar="PREDICTIONS",
                        help="with --predictions: a baseline's submission on the same gold documents; "
                             "adds the F1 / Ign F1 gap to it with a 95%% paired-bootstrap interval")
    parser.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")


def training_facts(path: str | Path | None):
    """The Ign rule's training facts from the training annotations at ``path`` (None: no Ign).
    Training documents that fail validation contribute no facts; their number is reported."""
    from dsdocre.data.reader import load_valid_documents
    from dsdocre.evaluation import train_fact_set

    if path is None:
        return None
    docs, rejected = load_valid_documents(path, require_labels=True, log=None)
    if rejected:
        print(f"{path}: {len(rejected)} training documents fail validation and add no facts to the Ign rule; "
              f"first: {rejected[0].problems[0]}", file=sys.stderr)
    return train_fact_set(d.to_json() for d in docs)


def score_model(model_dir: str, input_path: str, train_path: str | Path | None = None,
                threshold: float | None = None, batch_size: int = 4, kept_pairs: dict | None = None,
                device: str | None = "auto"):
    """Run a saved model on annotated documents and score it with the official rules against the
    same documents, all of them; returns (metrics, predictions, threshold)."""
    from dsdocre.api import load_model
    from dsdocre.data.reader import load_gold_documents
    from dsdocre.evaluation import score_predictions

    extractor = load_model(model_dir, device=device)
    gold = load_gold_documents(input_path, log=lambda m: print(m, file=sys.stderr))  # every one, or an error
    result = extractor.predict(gold, kept_pairs=kept_pairs, threshold=threshold, batch_size=batch_size,
                               on_invalid="raise", progress=True)
    predictions = [fact.to_submission() for fact in result.facts]
    metrics = score_predictions(predictions, [d.to_json() for d in gold], train_facts=training_facts(train_path))
    return metrics, predictions, result.threshold


def warn_unknown_titles(predictions: list[dict], gold_titles: set[str], path: str) -> int:
    """Say how many predictions name a title that no gold document has (scored as wrong: a
    submission made for another gold file scores 0 otherwise without a word); returns that number."""
    unknown = [p["title"] for p in predictions if p["title"] not in gold_titles]
    if unknown:
        titles = list(dict.fromkeys(unknown))
        shown = ", ".join(repr(t) for t in titles[:SHOWN_UNKNOWN_TITLES])
        more = f" and {len(titles) - SHOWN_UNKNOWN_TITLES} more" if len(titles) > SHOWN_UNKNOWN_TITLES else ""
        print(f"warning: {len(unknown)} of {len(predictions)} predictions in {path} name a title that no gold "
              f"document has and count as wrong ({len(titles)} titles: {shown}{more}); is --input the gold "
              "file they were made for?", file=sys.stderr)
    return len(unknown)


def _model_metadata(model_dir: str) -> dict:
    path = Path(model_dir) / "dsdocre_model.json"
    if not path.is_file():
        raise UserError(f"{model_dir} is not a dsdocre model directory (no dsdocre_model.json); "
                        "pass the model/ folder that `dsdocre finetune` wrote")
    return json.loads(path.read_text())


def _read_submission(path: str) -> list[dict]:
    try:
        predictions = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: not valid JSON: {err}") from None
    keys = {"title", "h_idx", "t_idx", "r"}
    if not isinstance(predictions, list) or not all(isinstance(p, dict) and keys <= p.keys() for p in predictions):
        raise UserError(f"{path}: not a submission file (a JSON array of {{title, h_idx, t_idx, r}} objects)")
    return predictions


def run(args: argparse.Namespace) -> int:
    from dsdocre.data.reader import load_gold_documents
    from dsdocre.data.scored import read_kept_pairs
    from dsdocre.evaluation import compare_submissions, format_metrics, score_predictions

    if args.predictions and not args.input:
        raise UserError("evaluate --predictions needs --input (the gold documents)")
    if args.baseline and not args.predictions:
        raise UserError("evaluate --baseline compares two submission files: give --predictions as well")
    meta = _model_metadata(args.model) if args.model else {}
    train_path = args.train
    if train_path is None and meta.get("train_file") and Path(meta["train_file"]).exists():
        train_path = meta["train_file"]
    if args.predictions:
        predictions = _read_submission(args.predictions)
        gold = load_gold_documents(args.input, log=lambda m: print(m, file=sys.stderr))
        warn_unknown_titles(predictions, {d.title for d in gold}, args.predictions)
        gold_json, facts = [d.to_json() for d in gold], training_facts(train_path)
        metrics = score_predictions(predictions, gold_json, train_facts=facts)
        if args.baseline:
            try:
                metrics["against_baseline"] = compare_submissions(predictions, _read_submission(args.baseline),
                                                                  gold_json, train_facts=facts)
            except ValueError as err:  # a title outside the gold, or gold titles repeated
                raise UserError(f"cannot compare per document: {err}") from err
    elif args.model:
        args.input = args.input or meta.get("valid_file")
        if not args.input:
            raise UserError("evaluate needs --input (annotated documents to score against)")
        kept = read_kept_pairs(args.kept_pairs)
        metrics, _, _ = score_model(args.model, args.input, train_path, args.threshold, args.batch_size, kept,
                                    device=args.device)
    else:
        raise UserError("evaluate needs --model or --predictions")
    print(format_metrics(metrics))
    if "against_baseline" in metrics:
        gap = metrics["against_baseline"]
        print(f"against {args.baseline} (paired bootstrap over {gap['documents']} documents, "
              f"{gap['resamples']} resamples):\n"
              f"  F1 {gap['f1_diff']:+.2f} [{gap['f1_ci95'][0]:+.2f}, {gap['f1_ci95'][1]:+.2f}], "
              f"ahead in {100 * gap['f1_a_ahead']:.1f}% of resamples; "
              f"Ign F1 {gap['ign_f1_diff']:+.2f} [{gap['ign_f1_ci95'][0]:+.2f}, {gap['ign_f1_ci95'][1]:+.2f}]")
    if train_path is None:
        print("(no training annotations given: Ign F1 equals F1; pass --train)")
    if args.json_out:
        fsio.write_json_atomic(args.json_out, metrics, indent=2)
    return 0
