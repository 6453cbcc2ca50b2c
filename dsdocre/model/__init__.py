"""Models: the document encoder with entity pooling, and the heads built on it.

- :mod:`dsdocre.model.encoder`: :class:`DocumentEncoder` (any BERT-family encoder, windowed for long
  documents) and :func:`pool_entities`;
- :mod:`dsdocre.model.classifier`: :class:`ModelConfig`, :class:`RelationClassifier` and its
  ``save_pretrained`` / ``from_pretrained`` directory layout.
"""

from dsdocre.model.classifier import ModelConfig, RelationClassifier
from dsdocre.model.encoder import DocumentEncoder, pool_entities

__all__ = ["DocumentEncoder", "ModelConfig", "RelationClassifier", "pool_entities"]
