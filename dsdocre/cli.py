"""The ``dsdocre`` command. Each stage module registers its own sub-command.

Modules are imported lazily so that ``dsdocre --help`` and light commands (``validate``,
``synth``) start fast and never import torch, DeepSpeed or Ray.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# sub-command -> (module, one-line help). The module defines ``add_arguments(parser)`` and
# ``run(args) -> int`` (the exit code); ``args.command`` holds the sub-command's name.
COMMANDS: dict[str, tuple[str, str]] = {
    "validate": ("dsdocre.validate", "check DocRED-format JSON files and report every problem"),
    "synth": ("dsdocre.synth.command", "write a synthetic annotated + distantly supervised corpus"),
    "denoise": ("dsdocre.denoise", "pre-denoising: train the rank model, score and keep the top entity pairs"),
    "pretrain": ("dsdocre.pretrain", "pre-train the encoder on the three denoising tasks (DeepSpeed ZeRO)"),
    "finetune": ("dsdocre.finetune", "fine-tune the relation classifier (DeepSpeed engine)"),
    "evaluate": ("dsdocre.evaluate", "score a checkpoint or a submission file: P/R/F1/Ign F1/Intra/Inter"),
    "predict": ("dsdocre.predict", "write the official submission file and a readable listing"),
    "pipeline": ("dsdocre.pipeline", "run the main job end to end on the embedded synthetic corpus"),
    "shard": ("sharding.shard", "shard DocRED-format JSON into verified WebDataset tar files on Ray"),
    "distant-label": ("sharding.distant_label", "label unlabeled documents from a knowledge base"),
    "fact-join": ("sharding.fact_join", "pair documents that share a relational fact (pre-training input)"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dsdocre",
        description="Document-level relation extraction pre-trained on denoised distant supervision. "
        "Stages: shard -> denoise -> pretrain -> finetune -> evaluate.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            importlib.import_module(module_name).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # The deepspeed launcher puts --local_rank=N before the sub-command; LOCAL_RANK is in the
    # environment as well, which is what the training code reads.
    argv = [a for a in argv if not a.startswith("--local_rank")]
    command = next((a for a in argv if not a.startswith("-")), None)
    if command not in COMMANDS:
        command = None
    # Only the chosen sub-command's module is imported: `dsdocre --help` stays light.
    parser = build_parser(only=command or "__none__")
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from dsdocre.errors import Interrupted, UserError

    try:
        return int(importlib.import_module(COMMANDS[args.command][0]).run(args) or 0)
    except UserError as err:  # a user's mistake: one line, no traceback (those are for bugs)
        print(f"dsdocre {args.command}: error: {err}", file=sys.stderr)
        return 2
    except Interrupted as stop:  # preempted, or too many non-finite steps: a checkpoint was saved
        if os.environ.get("RANK", "0") == "0":  # every rank stops; one says why
            print(f"dsdocre {args.command}: {stop}", file=sys.stderr)
        return stop.exit_code
    except OSError as err:
        if err.filename is None:
            raise
        print(f"dsdocre {args.command}: error: {err.filename}: {err.strerror}", file=sys.stderr)
        return 2


def entry() -> None:
    """The process entry point (console script and ``python -m dsdocre.cli``).

    A process that was part of a process group ends with ``os._exit`` once its work is written and
    its output flushed: interpreter teardown destroys Gloo's and DeepSpeed's C++ objects in no
    fixed order, and a worker thread still joinable then aborts the process ("terminate called
    without an active exception", exit -6) after a run that had finished. ``main`` itself returns,
    so in-process callers (tests) keep their interpreter."""
    from dsdocre.train import distributed

    try:
        code = main()
    finally:  # also when main raised: the group is left before the traceback and the exit
        left_group = distributed.shutdown()
    if left_group:
        import logging

        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    entry()
