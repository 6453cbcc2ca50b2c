"""The pre-denoising rank model (Sec. 3.3): how likely an entity pair is to hold a relation.

Same encoder and pair representation as the classifier, with one score instead of 97 logits:
``s(i, k) = w · Bilinear(h_i, t_k) + b`` where ``h``/``t`` are the (projected) entity states. It is
trained with Relation Detection (one positive pair among NA pairs of one document, softmax
cross-entropy) and then scores every ordered pair of every document.

A bilinear layer followed by a linear score with nothing between is one bilinear form:
``s(i, k) = h_iᵀ M t_k + c`` with ``M = Σ_o w_o W_o`` and ``c = w · b_bilinear + b``. Scoring all
pairs of a document is therefore ``H M Tᵀ + c``, one small matrix product after the encoder
(:meth:`RankModel.score_all_pairs`). Training on sampled candidates goes through the pair op of
:mod:`dsdocre.kernels` (:meth:`RankModel.pair_scores`); training against every NA pair of a
document (``negatives_per_positive: 0``) goes through the collapsed form with gradients
(``forward(batch, all_pairs=True)``). All are the same function.

With ``relation_head`` the same pair representation also feeds 97 relation logits (NA + 96
relations), trained by an auxiliary multi-label loss on every pair (``denoise train``,
``training.relation_loss_weight``): more supervision from the same annotations. They are outputs
1..97 of the same linear layer; the rank score stays output 0, one bilinear form.
"""

from __future__ import annotations

import torch

from dsdocre.model.classifier import ModelConfig, RelationClassifier
from dsdocre.relations import NUM_CLASSES


class RankModelConfig(ModelConfig):
    """The rank model's ``model:`` section: the classifier's, plus the optional relation head."""

    relation_head: bool = False  # 97 relation logits beside the score, for an auxiliary loss (see module doc)


class RankModel(RelationClassifier):
    """Scores entity pairs; saved and loaded like the classifier (``save_pretrained`` layout)."""

    TASK = "pair_ranking"
    CONFIG = RankModelConfig

    def __init__(self, config: ModelConfig, tokenizer, encoder_dir: str | None = None, added_tokens: int = 0):
        # The score straight after the bilinear (what makes the collapsed form exact), as output 0.
        config = RankModelConfig.model_validate(config.model_dump())
        outputs = 1 + (NUM_CLASSES if config.relation_head else 0)
        config = config.model_copy(update={"num_classes": outputs, "pair_activation": "none"})
        super().__init__(config, tokenizer, encoder_dir=encoder_dir, added_tokens=added_tokens)

    def forward(self, batch: dict, all_pairs: bool = False) -> torch.Tensor:
        """Logits [B, P, 1] of the pairs ``batch["heads"], batch["tails"]`` (the score; [B, P, 98] with
        the relation head: the score, then the relation logits); with ``all_pairs``,
        scores [B, N, N] of every ordered pair through the collapsed form (differentiable)."""
        if all_pairs:
            return self._all_pair_scores(batch)
        return super().forward(batch)

    def external_parameters(self) -> list:
        # the collapsed form reads the bilinear's weight outside its own forward (ZeRO-3 must gather it)
        extra = [p for p in (self.pair.weight, self.pair.bias) if p is not None]
        return super().external_parameters() + extra

    def pair_scores(self, batch: dict) -> torch.Tensor:
        """Scores [B, P] of the pairs ``batch["heads"], batch["tails"]`` (training path)."""
        return self(batch)[..., 0]

    @staticmethod
    def relation_logits(outputs: torch.Tensor) -> torch.Tensor:
        """The relation head's logits [B, P, 97] out of :meth:`forward`'s pair outputs."""
        return outputs[..., 1:]

    def collapsed_form(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(M [d, d], c [])`` with ``s(i, k) = h_iᵀ M t_k + c``."""
        w = self.classifier.weight[0]  # [o]
        M = torch.einsum("o,oij->ij", w, self.pair.weight)
        c = self.classifier.bias[0] + (w @ self.pair.bias if self.pair.bias is not None else 0.0)
        return M, c

    def projected_entities(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        entities = self.dropout(self.entity_states(batch))
        if self.config.entity_projection:
            return torch.tanh(self.head_proj(entities)), torch.tanh(self.tail_proj(entities))
        return entities, entities

    @torch.no_grad()
    def score_all_pairs(self, batch: dict) -> torch.Tensor:
        """Scores [B, N, N] of every ordered pair (i, k) of every document: one encoder pass per
        document, then ``H M Tᵀ + c``. Diagonal and padding entries are meaningless; callers mask them."""
        return self._all_pair_scores(batch)

    def _all_pair_scores(self, batch: dict) -> torch.Tensor:
        left, right = self.projected_entities(batch)
        M, c = self.collapsed_form()
        return (left @ M.to(left.dtype)) @ right.transpose(1, 2) + c.to(left.dtype)


def keep_count(spec: str | int, num_entities: int) -> int:
    """How many pairs to keep for a document of ``num_entities`` entities: an integer (``20``, for
    pre-training), or a multiple of the entity count (``"2n"``, for fine-tuning and evaluation)."""
    total = num_entities * (num_entities - 1)
    text = str(spec).strip().lower()
    if text.endswith("n"):
        return min(total, int(round(float(text[:-1] or 1) * num_entities)))
    return min(total, int(text))


def check_keep_spec(spec: str | int) -> str:
    """``spec`` normalised (``"20"``, ``"2n"``, ``"1.5n"``); a ValueError naming it when it is neither."""
    text = str(spec).strip().lower()
    try:
        value = float(text[:-1] or 1) if text.endswith("n") else int(text)
    except ValueError:
        value = -1
    if value <= 0:
        raise ValueError(f"keep {spec!r}: give a number of pairs (20) or a multiple of the entity count (2n)")
    return text


def top_pairs(scores, spec: str | int) -> list[tuple[int, int, float]]:
    """The kept pairs of one document: the ``keep_count`` highest-scoring ordered pairs (i != k) of
    ``scores`` [N, N], best first; ties broken by (i, k), so the choice is deterministic."""
    import numpy as np

    scores = np.asarray(scores, dtype=np.float64)
    n = scores.shape[0]
    heads, tails = np.nonzero(~np.eye(n, dtype=bool))
    values = scores[heads, tails]
    order = np.lexsort((tails, heads, -values))[: keep_count(spec, n)]
    return [(int(heads[i]), int(tails[i]), float(values[i])) for i in order]


@torch.no_grad()
def score_documents(model: RankModel, encodings: list, batch_size: int = 4, device="cpu") -> list:
    """Scores [N, N] (numpy) of every ordered entity pair of each :class:`EncodedDocument`, batched
    by length: one encoder pass per document, then one matrix product."""
    import numpy as np

    from dsdocre.data.examples import PairExample, collate, epoch_batches
    from dsdocre.model.device import inference_precision
    from dsdocre.relations import NUM_CLASSES

    if not encodings:
        return []
    was_training = model.training
    model.eval()
    empty = np.zeros(0, dtype=np.int64)
    examples = [PairExample(None, enc, empty, empty, np.zeros((0, NUM_CLASSES), np.float32)) for enc in encodings]
    out: list = [None] * len(examples)
    for idx in epoch_batches([len(e.input_ids) for e in encodings], batch_size, 0, 0, shuffle=False):
        batch = collate([examples[i] for i in idx], model.tokenizer.pad_id, device)
        with inference_precision(device):
            scores = model.score_all_pairs(batch)
        scores = scores.float().cpu().numpy()
        for row, i in enumerate(idx):
            n = encodings[i].num_entities
            out[i] = scores[row, :n, :n]
    model.train(was_training)
    return out
