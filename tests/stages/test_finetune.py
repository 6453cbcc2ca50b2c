"""Fine-tuning through DeepSpeed (one process, and two under the deepspeed launcher), then
predict and evaluate from the saved model. Small synthetic corpora: seconds, not minutes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import assert_same_saved_weights, deepspeed_config, launch_stage

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args, cwd=ROOT, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=cwd, env=_env(),
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("corpus")
    _cli("synth", "--docs", 24, "--dev-docs", 8, "--test-docs", 8, "--distant-docs", 4, "--seed", 5,
         "--out", out, "--no-progress")
    # one bad document in the training file: it must be rejected with its reason, not crash the run
    docs = json.loads((out / "train_annotated.json").read_text())
    docs[3]["labels"].append({"h": 0, "t": 99, "r": "P17", "evidence": []})
    (out / "train_annotated.json").write_text(json.dumps(docs))
    return out


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> list[str]:
    """Overrides that put a tiny random BERT in place of the packaged encoder: the tests that use
    them compare runs with each other (process layouts, stopped and resumed), which needs no real
    encoder and takes a fraction of the time. The packaged encoder is exercised by ``trained``."""
    from conftest import tiny_bert

    encoder = tiny_bert(tmp_path_factory.mktemp("tiny_encoder"))
    return ["--encoder", encoder, "--set", "model.window_overlap=8", "--set", "model.pair_dim=16"]


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ft")
    proc = _cli("finetune", "--config", "configs/finetune.yaml", "--set", f"data.train={corpus / 'train_annotated.json'}",
                "--set", f"data.valid={corpus / 'dev.json'}", "--set", "training.epochs=2", "--output-dir", out)
    assert "rejected 1" in proc.stdout
    return out


def test_finetune_writes_model_metrics_and_rejections(trained):
    metrics = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [m["epoch"] for m in metrics] == [1, 2]
    assert all(0 <= m["valid"]["f1"] <= 100 and m["loss"] > 0 for m in metrics)
    assert metrics[1]["loss"] < metrics[0]["loss"]
    meta = json.loads((trained / "model" / "dsdocre_model.json").read_text())
    assert 0 < meta["threshold"] < 1 and meta["epoch"] in (1, 2)
    rejected = [json.loads(line) for line in (trained / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 1 and rejected[0]["index"] == 3
    assert "labels[" in rejected[0]["reasons"][0] and "out of range" in rejected[0]["reasons"][0]
    submission = json.loads((trained / "valid_predictions.json").read_text())
    assert all(set(p) == {"title", "h_idx", "t_idx", "r"} for p in submission)


def test_predict_writes_official_submission_and_listing(trained, corpus, tmp_path):
    out = tmp_path / "result.json"
    _cli("predict", "--model", trained / "model", "--input", corpus / "test.json", "--out", out,
         "--threshold", "0.01")
    facts = json.loads(out.read_text())
    titles = {d["title"] for d in json.loads((corpus / "test.json").read_text())}
    assert facts and all(set(f) == {"title", "h_idx", "t_idx", "r"} and f["title"] in titles for f in facts)
    listing = out.with_suffix(".txt").read_text()
    assert "# " in listing and "-->" in listing  # readable: entity and relation names
    assert not (tmp_path / "result.rejected.jsonl").exists()


def test_predict_lists_rejected_documents_with_reasons(trained, corpus, tmp_path):
    out = tmp_path / "train_result.json"
    _cli("predict", "--model", trained / "model", "--input", corpus / "train_annotated.json", "--out", out)
    rejected = [json.loads(line) for line in (tmp_path / "train_result.rejected.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rejected] == [3] and "out of range" in rejected[0]["reasons"][0]
    predicted_titles = {f["title"] for f in json.loads(out.read_text())}
    assert rejected[0]["title"] not in predicted_titles


def test_evaluate_model_and_submission_agree(trained, corpus, tmp_path):
    metrics_path = tmp_path / "m.json"
    proc = _cli("evaluate", "--model", trained / "model", "--input", corpus / "dev.json",
                "--train", corpus / "train_annotated.json", "--json", metrics_path)
    assert "Ign" in proc.stdout and "Intra" in proc.stdout
    from_model = json.loads(metrics_path.read_text())
    _cli("evaluate", "--predictions", trained / "valid_predictions.json", "--input", corpus / "dev.json",
         "--train", corpus / "train_annotated.json", "--json", metrics_path)
    from_file = json.loads(metrics_path.read_text())
    assert from_model["f1"] == pytest.approx(from_file["f1"])
    best = [json.loads(x) for x in (trained / "metrics.jsonl").read_text().splitlines()]
    assert round(from_model["f1"] * 100, 2) in [m["valid"]["f1"] for m in best]


def _launch(corpus, out, *overrides, procs=2, port=29617):
    return launch_stage("finetune", "--set", f"data.train={corpus / 'train_annotated.json'}",
                        "--set", f"data.valid={corpus / 'dev.json'}", *overrides, "--output-dir", out,
                        procs=procs, port=port)


DETERMINISTIC = ["--set", "training.epochs=1", "--set", "training.max_steps=3",
                 "--set", "model.dropout=0.0", "--set", "model.encoder_dropout=0.0"]


@pytest.fixture(scope="module")
def one_process(corpus, tiny, tmp_path_factory) -> Path:
    """1 process x micro-batch 2 x 2 accumulation steps (ZeRO-2), 3 steps: the reference."""
    out = tmp_path_factory.mktemp("one_process")
    _cli("finetune", "--set", f"data.train={corpus / 'train_annotated.json'}",
         "--set", f"data.valid={corpus / 'dev.json'}", *tiny, *DETERMINISTIC,
         "--set", f"training.deepspeed={deepspeed_config(out, 'one.json', 2, 2)}", "--output-dir", out / "run")
    return out / "run"


def test_loader_workers_build_the_batches_one_process_builds(corpus, tiny, one_process, tmp_path):
    """Batches collated ahead in 2 persistent DataLoader processes (what a GPU run does by default)
    train the same weights and valid scores as batches collated on the training thread."""
    out = tmp_path / "workers"
    proc = _cli("finetune", "--set", f"data.train={corpus / 'train_annotated.json'}",
                "--set", f"data.valid={corpus / 'dev.json'}", *tiny, *DETERMINISTIC, "--set", "data.loader_workers=2",
                "--set", f"training.deepspeed={deepspeed_config(tmp_path, 'one.json', 2, 2)}", "--output-dir", out)
    assert "2 loader workers" in proc.stdout
    assert_same_saved_weights(one_process / "model", out / "model")
    metrics = [json.loads((run / "metrics.jsonl").read_text()) for run in (one_process, out)]
    assert metrics[0]["loss"] == metrics[1]["loss"] and metrics[0]["valid"] == metrics[1]["valid"]


@pytest.mark.slow
@pytest.mark.parametrize("zero,port", [("finetune_zero2.json", 29617), ("finetune_zero3.json", 29637)])
def test_two_processes_compute_what_one_process_computes(corpus, tiny, one_process, tmp_path, zero, port):
    """2 processes x micro-batch 2 under the launcher (ZeRO-2, and ZeRO-3 with its partitioned
    parameters gathered for evaluation and saving, and the fused classifier registered as an
    external parameter) against 1 process x micro-batch 2 x 2 accumulation steps (ZeRO-2): the same
    global batches, so the same weights and valid F1 after a few steps."""
    two = _launch(corpus, tmp_path / "two", *tiny, *DETERMINISTIC,
                  "--set", f"training.deepspeed={deepspeed_config(tmp_path, 'two.json', 2, 1, base=zero)}", port=port)
    assert "world 2" in two.stdout
    runs = {"one": one_process, "two": tmp_path / "two"}
    metrics = {n: [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()] for n, run in runs.items()}
    assert len(metrics["two"]) == 1  # rank 0 alone evaluates
    assert metrics["one"][0]["steps"] == metrics["two"][0]["steps"] == 3
    assert metrics["one"][0]["loss"] == pytest.approx(metrics["two"][0]["loss"], rel=1e-4)  # every rank's batches
    assert_same_saved_weights(one_process / "model", tmp_path / "two" / "model")
    assert metrics["one"][0]["valid"]["f1"] == metrics["two"][0]["valid"]["f1"]
    # DeepSpeed's CPU all-reduce buffers (69 MB per rank in /dev/shm) are not left behind.
    assert not list(Path("/dev/shm").glob(f"deepspeed_allreduce_buffer_{os.getuid()}_127.0.0.1_{port}_*"))


@pytest.mark.slow
def test_two_processes_agree_to_stop_on_a_tiny_time_budget(corpus, tiny, tmp_path):
    """Each rank's clock passes the budget at its own moment; the ranks agree, so nobody is left
    waiting in an all-reduce (a hang would hit the subprocess timeout)."""
    proc = _launch(corpus, tmp_path, *tiny, "--set", "training.epochs=3", "--set", "training.max_train_minutes=0.0001",
                   "--set", f"training.deepspeed={deepspeed_config(tmp_path, 'two.json', 2, 1)}", port=29627)
    assert "stopping after epoch 1 (1 steps): time budget" in proc.stdout
    records = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["steps"] for r in records] == [1]


def _agree_worker(rank: int, world: int, port: int, codes: list[int], out: str) -> None:
    import torch.distributed as dist

    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from dsdocre.train import distributed

    Path(out, f"{rank}.json").write_text(json.dumps(distributed.agree(codes[rank])))
    dist.destroy_process_group()


@pytest.mark.parametrize("codes,expected", [([0, 1], 1), ([1, 0], 1), ([0, 0], 0), ([1, 2], 2)])
def test_agree_gives_every_rank_the_strongest_decision(tmp_path, codes, expected):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_agree_worker, args=(2, port, codes, str(tmp_path)), nprocs=2, join=True,
                       start_method="spawn")
    assert [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)] == [expected, expected]


def _module_weights(run: Path) -> dict:
    import torch

    latest = (run / "checkpoints" / "latest").read_text().strip()
    return torch.load(run / "checkpoints" / latest / "mp_rank_00_model_states.pt", weights_only=False)["module"]


@pytest.mark.slow
def test_a_stopped_run_resumes_to_the_same_weights(corpus, tiny, tmp_path):
    """A run stopped mid-epoch (a time budget, checkpoint written) and started again continues from
    its checkpoint: same micro-batches, RNG, optimizer and schedule, so its final weights are those
    of an undisturbed run, bit for bit; its metrics file holds each epoch once."""
    import torch

    common = ["--set", f"data.train={corpus / 'train_annotated.json'}", "--set", f"data.valid={corpus / 'dev.json'}",
              "--set", "training.epochs=2", "--set", "training.checkpoints=true", "--set", "training.threads=1",
              *tiny]
    _cli("finetune", *common, "--output-dir", tmp_path / "whole")
    stopped = _cli("finetune", *common, "--set", "training.max_train_minutes=0.0001", "--output-dir", tmp_path / "cut")
    assert "stopping after epoch 1 (1 steps)" in stopped.stdout
    resumed = _cli("finetune", *common, "--output-dir", tmp_path / "cut")
    assert "resuming from" in resumed.stdout
    whole, cut = _module_weights(tmp_path / "whole"), _module_weights(tmp_path / "cut")
    assert whole.keys() == cut.keys() and all(torch.equal(whole[k], cut[k]) for k in whole)
    records = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 1, 2]  # the stop's evaluation, then epochs 1 and 2 complete
    # another run's checkpoint is not continued
    other = subprocess.run([sys.executable, "-m", "dsdocre.cli", "finetune", *common, "--set", "model.pair_dim=64",
                            "--output-dir", str(tmp_path / "cut")], cwd=ROOT, env=_env(), capture_output=True,
                           text=True, timeout=600)
    assert other.returncode == 2 and "holds a checkpoint of another run" in other.stderr
