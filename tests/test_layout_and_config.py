"""Configuration schema, deterministic batches across ranks, device choice, and the package's
import direction (stages -> library, never the reverse)."""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

from dsdocre.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


# ---- configuration -----------------------------------------------------------------------------
def test_misspelt_keys_are_errors_naming_the_nearest_valid_key(tmp_path):
    from dsdocre.config import load_config
    from dsdocre.finetune import FinetuneConfig

    path = tmp_path / "c.yaml"
    path.write_text("data: {train: a.json, valid: b.json}\ntraining:\n  epochz: 3\nmodel:\n  pair_dimm: 8\n")
    with pytest.raises(UserError) as err:
        load_config(FinetuneConfig, path)
    assert "training.epochz: unknown key; did you mean 'training.epochs'?" in str(err.value)
    assert "model.pair_dimm: unknown key; did you mean 'model.pair_dim'?" in str(err.value)
    path.write_text("data: {train: a.json, valid: b.json}\ntrainng: {epochs: 1}\n")
    with pytest.raises(UserError, match="trainng: unknown key; did you mean 'training'"):
        load_config(FinetuneConfig, path)


def test_overrides_are_checked_like_the_file(tmp_path):
    from dsdocre.config import load_config
    from dsdocre.finetune import FinetuneConfig

    path = tmp_path / "c.yaml"
    path.write_text("data: {train: a.json, valid: b.json}\n")
    config = load_config(FinetuneConfig, path, ["training.epochs=2", "model.dropout=0"])
    assert config.training.epochs == 2 and config.model.dropout == 0.0
    with pytest.raises(UserError, match="warmup_ration: unknown key; did you mean 'training.warmup_ratio'"):
        load_config(FinetuneConfig, path, ["training.warmup_ration=0.1"])
    with pytest.raises(UserError, match="training.epochs: .*integer"):
        load_config(FinetuneConfig, path, ["training.epochs=abc"])
    with pytest.raises(UserError, match="model.pair_activation"):
        load_config(FinetuneConfig, path, ["model.pair_activation=gelu"])
    with pytest.raises(UserError, match="data.valid: missing required key"):
        load_config(FinetuneConfig, path, ["data={train: a.json}"])


def test_default_configs_are_found_from_any_directory(tmp_path, monkeypatch):
    from dsdocre.config import load_config, resolve_config_path
    from dsdocre.pipeline import PipelineConfig

    monkeypatch.chdir(tmp_path)
    assert resolve_config_path("configs/finetune.yaml").read_text() == (ROOT / "configs/finetune.yaml").read_text()
    assert resolve_config_path("configs/deepspeed/finetune.json").is_file()
    assert load_config(PipelineConfig, "configs/pipeline.yaml").synth.docs == 400
    with pytest.raises(UserError, match="config file configs/nope.yaml does not exist"):
        load_config(PipelineConfig, "configs/nope.yaml")


# ---- batches: a function of the global batch, not of the process layout ---------------------------
@pytest.mark.parametrize("n", [7, 64, 403])
@pytest.mark.parametrize("world,accumulation", [(1, 1), (2, 1), (1, 2), (3, 2), (4, 1)])
def test_epoch_batches_are_disjoint_and_complete_across_ranks(n, world, accumulation):
    import random

    from dsdocre.data.examples import epoch_batches

    rng = random.Random(n)
    lengths = [rng.randint(5, 900) for _ in range(n)]
    per_rank = [epoch_batches(lengths, 4, 3, 2, r, world, accumulation) for r in range(world)]
    seen = [i for batches in per_rank for b in batches for i in b]
    assert sorted(seen) == list(range(n))  # every document exactly once
    assert len({len(b) for b in per_rank}) == 1  # every rank runs the same number of micro-batches
    assert len(per_rank[0]) % accumulation == 0 and all(len(b) >= 1 for bs in per_rank for b in bs)
    # the same global batches whatever the layout: step k holds the same documents
    one = epoch_batches(lengths, 4, 3, 2, 0, 1, world * accumulation)
    for step in range(len(per_rank[0]) // accumulation):
        together = sorted(i for r in range(world) for b in per_rank[r][step * accumulation:(step + 1) * accumulation]
                          for i in b)
        alone = sorted(i for b in one[step * world * accumulation:(step + 1) * world * accumulation] for i in b)
        assert together == alone


def test_epoch_batches_refuse_too_few_documents():
    from dsdocre.data.examples import epoch_batches

    with pytest.raises(UserError, match="3 documents cannot fill the 4 micro-batches"):
        epoch_batches([5, 6, 7], 2, 0, 1, 0, 2, 2)


# ---- device --------------------------------------------------------------------------------------
def test_device_auto_takes_cuda_when_it_is_there(monkeypatch):
    import torch

    from dsdocre.inference import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda") and resolve_device("cuda:1") == torch.device("cuda:1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu") and resolve_device(None) == torch.device("cpu")
    with pytest.raises(UserError, match="CUDA is not available"):
        resolve_device("cuda")
    with pytest.raises(UserError, match="--device 'gpu7'"):
        resolve_device("gpu7")


def test_scoring_runs_on_the_resolved_device(monkeypatch):
    """predict / evaluate / the pipeline's scoring (all through dsdocre.api) move the model to the
    device they resolve."""
    import torch

    from dsdocre import api

    moved = []

    class FakeModel:
        tokenizer = type("T", (), {"pad_id": 0})()

        def to(self, device):
            moved.append(device)
            return self

    monkeypatch.setattr("dsdocre.model.RelationClassifier.from_pretrained", lambda d: (FakeModel(), {}))
    monkeypatch.setattr("dsdocre.inference.resolve_device", lambda name: torch.device("meta"))
    seen_device = []
    monkeypatch.setattr("dsdocre.inference.predict_probabilities",
                        lambda model, ex, bs, pad, device, **kw: seen_device.append(device) or [])
    monkeypatch.setattr("dsdocre.data.examples.build_examples", lambda docs, tok, kept: [])
    document = {"title": "T", "sents": [["a", "b"]],
                "vertexSet": [[{"name": "a", "pos": [0, 1], "sent_id": 0, "type": "MISC"}],
                              [{"name": "b", "pos": [1, 2], "sent_id": 0, "type": "MISC"}]]}
    api.load_model("m", device="anything").predict([document])
    assert moved == [torch.device("meta")] and seen_device == [torch.device("meta")]


# ---- layout: the library never imports a stage, Ray, or the CLI ------------------------------------
STAGES = {"dsdocre.cli", "dsdocre.denoise", "dsdocre.finetune", "dsdocre.predict", "dsdocre.evaluate", "dsdocre.pipeline",
          "dsdocre.validate", "dsdocre.synth.command"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_library_never_imports_a_stage_ray_or_the_cli():
    library = [p for p in (ROOT / "dsdocre").rglob("*.py")
               if ".".join(p.relative_to(ROOT).with_suffix("").parts) not in STAGES]
    assert len(library) > 15
    offenders = {}
    for path in library:
        bad = {m for m in _imports(path)
               if m in STAGES or m.split(".")[0] in ("ray", "sharding")}
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert not offenders, offenders


def test_precision_is_bf16_on_a_gpu_that_has_it_and_fp32_on_cpu(monkeypatch):
    import torch

    from dsdocre.train.engine import apply_precision

    base = {"bf16": {"enabled": True}, "fp16": {"enabled": True, "loss_scale": 0}}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = apply_precision(base, "auto")
    assert not cpu["bf16"]["enabled"] and not cpu["fp16"]["enabled"] and cpu["fp16"]["loss_scale"] == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert apply_precision(base, "auto")["bf16"]["enabled"] and not apply_precision(base, "auto")["fp16"]["enabled"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert apply_precision(base, "auto")["fp16"]["enabled"]
    assert apply_precision(base, "json") == base and base["bf16"]["enabled"]  # the JSON as written, unchanged
    # bf16 has no loss scaler: DeepSpeed checks its gradients for non-finite values only when told to
    assert apply_precision(base, "fp32")["bf16"] == {"enabled": False, "check_grad_overflow": True}


def test_the_ninja_beside_the_interpreter_builds_deepspeed_ops(tmp_path, monkeypatch):
    """prepare_environment puts the interpreter's own bin folder (with the ninja DeepSpeed installed)
    first on PATH: a system ninja of another version would discard the op build cache, and the ops
    would recompile on every switch between the two."""
    from dsdocre.train import distributed

    own_bin = tmp_path / "venv" / "bin"
    own_bin.mkdir(parents=True)
    monkeypatch.setattr(sys, "executable", str(own_bin / "python"))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setenv("DS_ACCELERATOR", "cpu")
    monkeypatch.setenv("RANK", "0")  # (the rest of prepare_environment is not tested here)
    distributed.prepare_environment()
    assert os.environ["PATH"] == "/usr/bin:/bin"  # no ninja beside it: PATH left alone

    (own_bin / "ninja").write_text("")
    distributed.prepare_environment()
    distributed.prepare_environment()  # idempotent: not prepended twice
    assert os.environ["PATH"] == f"{own_bin}:/usr/bin:/bin"
