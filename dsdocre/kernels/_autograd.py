"""Autograd helpers shared by the factored (:mod:`dsdocre.kernels.bilinear`) and Triton
(:mod:`dsdocre.kernels.triton_bilinear`) implementations of the pair-bilinear op.

Both ``torch.autograd.Function`` s have the same signature ``(left, right, weight, bias, heads,
tails, mask)`` and the same entity-level work (see the algebra in :mod:`dsdocre.kernels.bilinear`):
the entity GEMM ``U = right2d @ W.view(o*d1, d2)^T`` forward and its two gradient GEMMs backward,
plus the bookkeeping of the inputs -- ``right=None`` meaning the tails index into ``left`` (one shared
input whose two gradients add up), the saved tensors, and the gradients in ``forward``'s argument
order. They differ only in the pair part. This module holds what they share and imports nothing
else from :mod:`dsdocre.kernels`, so both of them import it and neither imports the other.
"""

from __future__ import annotations

from typing import Optional

from torch import Tensor

__all__ = [
    "_entity_weight_grads",
    "_entity_weights",
    "_forward_inputs",
    "_input_grads",
    "_pair_dims",
    "_saved_inputs",
]


def _entity_weights(right2d: Tensor, weight: Tensor) -> Tensor:
    """U = right2d @ W.view(o*d1, d2)^T -> [B*M, o*d1] (no copy of W when it is contiguous)."""
    o, d1, d2 = weight.shape
    return right2d @ weight.reshape(o * d1, d2).t()


def _entity_weight_grads(gU: Tensor, right: Tensor, weight: Tensor, need_w: bool, need_right: bool):
    """Backward of :func:`_entity_weights` from gU [B*M, o, d1] (any view of it):
    (grad_W = gU^T @ right2d, grad_right = gU @ W.view(o*d1, d2)), None where not needed."""
    o, d1, d2 = weight.shape
    B, M = right.shape[0], right.shape[1]
    gU2 = gU.reshape(B * M, o * d1)
    grad_w = (gU2.t() @ right.reshape(B * M, d2)).view(o, d1, d2) if need_w else None
    grad_right = (gU2 @ weight.reshape(o * d1, d2)).view(B, M, d2) if need_right else None
    return grad_w, grad_right


def _pair_dims(left: Tensor, right: Tensor, weight: Tensor, heads: Tensor) -> tuple[int, ...]:
    """(B, N, M, d1, d2, o, P) of one call."""
    B, N, d1 = left.shape
    return B, N, right.shape[1], d1, right.shape[2], weight.shape[0], heads.shape[1]


def _forward_inputs(ctx, left: Tensor, right: Optional[Tensor], weight: Tensor, heads: Tensor):
    """``right=None``: the tails index into ``left`` too (one input, whose gradients add up in
    backward; remembered in ``ctx.shared``). Returns (right, dims)."""
    ctx.shared = right is None
    right = left if right is None else right
    return right, _pair_dims(left, right, weight, heads)


def _saved_inputs(ctx):
    """The saved (left, right, weight, U, heads, tails, mask) and which of left/right/W/bias need a
    gradient, with ``right`` resolved to ``left`` when the tails index into ``left`` (ctx.shared)."""
    left, right, weight, U, heads, tails, mask = ctx.saved_tensors
    need_left, need_right, need_w, need_b = ctx.needs_input_grad[:4]
    if ctx.shared:
        right, need_right = left, need_left
    return (left, right, weight, U, heads, tails, mask), (need_left, need_right, need_w, need_b)


def _input_grads(ctx, grad_left, grad_right, grad_w, grad_b):
    """Gradients in ``forward``'s argument order; with a shared input both sides add up in ``left``."""
    if ctx.shared:
        grad_left = grad_right if grad_left is None else (grad_left if grad_right is None else grad_left + grad_right)
        grad_right = None
    return grad_left, grad_right, grad_w, grad_b, None, None, None
