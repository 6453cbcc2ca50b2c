"""The DocRED relation inventory: 96 Wikidata properties plus NA (class 0)."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

NA = "NA"


@lru_cache(maxsize=None)
def relation_names() -> dict[str, str]:
    """Relation id -> readable name, e.g. ``"P17" -> "country"`` (DocRED's rel_info.json)."""
    text = resources.files("dsdocre").joinpath("resources/rel_info.json").read_text()
    return dict(json.loads(text))


@lru_cache(maxsize=None)
def relation_ids() -> tuple[str, ...]:
    """Class order used by every classifier: index 0 is NA, then the 96 ids in file order."""
    return (NA, *relation_names().keys())


@lru_cache(maxsize=None)
def relation_index() -> dict[str, int]:
    return {r: i for i, r in enumerate(relation_ids())}


NUM_CLASSES = 97
