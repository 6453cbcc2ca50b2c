"""The configuration schema (dsdocre.config): a misspelt key or override is an error naming the
nearest valid key, overrides are checked like the file, and the default configs are found from any
directory."""

from __future__ import annotations

from pathlib import Path

import pytest

from dsdocre.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


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


def test_the_gpu_deepspeed_configs_overlap_fuse_and_accumulate_in_fp32():
    """The GPU JSONs: communication overlapped with the backward pass, torch's fused AdamW, bf16
    with fp32 gradient accumulation, and under ZeRO-3 small parameters kept whole (not all-gathered
    one by one each step); the CPU JSONs stay as they were (gloo: no overlap)."""
    import json
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "configs" / "deepspeed"
    for name in ("finetune_gpu.json", "pretrain_zero2_gpu.json", "pretrain_zero3_gpu.json"):
        ds = json.loads((folder / name).read_text())
        assert ds["zero_optimization"]["overlap_comm"] is True, name
        assert ds["optimizer"]["params"]["fused"] is True and ds["optimizer"]["params"]["torch_adam"] is True, name
        assert ds["bf16"]["enabled"] and ds["data_types"]["grad_accum_dtype"] == "fp32", name
    assert json.loads((folder / "pretrain_zero3_gpu.json").read_text())["zero_optimization"][
        "stage3_param_persistence_threshold"] >= 10 ** 5
    for cpu in folder.glob("*.json"):
        if "_gpu" not in cpu.name:
            assert not json.loads(cpu.read_text())["zero_optimization"].get("overlap_comm"), cpu.name
