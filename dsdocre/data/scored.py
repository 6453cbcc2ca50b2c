"""Reading the denoise stage's output: the pairs the rank model kept for each document.

A scored folder (``dsdocre denoise score``; format in ``docs/shards.md``, section 4) holds, per
document, the top-k entity pairs with their scores. Fine-tuning, evaluation and prediction restrict
their candidate pairs to these when pre-denoising is on (the paper's "BERT+D"); a gold fact whose
pair was not kept counts as missed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from dsdocre.data import manifest as mf
from dsdocre.errors import UserError

FORMAT = "dsdocre-scored"
FORMAT_VERSION = 2  # 2: every tar has its member index beside it (dsdocre.data.tar_index)


def load_kept_pairs(scored_dir: str | Path) -> dict[str, list[list[int]]]:
    """``title -> [[h, t], ...]`` (best first) from a verified scored folder."""
    import webdataset as wds

    try:
        manifest = mf.verify(scored_dir, expected_format=FORMAT, expected_version=FORMAT_VERSION)
    except mf.ShardVerificationError as err:
        raise UserError(str(err)) from None
    kept: dict[str, list[list[int]]] = {}
    paths = [str(Path(scored_dir) / s["name"]) for s in manifest["shards"]]
    for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False) if paths else ():
        record = json.loads(sample["kept.json"])
        kept[record["title"]] = record["kept"]
    return kept


def read_kept_pairs(sources: str | Path | Iterable[str | Path] | None) -> dict[str, list[list[int]]] | None:
    """The kept pairs of one or more scored folders (or JSON files ``{title: [[h, t], ...]}``),
    merged by title; None when there is no source (every ordered pair is a candidate)."""
    if not sources:
        return None
    if isinstance(sources, (str, Path)):
        sources = [sources]
    merged: dict[str, list[list[int]]] = {}
    for source in sources:
        path = Path(source)
        if path.is_dir():
            kept = load_kept_pairs(path)
        elif path.is_file():
            kept = json.loads(path.read_text())
        else:
            raise UserError(f"kept pairs {path}: no such folder or file (a folder written by `dsdocre denoise score`)")
        for title, pairs in kept.items():
            if title in merged and merged[title] != pairs:
                raise UserError(f"kept pairs: document {title!r} has different kept pairs in {path} and an "
                                "earlier source")
            merged[title] = pairs
    return merged
