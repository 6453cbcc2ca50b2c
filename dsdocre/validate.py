"""``dsdocre validate FILE...``: report every problem of every document, exit 1 if there is any.

Warnings (a duplicated label, which scoring counts once) are reported and counted like errors:
the file is not clean until they are fixed. A file that holds no array of documents, or an empty
one, is an error too."""

from __future__ import annotations

import argparse
import json
import sys

from dsdocre.data.reader import iter_raw_documents
from dsdocre.data.validation import duplicate_title_problem, validate_document


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE", help="DocRED-format .json arrays or .jsonl files")
    parser.add_argument("--max-problems", type=int, default=0,
                        help="print at most this many problems per file (0 = all); the count is always exact")
    parser.add_argument("--json", action="store_true", help="print problems as JSON Lines")


def run(args: argparse.Namespace) -> int:
    total = 0
    for path in args.files:
        n_docs = n_bad = n_problems = 0
        titles: dict[str, int] = {}
        try:
            for index, raw in enumerate(iter_raw_documents(path)):
                n_docs += 1
                problems = validate_document(raw, index, str(path))
                duplicate = duplicate_title_problem(raw, index, str(path), titles)
                problems += [duplicate] if duplicate else []
                n_bad += bool(problems)
                for p in problems:
                    n_problems += 1
                    if not args.max_problems or n_problems <= args.max_problems:
                        print(json.dumps(p.to_json()) if args.json else str(p))
        except (OSError, ValueError) as err:
            print(f"dsdocre validate: error: {err}", file=sys.stderr)
            total += 1
            continue
        if n_docs == 0:
            print(f"dsdocre validate: error: {path}: holds no documents (an empty array)", file=sys.stderr)
            total += 1
            continue
        print(f"{path}: {n_docs} documents, {n_bad} with problems, {n_problems} problems", file=sys.stderr)
        total += n_problems
    return 1 if total else 0
