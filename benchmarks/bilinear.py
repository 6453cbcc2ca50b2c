"""Benchmark: pair bilinear scoring (dsdocre.kernels.pair_bilinear) against gathered nn.Bilinear.

For every shape of the grid -- d in {384, 768}, o in {256, 97}, N in {10, 20, 42} entities with all
N(N-1) ordered pairs -- it measures, in the same run, forward and forward+backward time (median of
repeats) and peak memory of:

* ``gathered``: ``nn.Bilinear`` on gathered head/tail vectors (the paper's release; the baseline);
* ``einsum``:   the plain factored torch form (T = einsum(E, W), S = einsum(T, E), gather pairs),
                autograd through it -- the "best plain-torch factored form" reference;
* ``factored``: this project's factored torch path (``impl="factored"``);
* ``triton``:   the Triton kernels (GPU only), in bf16 and fp32, with achieved FLOP/s against the
                GPU's peak.

CPU runs fp32 with threads pinned to the cores of the machine. The GPU part runs when CUDA is
available (``--device cuda`` or ``auto``); otherwise ``"gpu": null`` is recorded.

Result: ``benchmarks/results/bilinear.json`` with the full grid and a summary for d=768, o=256,
N=42: ``cpu.speedup_fwd_bwd`` (gathered / factored), ``cpu.memory_ratio`` (gathered / factored peak
memory of forward+backward, everything allocated in the measured region), ``gpu.speedup_fwd_bwd_bf16``
and ``gpu.fraction_of_peak`` (or null).

``memory_ratio`` counts the gradients the backward returns, among them ``grad W`` [o, d, d] (604 MB at
d=768, o=256), which is the same tensor for every implementation; so it cannot exceed
``memory_ratio_upper_bound`` (gathered peak / bytes of the returned gradients alone).
``working_memory_ratio`` leaves those gradients out: it compares what the operator itself adds --
activations, tensors saved for backward, workspace, the output (ZeRO's "residual states", as
opposed to the model states W and its gradient).

    python -m benchmarks.bilinear                 # full grid, CPU (+ GPU when present)
    python -m benchmarks.bilinear --quick         # tiny smoke run (seconds), not the result file
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

from benchmarks._common import machine_info, pin_threads
from dsdocre import fsio

MEMORY_METHOD_CPU = (
    "torch.profiler(profile_memory=True): every CPU allocator allocation/free in the measured region, "
    "ordered by time; peak of the running sum of live bytes, relative to the start of the region "
    "(inputs and parameters already allocated are not counted). 'peak_bytes' includes everything "
    "allocated in the region and still or temporarily alive: outputs, saved activations, workspace "
    "and, for forward+backward, the gradient tensors (grad of E, W [o,d,d], bias) the region returns. "
    "'peak_work_bytes' = peak_bytes minus the bytes of those returned tensors (output for forward, "
    "gradients for forward+backward): the memory an implementation can actually save. "
    "Note: the profiled run is separate from the timed runs, except where one run takes longer than "
    "--slow-seconds (the gathered baseline at large shapes), where the profiled run is also the one "
    "timing sample ('timed_under_profiler': true; profiler overhead is negligible at that scale)."
)
MEMORY_METHOD_GPU = (
    "torch.cuda.max_memory_allocated() after reset_peak_memory_stats(), minus memory_allocated() at the "
    "start of the region; same meaning of peak_bytes / peak_work_bytes as on CPU."
)

# Dense peak throughput, FLOP/s, by GPU name substring (first match wins). fp32 is the non-tensor-core
# figure, "tf32" the TF32 tensor-core one (used when torch allows TF32 matmuls).
GPU_PEAKS = [
    ("H200", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("H100 PCIe", {"bf16": 756.0e12, "fp16": 756.0e12, "tf32": 378.0e12, "fp32": 51.2e12}),
    ("H100", {"bf16": 989.4e12, "fp16": 989.4e12, "tf32": 494.7e12, "fp32": 66.9e12}),
    ("A100", {"bf16": 312.0e12, "fp16": 312.0e12, "tf32": 156.0e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362.1e12, "fp16": 362.1e12, "tf32": 183.2e12, "fp32": 91.6e12}),
    ("A10", {"bf16": 125.0e12, "fp16": 125.0e12, "tf32": 62.5e12, "fp32": 31.2e12}),
    ("L4", {"bf16": 121.0e12, "fp16": 121.0e12, "tf32": 60.0e12, "fp32": 30.3e12}),
    ("4090", {"bf16": 165.2e12, "fp16": 165.2e12, "tf32": 82.6e12, "fp32": 82.6e12}),
]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "all"], default="auto",
                   help="auto: CPU, plus CUDA when available")
    p.add_argument("--dims", type=int, nargs="+", default=[384, 768])
    p.add_argument("--outs", type=int, nargs="+", default=[256, 97])
    p.add_argument("--entities", type=int, nargs="+", default=[10, 20, 42])
    p.add_argument("--batch", type=int, default=1, help="documents per call (each with N entities)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats of the fast implementations (CPU)")
    p.add_argument("--baseline-repeats", type=int, default=2, help="timed repeats of gathered nn.Bilinear (CPU)")
    p.add_argument("--gpu-repeats", type=int, default=20)
    p.add_argument("--slow-seconds", type=float, default=20.0,
                   help="a run slower than this is measured once (the profiled run is the timing sample)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads (default: all available cores)")
    p.add_argument("--gpu-dtypes", nargs="+", default=["bf16", "fp32"])
    p.add_argument("--peak-tflops", type=float, default=None, help="override the GPU peak (bf16) in TFLOP/s")
    p.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/bilinear.json)")
    p.add_argument("--quick", action="store_true", help="tiny shapes, one repeat; prints only unless --out")
    return p.parse_args(argv)


# ----------------------------------------------------------------------------------------------
# the implementations
# ----------------------------------------------------------------------------------------------


def make_op(impl, left, heads, tails, mask, weight, bias):
    import torch

    from dsdocre.kernels import pair_bilinear

    if impl in ("factored", "triton", "gathered"):
        return lambda: pair_bilinear(left, heads, tails, weight, bias, pair_mask=mask, impl=impl)
    if impl == "einsum":
        B, P = heads.shape
        bidx = torch.arange(B, device=left.device).unsqueeze(1).expand(B, P)

        def plain():
            T = torch.einsum("bnd,kde->bnke", left, weight)
            S = torch.einsum("bnke,bme->bnmk", T, left)
            return (S[bidx, heads, tails] + bias) * mask.unsqueeze(-1).to(left.dtype)

        return plain
    raise ValueError(impl)


def flops(B, N, P, d, o):
    """Multiply-adds x2 of the factored algorithm (entity GEMM + pair dots); fwd and fwd+bwd."""
    gemm = 2 * B * N * o * d * d
    pairs = 2 * B * P * o * d
    return {"fwd": gemm + pairs, "fwd_bwd": 3 * gemm + 3 * pairs, "gathered_fwd": 2 * B * P * o * d * d}


# ----------------------------------------------------------------------------------------------
# measurement
# ----------------------------------------------------------------------------------------------


class Meter:
    """Times and peak memory of a callable, on CPU (profiler) or CUDA (allocator statistics)."""

    def __init__(self, device):
        import torch

        self.torch = torch
        self.device = device

    def sync(self):
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def timed(self, fn):
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def peak(self, fn):
        """(peak bytes above the start, seconds of that run)."""
        torch = self.torch
        if self.device.type == "cuda":
            self.sync()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            seconds = self.timed(fn)
            return torch.cuda.max_memory_allocated() - base, seconds
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            t0 = time.perf_counter()
            fn()
            seconds = time.perf_counter() - t0
        events = [(e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                  if e.name() == "[memory]"]
        events.sort(key=lambda x: x[0])  # stable: allocation order kept within a timestamp
        live = peak = 0
        for _, nbytes in events:
            live += nbytes
            peak = max(peak, live)
        return peak, seconds


def measure(meter, fn, repeats, slow_seconds, reset):
    """Median time over repeats + profiled peak memory. ``reset`` runs before each call, untimed."""
    reset()
    peak, t_prof = meter.peak(fn)
    reset()
    under_profiler = t_prof > slow_seconds
    if under_profiler:
        times = [t_prof]
    else:
        meter.timed(fn)  # warm-up
        times = []
        for _ in range(repeats):
            reset()
            times.append(meter.timed(fn))
            if sum(times) > slow_seconds * 2:
                break
        reset()
    return {"median_s": statistics.median(times), "times_s": [round(t, 6) for t in times],
            "peak_bytes": int(peak), "timed_under_profiler": under_profiler}


def bench_shape(meter, device, dtype, impls, B, N, d, o, args, repeats, baseline_repeats):
    import torch

    from dsdocre.kernels import all_pairs

    g = torch.Generator(device="cpu").manual_seed(N * 1000 + d + o)
    left = (torch.randn(B, N, d, generator=g) / math.sqrt(d)).to(device=device, dtype=dtype).requires_grad_()
    bound = 1 / math.sqrt(d)
    weight = ((torch.rand(o, d, d, generator=g) * 2 - 1) * bound).to(device=device, dtype=dtype).requires_grad_()
    bias = ((torch.rand(o, generator=g) * 2 - 1) * bound).to(device=device, dtype=dtype).requires_grad_()
    heads, tails, mask = all_pairs(torch.full((B,), N), N)
    heads, tails, mask = heads.to(device), tails.to(device), mask.to(device)
    P = heads.shape[1]
    grad_out = torch.randn(B, P, o, generator=g).to(device=device, dtype=dtype)
    leaves = (left, weight, bias)
    grad_bytes = sum(t.numel() * t.element_size() for t in leaves)
    out_bytes = B * P * o * torch.empty((), dtype=dtype).element_size()
    fl = flops(B, N, P, d, o)

    def reset():
        for t in leaves:
            t.grad = None

    row = {"B": B, "N": N, "P": P, "d": d, "o": o, "dtype": str(dtype).replace("torch.", ""),
           "flops_factored_fwd": fl["fwd"], "flops_factored_fwd_bwd": fl["fwd_bwd"],
           "flops_gathered_fwd": fl["gathered_fwd"], "impls": {}}
    for impl in impls:
        op = make_op(impl, left, heads, tails, mask, weight, bias)

        def fwd():
            op()

        def fwd_bwd():
            op().backward(grad_out)

        r = repeats if impl != "gathered" else baseline_repeats
        res = {"fwd": measure(meter, fwd, r, args.slow_seconds, reset),
               "fwd_bwd": measure(meter, fwd_bwd, r, args.slow_seconds, reset)}
        res["fwd"]["peak_work_bytes"] = res["fwd"]["peak_bytes"] - out_bytes
        res["fwd_bwd"]["peak_work_bytes"] = res["fwd_bwd"]["peak_bytes"] - grad_bytes
        for phase in ("fwd", "fwd_bwd"):
            t = res[phase]["median_s"]
            res[phase]["achieved_flops"] = fl[phase] / t if t > 0 else None
        row["impls"][impl] = res
        reset()
    ref = row["impls"].get("gathered")
    if ref is not None:
        for impl, res in row["impls"].items():
            for phase in ("fwd", "fwd_bwd"):
                res[phase]["speedup_vs_gathered"] = ref[phase]["median_s"] / res[phase]["median_s"]
                res[phase]["memory_ratio_vs_gathered"] = ref[phase]["peak_bytes"] / max(res[phase]["peak_bytes"], 1)
                res[phase]["work_memory_ratio_vs_gathered"] = (
                    ref[phase]["peak_work_bytes"] / max(res[phase]["peak_work_bytes"], 1))
    return row


def gpu_peak(name: str, dtype_key: str, override_tflops):
    if override_tflops and dtype_key == "bf16":
        return override_tflops * 1e12
    for key, peaks in GPU_PEAKS:
        if key in name:
            if dtype_key == "fp32":
                import torch

                return peaks["tf32"] if torch.backends.cuda.matmul.allow_tf32 else peaks["fp32"]
            return peaks.get(dtype_key)
    return None


# ----------------------------------------------------------------------------------------------
# reporting
# ----------------------------------------------------------------------------------------------


def fmt_bytes(n):
    return f"{n / 2**20:9.1f}M"


def print_row(row, device_name):
    print(f"\n[{device_name}] B={row['B']} N={row['N']} P={row['P']} d={row['d']} o={row['o']} {row['dtype']}")
    print(f"  {'impl':9s} {'fwd ms':>10s} {'fwd+bwd ms':>11s} {'peak fwd':>10s} {'peak f+b':>10s} "
          f"{'work f+b':>10s} {'x fwd':>7s} {'x f+b':>7s} {'work x':>6s} {'TFLOP/s':>8s}")
    for impl, r in row["impls"].items():
        f, fb = r["fwd"], r["fwd_bwd"]
        sp_f = f.get("speedup_vs_gathered")
        sp_fb = fb.get("speedup_vs_gathered")
        mem = fb.get("work_memory_ratio_vs_gathered")
        tf = (fb["achieved_flops"] or 0) / 1e12 if impl != "gathered" else float("nan")
        print(f"  {impl:9s} {f['median_s'] * 1e3:10.2f} {fb['median_s'] * 1e3:11.2f} {fmt_bytes(f['peak_bytes'])} "
              f"{fmt_bytes(fb['peak_bytes'])} {fmt_bytes(fb['peak_work_bytes'])} "
              f"{(sp_f or float('nan')):7.1f} {(sp_fb or float('nan')):7.1f} {(mem or float('nan')):6.1f} {tf:8.3f}")


def find(rows, d, o, N, dtype):
    for r in rows:
        if r["d"] == d and r["o"] == o and r["N"] == N and r["dtype"] == dtype:
            return r
    return None


def cpu_summary(rows, d=768, o=256, N=42):
    r = find(rows, d, o, N, "float32")
    if r is None or "gathered" not in r["impls"]:
        return None
    fac, gat = r["impls"]["factored"], r["impls"]["gathered"]
    out = {
        "shape": {"d": d, "o": o, "N": N, "P": r["P"], "B": r["B"], "dtype": "float32"},
        "speedup_fwd_bwd": gat["fwd_bwd"]["median_s"] / fac["fwd_bwd"]["median_s"],
        "speedup_fwd": gat["fwd"]["median_s"] / fac["fwd"]["median_s"],
        "memory_ratio": gat["fwd_bwd"]["peak_bytes"] / fac["fwd_bwd"]["peak_bytes"],
        "memory_ratio_upper_bound": (
            gat["fwd_bwd"]["peak_bytes"] / (fac["fwd_bwd"]["peak_bytes"] - fac["fwd_bwd"]["peak_work_bytes"])),
        "working_memory_ratio": gat["fwd_bwd"]["peak_work_bytes"] / fac["fwd_bwd"]["peak_work_bytes"],
        "memory_ratio_fwd": gat["fwd"]["peak_bytes"] / max(fac["fwd"]["peak_bytes"], 1),
        "factored_fwd_bwd_s": fac["fwd_bwd"]["median_s"],
        "gathered_fwd_bwd_s": gat["fwd_bwd"]["median_s"],
        "factored_peak_work_fwd_bwd_bytes": fac["fwd_bwd"]["peak_work_bytes"],
        "gathered_peak_work_fwd_bwd_bytes": gat["fwd_bwd"]["peak_work_bytes"],
        "factored_peak_fwd_bwd_bytes": fac["fwd_bwd"]["peak_bytes"],
        "gathered_peak_fwd_bwd_bytes": gat["fwd_bwd"]["peak_bytes"],
        "returned_grad_bytes": fac["fwd_bwd"]["peak_bytes"] - fac["fwd_bwd"]["peak_work_bytes"],
    }
    if "einsum" in r["impls"]:
        ein = r["impls"]["einsum"]
        out["einsum_speedup_fwd_bwd"] = gat["fwd_bwd"]["median_s"] / ein["fwd_bwd"]["median_s"]
        out["einsum_memory_ratio"] = gat["fwd_bwd"]["peak_bytes"] / ein["fwd_bwd"]["peak_bytes"]
        out["einsum_working_memory_ratio"] = gat["fwd_bwd"]["peak_work_bytes"] / ein["fwd_bwd"]["peak_work_bytes"]
    out["accept_speedup_50x"] = out["speedup_fwd_bwd"] >= 50
    out["accept_memory_10x"] = out["memory_ratio"] >= 10
    out["accept_working_memory_10x"] = out["working_memory_ratio"] >= 10
    return out


def gpu_summary(rows, d=768, o=256, N=42):
    out = {}
    for dt in ("bfloat16", "float32"):
        r = find(rows, d, o, N, dt)
        if r is None or "triton" not in r["impls"]:
            continue
        tri = r["impls"]["triton"]
        plain = [r["impls"][k] for k in ("factored", "einsum") if k in r["impls"]]
        best_plain = min(plain, key=lambda x: x["fwd_bwd"]["median_s"]) if plain else None
        suffix = "bf16" if dt == "bfloat16" else "fp32"
        if "gathered" in r["impls"]:
            gat = r["impls"]["gathered"]
            out[f"speedup_fwd_bwd_{suffix}"] = gat["fwd_bwd"]["median_s"] / tri["fwd_bwd"]["median_s"]
            out[f"memory_ratio_{suffix}"] = gat["fwd_bwd"]["peak_bytes"] / tri["fwd_bwd"]["peak_bytes"]
            out[f"working_memory_ratio_{suffix}"] = (
                gat["fwd_bwd"]["peak_work_bytes"] / tri["fwd_bwd"]["peak_work_bytes"])
        if best_plain is not None:
            out[f"speedup_vs_best_plain_torch_fwd_bwd_{suffix}"] = (
                best_plain["fwd_bwd"]["median_s"] / tri["fwd_bwd"]["median_s"])
        out[f"fraction_of_peak_{suffix}"] = tri["fwd_bwd"].get("fraction_of_peak")
        out[f"achieved_tflops_fwd_bwd_{suffix}"] = (tri["fwd_bwd"]["achieved_flops"] or 0) / 1e12
    if not out:
        return None
    out["fraction_of_peak"] = out.get("fraction_of_peak_bf16")
    out["shape"] = {"d": d, "o": o, "N": N}
    return out


# ----------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    threads = pin_threads(args.threads)
    import torch

    from dsdocre.kernels import bilinear as bilinear_mod

    if args.quick:
        args.dims, args.outs, args.entities = [48], [16, 7], [5, 12]
        args.repeats, args.baseline_repeats, args.gpu_repeats = 2, 1, 3
    want_cuda = args.device in ("cuda", "all") or (args.device == "auto" and torch.cuda.is_available())
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but CUDA is not available")
    want_cpu = args.device in ("cpu", "all", "auto")

    machine = machine_info()
    result = {
        "benchmark": "pair bilinear scoring: dsdocre.kernels.pair_bilinear vs gathered nn.Bilinear",
        "machine": machine,
        "command": machine["command"],
        "threads": threads,
        "config": dict(vars(args)),
        "memory_method": {"cpu": MEMORY_METHOD_CPU, "gpu": MEMORY_METHOD_GPU},
        "flops_note": "achieved_flops = FLOPs of the factored algorithm (2*(B*N*o*d^2 + B*P*o*d) forward, "
                      "3x that for forward+backward) / time, for every impl; gathered does 2*B*P*o*d^2 "
                      "forward ('flops_gathered_fwd').",
        "save_budget_bytes": bilinear_mod.SAVE_BUDGET_BYTES,
        "cpu": None,
        "gpu": None,
        "grid": {"cpu": [], "gpu": []},
    }
    out_path = args.out or (None if args.quick else os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "results", "bilinear.json"))

    def save():
        if out_path:
            os.makedirs(os.path.dirname(out_path), exist_ok=True)
            fsio.write_json_atomic(out_path, result, indent=1)

    shapes = [(d, o, N) for d in args.dims for o in args.outs for N in args.entities]
    # the headline shape of the result file (the d=768, o=256, N=42; the largest quick one)
    summary_shape = (768, 256, 42) if not args.quick else (args.dims[-1], args.outs[0], args.entities[-1])
    if want_cpu:
        dev = torch.device("cpu")
        meter = Meter(dev)
        for d, o, N in shapes:
            row = bench_shape(meter, dev, torch.float32, ["factored", "einsum", "gathered"], args.batch, N, d, o,
                              args, args.repeats, args.baseline_repeats)
            result["grid"]["cpu"].append(row)
            print_row(row, "cpu")
            result["cpu"] = cpu_summary(result["grid"]["cpu"], *summary_shape)
            save()
    if want_cuda:
        dev = torch.device("cuda")
        meter = Meter(dev)
        name = torch.cuda.get_device_name(0)
        result["gpu_name"] = name
        dtypes = {"bf16": torch.bfloat16, "fp32": torch.float32}
        for dkey in args.gpu_dtypes:
            for d, o, N in shapes:
                row = bench_shape(meter, dev, dtypes[dkey], ["triton", "factored", "einsum", "gathered"], args.batch,
                                  N, d, o, args, args.gpu_repeats, max(3, args.baseline_repeats))
                peak = gpu_peak(name, dkey, args.peak_tflops)
                row["peak_flops"] = peak
                for res in row["impls"].values():
                    for phase in ("fwd", "fwd_bwd"):
                        af = res[phase]["achieved_flops"]
                        res[phase]["fraction_of_peak"] = af / peak if (peak and af) else None
                result["grid"]["gpu"].append(row)
                print_row(row, name)
                result["gpu"] = gpu_summary(result["grid"]["gpu"], *summary_shape)
                save()
    # headline
    print("\nsummary:")
    print(json.dumps({"cpu": result["cpu"], "gpu": result["gpu"]}, indent=1))
    save()
    return 0


if __name__ == "__main__":
    sys.exit(main())
