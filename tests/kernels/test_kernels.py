"""Pair bilinear op: factored torch path, Triton kernels (interpreter on CPU) and the module.

Everything is checked against ``torch.nn.Bilinear`` on gathered vectors (values and gradients),
over ragged shapes: entity counts 1..42, 0..N^2 pairs, feature sizes that are not multiples of the
block size, masked padding pairs, duplicate pairs. The Triton kernels run on CPU tensors under the
Triton interpreter (``TRITON_INTERPRET=1``), with small shapes so the whole file takes seconds.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")  # before anything imports triton

import pytest
import torch

from dsdocre.kernels import (
    PairBilinear,
    all_pairs,
    default_impl,
    get_default_impl,
    pair_bilinear,
    resolve_impl,
    set_default_impl,
)
from dsdocre.kernels import bilinear as pb_mod

try:
    import triton  # noqa: F401

    HAS_TRITON = True
except ImportError:  # pragma: no cover - an optional extra; a broken install should fail loudly
    HAS_TRITON = False

needs_triton = pytest.mark.skipif(not HAS_TRITON, reason="triton is not installed")


def reference(left, heads, tails, weight, bias, right=None, mask=None):
    """nn.Bilinear on explicitly gathered vectors (the paper's release), masked pairs -> 0."""
    right = left if right is None else right
    B, P = heads.shape
    bil = torch.nn.Bilinear(left.shape[-1], right.shape[-1], weight.shape[0], bias=bias is not None,
                            dtype=left.dtype)
    with torch.no_grad():
        bil.weight.copy_(weight)
        if bias is not None:
            bil.bias.copy_(bias)
    out = []
    for b in range(B):
        rows = []
        for p in range(P):
            if mask is not None and not mask[b, p]:
                rows.append(None)
                continue
            rows.append((int(heads[b, p]), int(tails[b, p])))
        valid = [r for r in rows if r is not None]
        feats = torch.zeros(P, weight.shape[0], dtype=left.dtype)
        if valid:
            hi = torch.tensor([r[0] for r in valid])
            ti = torch.tensor([r[1] for r in valid])
            f = bil(left[b, hi], right[b, ti])
            feats[torch.tensor([i for i, r in enumerate(rows) if r is not None])] = f
        out.append(feats)
    return torch.stack(out)


def make_case(B, N, M, d1, d2, o, P, *, shared=False, masked=True, bias=True, seed=0, dtype=torch.float32,
              num_entities=None):
    g = torch.Generator().manual_seed(seed)
    left = torch.randn(B, N, d1, generator=g, dtype=dtype)
    right = None if shared else torch.randn(B, M, d2, generator=g, dtype=dtype)
    M = N if shared else M
    d2 = d1 if shared else d2
    weight = torch.randn(o, d1, d2, generator=g, dtype=dtype) / d1 ** 0.5
    b = torch.randn(o, generator=g, dtype=dtype) if bias else None
    if num_entities is None:
        num_entities = torch.full((B,), min(N, M))
    n = num_entities.view(B, 1).clamp(min=1)
    heads = (torch.rand(B, P, generator=g) * n).long()
    tails = (torch.rand(B, P, generator=g) * n).long()
    mask = torch.rand(B, P, generator=g) > 0.3 if masked else None
    if masked:
        # padding pairs carry junk indices: they must be ignored, not read
        heads = torch.where(mask, heads, torch.full_like(heads, 10_000))
        tails = torch.where(mask, tails, torch.full_like(tails, -7))
    return left, right, weight, b, heads, tails, mask


def run_impl(impl, case, out_proj=None, grad_seed=1):
    left, right, weight, bias, heads, tails, mask = case
    leaves = [t.detach().clone().requires_grad_() if t is not None else None
              for t in (left, right, weight, bias)]
    ow = ob = None
    if out_proj is not None:
        ow = out_proj[0].detach().clone().requires_grad_()
        ob = out_proj[1].detach().clone().requires_grad_() if out_proj[1] is not None else None
    out = pair_bilinear(leaves[0], heads, tails, leaves[2], leaves[3], right=leaves[1], pair_mask=mask,
                        out_weight=ow, out_bias=ob, impl=impl)
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(grad_seed)).to(out.dtype)
    inputs = [t for t in leaves + [ow, ob] if t is not None]
    grads = torch.autograd.grad(out, inputs, g, allow_unused=True)
    return out, grads


def assert_close_all(got, ref, atol, rtol):
    out_g, grads_g = got
    out_r, grads_r = ref
    torch.testing.assert_close(out_g, out_r, atol=atol, rtol=rtol)
    assert len(grads_g) == len(grads_r)
    for a, b in zip(grads_g, grads_r):
        if b is None:
            assert a is None or torch.count_nonzero(a) == 0
            continue
        torch.testing.assert_close(a, b, atol=atol, rtol=rtol)


# ----------------------------------------------------------------------------------------------
# all_pairs
# ----------------------------------------------------------------------------------------------


def test_all_pairs_packed_head_major():
    n = torch.tensor([3, 1, 5, 0, 2])
    heads, tails, mask = all_pairs(n, 5)
    assert heads.shape == tails.shape == mask.shape == (5, 20)
    assert heads.dtype == torch.long and mask.dtype == torch.bool
    for b, nb in enumerate(n.tolist()):
        expect = [(i, k) for i in range(nb) for k in range(nb) if i != k]
        got = list(zip(heads[b, mask[b]].tolist(), tails[b, mask[b]].tolist()))
        assert got == expect
        assert mask[b, : len(expect)].all() and not mask[b, len(expect):].any()
        assert (heads[b, ~mask[b]] == 0).all() and (tails[b, ~mask[b]] == 0).all()


def test_all_pairs_degenerate():
    heads, tails, mask = all_pairs(torch.tensor([1]), 1)
    assert heads.shape == (1, 0) and not mask.any()


# ----------------------------------------------------------------------------------------------
# factored torch path vs nn.Bilinear
# ----------------------------------------------------------------------------------------------

RAGGED = [
    # B, N, M, d1, d2, o, P, shared
    (1, 1, 1, 5, 5, 3, 1, True),      # a single entity, self pair
    (2, 7, 7, 20, 20, 19, 49, True),  # all N^2 pairs, d not a multiple of 16
    (2, 6, 9, 11, 13, 4, 0, False),   # no pairs at all
    (3, 9, 4, 12, 7, 5, 30, False),   # N > M: factors through the right
    (2, 4, 9, 7, 12, 5, 30, False),   # N < M: factors through the left (W^T)
    (1, 42, 42, 6, 6, 3, 42 * 41, True),  # the largest document, all ordered pairs
]


@pytest.mark.parametrize("B,N,M,d1,d2,o,P,shared", RAGGED)
def test_factored_matches_bilinear(B, N, M, d1, d2, o, P, shared):
    case = make_case(B, N, M, d1, d2, o, P, shared=shared)
    left, right, weight, bias, heads, tails, mask = case
    ref_out = reference(left, heads, tails, weight, bias, right=right, mask=mask)
    got = run_impl("factored", case)
    torch.testing.assert_close(got[0], ref_out, atol=1e-4, rtol=1e-4)
    assert_close_all(got, run_impl("gathered", case), atol=1e-4, rtol=1e-4)
    assert (got[0][~mask] == 0).all()


def test_factored_gradcheck_float64():
    case = make_case(2, 5, 4, 4, 3, 3, 9, seed=3, dtype=torch.float64)
    left, right, weight, bias, heads, tails, mask = case
    inputs = tuple(t.detach().clone().requires_grad_() for t in (left, right, weight, bias))

    def f(L, R, W, b):
        return pair_bilinear(L, heads, tails, W, b, right=R, pair_mask=mask, impl="factored")

    assert torch.autograd.gradcheck(f, inputs)

    def f_swapped(L, R, W, b):  # N < M: through W^T
        return pair_bilinear(R, tails.clamp(max=3), heads.clamp(max=4), W.transpose(1, 2).contiguous(), b,
                             right=L, pair_mask=mask, impl="factored")

    assert torch.autograd.gradcheck(f_swapped, inputs)


@pytest.mark.parametrize("c,contract", [(1, True), (7, False)])
def test_fused_classifier_gradcheck_float64(c, contract):
    case = make_case(2, 5, 5, 4, 4, 6, 8, shared=True, seed=4, dtype=torch.float64)
    left, _, weight, bias, heads, tails, mask = case
    g = torch.Generator().manual_seed(5)
    ow = torch.randn(c, 6, generator=g, dtype=torch.float64)
    ob = torch.randn(c, generator=g, dtype=torch.float64)
    # the shape-based choice: contraction for c=1 (the rank model), features + linear for c=7
    rows, o, d = 2 * 5, 6, 4
    plain = rows * o * d * d + 2 * 8 * o * (d + c)
    contracted = c * o * d * d + rows * c * d * d + 2 * 8 * c * d
    assert (contracted < plain) == contract
    inputs = tuple(t.detach().clone().requires_grad_() for t in (left, weight, bias, ow, ob))

    def f(L, W, b, Wc, bc):
        return pair_bilinear(L, heads, tails, W, b, pair_mask=mask, out_weight=Wc, out_bias=bc,
                             impl="factored")

    assert torch.autograd.gradcheck(f, inputs, fast_mode=c > 1)
    out = f(*inputs)
    assert out.shape == (2, 8, c)
    ref = torch.nn.functional.linear(reference(left, heads, tails, weight, bias, mask=mask), ow, ob)
    ref = ref * mask.unsqueeze(-1)
    torch.testing.assert_close(out, ref)


def test_factored_chunked_and_recompute(monkeypatch):
    # tiny budgets: the dense score buffer is split over N, and U is recomputed in backward
    monkeypatch.setattr(pb_mod, "DENSE_CHUNK_ELEMENTS", 40)
    monkeypatch.setattr(pb_mod, "SAVE_BUDGET_BYTES", 0)
    assert len(pb_mod._n_chunks(2, 7, 7, 3)) > 1
    case = make_case(2, 7, 7, 6, 6, 3, 40, shared=True, seed=6, dtype=torch.float64)
    left, _, weight, bias, heads, tails, mask = case
    inputs = tuple(t.detach().clone().requires_grad_() for t in (left, weight, bias))

    def f(L, W, b):
        return pair_bilinear(L, heads, tails, W, b, pair_mask=mask, impl="factored")

    assert torch.autograd.gradcheck(f, inputs)


def test_duplicate_pairs_and_no_bias():
    g = torch.Generator().manual_seed(7)
    left = torch.randn(1, 3, 5, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(2, 5, 5, generator=g, dtype=torch.float64, requires_grad=True)
    heads = torch.tensor([[0, 0, 0, 2]])
    tails = torch.tensor([[1, 1, 1, 2]])
    assert torch.autograd.gradcheck(
        lambda L, W: pair_bilinear(L, heads, tails, W, None, impl="factored"), (left, weight))


@pytest.mark.parametrize("impl", ["factored", "gathered"] + (["triton"] if HAS_TRITON else []))
def test_bfloat16(impl):
    case = make_case(2, 6, 6, 24, 24, 10, 30, shared=True, seed=8)
    ref = run_impl("gathered", case)
    left, _, weight, bias, heads, tails, mask = case
    bf = (left.bfloat16(), None, weight.bfloat16(), bias.bfloat16(), heads, tails, mask)
    out, grads = run_impl(impl, bf)
    assert out.dtype == torch.bfloat16 and all(g.dtype == torch.bfloat16 for g in grads)
    scale = ref[0].abs().max()
    assert (out.float() - ref[0]).abs().max() <= 0.03 * scale
    for a, b in zip(grads, ref[1]):
        assert (a.float() - b).abs().max() <= 0.03 * b.abs().max() + 1e-3


# ----------------------------------------------------------------------------------------------
# Triton kernels under the interpreter
# ----------------------------------------------------------------------------------------------

TRITON_CASES = [
    # B, N, M, d1, d2, o, P, shared, dtype
    (1, 1, 1, 5, 5, 3, 1, True, torch.float32),
    (2, 7, 7, 20, 20, 19, 49, True, torch.float32),
    (2, 6, 9, 11, 13, 4, 0, False, torch.float32),
    (3, 9, 4, 17, 7, 5, 30, False, torch.float32),
    (2, 4, 9, 7, 12, 18, 33, False, torch.float64),
    (1, 42, 42, 6, 6, 3, 42 * 42, True, torch.float32),
]


@needs_triton
@pytest.mark.parametrize("B,N,M,d1,d2,o,P,shared,dtype", TRITON_CASES)
def test_triton_interpreter_matches_bilinear(B, N, M, d1, d2, o, P, shared, dtype):
    case = make_case(B, N, M, d1, d2, o, P, shared=shared, seed=B * 100 + N, dtype=dtype)
    left, right, weight, bias, heads, tails, mask = case
    tol = 1e-4 if dtype == torch.float32 else 1e-10
    got = run_impl("triton", case)
    ref_out = reference(left, heads, tails, weight, bias, right=right, mask=mask)
    torch.testing.assert_close(got[0], ref_out, atol=tol, rtol=tol)
    assert_close_all(got, run_impl("gathered", case), atol=tol, rtol=tol)


@needs_triton
def test_triton_fused_classifier_and_no_mask():
    case = make_case(2, 5, 5, 18, 18, 9, 20, shared=True, masked=False, seed=11)
    g = torch.Generator().manual_seed(12)
    proj = (torch.randn(3, 9, generator=g), torch.randn(3, generator=g))
    assert_close_all(run_impl("triton", case, out_proj=proj), run_impl("gathered", case, out_proj=proj),
                     atol=1e-4, rtol=1e-4)


@needs_triton
def test_triton_segments_skip_padding():
    from dsdocre.kernels.triton_bilinear import _segments

    idx = torch.tensor([[2, 0, 2, 1], [1, 1, 0, 0]])
    mask = torch.tensor([[True, True, True, False], [True, False, True, True]])
    perm, seg = _segments(idx, mask, 3)
    # rows b*3+h: doc0: h0 <- p1, h1 <- none, h2 <- p0,p2 ; doc1: h0 <- p6,p7, h1 <- p4, h2 <- none;
    # padding pairs (p3, p5) sorted past the last row
    assert seg.tolist() == [0, 1, 1, 3, 5, 6, 6, 8]
    assert perm.tolist() == [1, 0, 2, 6, 7, 4, 3, 5]


# ----------------------------------------------------------------------------------------------
# module, switch, auto choice, compile
# ----------------------------------------------------------------------------------------------


def test_module_is_interchangeable_with_nn_bilinear():
    torch.manual_seed(13)
    ref = torch.nn.Bilinear(8, 6, 4)
    torch.manual_seed(13)
    mod = PairBilinear(8, 6, 4)
    torch.testing.assert_close(mod.weight, ref.weight)
    torch.testing.assert_close(mod.bias, ref.bias)
    assert mod.state_dict().keys() == ref.state_dict().keys()
    mod.load_state_dict(torch.nn.Bilinear(8, 6, 4).state_dict())
    left, right = torch.randn(2, 5, 8), torch.randn(2, 3, 6)
    heads, tails, mask = torch.randint(0, 5, (2, 7)), torch.randint(0, 3, (2, 7)), torch.rand(2, 7) > 0.2
    out = mod(left, heads, tails, right=right, pair_mask=mask)
    torch.testing.assert_close(out, reference(left, heads, tails, mod.weight.detach(), mod.bias.detach(),
                                              right=right, mask=mask))
    proj = torch.nn.Linear(4, 1)
    scored = mod(left, heads, tails, right=right, pair_mask=mask, out_proj=proj)
    torch.testing.assert_close(scored, proj(out) * mask.unsqueeze(-1))
    assert PairBilinear(3, 3, 2, bias=False).bias is None


def test_switch_forces_gathered(monkeypatch):
    monkeypatch.delenv("DSDOCRE_BILINEAR_IMPL", raising=False)
    dev = torch.device("cpu")
    shape = dict(B=1, N=42, M=42, P=42 * 41, d1=768, d2=768, o=256)
    assert get_default_impl() == "auto"
    assert resolve_impl("auto", dev, **shape) == "factored"
    # fewer pairs than entities: gathering wins
    assert resolve_impl("auto", dev, **{**shape, "P": 3}) == "gathered"
    with default_impl("gathered"):
        assert resolve_impl("auto", dev, **shape) == "gathered"
        assert resolve_impl("factored", dev, **shape) == "factored"  # explicit impl wins
    assert resolve_impl("auto", dev, **shape) == "factored"
    set_default_impl("gathered")
    try:
        assert get_default_impl() == "gathered"
    finally:
        set_default_impl(None)
    monkeypatch.setenv("DSDOCRE_BILINEAR_IMPL", "gathered")
    assert resolve_impl("auto", dev, **shape) == "gathered"
    with pytest.raises(ValueError):
        set_default_impl("fast")


def test_torch_compile_fullgraph():
    torch.manual_seed(14)
    mod = PairBilinear(8, 8, 5)
    heads, tails, mask = all_pairs(torch.tensor([3, 4]), 4)
    left = torch.randn(2, 4, 8, requires_grad=True)

    def f(x):
        return mod(x, heads, tails, pair_mask=mask)

    compiled = torch.compile(f, backend="aot_eager", fullgraph=True)
    out = compiled(left)
    (g,) = torch.autograd.grad(out.sum(), left)
    (g_ref,) = torch.autograd.grad(f(left).sum(), left)
    torch.testing.assert_close(out, f(left))
    torch.testing.assert_close(g, g_ref)


def test_autocast_runs_in_one_dtype():
    case = make_case(2, 6, 6, 16, 16, 5, 20, shared=True, seed=15)
    left, _, weight, bias, heads, tails, mask = case
    leaves = [t.clone().requires_grad_() for t in (left, weight, bias)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pair_bilinear(leaves[0], heads, tails, leaves[1], leaves[2], pair_mask=mask, impl="factored")
    assert out.dtype == torch.bfloat16
    grads = torch.autograd.grad(out.float().sum(), leaves)
    assert [g.dtype for g in grads] == [torch.float32] * 3
    ref = reference(left, heads, tails, weight, bias, mask=mask)
    assert (out.float() - ref).abs().max() <= 0.03 * ref.abs().max()


def test_out_of_range_pairs_raise_on_cpu():
    left = torch.randn(1, 3, 4)
    weight = torch.randn(2, 4, 4)
    with pytest.raises(IndexError):
        pair_bilinear(left, torch.tensor([[0, 3]]), torch.tensor([[1, 1]]), weight, impl="factored")
    # the same index is fine on a padding pair
    out = pair_bilinear(left, torch.tensor([[0, 3]]), torch.tensor([[1, 1]]), weight,
                        pair_mask=torch.tensor([[True, False]]), impl="factored")
    assert (out[0, 1] == 0).all()


def test_auto_on_cuda_resolves_to_factored(monkeypatch):
    # No GPU benchmark has run (benchmarks/results/bilinear.json: "gpu": null), so on CUDA "auto" must
    # take the dense-GEMM factored path; Triton only when asked for. Resolved from the device type
    # alone: no CUDA tensor (or GPU) is needed.
    monkeypatch.delenv("DSDOCRE_BILINEAR_IMPL", raising=False)
    shape = dict(B=1, N=42, M=42, P=42 * 41, d1=768, d2=768, o=256)
    for dev in (torch.device("cuda"), torch.device("cuda", 1), "cuda"):
        assert resolve_impl("auto", dev, **shape) == "factored"
        # the FLOP-estimate choice of the gathered baseline is unchanged
        assert resolve_impl("auto", dev, **{**shape, "P": 3}) == "gathered"
    # CPU: unchanged (what the CPU benchmark measured)
    assert resolve_impl("auto", "cpu", **shape) == "factored"
    assert resolve_impl("auto", torch.device("cpu"), **{**shape, "P": 3}) == "gathered"
    # triton only when asked for explicitly: argument, module-wide switch, environment
    assert resolve_impl("triton", "cuda", **shape) == "triton"
    with default_impl("triton"):
        assert resolve_impl("auto", "cuda", **shape) == "triton"
    monkeypatch.setenv("DSDOCRE_BILINEAR_IMPL", "triton")
    assert resolve_impl("auto", "cuda", **shape) == "triton"
    monkeypatch.delenv("DSDOCRE_BILINEAR_IMPL")
    # the rule is a table: once a GPU measurement shows triton faster, one entry changes it
    table = dict(pb_mod.AUTO_IMPL_BY_DEVICE)
    monkeypatch.setattr(pb_mod, "AUTO_IMPL_BY_DEVICE", {**table, "cuda": "triton"})
    assert resolve_impl("auto", "cuda", **shape) == ("triton" if HAS_TRITON else "factored")
    assert resolve_impl("auto", "cuda", **{**shape, "P": 3}) == "gathered"
    assert resolve_impl("auto", "cpu", **shape) == "factored"


def _kernel_import_graph():
    """{module: {imported dsdocre.kernels modules}} from the source of dsdocre/kernels/*.py, counting
    every import statement (module level or inside a function, absolute or relative)."""
    import ast
    from pathlib import Path

    import dsdocre.kernels as pkg

    pkg_name = "dsdocre.kernels"
    root = Path(pkg.__file__).parent
    modules = {(pkg_name if p.stem == "__init__" else f"{pkg_name}.{p.stem}"): p for p in root.glob("*.py")}
    graph = {}
    for name, path in modules.items():
        is_pkg = path.stem == "__init__"
        base = name if is_pkg else name.rsplit(".", 1)[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                candidates = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    anchor = base.rsplit(".", node.level - 1)[0] if node.level > 1 else base
                    mod = f"{anchor}.{node.module}" if node.module else anchor
                else:
                    mod = node.module or ""
                # "from . import x" / "from pkg import x": x may be a submodule
                candidates = [mod] + [f"{mod}.{a.name}" for a in node.names]
            else:
                continue
            for cand in candidates:
                if cand in modules and cand != name:
                    targets.add(cand)
        graph[name] = targets
    return graph


def test_kernel_modules_import_graph_is_acyclic():
    graph = _kernel_import_graph()
    assert "dsdocre.kernels.triton_bilinear" in graph
    assert "dsdocre.kernels.bilinear" in graph["dsdocre.kernels"]  # the parser sees relative imports
    state = {}  # 1: on the stack, 2: done

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycle = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle among dsdocre.kernels modules: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])
