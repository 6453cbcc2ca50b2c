"""The document encoder: any BERT-family ``AutoModel`` over documents of any length, and entity pooling.

- :class:`DocumentEncoder`: a document longer than the encoder can take is cut into overlapping
  windows, each encoded with its own ``[CLS]``/``[SEP]``; the states of tokens seen by several
  windows are averaged.
- :func:`pool_entities`: mention = state of its start marker; entity = max-pool of its mentions.
"""

from __future__ import annotations

import torch
from torch import nn


def max_input_tokens(model, tokenizer_max_length: int | None = None) -> int:
    """The longest input (special tokens included) ``model`` can take.

    BERT numbers positions 0..max_position_embeddings-1. RoBERTa-style embeddings (RoBERTa,
    XLM-R, CamemBERT, ...) number them from ``padding_idx + 1``, so 514 positions hold 512 tokens:
    ``max_position_embeddings - 2`` tokens of content there would read past the table. A
    tokenizer's own ``model_max_length``, when it is a real limit, caps it too.
    """
    limit = int(model.config.max_position_embeddings)
    embeddings = getattr(model, "embeddings", None)
    padding_idx = getattr(embeddings, "padding_idx", None)  # set only by offset-position embeddings
    if isinstance(padding_idx, int):
        limit -= padding_idx + 1
    if tokenizer_max_length and tokenizer_max_length < 1_000_000:  # transformers' "no limit" is ~1e30
        limit = min(limit, int(tokenizer_max_length))
    return limit


class DocumentEncoder(nn.Module):
    def __init__(self, encoder_dir: str, window_overlap: int = 128, added_tokens: int = 0,
                 tokenizer_max_length: int | None = None, dropout: float | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        overrides = {}
        if dropout is not None:  # the encoder's own dropout (hidden and attention), when the config sets it
            config = AutoConfig.from_pretrained(encoder_dir)
            overrides = {k: dropout for k in ("hidden_dropout_prob", "attention_probs_dropout_prob")
                         if hasattr(config, k)}
        # float32 whatever the saved config says: the heads are built in float32, and DeepSpeed
        # casts the whole model to bf16/fp16 itself when the run asks for it
        self.model = AutoModel.from_pretrained(encoder_dir, dtype=torch.float32, **overrides)
        if added_tokens:
            self.model.resize_token_embeddings(self.model.config.vocab_size + added_tokens)
        self.max_len = max_input_tokens(self.model, tokenizer_max_length)
        if self.max_len <= window_overlap + 2:
            raise ValueError(f"{encoder_dir}: windows of {self.max_len} tokens cannot overlap by {window_overlap}")
        self.hidden_size = int(self.model.config.hidden_size)
        self.window_overlap = window_overlap

    def windows(self, lengths: list[int]) -> list[tuple[int, int, int]]:
        """(document, start, length) of every window; consecutive windows overlap."""
        span = self.max_len - 2  # room for [CLS] and [SEP]
        stride = span - self.window_overlap
        out = []
        for b, n in enumerate(lengths):
            if n <= span:
                out.append((b, 0, n))
                continue
            starts = list(range(0, n - span, stride)) + [n - span]
            out.extend((b, s, span) for s in starts)
        return out

    def forward(self, tokens: torch.Tensor, lengths: torch.Tensor, cls_id: int, sep_id: int,
                pad_id: int = 0) -> torch.Tensor:
        """tokens [B, T] (no special tokens, padded) -> states [B, T, d]."""
        B, T = tokens.shape
        windows = self.windows(lengths.tolist())
        width = max(n for _, _, n in windows) + 2
        ids = torch.full((len(windows), width), pad_id, dtype=torch.long, device=tokens.device)
        mask = torch.zeros((len(windows), width), dtype=torch.long, device=tokens.device)
        dst_doc, dst_pos, src_win, src_pos = [], [], [], []
        for w, (b, s, n) in enumerate(windows):
            ids[w, 0] = cls_id
            ids[w, 1:n + 1] = tokens[b, s:s + n]
            ids[w, n + 1] = sep_id
            mask[w, :n + 2] = 1
            dst_doc.append(torch.full((n,), b))
            dst_pos.append(torch.arange(s, s + n))
            src_win.append(torch.full((n,), w))
            src_pos.append(torch.arange(1, n + 1))
        states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
        if len(windows) == B:  # no long document in the batch: one window each, a plain slice
            return states[:, 1:T + 1]
        dst = (torch.cat(dst_doc).to(tokens.device), torch.cat(dst_pos).to(tokens.device))
        src = states[torch.cat(src_win).to(tokens.device), torch.cat(src_pos).to(tokens.device)]
        merged = states.new_zeros((B, T, states.shape[-1])).index_put(dst, src, accumulate=True)
        counts = states.new_zeros((B, T, 1)).index_put(dst, states.new_ones((src.shape[0], 1)), accumulate=True)
        return merged / counts.clamp(min=1)


def pool_entities(states: torch.Tensor, mention_pos: torch.Tensor, mention_mask: torch.Tensor) -> torch.Tensor:
    """states [B,T,d], mention_pos/mask [B,N,M] -> entities [B,N,d] (max-pool; padding entities = 0)."""
    B, N, M = mention_pos.shape
    gathered = states.gather(1, mention_pos.reshape(B, N * M, 1).expand(-1, -1, states.shape[-1]))
    gathered = gathered.reshape(B, N, M, -1).masked_fill(~mention_mask.unsqueeze(-1), float("-inf"))
    entities = gathered.max(dim=2).values
    return entities.masked_fill(~mention_mask.any(-1, keepdim=True), 0.0)
