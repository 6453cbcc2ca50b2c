"""The pre-training model (Sec. 3.2): three tasks over the shared encoder, on pairs of documents
(d_A, d_B) that share a relational fact. Every pair head runs on :mod:`dsdocre.kernels`.

* Mention-Entity Matching (MM), one bilinear ``Bilinear_M``:
  - intra: a blanked mention of a document (its start-marker state is the query) against the
    entities of the same document; the query mention is left out of its entity's pooling (so the
    data draws queries from entities with two or more mentions);
  - inter: an entity of d_B that is also in d_A (the query: its entity state) against d_A's entities.
* Relation Detection (RD): a group of candidate pairs, the labelled (kept) pair first among
  ``k_n`` NA pairs; ``s = w_n · r + b_n`` with ``r = Bilinear(e_h, e_t)`` (size 256); intra: all
  candidates of one document; inter: candidates from both documents.
* Relational Fact Alignment (RA): the instance of d_B that holds a shared fact (the query
  ``r_B``) against d_A's instances; ``s = w_s · |r_A - r_B| + b_s`` (the paper's absolute
  difference; its release squares it).

Each task is a softmax cross-entropy over its candidates; the total loss is the sum of the enabled
tasks (:class:`TaskSwitches`, so the paper's Table 2 ablations are configuration). The batch is
built by :func:`dsdocre.data.pretrain_examples.collate_pretrain` from ``PretrainExample`` objects:
entity indices of both documents live in one space per document pair, ``side * N + entity``
(``side`` 0 = d_A, 1 = d_B, ``N`` the batch's largest entity count).
"""

from __future__ import annotations

import torch
from torch import nn

from dsdocre.config import Section
from dsdocre.kernels import PairBilinear
from dsdocre.model.encoder import DocumentEncoder, pool_entities

TASKS = ("mm_intra", "mm_inter", "rd_intra", "rd_inter", "ra")


class TaskSwitches(Section):
    """Which pre-training tasks run (``pretrain.tasks`` in the config): the Table 2 ablations."""

    mm_intra: bool = True
    mm_inter: bool = True
    rd_intra: bool = True
    rd_inter: bool = True
    ra: bool = True

    def enabled(self) -> list[str]:
        return [t for t in TASKS if getattr(self, t)]


class PretrainModel(nn.Module):
    """The encoder with the MM, RD and RA heads; ``forward`` returns each enabled task's loss and
    accuracy, and their sum as ``loss``."""

    def __init__(self, encoder_dir: str, tasks: TaskSwitches, pair_dim: int = 256, window_overlap: int = 128,
                 added_tokens: int = 0, tokenizer_max_length: int | None = None, special_ids=(0, 0, 0),
                 bilinear_impl: str = "auto", encoder_dropout: float | None = None):
        super().__init__()
        self.tasks = tasks
        self.special_ids = special_ids
        self.encoder = DocumentEncoder(encoder_dir, window_overlap, added_tokens, tokenizer_max_length,
                                       dropout=encoder_dropout)
        d = self.encoder.hidden_size
        self.mention_entity = PairBilinear(d, d, 1, impl=bilinear_impl)  # Bilinear_M, one score
        self.pair = PairBilinear(d, d, pair_dim, impl=bilinear_impl)  # r(i, k), shared by RD and RA
        self.detect = nn.Linear(pair_dim, 1)  # s = w_n . r + b_n
        self.align = nn.Linear(pair_dim, 1)  # s = w_s . |r_A - r_B| + b_s

    def encode(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Token states [2B, T, d] and, per document pair, the entities of both [B, 2N, d]."""
        cls_id, sep_id, pad_id = self.special_ids
        states = self.encoder(batch["tokens"], batch["lengths"], cls_id, sep_id, pad_id)
        entities = pool_entities(states, batch["mention_pos"], batch["mention_mask"])  # [2B, N, d]
        B = entities.shape[0] // 2
        return states, torch.cat([entities[:B], entities[B:]], dim=1)

    def relation_reps(self, entities: torch.Tensor, heads: torch.Tensor, tails: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
        """r = Bilinear(e_h, e_t) [B, P, pair_dim] for pair indices into the pair's entity space."""
        return self.pair(entities, heads, tails, pair_mask=mask)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        states, entities = self.encode(batch)  # entities [B, 2N, d]
        B, _, d = entities.shape
        enabled = self.tasks.enabled()
        out: dict[str, torch.Tensor] = {}
        # A task with no instance in this micro-batch still adds its head's logits times zero to the
        # loss: every parameter then gets a gradient (of zero) on every rank, as ZeRO-2's bucketed
        # all-reduce needs (a head without a gradient on one rank only would shift every later bucket:
        # gloo "Received data size doesn't match expected size"). Adding zero changes no gradient.
        idle: list[torch.Tensor] = []

        def record(task: str, logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> None:
            if not mask.any():
                idle.append(logits.float().nan_to_num(0.0, 0.0, 0.0).sum() * 0.0)
                return
            logits, target = logits[mask], target[mask]
            out[f"{task}_loss"] = nn.functional.cross_entropy(logits.float(), target)
            out[f"{task}_accuracy"] = (logits.argmax(-1) == target).float().mean().detach()
            out[f"{task}_candidates"] = torch.tensor(float(logits.shape[-1]))
            # instances, and the accuracy of a uniform guess among each instance's real candidates
            out[f"{task}_count"] = torch.tensor(float(logits.shape[0]))
            out[f"{task}_chance"] = (1.0 / torch.isfinite(logits).sum(-1).float()).mean().detach()

        if "mm_intra" in enabled or "mm_inter" in enabled:
            n = int(batch["num_entities"])
            if "mm_intra" in enabled:
                q = batch["mm_intra"]  # [B, Q, 3]: side, query token position, target in the pair space
                side, pos, target = q.unbind(-1)
                doc = side * B + torch.arange(B, device=q.device)[:, None]
                queries = states[doc, pos]  # [B, Q, d]: the blanked mentions' start-marker states
                # candidates: the entities of the query's own document
                cand = side[..., None] * n + torch.arange(n, device=q.device)  # [B, Q, n]
                logits = self._match(queries, entities, cand, batch["entity_counts"][doc])
                record("mm_intra", logits, target - side * n, batch["mm_intra_mask"])
            if "mm_inter" in enabled:
                q = batch["mm_inter"]  # [B, Q, 2]: entity of d_B (pair space), the same entity in d_A
                queries = entities.gather(1, q[..., 0:1].expand(-1, -1, d))
                cand = torch.arange(n, device=q.device).expand(B, q.shape[1], n)  # d_A's entities
                counts = batch["entity_counts"][:B, None].expand(B, q.shape[1])
                record("mm_inter", self._match(queries, entities, cand, counts), q[..., 1], batch["mm_inter_mask"])
        for task in ("rd_intra", "rd_inter"):
            if task in enabled:
                groups = batch[task]  # [B, G, 2C]: (head, tail) pairs, the positive first
                G, C = groups.shape[1], groups.shape[2] // 2
                heads, tails = groups[..., 0::2].reshape(B, G * C), groups[..., 1::2].reshape(B, G * C)
                reps = self.relation_reps(entities, heads, tails, batch[task + "_mask"].repeat_interleave(C, 1))
                scores = self.detect(reps)[..., 0].view(B, G, C)
                record(task, scores, torch.zeros(B, G, dtype=torch.long, device=scores.device), batch[task + "_mask"])
        if "ra" in enabled:
            rows = batch["ra"]  # [B, R, 4 + 2C]: query head, query tail, target, candidate count, candidates
            R, C = rows.shape[1], (rows.shape[2] - 4) // 2
            mask = batch["ra_mask"]
            query = self.relation_reps(entities, rows[..., 0], rows[..., 1], mask)  # [B, R, p]
            real = torch.arange(C, device=rows.device) < rows[..., 3:4]  # [B, R, C]
            cands = self.relation_reps(entities, rows[..., 4::2].reshape(B, R * C), rows[..., 5::2].reshape(B, R * C),
                                       (real & mask[..., None]).reshape(B, R * C)).view(B, R, C, -1)
            scores = self.align((cands - query[:, :, None]).abs())[..., 0].masked_fill(~real, float("-inf"))
            record("ra", scores, rows[..., 2], mask)

        losses = [out[f"{t}_loss"] for t in enabled if f"{t}_loss" in out]
        out["loss"] = torch.stack(losses).sum() if losses else entities.sum() * 0.0
        for zero in idle:
            out["loss"] = out["loss"] + zero
        return out

    def _match(self, queries: torch.Tensor, entities: torch.Tensor, cand: torch.Tensor,
               counts: torch.Tensor) -> torch.Tensor:
        """Bilinear_M(entity, query) for every query [B, Q, d] and its candidates [B, Q, K] (indices
        into ``entities`` [B, 2N, d]; the first ``counts`` [B, Q] of the K are the document's real
        entities, the rest padding): scores [B, Q, K] through the kernels' pair op."""
        B, Q, K = cand.shape
        heads = cand.reshape(B, Q * K)
        tails = torch.arange(Q, device=cand.device).repeat_interleave(K).expand(B, -1)
        scores = self.mention_entity(entities, heads, tails, right=queries)[..., 0].view(B, Q, K)
        padding = torch.arange(K, device=cand.device) >= counts[..., None]
        return scores.masked_fill(padding, float("-inf"))
