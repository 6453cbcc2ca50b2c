"""Triton kernels for :func:`dsdocre.kernels.pair_bilinear` (``impl="triton"``).

The split (see the algebra in :mod:`dsdocre.kernels.bilinear`):

* entity-level GEMMs -- ``U = right2d @ W.view(o*d1, d2)^T`` forward, ``grad_W = gU^T @ right2d`` and
  ``grad_right = gU @ W.view(o*d1, d2)`` backward -- are dense, large and copy-free, so they go to
  cuBLAS through ``torch.matmul``;
* everything indexed by pairs is a Triton kernel, masked and ragged (any P, padding pairs, d and o
  not multiples of the block sizes):

  - ``_pair_fwd_kernel``: program = (document, block of pairs, block of o); gathers the rows
    ``left[b, h_p]`` and ``U[b, t_p, k-block]`` and reduces over d1 in fp32 (fp64 for fp64);
  - ``_pair_bwd_left_kernel``: program = (entity segment b*N+h, block of d1); loops over the pairs
    whose head is h and accumulates ``sum_k G[p, k] U[b, t_p, k, :]`` -> ``grad_left[b, h]``;
  - ``_pair_bwd_u_kernel``: program = (entity segment b*M+t, block of o, block of d1); loops over the
    pairs whose tail is t and accumulates ``G[p, k-block]^T @ left[b, h_p, d-block]`` with
    ``tl.dot`` -> ``gU[b, t]``.

  The backward kernels are *segmented*: pairs are sorted (stable argsort) by head, resp. tail,
  with padding pairs sent past the last segment, so every output row is written by exactly one
  program -- no atomics, deterministic gradients, and rows without pairs get exact zeros.

All of it is wrapped in a ``torch.autograd.Function``; the entity GEMMs and the input/gradient
bookkeeping (shared input, saved tensors, gradient order) are the helpers of
:mod:`dsdocre.kernels._autograd`, shared with the factored path (this module does not import
:mod:`dsdocre.kernels.bilinear`). ``impl="auto"`` does not pick this path (no GPU benchmark yet; see
``AUTO_IMPL_BY_DEVICE`` in :mod:`dsdocre.kernels.bilinear`): it runs when asked for explicitly. On
CUDA tensors the kernels are compiled with ``triton.jit``; on CPU tensors they run under the Triton
interpreter (what ``TRITON_INTERPRET=1`` does), with small blocks -- that is how the tests check
them on a machine without a GPU. The kernel functions are kept undecorated and wrapped per mode on
first use, and use only Triton *builtins* (``tl.full``, ``tl.reduce(..., tl.standard._sum_combine)``
rather than the jit-defined ``tl.zeros`` / ``tl.sum``), so the interpreter works whether or not
``TRITON_INTERPRET=1`` was set before ``import triton``. Interpreter limitation: its ``tl.dot``
multiplies 16-bit floats as raw integers (numpy has no bfloat16), so on CPU only fp32 takes the
``tl.dot`` branch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from ._autograd import (
    _entity_weight_grads,
    _entity_weights,
    _forward_inputs,
    _input_grads,
    _pair_dims,
    _saved_inputs,
)

__all__ = ["triton_pair_bilinear", "TritonPairBilinear", "block_sizes"]


# ----------------------------------------------------------------------------------------------
# kernels (plain functions: compiled with triton.jit or wrapped by the interpreter on demand)
# ----------------------------------------------------------------------------------------------


def _pair_fwd_kernel(L, U, H, T, MASK, BIAS, OUT, P, N, M, O, D,
                     HAS_BIAS: tl.constexpr, ACC_DTYPE: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr):
    # L [B, N, D], U [B*M, O, D], H/T/MASK [B, P], BIAS [O], OUT [B, P, O]; all contiguous
    b = tl.program_id(0).to(tl.int64)  # 64-bit offsets: B*P*O or B*M*O*D may pass 2**31
    pid_p = tl.program_id(1)
    pid_k = tl.program_id(2)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_k = pid_k * BLOCK_O + tl.arange(0, BLOCK_O)
    p_in = offs_p < P
    k_in = offs_k < O
    valid = (tl.load(MASK + b * P + offs_p, mask=p_in, other=0) != 0) & p_in
    h = tl.load(H + b * P + offs_p, mask=valid, other=0)
    t = tl.load(T + b * P + offs_p, mask=valid, other=0)
    l_row = (b * N + h) * D
    u_row = (b * M + t) * (O * D)
    acc = tl.full((BLOCK_P, BLOCK_O), 0.0, ACC_DTYPE)
    uk_mask = valid[:, None, None] & k_in[None, :, None]
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        d_in = offs_d < D
        u = tl.load(U + u_row[:, None, None] + offs_k[None, :, None] * D + offs_d[None, None, :],
                    mask=uk_mask & d_in[None, None, :], other=0.0)
        lv = tl.load(L + l_row[:, None] + offs_d[None, :], mask=valid[:, None] & d_in[None, :], other=0.0)
        acc += tl.reduce(u.to(acc.dtype) * lv.to(acc.dtype)[:, None, :], 2, tl.standard._sum_combine)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_k, mask=k_in, other=0.0)
        acc += bias.to(acc.dtype)[None, :]
    acc = tl.where(valid[:, None], acc, 0.0)
    tl.store(OUT + (b * P + offs_p[:, None]) * O + offs_k[None, :], acc.to(OUT.dtype.element_ty),
             mask=p_in[:, None] & k_in[None, :])


def _pair_bwd_left_kernel(G, U, T, PERM, SEG, GL, P, N, M, O, D,
                          ACC_DTYPE: tl.constexpr,
                          BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr):
    # one program per (entity b*N+h, block of D): GL[b, h, :] = sum_{p: h_p = h} sum_k G[p, k] U[t_p, k, :]
    s = tl.program_id(0).to(tl.int64)
    pid_d = tl.program_id(1)
    b = s // N
    start = tl.load(SEG + s)
    end = tl.load(SEG + s + 1)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    d_in = offs_d < D
    acc = tl.full((BLOCK_P, BLOCK_D), 0.0, ACC_DTYPE)
    for p0 in range(start, end, BLOCK_P):
        offs = p0 + tl.arange(0, BLOCK_P)
        p_in = offs < end
        q = tl.load(PERM + offs, mask=p_in, other=0)  # flat pair id b*P + p
        t = tl.load(T + q, mask=p_in, other=0)
        u_row = (b * M + t) * (O * D)
        for k0 in range(0, O, BLOCK_O):
            offs_k = k0 + tl.arange(0, BLOCK_O)
            k_in = offs_k < O
            g = tl.load(G + q[:, None] * O + offs_k[None, :], mask=p_in[:, None] & k_in[None, :], other=0.0)
            u = tl.load(U + u_row[:, None, None] + offs_k[None, :, None] * D + offs_d[None, None, :],
                        mask=p_in[:, None, None] & k_in[None, :, None] & d_in[None, None, :], other=0.0)
            acc += tl.reduce(g.to(acc.dtype)[:, :, None] * u.to(acc.dtype), 1, tl.standard._sum_combine)
    res = tl.reduce(acc, 0, tl.standard._sum_combine)
    tl.store(GL + s * D + offs_d, res.to(GL.dtype.element_ty), mask=d_in)


def _pair_bwd_u_kernel(G, L, H, PERM, SEG, GU, P, N, M, O, D,
                       USE_DOT: tl.constexpr, DOT_PREC: tl.constexpr, ACC_DTYPE: tl.constexpr,
                       BLOCK_P: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_D: tl.constexpr):
    # one program per (entity b*M+t, block of O, block of D):
    #   GU[b*M+t, k, d] = sum_{p: t_p = t} G[p, k] L[b, h_p, d]
    s = tl.program_id(0).to(tl.int64)
    pid_k = tl.program_id(1)
    pid_d = tl.program_id(2)
    b = s // M
    start = tl.load(SEG + s)
    end = tl.load(SEG + s + 1)
    offs_k = pid_k * BLOCK_O + tl.arange(0, BLOCK_O)
    offs_d = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    k_in = offs_k < O
    d_in = offs_d < D
    acc = tl.full((BLOCK_O, BLOCK_D), 0.0, ACC_DTYPE)
    for p0 in range(start, end, BLOCK_P):
        offs = p0 + tl.arange(0, BLOCK_P)
        p_in = offs < end
        q = tl.load(PERM + offs, mask=p_in, other=0)
        h = tl.load(H + q, mask=p_in, other=0)
        g = tl.load(G + q[:, None] * O + offs_k[None, :], mask=p_in[:, None] & k_in[None, :], other=0.0)
        lv = tl.load(L + (b * N + h)[:, None] * D + offs_d[None, :], mask=p_in[:, None] & d_in[None, :],
                     other=0.0)
        if USE_DOT:
            acc = tl.dot(tl.trans(g), lv.to(g.dtype), acc, input_precision=DOT_PREC)
        else:
            prod = g.to(acc.dtype)[:, :, None] * lv.to(acc.dtype)[:, None, :]
            acc += tl.reduce(prod, 0, tl.standard._sum_combine)
    tl.store(GU + s * (O * D) + offs_k[:, None] * D + offs_d[None, :], acc.to(GU.dtype.element_ty),
             mask=k_in[:, None] & d_in[None, :])


_RAW = {
    "fwd": _pair_fwd_kernel,
    "bwd_left": _pair_bwd_left_kernel,
    "bwd_u": _pair_bwd_u_kernel,
}
_BUILT: dict = {}


def _kernel(name: str, interpret: bool):
    key = (name, interpret)
    if key not in _BUILT:
        fn = _RAW[name]
        if interpret:
            from triton.runtime.interpreter import InterpretedFunction

            _BUILT[key] = InterpretedFunction(fn)
        else:
            _BUILT[key] = triton.jit(fn)
    return _BUILT[key]


def block_sizes(device: torch.device, dtype: torch.dtype) -> dict:
    """Block sizes per kernel; small ones for the interpreter (CPU), tuned-by-hand ones for CUDA."""
    if device.type != "cuda":
        return {"fwd": (16, 16, 16), "bwd_left": (16, 16, 16), "bwd_u": (16, 16, 16)}
    # (BLOCK_P, BLOCK_O, BLOCK_D); the first two kernels hold a [P, O, D] tile in registers (8K
    # elements), the third is a tl.dot. Chosen by hand, not autotuned (no GPU in the session).
    return {"fwd": (16, 32, 16), "bwd_left": (8, 32, 32), "bwd_u": (32, 64, 64)}


# ----------------------------------------------------------------------------------------------
# host side
# ----------------------------------------------------------------------------------------------


def _segments(index: Tensor, mask: Tensor, rows_per_doc: int):
    """Sort the flat pairs by (document, index); return (perm, seg) with seg [B*rows + 2] offsets."""
    B, P = index.shape
    total = B * rows_per_doc
    doc = torch.arange(B, device=index.device).unsqueeze(1)
    key = torch.where(mask, doc * rows_per_doc + index, torch.full_like(index, total)).reshape(-1)
    perm = torch.argsort(key, stable=True)
    counts = torch.zeros(total + 1, dtype=torch.long, device=index.device)
    counts.scatter_add_(0, key, torch.ones_like(key))
    seg = torch.zeros(total + 2, dtype=torch.long, device=index.device)
    seg[1:] = torch.cumsum(counts, 0)
    return perm.contiguous(), seg


def _acc_dtype(dtype: torch.dtype):
    # accumulate in fp32 (fp64 for fp64 inputs)
    return tl.float64 if dtype == torch.float64 else tl.float32


def _use_dot(dtype: torch.dtype, device: torch.device) -> bool:
    # tl.dot needs >= 16x16 tiles and fp16/bf16/fp32 operands; fp64 uses FMA sums. The interpreter
    # (numpy) multiplies 16-bit floats wrongly in tl.dot, so there only fp32 takes the dot branch
    # (which keeps both branches covered by the CPU tests).
    if device.type != "cuda":
        return dtype == torch.float32
    return dtype in (torch.float16, torch.bfloat16, torch.float32)


def _dot_precision(dtype: torch.dtype) -> str:
    # fp32 follows torch's matmul setting (TF32 only when torch allows it); others are exact inputs
    if dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32:
        return "tf32"
    return "ieee"


class TritonPairBilinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, left, right, weight, bias, heads, tails, mask):
        right, (B, N, M, d1, d2, o, P) = _forward_inputs(ctx, left, right, weight, heads)
        interpret = left.device.type != "cuda"
        left_c = left.contiguous()
        heads_c = heads.contiguous()
        tails_c = tails.contiguous()
        mask_c = mask.to(torch.int8).contiguous()
        U = _entity_weights(right.reshape(B * M, d2), weight).contiguous()  # [B*M, o*d1]
        out = torch.empty(B, P, o, device=left.device, dtype=left.dtype)
        if B * P > 0 and o > 0:
            bp, bo, bd = block_sizes(left.device, left.dtype)["fwd"]
            grid = (B, triton.cdiv(P, bp), triton.cdiv(o, bo))
            _kernel("fwd", interpret)[grid](
                left_c, U, heads_c, tails_c, mask_c, bias if bias is not None else U, out,
                P, N, M, o, d1,
                HAS_BIAS=bias is not None, ACC_DTYPE=_acc_dtype(left.dtype),
                BLOCK_P=bp, BLOCK_O=bo, BLOCK_D=bd,
            )
        ctx.has_bias = bias is not None
        ctx.save_for_backward(left_c, None if ctx.shared else right, weight, U, heads_c, tails_c, mask)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (left, right, weight, U, heads, tails, mask), (need_left, need_right, need_w, need_b) = _saved_inputs(ctx)
        B, N, M, d1, d2, o, P = _pair_dims(left, right, weight, heads)
        device = left.device
        interpret = device.type != "cuda"
        G = grad_out.contiguous()
        grad_left = grad_right = grad_w = grad_b = None
        if need_b and ctx.has_bias:
            grad_b = (G * mask.unsqueeze(-1).to(G.dtype)).sum((0, 1))
        acc_dtype = _acc_dtype(left.dtype)
        sizes = block_sizes(device, left.dtype)
        if need_left:
            grad_left = torch.empty(B, N, d1, device=device, dtype=left.dtype)
            if B * N > 0:
                perm, seg = _segments(heads, mask, N)
                bp, bo, bd = sizes["bwd_left"]
                _kernel("bwd_left", interpret)[(B * N, triton.cdiv(d1, bd))](
                    G, U, tails.reshape(-1), perm, seg, grad_left, P, N, M, o, d1,
                    ACC_DTYPE=acc_dtype, BLOCK_P=bp, BLOCK_O=bo, BLOCK_D=bd,
                )
        if need_right or need_w:
            gU = torch.empty(B * M, o, d1, device=device, dtype=U.dtype)
            if B * M > 0:
                perm, seg = _segments(tails, mask, M)
                bp, bo, bd = sizes["bwd_u"]
                _kernel("bwd_u", interpret)[(B * M, triton.cdiv(o, bo), triton.cdiv(d1, bd))](
                    G, left, heads.reshape(-1), perm, seg, gU, P, N, M, o, d1,
                    USE_DOT=_use_dot(left.dtype, device), DOT_PREC=_dot_precision(left.dtype), ACC_DTYPE=acc_dtype,
                    BLOCK_P=bp, BLOCK_O=bo, BLOCK_D=bd,
                )
            grad_w, grad_right = _entity_weight_grads(gU, right, weight, need_w, need_right)
        return _input_grads(ctx, grad_left, grad_right, grad_w, grad_b)


def triton_pair_bilinear(left, right, weight, bias, heads, tails, mask) -> Tensor:
    """Core op (already validated, indices clamped, mask bool) -- see ``pair_bilinear``."""
    return TritonPairBilinear.apply(left, right, weight, bias, heads, tails, mask)
