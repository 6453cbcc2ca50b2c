"""The ``dsdocre synth`` command: ``add_arguments(parser)`` and ``run(args)``, dispatched by
:mod:`dsdocre.cli`."""

from __future__ import annotations

import argparse

from dsdocre.synth.corpus import generate_corpus
from dsdocre.synth.splits import SPLITS

# --------------------------------------------------------------------------------------------
# CLI hooks (dispatched by dsdocre.cli)
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--docs", type=int, default=1000,
                        help="annotated training documents to write (train_annotated.json) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the hidden KB and of every document; same arguments -> identical files "
                             "(default: %(default)s)")
    parser.add_argument("--out", required=True, help="output folder (created if missing)")
    parser.add_argument("--noise-rate", type=float, default=0.6,
                        help="target fraction of the inter-sentence distant labels that are noise, i.e. KB facts "
                             "the text does not state (default: %(default)s)")
    parser.add_argument("--dev-docs", type=int, default=None,
                        help="documents in dev.json, with labels (default: max(50, docs // 5))")
    parser.add_argument("--test-docs", type=int, default=None,
                        help="documents in test.json, with labels (default: same as --dev-docs)")
    parser.add_argument("--distant-docs", type=int, default=None,
                        help="distantly supervised documents in train_distant.json (default: --docs)")
    parser.add_argument("--no-progress", action="store_true", help="do not show a progress bar")


def run(args: argparse.Namespace) -> int:
    stats = generate_corpus(args.out, args.docs, args.seed, noise_rate=args.noise_rate, dev_docs=args.dev_docs,
                            test_docs=args.test_docs, distant_docs=args.distant_docs,
                            progress=not getattr(args, "no_progress", False))
    sp = stats["splits"]
    print(f"wrote {args.out} in {stats['elapsed_s']:.1f}s (seed {stats['seed']}; KB: {stats['kb']['entities']} "
          f"entities, {stats['kb']['facts']} facts, {len(stats['kb']['relations'])} relations)")
    for split in SPLITS:
        s = sp[split]
        line = (f"  {split:<16} {s['docs']:>7} docs  {s['labels']:>8} labels  "
                f"inter {s['inter_fraction']:.0%}  NA pairs {s['na_pair_fraction']:.0%}")
        if split == "train_distant":
            line += f"  noise (inter) {s['noise_rate_inter']:.3f} (target {stats['noise_rate_target']})"
        print(line)
    return 0
