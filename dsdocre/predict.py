"""``dsdocre predict`` and ``dsdocre evaluate``.

predict:  a saved model + documents -> ``result.json`` (DocRED's official submission format,
          ``[{"title", "h_idx", "t_idx", "r"}]``) and ``result.txt``, a readable listing with
          entity and relation names; documents that fail validation are listed, with every
          reason, in ``result.rejected.jsonl``.
evaluate: prints P, R, F1, Ign F1, Intra / Inter F1 exactly as DocRED's official scorer computes
          them, either for a saved model run on annotated documents (``--model``) or for an
          existing submission file (``--predictions``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(parser: argparse.ArgumentParser) -> None:
    command = parser.prog.split()[-1]
    parser.add_argument("--model", help="a model directory written by `dsdocre finetune` (its model/ folder)")
    parser.add_argument("--input", required=command == "predict",
                        help="documents to run on (DocRED JSON; annotated for evaluate)" if command == "predict"
                        else "annotated documents to score against (default: the model run's valid file)")
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the one chosen on valid)")
    parser.add_argument("--batch-size", type=int, default=4)
    if command == "predict":
        parser.add_argument("--out", default="result.json",
                            help="submission file to write; a readable listing goes beside it as .txt (default: %(default)s)")
    else:
        parser.add_argument("--predictions", help="score this submission file instead of running a model")
        parser.add_argument("--train", help="training annotations for Ign F1 (facts seen in training are ignored)")
        parser.add_argument("--json", dest="json_out", help="also write the metrics to this JSON file")
        parser.add_argument("--kept-pairs", help="the pre-denoiser's kept pairs (title -> [[h, t], ...]); "
                                                 "dropped gold pairs count as missed")


def _load_model(model_dir: str):
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.model import RelationClassifier

    model, meta = RelationClassifier.from_pretrained(model_dir)
    tokenizer, added = load_tokenizer(Path(model_dir) / "encoder", model.config.max_entities)
    if added:
        raise ValueError(f"{model_dir}: the saved tokenizer lacks marker tokens; was it saved by dsdocre?")
    if meta.get("tokenizer_fingerprint") and meta["tokenizer_fingerprint"] != tokenizer.fingerprint():
        raise ValueError(f"{model_dir}: tokenizer fingerprint differs from the one the model was trained with")
    model.special_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
    return model, meta, tokenizer


def run_model(model_dir: str, input_path: str, threshold: float | None = None, batch_size: int = 4,
              require_labels: bool = False, kept_pairs: dict | None = None,
              rejected_path: str | Path | None = None):
    """(documents, predictions, threshold) for a saved model on a DocRED file; invalid documents
    are reported, and appended to ``rejected_path`` (JSON Lines) when given."""
    from dsdocre.data.examples import build_examples
    from dsdocre.data.documents import load_valid_documents
    from dsdocre.inference import decode, predict_probabilities

    model, meta, tokenizer = _load_model(model_dir)
    docs, rejected = load_valid_documents(input_path, require_labels=require_labels, rejected_path=rejected_path,
                                          log=lambda m: print(m, file=sys.stderr))
    if rejected:
        print(f"{len(rejected)} documents rejected and left out: first reason: {rejected[0].problems[0]}"
              + (f" (all reasons in {rejected_path})" if rejected_path else ""),
              file=sys.stderr)
    examples = build_examples(docs, tokenizer, kept_pairs)
    threshold = meta.get("threshold", 0.5) if threshold is None else threshold
    probs = predict_probabilities(model, examples, batch_size, tokenizer.pad_id)
    return docs, decode(examples, probs, threshold), threshold


def annotated_documents(path: str | Path, role: str) -> list[dict]:
    """The valid annotated documents of ``path`` as DocRED dicts (rejections reported, not scored)."""
    from dsdocre.data.documents import load_valid_documents

    docs, rejected = load_valid_documents(path, require_labels=True, log=None)
    if rejected:
        print(f"{path}: {len(rejected)} {role} documents rejected and left out of scoring; first: "
              f"{rejected[0].problems[0]}", file=sys.stderr)
    return [d.to_json() for d in docs]


def score_model(model_dir: str, input_path: str, train_path: str | Path | None = None,
                threshold: float | None = None, batch_size: int = 4, kept_pairs: dict | None = None):
    """Run a saved model on annotated documents and score it with the official rules against the
    same documents; returns (metrics, predictions, threshold)."""
    from dsdocre.evaluation import score_predictions

    docs, predictions, threshold = run_model(model_dir, input_path, threshold, batch_size,
                                             require_labels=True, kept_pairs=kept_pairs)
    train = annotated_documents(train_path, "training") if train_path else None
    return score_predictions(predictions, [d.to_json() for d in docs], train), predictions, threshold


def write_listing(docs, predictions: list[dict], path: Path) -> None:
    from dsdocre.relations import relation_names

    names = relation_names()
    by_title: dict[str, list[dict]] = {}
    for p in predictions:
        by_title.setdefault(p["title"], []).append(p)
    with open(path, "w") as f:
        for doc in docs:
            facts = by_title.get(doc.title, [])
            f.write(f"# {doc.title} ({len(facts)} facts)\n")
            for p in sorted(facts, key=lambda p: -p.get("score", 0)):
                f.write(f"  {doc.entity_name(p['h_idx'])} [{p['h_idx']}]  --{names[p['r']]} ({p['r']})-->  "
                        f"{doc.entity_name(p['t_idx'])} [{p['t_idx']}]   p={p.get('score', float('nan')):.3f}\n")


def run(args: argparse.Namespace) -> int:
    from dsdocre.evaluation import format_metrics, score_predictions
    from dsdocre.inference import write_submission

    if args.command == "predict":
        if not args.model:
            raise SystemExit("predict needs --model (a model directory written by `dsdocre finetune`)")
        out = Path(args.out)
        rejected_path = out.with_name(f"{out.stem}.rejected.jsonl")
        rejected_path.unlink(missing_ok=True)  # this run's rejections only
        docs, predictions, threshold = run_model(args.model, args.input, args.threshold, args.batch_size,
                                                 rejected_path=rejected_path)
        write_submission(predictions, out)
        write_listing(docs, predictions, out.with_suffix(".txt"))
        print(f"{len(predictions)} facts on {len(docs)} documents (threshold {threshold:.3f}) -> {out} "
              f"and {out.with_suffix('.txt')}")
        return 0

    # evaluate
    if args.predictions and not args.input:
        raise SystemExit("evaluate --predictions needs --input (the gold documents)")
    meta = json.loads((Path(args.model) / "dsdocre_model.json").read_text()) if args.model else {}
    train_path = args.train
    if train_path is None and meta.get("train_file") and Path(meta["train_file"]).exists():
        train_path = meta["train_file"]
    if args.predictions:
        predictions = json.loads(Path(args.predictions).read_text())
        train = annotated_documents(train_path, "training") if train_path else None
        metrics = score_predictions(predictions, annotated_documents(args.input, "gold"), train)
    elif args.model:
        args.input = args.input or meta.get("valid_file")
        if not args.input:
            raise SystemExit("evaluate needs --input (annotated documents to score against)")
        kept = json.loads(Path(args.kept_pairs).read_text()) if args.kept_pairs else None
        metrics, _, _ = score_model(args.model, args.input, train_path, args.threshold, args.batch_size, kept)
    else:
        raise SystemExit("evaluate needs --model or --predictions")
    print(format_metrics(metrics))
    if train_path is None:
        print("(no training annotations given: Ign F1 equals F1; pass --train)")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(metrics, indent=2))
    return 0
