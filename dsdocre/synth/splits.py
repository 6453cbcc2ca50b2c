"""The four document sets of the synthetic corpus, their title tags and accepted aliases."""

from __future__ import annotations

# The four document sets, in the order they are written; the DS style is used for "train_distant".
SPLITS = ("train_annotated", "dev", "test", "train_distant")
SPLIT_TAG = {"train_annotated": "train", "dev": "dev", "test": "test", "train_distant": "distant"}
_SPLIT_ALIAS = {"annotated": "train_annotated", "train": "train_annotated", "distant": "train_distant",
                "ds": "train_distant"}


def canonical_split(kind: str) -> str:
    split = _SPLIT_ALIAS.get(kind, kind)
    if split not in SPLITS:
        raise ValueError(f"unknown document set {kind!r}: use one of {', '.join(SPLITS)}")
    return split
