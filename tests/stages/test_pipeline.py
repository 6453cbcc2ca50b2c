"""The main job end to end, and every config in the repository loaded and run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _run(args, cwd, timeout=900):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _run_pipeline_config(config: Path, out: Path) -> None:
    """`dsdocre pipeline` as the README runs it, shrunk: synth -> shard -> denoise -> fact-join ->
    pretrain -> finetune -> evaluate on test. The data stages run in-process (shard.workers=0):
    their Ray paths are tests/sharding's, and five Ray starts would double this test's time."""
    proc = _run(["pipeline", "--config", config, "--set", f"output_dir={out}", "--set", "shard.workers=0",
                 "--set", "synth.docs=16", "--set", "synth.dev_docs=6", "--set", "synth.test_docs=6",
                 "--set", "synth.distant_docs=120", "--set", "pretrain.heldout_distant_docs=120",
                 "--pretrain-set", "training.max_steps=2", "--finetune-set", "training.epochs=1"], cwd=ROOT)
    assert "Ign" in proc.stdout and "pipeline done" in proc.stdout
    metrics = json.loads((out / "test" / "metrics.json").read_text())
    assert {"f1", "ign_f1", "intra_f1", "inter_f1", "threshold"} <= set(metrics)
    assert metrics["num_gold"] == sum(len(d["labels"]) for d in json.loads((out / "corpus" / "test.json").read_text()))
    assert (out / "finetune" / "model" / "encoder" / "config.json").exists()
    # pre-training ran on the pairs, measured its tasks on held-out pairs, and fine-tuning started from it
    assert "from the pre-trained encoder" in proc.stdout and (out / "pretrain" / "encoder" / "config.json").exists()
    assert json.loads((out / "pretrain" / "valid.json").read_text())["after"]
    result = json.loads((out / "test" / "result.json").read_text())
    assert all(set(r) == {"title", "h_idx", "t_idx", "r"} for r in result)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    _run(["synth", "--docs", 12, "--dev-docs", 4, "--test-docs", 4, "--distant-docs", 4, "--seed", 2,
          "--out", out, "--no-progress"], cwd=ROOT)
    return out


@pytest.fixture(scope="module")
def pair_corpus(tmp_path_factory) -> Path:
    """Distant documents sharded for a tiny random BERT and fact-joined: pre-training input (15
    document pairs; kill_resume's workspace). The configs are what is tested here, not the encoder."""
    from benchmarks import kill_resume as kr

    return kr.build_workspace(tmp_path_factory.mktemp("pairs"))


def _run_pretrain_config(config: Path, corpus: Path, out: Path, *extra) -> list[dict]:
    _run(["pretrain", "--config", config, "--set", f"data.pairs={corpus / 'pairs'}",
          "--set", f"data.shards={corpus / 'shards'}", "--encoder", corpus / "encoder",
          "--set", "model.window_overlap=8", "--set", "model.pair_dim=16", "--set", "training.max_steps=1",
          "--set", "training.checkpoints=false", *extra,
          "--output-dir", out], cwd=ROOT)
    assert (out / "encoder" / "config.json").exists()
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def _run_finetune_config(config: Path, corpus: Path, out: Path, *extra) -> dict:
    _run(["finetune", "--config", config, "--set", f"data.train={corpus / 'train_annotated.json'}",
          "--set", f"data.valid={corpus / 'dev.json'}", "--set", "training.epochs=1", "--set", "training.max_steps=1",
          *extra, "--output-dir", out], cwd=ROOT)
    return json.loads((out / "metrics.jsonl").read_text().splitlines()[0])


# Configs another test runs end to end: the pipeline test (configs/pipeline.yaml, below) runs the
# denoise, fine-tune and pre-training configs it names and their DeepSpeed JSONs; the two-process
# fine-tuning tests (tests/stages/test_finetune.py) run finetune_zero2.json and finetune_zero3.json.
RUN_ELSEWHERE = {"configs/denoise.yaml", "configs/finetune.yaml", "configs/deepspeed/finetune.json",
                 "configs/deepspeed/pretrain_zero2.json", "configs/deepspeed/finetune_zero2.json",
                 "configs/deepspeed/finetune_zero3.json"}
CONFIG_FILES = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs").rglob("*") if p.suffix in (".yaml", ".json"))


@pytest.mark.parametrize("name", CONFIG_FILES)
def test_every_config_file_loads_and_runs(name, small_corpus, pair_corpus, tmp_path):
    """Each config file is validated against its stage's schema and run (on a tiny corpus, one
    step): a config no stage can run, or one with a stale key, fails here."""
    from dsdocre.config import load_deepspeed_config, read_yaml, validate
    from dsdocre.denoise import DenoiseConfig
    from dsdocre.finetune import FinetuneConfig
    from dsdocre.model.pretrain import TASKS
    from dsdocre.pipeline import PipelineConfig
    from dsdocre.pretrain import PretrainConfig

    path = ROOT / name
    from conftest import SHARED_DATA

    real_data = (SHARED_DATA / "redocred" / "train.json").exists()
    if name in RUN_ELSEWHERE or (name == "configs/finetune_redocred.yaml" and real_data):
        # checked against its schema here; another test runs it (CI's time); finetune_redocred.yaml:
        # test_real_data_config_smoke, on real documents, where ../shared is there
        if path.suffix == ".yaml":
            schema = {"finetune": FinetuneConfig, "denoise": DenoiseConfig}.get(path.stem.split("_")[0], PretrainConfig)
            validate(schema, read_yaml(path))
        else:
            assert load_deepspeed_config(path)["train_micro_batch_size_per_gpu"] >= 1
    elif "_gpu" in path.name and name != "configs/pretrain_gpu.yaml":
        # GPU configs: checked against the schema here; one of them (pretrain_gpu.yaml, through
        # pretrain_zero2_gpu.json) also runs below, so DeepSpeed's acceptance of the GPU keys is tried
        # once rather than five times (CI's time); what they do on a GPU is the device check's
        if path.suffix == ".yaml":
            validate(FinetuneConfig if "finetune" in path.name else PretrainConfig, read_yaml(path))
        else:
            assert load_deepspeed_config(path)["zero_optimization"]["stage"] in (2, 3)
    elif name == "configs/paper_table.yaml":  # a benchmark's (a row takes tens of minutes: not run here)
        from benchmarks.studies.paper_table import PaperTableConfig

        table = validate(PaperTableConfig, read_yaml(path))
        assert all((ROOT / row.pretrain).is_file() for row in table.rows.values() if row.pretrain)
    elif name == "configs/pipeline.yaml":
        pipeline = validate(PipelineConfig, read_yaml(path))
        # the configs RUN_ELSEWHERE counts on this run for
        assert (pipeline.denoise.config, pipeline.finetune) == ("configs/denoise.yaml", "configs/finetune.yaml")
        _run_pipeline_config(path, tmp_path / "run")
    elif path.suffix == ".yaml" and "finetune" in path.name:
        validate(FinetuneConfig, read_yaml(path))
        record = _run_finetune_config(path, small_corpus, tmp_path)
        assert record["steps"] == 1
    elif path.suffix == ".yaml" and "denoise" in path.name:
        validate(DenoiseConfig, read_yaml(path))
        _run(["denoise", "train", "--config", path, "--set", f"data.train={small_corpus / 'train_annotated.json'}",
              "--set", f"data.valid={small_corpus / 'dev.json'}", "--set", "training.epochs=1",
              "--set", "training.max_steps=1", "--output-dir", tmp_path], cwd=ROOT)
        record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
        assert record["steps"] == 1 and "fact_recall_at_2n" in record["valid"]
    elif "pretrain_ablation" in path.name and path.name != "pretrain_ablation_wo_rd.yaml":
        # An ablation is pretrain.yaml with tasks switched off; pretrain.yaml and w/o RD run through
        # the stage here (the switches' way from the file to the model), and which losses each
        # ablation's switches leave is tests/model/test_pretrain_model.py's (in-process: CI's time)
        validate(PretrainConfig, read_yaml(path))
    elif path.suffix == ".yaml" and "pretrain" in path.name:
        config = validate(PretrainConfig, read_yaml(path))
        [record] = _run_pretrain_config(path, pair_corpus, tmp_path)
        # each enabled task ran (has its loss) and no switched-off one did: the ablations are real
        assert {t for t in TASKS if f"{t}_loss" in record} == set(config.tasks.enabled())
    elif path.parent.name == "deepspeed" and path.name.startswith("pretrain"):
        ds = load_deepspeed_config(path)
        [record] = _run_pretrain_config(ROOT / "configs/pretrain.yaml", pair_corpus, tmp_path,
                                        "--set", f"training.deepspeed={path}")
        assert record["step"] == 1 and ds["zero_optimization"]["stage"] in (1, 2, 3)
    elif path.parent.name == "deepspeed":
        ds = load_deepspeed_config(path)
        record = _run_finetune_config(ROOT / "configs/finetune.yaml", small_corpus, tmp_path,
                                      "--set", f"training.deepspeed={path}")
        assert record["steps"] == 1 and ds["train_micro_batch_size_per_gpu"] >= 1
    else:
        pytest.fail(f"{name}: no stage runs this config; add it to this test")


def test_real_data_config_smoke(shared_data, tmp_path):
    """configs/finetune_redocred.yaml on a few real Re-DocRED documents (skipped without ../shared)."""
    _run(["finetune", "--config", ROOT / "configs/finetune_redocred.yaml",
          "--set", f"data.train={shared_data / 'redocred/train.json'}",
          "--set", f"data.valid={shared_data / 'redocred/valid.json'}",
          "--set", "data.max_train_docs=4", "--set", "training.epochs=1", "--output-dir", tmp_path], cwd=ROOT)
    record = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])
    assert record["valid"]["num_gold"] == 3327  # all of valid.json is scored


def test_the_pipeline_times_every_stage_and_closes_with_a_table(tmp_path, monkeypatch, capsys):
    """Each stage's wall time as it ends, and a closing table of them all: here with every stage
    replaced by a stand-in that returns at once (the real stages run in the config test above)."""
    from types import SimpleNamespace

    from dsdocre import cli

    def held_out_pairs(shards, out, **kw):  # no pairs: pre-training goes on without held-out measures
        (Path(out) / "manifest.json").parent.mkdir(parents=True, exist_ok=True)
        (Path(out) / "manifest.json").write_text(json.dumps({"counts": {"pairs": 0}}))

    metrics = {"precision": 0.5, "recall": 0.5, "f1": 0.5, "ign_precision": 0.5, "ign_f1": 0.5}
    stand_ins = {
        "dsdocre.synth.generate_corpus": lambda *a, **kw: None,
        "sharding.ray_setup.connect": lambda *a, **kw: False,
        "sharding.shard.shard_corpus": lambda *a, **kw: SimpleNamespace(counts={}),
        "sharding.fact_join.fact_join": held_out_pairs,
        "dsdocre.denoise.train_rank_model": lambda config: None,
        "sharding.denoise_score.score_shards": lambda *a, **kw: {"counts": {}, "pairs_kept": 0, "pairs_scored": 0},
        "dsdocre.pretrain.pretrain": lambda config: None,
        "dsdocre.finetune.finetune": lambda config: None,
        "dsdocre.data.scored.read_kept_pairs": lambda sources: None,
        "dsdocre.evaluate.score_model": lambda *a, **kw: (metrics, [], 0.5),
    }
    for name, stand_in in stand_ins.items():
        monkeypatch.setattr(name, stand_in)
    assert cli.main(["pipeline", "--set", f"output_dir={tmp_path}"]) == 0
    out = capsys.readouterr().out

    splits = ["train_distant", "train_annotated", "dev", "test"]
    stages = ["synth", "ray start", *(f"shard {s}" for s in splits), "denoise train",
              *(f"denoise score {s}" for s in splits), "fact-join", "held-out pairs", "pretrain", "finetune", "evaluate"]
    for stage in stages:
        assert f"   {stage}: " in out, stage  # its time as it ends
    table = out[out.index("stage "):].splitlines()
    end = next(i for i, line in enumerate(table) if line.startswith("total"))
    assert [line.split("  ")[0].strip() for line in table[1:end]] == stages  # every stage that ran, in order
    assert table[end + 1].startswith("pipeline done")
