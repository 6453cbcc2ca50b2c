"""The main job end to end, and every config in the repository exercised at least once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _run(args, cwd, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_pipeline_runs_end_to_end_on_the_embedded_default(tmp_path):
    """`dsdocre pipeline` as the README runs it, shrunk: synth -> finetune -> evaluate on test."""
    out = tmp_path / "run"
    proc = _run(["pipeline", "--config", ROOT / "configs/pipeline.yaml", "--set", f"output_dir={out}",
                 "--set", "synth.docs=16", "--set", "synth.dev_docs=6", "--set", "synth.test_docs=6",
                 "--set", "synth.distant_docs=4", "--finetune-set", "training.epochs=1"], cwd=ROOT)
    assert "Ign" in proc.stdout and "pipeline done" in proc.stdout
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert {"f1", "ign_f1", "intra_f1", "inter_f1", "threshold"} <= set(metrics)
    assert (out / "finetune" / "model" / "encoder" / "config.json").exists()
    result = json.loads((out / "test" / "result.json").read_text())
    assert all(set(r) == {"title", "h_idx", "t_idx", "r"} for r in result)


def test_every_config_file_is_used_by_a_test():
    """Configs are data: each one must be named by some test (so it is exercised)."""
    tests_text = "".join(p.read_text() for p in (ROOT / "tests").glob("test_*.py"))
    configs = [p for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".json")]
    unused = [str(p.relative_to(ROOT)) for p in configs if p.name not in tests_text]
    assert not unused, f"configs no test exercises: {unused}"


def test_yaml_configs_point_to_existing_deepspeed_configs():
    checked = 0
    for path in (ROOT / "configs").glob("*.yaml"):
        config = yaml.safe_load(path.read_text())
        ds = config.get("training", {}).get("deepspeed")
        if ds:
            assert (ROOT / ds).exists(), f"{path.name}: {ds} does not exist"
            json.loads((ROOT / ds).read_text())
            checked += 1
    assert checked >= 2  # finetune.yaml and finetune_redocred.yaml


def test_real_data_config_smoke(shared_data, tmp_path):
    """configs/finetune_redocred.yaml on a few real Re-DocRED documents (skipped without ../shared)."""
    _run(["finetune", "--config", ROOT / "configs/finetune_redocred.yaml",
          "--set", f"data.train={shared_data / 'redocred/train.json'}",
          "--set", f"data.valid={shared_data / 'redocred/valid.json'}",
          "--set", "data.max_train_docs=4", "--set", "training.epochs=1", "--output-dir", tmp_path], cwd=ROOT)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["valid"]["num_gold"] == 3327  # all of valid.json is scored
