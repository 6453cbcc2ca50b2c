"""Models: the document encoder with entity pooling, and the heads built on it.

- :mod:`dsdocre.model.encoder`: :class:`DocumentEncoder` (any BERT-family encoder, windowed for long
  documents) and :func:`pool_entities`;
- :mod:`dsdocre.model.classifier`: :class:`ModelConfig`, :class:`RelationClassifier` and its
  ``save_pretrained`` / ``from_pretrained`` directory layout;
- :mod:`dsdocre.model.rank`: :class:`RankModel`, the pre-denoiser (one score per pair, all pairs of
  a document as one bilinear form).
"""

from dsdocre.model.classifier import ModelConfig, RelationClassifier
from dsdocre.model.encoder import DocumentEncoder, pool_entities
from dsdocre.model.rank import RankModel, RankModelConfig

__all__ = ["DocumentEncoder", "ModelConfig", "RankModel", "RankModelConfig", "RelationClassifier", "pool_entities"]
