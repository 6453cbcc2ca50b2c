r"""Bilinear scoring of entity pairs without gathering pair vectors.

Every pair head of dsdocre (rank model, relation detection, relational fact alignment,
mention-entity matching, the fine-tuning classifier) scores pairs with a bilinear form::

    out[b, p, k] = left[b, h_p] . W[k] . right[b, t_p] + bias[k]        W: [o, d1, d2]

optionally followed by a linear map with no non-linearity in between (the "fused classifier")::

    out2[b, p, c] = sum_k Wc[c, k] out[b, p, k] + bc[c]                  Wc: [c, o]

The algebra
-----------
*Gathered* (what ``nn.Bilinear`` on gathered vectors does, the paper's release): gather
``left[h_p]`` and ``right[t_p]`` for every pair ([B, P, d] each), then contract with W:
``P.o.d1.d2`` multiply-adds forward. Its backward is worse: PyTorch's ``_trilinear`` backward
builds a ``[P, d1, d2]`` outer-product tensor to get ``grad W`` (4 GB at P = 1722, d = 768, fp32).

*Factored through the entities*: the per-pair work ``left[h] . (W_k right[t])`` only depends on the
pair through two entity indices, so precompute, once per entity of each document::

    U[b, m, k, :] = W[k] @ right[b, m]            [B*M, o*d1] = right2d @ W.view(o*d1, d2)^T

one GEMM of ``B.M.o.d1.d2`` multiply-adds (W is reused by every entity of every document, no copy of
W is made), then one dot of length d1 per pair and output:
``out[b, p, k] = left[b, h_p] . U[b, t_p, k]`` (``P.o.d1``). Total ``M.o.d1.d2 + P.o.d1`` per
document instead of ``P.o.d1.d2``: with all ``N(N-1)`` pairs that is ~N times fewer operations
(41x at N = 42), and nothing of size ``[P, d]`` is ever materialized.

Backward, with ``G = dL/d out`` (masked pairs zeroed)::

    gU[b, t, k, :]  = sum_{p: t_p = t} G[b, p, k] left[b, h_p]      (pair scatter, P.o.d1)
    grad_left[b, h] = sum_{p: h_p = h} sum_k G[b, p, k] U[b, t_p, k]  (pair scatter, P.o.d1)
    grad_W          = gU.view(B*M, o*d1)^T @ right2d                  (GEMM, M.o.d1.d2)
    grad_right      = gU.view(B*M, o*d1)   @ W.view(o*d1, d2)         (GEMM, M.o.d1.d2)
    grad_bias       = sum_p G[b, p, :]

so forward + backward is three entity-level GEMMs plus pair work linear in ``P.o.d``.

Implementations (``impl=``)
---------------------------
``"factored"`` (CPU and CUDA; what "auto" runs on both): the pair part is done densely per document
with one batched GEMM ``S[b] = left[b] @ U[b]^T`` ([N, M*o], ``N.M.o.d1``) followed by a gather of
the requested (h, t) cells; the backward scatters G into the same dense layout and uses two batched
GEMMs. The dense pair GEMM costs ``N/d2`` of the U GEMM (<= 11% for N <= 42, d >= 384) and is far
faster per operation than per-pair gathers on a CPU; its [B, N, M*o] buffers are chunked over N when
large. Implemented as a ``torch.autograd.Function`` (plain torch ops, ``torch.compile`` traceable),
U is kept for backward unless it exceeds ``SAVE_BUDGET_BYTES`` (then recomputed).
The entity GEMMs and the input/gradient bookkeeping it shares with the Triton path live in
:mod:`dsdocre.kernels._autograd`, which both implementations import (neither imports the other's
module at load time; this one imports ``triton_bilinear`` lazily, on the first triton call).

``"triton"`` (CUDA, only when asked for: ``impl="triton"``, ``set_default_impl("triton")`` or env
``DSDOCRE_BILINEAR_IMPL=triton``; on CPU tensors it runs under the Triton interpreter, for tests;
never benchmarked on a GPU, see "auto" below): U and the two weight/right GEMMs go to cuBLAS
(``torch.matmul``); the pair parts are Triton kernels (``triton_bilinear.py``): a forward kernel
that gathers rows of ``left`` and ``U`` for a block of pairs and reduces over d1 (masked, ragged),
and two backward kernels that scatter-reduce into ``grad_left`` and ``gU`` per entity *segment*
(pairs sorted by head, resp. tail) -- deterministic, no atomics, and the ``gU`` one is a ``tl.dot``
over pairs. The forward kernel has no ``tl.dot`` (a gather and a reduction per pair). Only valid
(unmasked) pairs are touched, so sparse pair lists cost ``P``, not ``N.M``.

``"gathered"``: ``F.bilinear(left[h], right[t], W, b)`` -- exactly the ``nn.Bilinear`` baseline, for
comparison (and the "auto" pick when there are fewer pairs than entities, where the factored
precompute ``M.o.d1.d2`` exceeds ``P.o.d1.d2``).

``"auto"``: the module-wide override (:func:`set_default_impl`, env ``DSDOCRE_BILINEAR_IMPL``) if
set -- this is the config switch that forces the plain ``nn.Bilinear`` path for comparison --,
else, by FLOP estimate (:func:`estimate_cost`), gathered when ``B.P.o.d1.d2`` is below the factored
``B.M.o.d1.d2 + B.N.M.o.d1`` (roughly: fewer pair slots than entities), otherwise the implementation
measured fastest for the device type in ``AUTO_IMPL_BY_DEVICE`` (measurements:
``benchmarks/results/bilinear.json``; unlisted types: factored). Today that is factored on CPU (as
measured) and on CUDA too: no GPU benchmark has run, and the factored forward is dense matrix
products on tensor cores while the Triton forward is the gather-reduce loop above. Triton becomes the
CUDA default by changing that table entry once a GPU benchmark shows it faster.
:func:`resolve_impl` takes a device or a device type string, so the choice can be checked without
the device.

The precompute goes through ``right`` (``W.view(o*d1, d2)`` contracts d2 with one GEMM and no copy
of W; going through ``left`` first needs ``W`` permuted). When the entity set of ``left`` is
smaller than that of ``right`` the op factors through the left instead (same code on
``right, tails, heads, W^T``, paying one copy of W).

Measured (``python -m benchmarks.bilinear``, 2 CPU cores, fp32, d = 768, o = 256, N = 42, all 1722
pairs): forward+backward 0.40 s factored vs 370 s gathered ``nn.Bilinear`` (~930x). Peak working
memory of forward+backward (beyond the model states W and ``grad W``) 72 MB vs 3.48 GB (49x);
counting the returned ``grad W`` [o, d, d] (604 MB, the same for every implementation) 676 MB vs
4.09 GB (6x, where ~6.8x is the bound). Forward alone, the factored path holds U ([M, o, d1],
33 MB) where the gathered one (``_trilinear`` unrolled over o) holds ~16 MB; at N = 10 its
forward+backward working memory is also larger (16 MB vs 3.6 MB).

Fused classifier
----------------
With ``out_weight`` [c, o] the op returns ``Linear(Bilinear(...))``. When it is cheaper (c small,
e.g. the rank model ``s(i,k) = e_i^T M e_k + c`` with c = 1) the classifier is contracted into the
weight first: ``W' = Wc @ W.view(o, d1*d2)`` ([c, d1, d2], cost ``c.o.d1.d2`` once per call) and
``b' = Wc @ b + bc``, and the op runs with ``o' = c``; otherwise the [B, P, o] features (which the
backward needs anyway for ``grad Wc``) go through one GEMM. Chosen by FLOP estimate.

Masked pairs (``pair_mask`` False) produce exact zeros and receive no gradient; their (h, t) may
hold any value. Valid pairs must index real rows: checked on CPU (``IndexError``), clamped on CUDA
and under ``torch.compile`` (no host synchronisation). Duplicate pairs are allowed (gradients add
up). Supports float32, bfloat16 and float64; under ``torch.autocast`` the inputs are cast to the
autocast dtype and the op runs in it (forward and backward in one dtype).
"""

from __future__ import annotations

import math
import os
from contextlib import contextmanager
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._autograd import (
    _entity_weight_grads,
    _entity_weights,
    _forward_inputs,
    _input_grads,
    _pair_dims,
    _saved_inputs,
)

__all__ = [
    "IMPLS",
    "PairBilinear",
    "all_pairs",
    "default_impl",
    "estimate_cost",
    "get_default_impl",
    "pair_bilinear",
    "resolve_impl",
    "set_default_impl",
]

IMPLS = ("auto", "factored", "triton", "gathered")

#: U ([B*M, o, d1]) is kept for backward if it is at most this many bytes, else recomputed.
SAVE_BUDGET_BYTES = int(os.environ.get("DSDOCRE_BILINEAR_SAVE_BYTES", 1 << 30))
#: elements of the dense per-document score buffer [B, N_chunk, M*o] before chunking over N.
DENSE_CHUNK_ELEMENTS = int(os.environ.get("DSDOCRE_BILINEAR_CHUNK_ELEMENTS", 1 << 25))

_override: Optional[str] = None


def _check_impl(impl: str) -> str:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    return impl


def set_default_impl(impl: Optional[str]) -> None:
    """Force what ``impl="auto"`` resolves to for every call (``None`` or ``"auto"``: choose by shape).

    This is the switch the config uses to force the plain gathered ``nn.Bilinear`` path
    (``set_default_impl("gathered")``). The environment variable ``DSDOCRE_BILINEAR_IMPL`` sets the
    initial value. Calls that pass an explicit ``impl`` other than "auto" are not affected.
    """
    global _override
    if impl is not None:
        _check_impl(impl)
    _override = None if impl in (None, "auto") else impl


def get_default_impl() -> str:
    """The current override for ``impl="auto"`` ("auto" when none is set)."""
    if _override is not None:
        return _override
    env = os.environ.get("DSDOCRE_BILINEAR_IMPL", "").strip()
    return _check_impl(env) if env else "auto"


@contextmanager
def default_impl(impl: Optional[str]):
    """Context manager form of :func:`set_default_impl`."""
    global _override
    saved = _override
    set_default_impl(impl)
    try:
        yield
    finally:
        _override = saved


def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except Exception:  # pragma: no cover - depends on the install
        return False
    return True


def estimate_cost(B: int, N: int, M: int, P: int, d1: int, d2: int, o: int) -> dict:
    """Multiply-adds (forward) of each formulation; P counts all pair slots of the batch (B*P)."""
    factored_right = B * M * o * d1 * d2 + B * N * M * o * d1
    factored_left = B * N * o * d1 * d2 + B * N * M * o * d2 + o * d1 * d2  # + copy of W^T
    return {
        "gathered": P * o * d1 * d2,
        "factored": min(factored_right, factored_left),
        "factored_right": factored_right,
        "factored_left": factored_left,
        "pairs": P * o * d1,
    }


#: What ``impl="auto"`` runs on each device type when the FLOP estimate (:func:`estimate_cost`)
#: favours factoring through the entities (otherwise it runs "gathered"). An entry names only an
#: implementation *measured* faster on that device type by ``python -m benchmarks.bilinear``, whose
#: results are in ``benchmarks/results/bilinear.json``:
#:
#: * "cpu": "factored" -- that file's "cpu" and "grid" sections (2 cores, fp32): 56x-930x faster than
#:   the gathered ``nn.Bilinear`` forward+backward, 1.9x faster than a plain einsum. (On CPU Triton
#:   only runs under its interpreter.)
#: * "cuda": "factored" -- no GPU benchmark has run yet (the file's "gpu" section is null), so nothing
#:   has been measured faster than the factored path, whose forward is dense matrix products (tensor
#:   cores); the Triton forward is a gather-reduce loop without ``tl.dot``. Change this entry to
#:   "triton" only when a GPU run of the benchmark shows Triton faster.
#:
#: Device types not listed here use "factored". A "triton" entry falls back to "factored" when
#: Triton does not import. ``impl="triton"``, ``set_default_impl("triton")`` and
#: ``DSDOCRE_BILINEAR_IMPL=triton`` use Triton whatever this table says.
AUTO_IMPL_BY_DEVICE: dict[str, str] = {
    "cpu": "factored",
    "cuda": "factored",
}


def resolve_impl(impl: str, device: torch.device | str, B: int, N: int, M: int, P: int, d1: int, d2: int,
                 o: int) -> str:
    """What ``impl`` means for these shapes on ``device`` (see the module docstring).

    ``device`` is a ``torch.device`` or a device string (``"cuda"``, ``"cuda:1"``, ``"cpu"``); only its
    type is used, so the choice for a device can be queried without that device being present.
    An explicit ``impl``, else the module-wide override (:func:`set_default_impl`, env
    ``DSDOCRE_BILINEAR_IMPL``), is returned as is. For ``"auto"``: "gathered" when the FLOP estimate
    of the gathered baseline is below the factored one, otherwise ``AUTO_IMPL_BY_DEVICE`` for the
    device type ("factored" when the type is not listed, or when the entry is "triton" and Triton
    does not import).
    """
    _check_impl(impl)
    if impl == "auto":
        impl = get_default_impl()
    if impl != "auto":
        return impl
    cost = estimate_cost(B, N, M, P, d1, d2, o)
    if cost["gathered"] < cost["factored"]:
        return "gathered"
    device_type = device.type if isinstance(device, torch.device) else torch.device(device).type
    chosen = _check_impl(AUTO_IMPL_BY_DEVICE.get(device_type, "factored"))
    if chosen == "auto" or (chosen == "triton" and not _triton_available()):
        return "factored"
    return chosen


# --------------------------------------------------------------------------------------------
# factored torch implementation
# --------------------------------------------------------------------------------------------


def _n_chunks(B: int, N: int, M: int, o: int) -> list[tuple[int, int]]:
    per_row = max(1, B * M * o)
    rows = max(1, min(N, DENSE_CHUNK_ELEMENTS // per_row))
    return [(n0, min(N, n0 + rows)) for n0 in range(0, N, rows)] or [(0, 0)]


class _FactoredPairBilinear(torch.autograd.Function):
    """out = left[h] . U[t] (+ bias) with U = W right, dense per-document pair GEMM + gather."""

    @staticmethod
    def forward(ctx, left, right, weight, bias, heads, tails, mask):
        right, (B, N, M, d1, d2, o, P) = _forward_inputs(ctx, left, right, weight, heads)
        U = _entity_weights(right.reshape(B * M, d2), weight)  # [B*M, o*d1]
        U3 = U.view(B, M * o, d1)
        out = None
        chunks = _n_chunks(B, N, M, o)
        for n0, n1 in chunks:
            # scores of every (head in chunk, tail) cell: [B, rows, M*o] = [B, rows*M, o]
            S = torch.bmm(left[:, n0:n1], U3.transpose(1, 2)).view(B, (n1 - n0) * M, o)
            if len(chunks) == 1:
                idx = heads * M + tails
                out = torch.gather(S, 1, idx.unsqueeze(-1).expand(B, P, o))
            else:
                inside = (heads >= n0) & (heads < n1)
                idx = ((heads - n0).clamp(0, max(n1 - n0 - 1, 0)) * M + tails)
                part = torch.gather(S, 1, idx.unsqueeze(-1).expand(B, P, o)) * inside.unsqueeze(-1).to(S.dtype)
                out = part if out is None else out + part
        if bias is not None:
            out = out + bias
        out = out * mask.unsqueeze(-1).to(out.dtype)
        save_u = U.numel() * U.element_size() <= SAVE_BUDGET_BYTES
        ctx.save_u = save_u
        ctx.has_bias = bias is not None
        ctx.save_for_backward(left, None if ctx.shared else right, weight, U if save_u else None, heads, tails,
                              mask)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (left, right, weight, U, heads, tails, mask), (need_left, need_right, need_w, need_b) = _saved_inputs(ctx)
        B, N, M, d1, d2, o, P = _pair_dims(left, right, weight, heads)
        G = grad_out * mask.unsqueeze(-1).to(grad_out.dtype)
        grad_left = grad_right = grad_w = grad_b = None
        if need_b and ctx.has_bias:
            grad_b = G.sum((0, 1))
        if not (need_left or need_right or need_w):
            return _input_grads(ctx, grad_left, grad_right, grad_w, grad_b)
        if U is None and need_left:
            U = _entity_weights(right.reshape(B * M, d2), weight)
        U3 = U.view(B, M * o, d1) if need_left else None
        gU = None
        if need_left:
            grad_left = torch.empty_like(left)
        chunks = _n_chunks(B, N, M, o)
        for n0, n1 in chunks:
            rows = n1 - n0
            if len(chunks) == 1:
                idx, Gc = heads * M + tails, G
            else:
                inside = (heads >= n0) & (heads < n1)
                idx = (heads - n0).clamp(0, max(rows - 1, 0)) * M + tails
                Gc = G * inside.unsqueeze(-1).to(G.dtype)
            Gd = G.new_zeros(B, rows * M, o)
            Gd.scatter_add_(1, idx.unsqueeze(-1).expand(B, P, o), Gc)
            Gd = Gd.view(B, rows, M * o)
            if need_left:
                grad_left[:, n0:n1] = torch.bmm(Gd, U3)
            if need_right or need_w:
                part = torch.bmm(Gd.transpose(1, 2), left[:, n0:n1])  # [B, M*o, d1]
                gU = part if gU is None else gU + part
        if need_right or need_w:
            grad_w, grad_right = _entity_weight_grads(gU, right, weight, need_w, need_right)
        return _input_grads(ctx, grad_left, grad_right, grad_w, grad_b)


def _factored(left, right, weight, bias, heads, tails, mask):
    return _FactoredPairBilinear.apply(left, None if right is left else right, weight, bias, heads, tails, mask)


def _gathered(left, right, weight, bias, heads, tails, mask):
    """The baseline: gather [B, P, d] head and tail vectors and call ``F.bilinear`` (= nn.Bilinear)."""
    B, P = heads.shape
    bidx = torch.arange(B, device=heads.device).unsqueeze(1).expand(B, P)
    out = F.bilinear(left[bidx, heads], right[bidx, tails], weight, bias)
    return out * mask.unsqueeze(-1).to(out.dtype)


def _triton(left, right, weight, bias, heads, tails, mask):
    from .triton_bilinear import triton_pair_bilinear

    return triton_pair_bilinear(left, None if right is left else right, weight, bias, heads, tails, mask)


_CORE = {"factored": _factored, "gathered": _gathered, "triton": _triton}


# --------------------------------------------------------------------------------------------
# public op
# --------------------------------------------------------------------------------------------


def _compiling() -> bool:
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - old torch
        return False


def _autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except TypeError:  # pragma: no cover - torch < 2.4: only the CUDA query exists
        if device_type == "cuda" and torch.is_autocast_enabled():
            return torch.get_autocast_gpu_dtype()
    return None


def _to(t: Optional[Tensor], dtype: torch.dtype) -> Optional[Tensor]:
    if t is None or not t.is_floating_point() or t.dtype == dtype:
        return t
    return t.to(dtype)


def pair_bilinear(left: Tensor, heads: Tensor, tails: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
                  *, right: Optional[Tensor] = None, pair_mask: Optional[Tensor] = None,
                  out_weight: Optional[Tensor] = None, out_bias: Optional[Tensor] = None,
                  impl: str = "auto") -> Tensor:
    """Bilinear pair features ``out[b,p,k] = left[b,h] @ weight[k] @ right[b,t] + bias[k]``.

    Args:
        left: [B, N, d1] entity states (heads index into it).
        heads, tails: [B, P] integer pair indices into ``left`` / ``right`` (padded; see ``pair_mask``).
        weight: [o, d1, d2], bias: [o] or None -- the layout of ``torch.nn.Bilinear``.
        right: [B, M, d2] entity states the tails index into (default: ``left``).
        pair_mask: [B, P] bool, False for padding pairs (output 0, no gradient). None: all valid.
        out_weight, out_bias: optional classifier [c, o], [c] applied right after (no non-linearity
            in between); the result is then [B, P, c].
        impl: "auto" | "factored" | "triton" | "gathered" (see the module docstring).

    Returns:
        [B, P, o], or [B, P, c] with ``out_weight``.
    """
    _check_impl(impl)
    if right is None:
        right = left
    if left.dim() != 3 or right.dim() != 3:
        raise ValueError(f"left/right must be [B, N, d]; got {tuple(left.shape)} and {tuple(right.shape)}")
    if heads.shape != tails.shape or heads.dim() != 2 or heads.shape[0] != left.shape[0]:
        raise ValueError(f"heads/tails must both be [B, P] with B={left.shape[0]}; got "
                         f"{tuple(heads.shape)} and {tuple(tails.shape)}")
    o, d1, d2 = weight.shape
    B, N, _ = left.shape
    M = right.shape[1]
    P = heads.shape[1]
    if left.shape[2] != d1 or right.shape[2] != d2 or right.shape[0] != B:
        raise ValueError(f"weight {tuple(weight.shape)} does not fit left {tuple(left.shape)} / right "
                         f"{tuple(right.shape)}")
    heads = heads.long()
    tails = tails.long()
    if pair_mask is None:
        mask = torch.ones(B, P, dtype=torch.bool, device=heads.device)
    else:
        if pair_mask.shape != heads.shape:
            raise ValueError(f"pair_mask must be [B, P] = {tuple(heads.shape)}; got {tuple(pair_mask.shape)}")
        mask = pair_mask.bool()
    # padding pairs may carry any index: they read row 0 and their result is masked out
    zero = torch.zeros((), dtype=torch.long, device=heads.device)
    heads = torch.where(mask, heads, zero)
    tails = torch.where(mask, tails, zero)
    if heads.device.type == "cpu" and not _compiling():
        # cheap on CPU; on CUDA / under compile the indices are only clamped (no host sync)
        if P and (heads.min() < 0 or heads.max() >= N or tails.min() < 0 or tails.max() >= M):
            raise IndexError(f"pair indices out of range: heads must be in [0, {N}), tails in [0, {M})")
    heads = heads.clamp(0, max(N - 1, 0))
    tails = tails.clamp(0, max(M - 1, 0))

    # autocast: run in the autocast dtype (like custom_fwd(cast_inputs=...)), autocast off inside,
    # so forward and the hand-written backward see one dtype
    cast = _autocast_dtype(left.device.type)
    if cast is not None:
        with torch.autocast(device_type=left.device.type, enabled=False):
            return pair_bilinear(*(_to(t, cast) for t in (left, heads, tails, weight, bias)),
                                 right=_to(right, cast), pair_mask=mask, out_weight=_to(out_weight, cast),
                                 out_bias=_to(out_bias, cast), impl=impl)

    contract = False
    if out_weight is not None:
        c = out_weight.shape[0]
        if out_weight.shape[1] != o:
            raise ValueError(f"out_weight must be [c, {o}]; got {tuple(out_weight.shape)}")
        rows = B * min(N, M)
        plain = rows * o * d1 * d2 + B * P * o * (min(d1, d2) + c)
        contracted = c * o * d1 * d2 + rows * c * d1 * d2 + B * P * c * min(d1, d2)
        contract = contracted < plain
    if contract:
        weight = (out_weight @ weight.reshape(o, d1 * d2)).view(-1, d1, d2)
        new_bias = out_bias
        if bias is not None:
            new_bias = out_weight @ bias if new_bias is None else out_weight @ bias + new_bias
        bias = new_bias
        o = weight.shape[0]

    chosen = resolve_impl(impl, left.device, B, N, M, B * P, d1, d2, o)
    if chosen == "gathered":
        out = _gathered(left, right, weight, bias, heads, tails, mask)
    elif N < M:
        # factor through the smaller entity set: swap roles (W^T is a view; copied once inside)
        out = _CORE[chosen](right, left, weight.transpose(1, 2), bias, tails, heads, mask)
    else:
        out = _CORE[chosen](left, right, weight, bias, heads, tails, mask)

    if out_weight is not None and not contract:
        out = F.linear(out, out_weight, out_bias)
        out = out * mask.unsqueeze(-1).to(out.dtype)
    return out


class PairBilinear(nn.Module):
    """``nn.Bilinear`` over entity pairs, computed by :func:`pair_bilinear`.

    Parameters ``weight`` [out, in1, in2] and ``bias`` [out] are named, shaped and initialized exactly
    like ``torch.nn.Bilinear`` (state dicts are interchangeable).
    """

    def __init__(self, in1_features: int, in2_features: int, out_features: int, bias: bool = True,
                 impl: str = "auto", device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.in1_features = in1_features
        self.in2_features = in2_features
        self.out_features = out_features
        self.impl = _check_impl(impl)
        self.weight = nn.Parameter(torch.empty(out_features, in1_features, in2_features, **factory))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, **factory))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # identical to torch.nn.Bilinear.reset_parameters
        bound = 1 / math.sqrt(self.weight.size(1))
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, left: Tensor, heads: Tensor, tails: Tensor, right: Optional[Tensor] = None,
                pair_mask: Optional[Tensor] = None, out_proj: Optional[nn.Linear] = None) -> Tensor:
        return pair_bilinear(left, heads, tails, self.weight, self.bias, right=right, pair_mask=pair_mask,
                             out_weight=None if out_proj is None else out_proj.weight,
                             out_bias=None if out_proj is None else out_proj.bias, impl=self.impl)

    def extra_repr(self) -> str:
        return (f"in1_features={self.in1_features}, in2_features={self.in2_features}, "
                f"out_features={self.out_features}, bias={self.bias is not None}, impl={self.impl!r}")


def all_pairs(num_entities: Tensor, max_entities: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every ordered pair (i, k), i != k, of each document, packed first and padded.

    Args:
        num_entities: [B] entity count of each document (each <= ``max_entities``).
        max_entities: the padded entity dimension N.

    Returns:
        heads, tails: [B, N*(N-1)] long, pair_mask: [B, N*(N-1)] bool. Document b's pairs come first,
        in head-major order (i = 0: k = 1..n-1; i = 1: k = 0, 2..n-1; ...), i.e. pair index
        ``i*(n-1) + k - (k > i)``; the rest is padding (indices 0, mask False).
    """
    n = num_entities.long().view(-1, 1)
    P = max_entities * max(max_entities - 1, 0)
    p = torch.arange(P, device=n.device).view(1, -1)
    valid = p < n * (n - 1)
    per = (n - 1).clamp(min=1)
    i = torch.div(p, per, rounding_mode="floor")
    j = p - i * per
    k = j + (j >= i).long()
    zero = torch.zeros((), dtype=torch.long, device=n.device)
    heads = torch.where(valid, i, zero)
    tails = torch.where(valid, k, zero)
    return heads, tails, valid
