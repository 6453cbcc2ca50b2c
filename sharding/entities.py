"""How entities are identified across documents (distant labelling and the fact join).

* An entity whose mentions carry a ``kb_id`` is that knowledge-base entity.
* Otherwise it is known by its mention names, normalized by :func:`normalize_name`: lowercase
  (Unicode case folding), whitespace runs collapsed to one space, punctuation stripped from both
  ends ("Paris," -> "paris"; "U.S." -> "u.s"; inner punctuation is kept: "AT&T" -> "at&t").

Distant labelling matches a document entity against a KB entity through *any* of its mention
names; the fact join needs one key per entity (:func:`entity_key`).
"""

from __future__ import annotations

import string
import unicodedata

_STRIP = string.punctuation + "\u2018\u2019\u201c\u201d\u00ab\u00bb\u2013\u2014"


def normalize_name(name: str) -> str:
    name = unicodedata.normalize("NFC", name).casefold()
    return " ".join(name.split()).strip(_STRIP + " ")


def entity_kb_id(mentions: list[dict]) -> str | None:
    """The first ``kb_id`` among the entity's mentions (DocRED-style corpora put one on each)."""
    for m in mentions:
        kb_id = m.get("kb_id")
        if kb_id not in (None, ""):
            return str(kb_id)
    return None


def entity_names(mentions: list[dict]) -> set[str]:
    """The entity's distinct normalized mention names (empty ones, e.g. "--", left out)."""
    return {n for m in mentions if (n := normalize_name(m["name"]))}


def entity_key(mentions: list[dict]) -> str | None:
    """One key per entity: ``kb:<id>`` when a mention carries a KB id, else ``name:<name>`` with the
    longest normalized mention name (ties: alphabetical first): the most specific name, which is
    also what :meth:`dsdocre.data.documents.Document.entity_name` shows. None when it has no name."""
    kb_id = entity_kb_id(mentions)
    if kb_id is not None:
        return f"kb:{kb_id}"
    names = entity_names(mentions)
    if not names:
        return None
    return "name:" + min(names, key=lambda n: (-len(n), n))
