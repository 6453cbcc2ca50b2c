"""Fused kernels of dsdocre.

:func:`pair_bilinear` / :class:`PairBilinear` score entity pairs with a bilinear form (optionally
followed by a linear classifier) without gathering per-pair vectors; see
:mod:`dsdocre.kernels.bilinear` for the algebra, the implementations and when each wins.
The Triton kernels live in :mod:`dsdocre.kernels.triton_bilinear` (imported lazily, used only when
asked for), the autograd helpers both implementations share in :mod:`dsdocre.kernels._autograd`.
"""

from .bilinear import (
    IMPLS,
    PairBilinear,
    all_pairs,
    default_impl,
    estimate_cost,
    get_default_impl,
    pair_bilinear,
    resolve_impl,
    set_default_impl,
)

from .bilinear import __all__  # noqa: E402  (one export list, kept in bilinear.py)
