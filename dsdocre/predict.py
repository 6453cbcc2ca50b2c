"""``dsdocre predict``: a saved model + documents -> ``result.json`` (DocRED's official submission
format, ``[{"title", "h_idx", "t_idx", "r"}]``) and ``result.txt``, a readable listing with entity
and relation names; documents that fail validation are listed, with every reason, in
``result.rejected.jsonl``.

The command is :mod:`dsdocre.api` (``load_model(...).predict(...)``) with files around it; scoring
a model or a submission is ``dsdocre evaluate`` (:mod:`dsdocre.evaluate`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dsdocre.errors import UserError


def add_model_arguments(parser: argparse.ArgumentParser, input_help: str, kept_pairs_note: str = "") -> None:
    """The options of a command that runs a saved model on documents (predict, evaluate)."""
    parser.add_argument("--model", help="a model directory written by `dsdocre finetune` (its model/ folder)")
    parser.add_argument("--input", help=input_help)
    parser.add_argument("--threshold", type=float, help="decision threshold (default: the one chosen on valid)")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="auto",
                        help="where the model runs: auto (CUDA when available, else CPU), cpu, cuda, cuda:N "
                             "(default: %(default)s)")
    parser.add_argument("--kept-pairs", nargs="+", metavar="DIR",
                        help="pre-denoising on: only the pairs the rank model kept are candidates; folders written "
                             "by `dsdocre denoise score` (or JSON title -> [[h, t], ...])" + kept_pairs_note)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_model_arguments(parser, "documents to run on (DocRED JSON or JSON Lines)")
    parser.add_argument("--out", default="result.json",
                        help="submission file to write; a readable listing goes beside it as .txt (default: %(default)s)")


def write_listing(predictions, path: Path) -> None:
    """``dsdocre.api.Predictions`` as text: per document its facts, most probable first."""
    by_title: dict[str, list] = {}
    for fact in predictions.facts:
        by_title.setdefault(fact.title, []).append(fact)
    with open(path, "w") as f:
        for doc in predictions.documents:
            facts = by_title.get(doc.title, [])
            f.write(f"# {doc.title} ({len(facts)} facts)\n")
            for x in sorted(facts, key=lambda x: -x.score):
                f.write(f"  {x.head_name} [{x.head}]  --{x.relation_name} ({x.relation})-->  "
                        f"{x.tail_name} [{x.tail}]   p={x.score:.3f}\n")


def run(args: argparse.Namespace) -> int:
    from dsdocre.api import load_model
    from dsdocre.data.reader import write_rejections
    from dsdocre.inference import write_submission

    if not args.model:
        raise UserError("predict needs --model (a model directory written by `dsdocre finetune`)")
    if not args.input:
        raise UserError("predict needs --input (documents to run on: DocRED JSON or JSON Lines)")
    out = Path(args.out)
    rejected_path = out.with_name(f"{out.stem}.rejected.jsonl")
    rejected_path.unlink(missing_ok=True)  # this run's rejections only
    extractor = load_model(args.model, device=args.device)
    result = extractor.predict(args.input, kept_pairs=args.kept_pairs, threshold=args.threshold,
                               batch_size=args.batch_size, progress=True)
    n_read = len(result.documents) + len(result.invalid)
    print(f"{args.input}: read {n_read}, kept {len(result.documents)}, rejected {len(result.invalid)}"
          + (f" -> {rejected_path}" if result.invalid else ""), file=sys.stderr)
    if result.invalid:
        write_rejections(result.invalid, rejected_path)
        for rejected in result.invalid[:3]:
            print(f"  rejected: {rejected.problems[0]}", file=sys.stderr)
    write_submission([fact.to_submission() for fact in result.facts], out)
    write_listing(result, out.with_suffix(".txt"))
    print(f"{len(result.facts)} facts on {len(result.documents)} documents (threshold {result.threshold:.3f}) "
          f"-> {out} and {out.with_suffix('.txt')}")
    return 0
