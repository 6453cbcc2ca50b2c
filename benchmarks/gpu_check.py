"""The device check: one script that a short lent GPU window runs (at most 8 minutes) to prove the
GPU paths end to end, with a verdict per check.

    python -m benchmarks.gpu_check [--out benchmarks/results/gpu_check.json] [--mode auto|cpu|gpu]

Checks, in order (each records its status, reason, seconds and figures):

1. ``environment``: torch, the GPU's name and compute capability, native bf16, DeepSpeed's accelerator.
2. ``pair_kernels``: the factored (and, on CUDA, the Triton) pair bilinear against the gathered form,
   forward and backward, fp32 (and bf16 on CUDA), N up to 42, d 768 / 1024 (small d on CPU).
3. ``bilinear_benchmark`` (CUDA only): ``benchmarks/bilinear.py --quick`` on the GPU.
4. ``synth_shard_fact_join``: a small synthetic corpus sharded and fact-joined.
5. ``finetune_then_predict``: fine-tuning 2 epochs (bf16 on a GPU, fp32 on CPU), then the saved model
   loaded and run through ``dsdocre.api`` (a bf16-trained model must load back).
6. ``bert_base_finetune`` (CUDA only): a BERT-base-shaped random encoder fine-tuned for a few steps.
7. ``triton_in_training`` (CUDA only): fine-tuning with ``model.bilinear_impl=triton``.
8. ``pretrain_zero2_killed_and_resumed``: pre-training under ZeRO-2 with 2 loader workers, SIGKILLed
   after a step and resumed; its final weights against an undisturbed run's (bit for bit).
9. ``pretrain_zero3``: a few pre-training steps under ZeRO-3.
10. ``denoise_score_on_an_actor``: ``dsdocre denoise score`` on one Ray actor (a GPU fraction on CUDA).

Mode ``cpu`` (the default without CUDA) runs every check that does not need CUDA on tiny models and
corpora, and records each CUDA-only one as ``skipped`` with the reason "no CUDA": CI runs it
(``tests/benchmarks/test_gpu_check.py``), so the script cannot rot between GPU windows. The result
file holds ``mode``, ``device`` and ``checks``: ``{name, status: passed|failed|skipped, reason,
seconds, ...figures}``; the exit code is 1 when a check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from benchmarks import kill_resume as kr
from benchmarks._common import machine_info, random_bert_base

ROOT = Path(__file__).resolve().parents[1]
CHECKS: list[tuple[str, bool, object]] = []  # (name, needs CUDA, function(context) -> figures)


def check(name: str, cuda_only: bool = False):
    def register(fn):
        CHECKS.append((name, cuda_only, fn))
        return fn
    return register


class Context:
    """What the checks share: the mode, a scratch folder, the tiny workspace (built once)."""

    def __init__(self, mode: str, work: Path):
        self.mode, self.work, self.gpu = mode, work, mode == "gpu"
        self._workspace: Path | None = None

    def workspace(self) -> Path:
        """kill_resume's workspace: a tiny random BERT, 120 distant documents sharded, 15 pairs."""
        if self._workspace is None:
            self._workspace = kr.build_workspace(self.work / "workspace")
        return self._workspace

    def precision(self) -> str:
        return "bf16" if self.gpu else "fp32"


def dsdocre(*args, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """One dsdocre command in a process of its own; its output is kept for a failure's reason."""
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"dsdocre {args[0]} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-1500:]}")
    return proc


# ---- the checks ---------------------------------------------------------------------------------
@check("environment")
def environment(ctx: Context) -> dict:
    import torch

    figures = {"torch": torch.__version__, "cuda": torch.version.cuda, "cuda_available": torch.cuda.is_available()}
    if torch.cuda.is_available():
        figures.update(gpu=torch.cuda.get_device_name(0), gpus=torch.cuda.device_count(),
                       capability=list(torch.cuda.get_device_capability(0)),
                       bf16_native=torch.cuda.get_device_capability(0) >= (8, 0))
    from dsdocre.train import distributed

    distributed.prepare_environment()
    from deepspeed.accelerator import get_accelerator

    figures["deepspeed_accelerator"] = get_accelerator().device_name()
    return figures


@check("pair_kernels")
def pair_kernels(ctx: Context) -> dict:
    """Largest relative error of each implementation against the gathered form (nn.Bilinear's
    arithmetic), output and every gradient; bars: 1e-4 in fp32, 2e-2 in bf16."""
    import torch

    from dsdocre.kernels import pair_bilinear

    device = "cuda" if ctx.gpu else "cpu"
    impls = ["factored", "triton"] if ctx.gpu else ["factored"]
    dtypes = [torch.float32, torch.bfloat16] if ctx.gpu else [torch.float32]
    dims = (768, 1024) if ctx.gpu else (32, 48)
    worst, cases = {}, 0
    for d in dims:
        for n in (5, 42):
            for dtype in dtypes:
                torch.manual_seed(n * d)
                left = torch.randn(2, n, d, device=device) / d ** 0.5
                weight = torch.randn(16, d, d, device=device) / d
                bias = torch.randn(16, device=device)
                pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n))
                pairs = pairs[pairs[:, 0] != pairs[:, 1]].to(device)
                heads, tails = pairs[:, 0].expand(2, -1).contiguous(), pairs[:, 1].expand(2, -1).contiguous()
                results = {}
                for impl in ["gathered", *impls]:
                    inputs = [t.detach().to(dtype).requires_grad_() for t in (left, weight, bias)]
                    out = pair_bilinear(inputs[0], heads, tails, inputs[1], inputs[2], impl=impl)
                    out.float().pow(2).sum().backward()
                    results[impl] = [out.detach().float()] + [t.grad.float() for t in inputs]
                for impl in impls:
                    error = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))
                                for a, b in zip(results[impl], results["gathered"]))
                    key = f"{impl}_{str(dtype).split('.')[-1]}"
                    worst[key] = max(worst.get(key, 0.0), error)
                    cases += 1
    bars = {"float32": 1e-4, "bfloat16": 2e-2}
    failed = [k for k, v in worst.items() if v > bars[k.split("_")[-1]]]
    if failed:
        raise AssertionError(f"beyond the bar: {', '.join(f'{k} {worst[k]:.2e}' for k in failed)}")
    return {"max_relative_error": {k: float(f"{v:.3g}") for k, v in worst.items()}, "cases": cases, "dims": list(dims)}


@check("bilinear_benchmark", cuda_only=True)
def bilinear_benchmark(ctx: Context) -> dict:
    out = ctx.work / "bilinear.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bilinear", "--quick", "--device", "cuda", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-1500:])
    return {"gpu": json.loads(out.read_text()).get("gpu")}


@check("synth_shard_fact_join")
def synth_shard_fact_join(ctx: Context) -> dict:
    root = ctx.workspace()
    shards = json.loads((root / "shards" / "manifest.json").read_text())
    pairs = json.loads((root / "pairs" / "manifest.json").read_text())
    if pairs["counts"]["pairs"] != kr.TOTAL_PAIRS:
        raise AssertionError(f"{pairs['counts']['pairs']} document pairs, expected {kr.TOTAL_PAIRS}")
    return {"documents": shards["counts"], "pairs": pairs["counts"]["pairs"], "shards": len(shards["shards"])}


def _corpus(ctx: Context) -> Path:
    corpus = ctx.work / "annotated"
    if not (corpus / "dev.json").is_file():
        dsdocre("synth", "--docs", 24, "--dev-docs", 6, "--test-docs", 6, "--distant-docs", 4, "--seed", 3,
                "--out", corpus, "--no-progress")
    return corpus


def _finetune(ctx: Context, out: Path, encoder: str, *sets: str) -> dict:
    corpus = _corpus(ctx)
    args = ["finetune", "--config", "configs/finetune.yaml", "--encoder", encoder,
            "--set", f"data.train={corpus / 'train_annotated.json'}", "--set", f"data.valid={corpus / 'dev.json'}",
            "--set", f"training.precision={ctx.precision()}", "--set", "training.resume=false"]
    for s in sets:
        args += ["--set", s]
    dsdocre(*args, "--output-dir", out)
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][-1]


@check("finetune_then_predict")
def finetune_then_predict(ctx: Context) -> dict:
    import torch

    from dsdocre.api import load_model

    encoder = str(ctx.workspace() / "encoder")
    record = _finetune(ctx, ctx.work / "finetune", encoder, "training.epochs=2", "model.window_overlap=8",
                       "model.pair_dim=16")
    model = load_model(ctx.work / "finetune" / "model", device="cuda" if ctx.gpu else "cpu")
    dtypes = sorted({str(p.dtype) for p in model.model.parameters()})
    if dtypes != [str(torch.float32)]:
        raise AssertionError(f"the saved model loads as {dtypes}, not float32")
    predictions = model.predict(_corpus(ctx) / "test.json")
    return {"precision": ctx.precision(), "epochs": record["epoch"], "valid_f1": record["valid"]["f1"],
            "loaded_dtypes": dtypes, "documents_predicted": len(predictions.documents), "facts": len(predictions.facts)}


@check("bert_base_finetune", cuda_only=True)
def bert_base_finetune(ctx: Context) -> dict:
    started = time.perf_counter()
    record = _finetune(ctx, ctx.work / "bert_base", random_bert_base(ctx.work / "bert_base_encoder"), "training.epochs=1",
                       "training.max_steps=20", "training.deepspeed=configs/deepspeed/finetune_gpu.json")
    return {"steps": record["steps"], "train_seconds": record["train_seconds"],
            "wall_seconds": round(time.perf_counter() - started, 1)}


@check("triton_in_training", cuda_only=True)
def triton_in_training(ctx: Context) -> dict:
    record = _finetune(ctx, ctx.work / "triton", str(ctx.workspace() / "encoder"), "training.epochs=1",
                       "model.window_overlap=8", "model.pair_dim=16", "model.bilinear_impl=triton")
    if record["loss"] is None or not record["loss"] == record["loss"]:
        raise AssertionError(f"loss {record['loss']}")
    return {"loss": record["loss"], "steps": record["steps"]}


def _pretrain_env(ctx: Context) -> dict:
    return {} if not ctx.gpu else {"DS_ACCELERATOR": "cuda"}


@check("pretrain_zero2_killed_and_resumed")
def pretrain_killed_and_resumed(ctx: Context) -> dict:
    root = ctx.workspace()
    ds = kr.deepspeed_json(root, 2, 1, 2)
    extra = ["data.loader_workers=2", f"training.precision={ctx.precision()}", "training.epochs=1",
             "training.checkpoint_every=2"]  # 8 steps: killed after step 5, resumed from 4
    reference = ctx.work / "pretrain_reference"
    if kr.run(kr.settings(root, ds, reference, *extra), 0, 29781, ctx.work / "pretrain.log", **_pretrain_env(ctx)):
        raise RuntimeError(f"the undisturbed run failed; see {ctx.work / 'pretrain.log'}")
    killed = ctx.work / "pretrain_killed"
    args = kr.settings(root, ds, killed, *extra)
    if not kr.kill_at_step(kr.start(args, 0, 29782, ctx.work / "pretrain.log", **_pretrain_env(ctx)), killed, 5, 0.05):
        raise RuntimeError("the run ended before the kill at step 5")
    resumed_from = kr._latest_step(killed)
    if kr.run(args, 0, 29783, ctx.work / "pretrain.log", **_pretrain_env(ctx)):
        raise RuntimeError(f"the resumed run failed; see {ctx.work / 'pretrain.log'}")
    a, b = kr.final_weights(reference), kr.final_weights(killed)
    accounting = kr.sample_accounting(killed, 1, 1)
    identical = kr.same_weights(a, b)
    if not identical or accounting["repeated"] or accounting["missed"]:
        raise AssertionError(f"identical {identical}, {accounting}, largest difference {kr.max_difference(a, b):g}")
    return {"killed_after_step": 5, "resumed_from": resumed_from, "identical": identical, **accounting,
            "loader_workers": 2}


@check("pretrain_zero3")
def pretrain_zero3(ctx: Context) -> dict:
    root = ctx.workspace()
    out = ctx.work / "pretrain_zero3"
    ds = kr.deepspeed_json(root, 3, 1, 2)
    if kr.run(kr.settings(root, ds, out, "training.max_steps=4", "training.checkpoints=false",
                          f"training.precision={ctx.precision()}"), 0, 29784, ctx.work / "pretrain.log",
              **_pretrain_env(ctx)):
        raise RuntimeError(f"the run failed; see {ctx.work / 'pretrain.log'}")
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    if len(records) != 4 or any(r["loss"] is None for r in records):
        raise AssertionError(f"{len(records)} steps logged: {records[-1:]}")
    return {"steps": len(records), "loss_first": records[0]["loss"], "loss_last": records[-1]["loss"]}


@check("denoise_score_on_an_actor")
def denoise_score_on_an_actor(ctx: Context) -> dict:
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.model import RankModel
    from dsdocre.model.classifier import ModelConfig
    from sharding.denoise_score import score_shards

    root = ctx.workspace()
    encoder = str(root / "encoder")
    tokenizer, added = load_tokenizer(encoder, 128)
    config = ModelConfig(encoder=encoder, pair_dim=16, window_overlap=8)
    RankModel(config, tokenizer, encoder_dir=encoder, added_tokens=added).save_pretrained(ctx.work / "rank")
    manifest = score_shards(ctx.work / "rank", root / "shards", ctx.work / "scored", keep="20", workers=1,
                            device="cuda" if ctx.gpu else "cpu", progress=False, log=None)
    counts = manifest["counts"]
    if counts["input"] != counts["scored"] + counts["rejected"] or not counts["scored"]:
        raise AssertionError(f"counts {counts}")
    return {"counts": counts, "pairs_kept": manifest["pairs_kept"], "pairs_scored": manifest["pairs_scored"]}


# ---- the run ------------------------------------------------------------------------------------
def run_checks(mode: str, work: Path, only: list[str] | None = None, log=print) -> list[dict]:
    ctx = Context(mode, work)
    results = []
    for name, cuda_only, fn in CHECKS:
        if only and name not in only:
            continue
        started = time.perf_counter()
        entry = {"name": name, "status": "passed", "reason": ""}
        if cuda_only and mode != "gpu":
            entry.update(status="skipped", reason="no CUDA")
        else:
            try:
                entry.update(fn(ctx))
            except Exception as err:  # noqa: BLE001 - a failed check is a verdict, the next one runs
                entry.update(status="failed", reason=f"{type(err).__name__}: {err}"[:2000],
                             traceback=traceback.format_exc()[-3000:])
        entry["seconds"] = round(time.perf_counter() - started, 1)
        log(f"{entry['status']:>8}  {name:<36} {entry['seconds']:>7.1f} s  {entry['reason'][:100]}")
        results.append(entry)
    return results


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["auto", "cpu", "gpu"], default="auto",
                        help="gpu needs CUDA; auto: gpu where CUDA is, else cpu (default: %(default)s)")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/gpu_check.json"))
    parser.add_argument("--only", nargs="+", metavar="CHECK", help="run these checks only")
    parser.add_argument("--work", help="scratch folder (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    mode = ("gpu" if torch.cuda.is_available() else "cpu") if args.mode == "auto" else args.mode
    if mode == "gpu" and not torch.cuda.is_available():
        parser.error("--mode gpu: CUDA is not available here")
    random.seed(0)
    machine = machine_info()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        work = Path(args.work) if args.work else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        print(f"{'status':>8}  {'check':<36} {'time':>9}  reason")
        checks = run_checks(mode, work, args.only)
    device = torch.cuda.get_device_name(0) if mode == "gpu" else machine.get("cpu", "cpu")
    counts = {s: sum(c["status"] == s for c in checks) for s in ("passed", "failed", "skipped")}
    result = {"mode": mode, "device": device, "checks": checks, "counts": counts,
              "wall_seconds": round(time.perf_counter() - started, 1), "machine": machine,
              "command": machine["command"], "date": machine.get("date")}
    from dsdocre import fsio

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fsio.write_json_atomic(args.out, result, indent=1)
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['skipped']} skipped "
          f"in {result['wall_seconds']:.0f} s ({mode} mode); wrote {args.out}")
    return 1 if counts["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
