"""Pre-training: the data split over ranks and loader workers, its resumable position, the folder
checks, and real runs (one process for ZeRO 1/2/3; two under the deepspeed launcher for ZeRO-2 and
ZeRO-3) on a small synthetic corpus. Kills, resumption and other faults: tests/train/test_faults.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dsdocre.errors import UserError

ROOT = Path(__file__).resolve().parents[2]

from benchmarks import kill_resume as kr  # noqa: E402  (the DeepSpeed JSON of the launcher tests, shared)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Distant documents sharded and fact-joined (15 pairs), and a held-out corpus of another seed."""
    from dsdocre.synth import generate_corpus
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    root = tmp_path_factory.mktemp("pretrain")
    for name, seed in (("train", 11), ("valid", 12)):
        generate_corpus(root / name / "corpus", 4, seed, dev_docs=1, test_docs=1, distant_docs=120, progress=False)
        shard_corpus([root / name / "corpus" / "train_distant.json"], root / name / "shards", docs_per_shard=30,
                     workers=0, progress=False, log=None)
        fact_join(root / name / "shards", root / name / "pairs", workers=0, log=None)
    return root


@pytest.fixture(scope="module")
def tiny(corpus, tmp_path_factory):
    """The same documents sharded for a tiny random BERT (the real runs below exercise DeepSpeed,
    the launcher and resumption, where a 6-layer encoder would only cost time), and their pairs."""
    from conftest import tiny_bert
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    root = tmp_path_factory.mktemp("pretrain_tiny")
    (root / "encoder").mkdir()
    encoder = tiny_bert(root / "encoder")
    for name in ("train", "valid"):
        shard_corpus([corpus / name / "corpus" / "train_distant.json"], root / name / "shards", docs_per_shard=30,
                     encoder=encoder, workers=0, progress=False, log=None)
        fact_join(root / name / "shards", root / name / "pairs", workers=0, log=None)
    return root, encoder


@pytest.fixture(scope="module")
def tokenizer(encoder_dir):
    from dsdocre.data.encoding import load_tokenizer

    return load_tokenizer(encoder_dir)[0]


def _batches(corpus, tokenizer, **kw):
    from dsdocre.data.pretrain_data import PairBatches

    kw.setdefault("micro_batch", 2)
    return PairBatches(corpus / "train" / "pairs", corpus / "train" / "shards", tokenizer, **kw)


def _epoch(batches) -> list:
    steps = []
    for step in batches:
        steps.append(step)
        batches.advance()
    return steps


def test_ranks_and_workers_split_each_step_without_overlap_or_gap(corpus, tokenizer):
    one = _epoch(_batches(corpus, tokenizer, micro_batch=4))
    total = _batches(corpus, tokenizer).stream.total
    assert total == 15 and len(one) == 4  # 15 pairs in global batches of 4: 4, 4, 4, 3
    for world, workers in ((2, 0), (3, 0), (2, 2)):
        micro = 4 // world if world != 3 else 1
        ranks = [_epoch(_batches(corpus, tokenizer, micro_batch=micro, accumulation=4 // (micro * world) or 1,
                                 rank=r, world=world, workers=workers)) for r in range(world)]
        if world == 3:  # global batch 3: another cut of the same order
            keys = [k for steps in zip(*ranks) for s in steps for k in s.keys]
            assert sorted(keys) == sorted(k for s in one for k in s.keys) and len(set(keys)) == total
            continue
        for b, steps in enumerate(zip(*ranks)):
            mine = [set(s.keys) for s in steps]
            assert not mine[0] & mine[1], "two ranks got the same pair"
            assert sorted(mine[0] | mine[1]) == sorted(one[b].keys), "the ranks together are the global batch"
            assert sum(s.pairs for s in steps) == one[b].pairs


def test_empty_rank_slice_runs_a_weightless_pair(corpus, tokenizer):
    """15 pairs, global batch 8 over 8 ranks: the last step gives rank 7 nothing; it runs one
    record with weight 0 so that every rank makes the same calls."""
    last = [_epoch(_batches(corpus, tokenizer, micro_batch=1, rank=r, world=8))[-1] for r in range(8)]
    assert [s.pairs for s in last] == [1] * 7 + [0]
    assert float(last[7].micro_batches[0]["weight"]) == 0.0 and last[7].keys == []
    assert all(float(s.micro_batches[0]["weight"]) == 1.0 for s in last[:7])


def test_a_short_last_step_is_padded_to_the_accumulation_count(corpus, tokenizer):
    """15 pairs in global batches of 2 (1 pair x 2 accumulation steps): the last step holds one
    pair, and still runs two micro-batches, the second weightless, or DeepSpeed's boundary count
    would be one off for the rest of the run."""
    steps = _epoch(_batches(corpus, tokenizer, micro_batch=1, accumulation=2))
    assert len(steps) == 8 and all(len(s.micro_batches) == 2 for s in steps)
    assert [s.pairs for s in steps] == [2] * 7 + [1] and len(steps[-1].keys) == 1
    assert [float(m["weight"]) for m in steps[-1].micro_batches] == [1.0, 0.0]


def test_position_resumes_exactly_with_the_same_instances(corpus, tokenizer):
    import torch

    full = _batches(corpus, tokenizer, seed=3)
    reference = _epoch(full) + _epoch(full)[:2]  # into the second epoch
    first = _batches(corpus, tokenizer, seed=3)
    it = iter(first)
    for _ in range(3):
        next(it)
        first.advance()
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint stores
    resumed = _batches(corpus, tokenizer, seed=3)
    resumed.load_state_dict(state)
    rest = _epoch(resumed) + _epoch(resumed)[:2]
    assert [s.keys for s in rest] == [s.keys for s in reference[3:]]
    for a, b in zip(rest, reference[3:]):
        for ma, mb in zip(a.micro_batches, b.micro_batches):
            assert ma.keys() == mb.keys() and all(torch.equal(ma[k], mb[k]) for k in ma)
    assert [s.keys for s in reference[:4]] != [s.keys for s in reference[4:8]]  # epochs are reshuffled


def test_folders_must_belong_together(corpus, tokenizer):
    from dsdocre.data.pretrain_data import PairBatches

    with pytest.raises(UserError, match="was joined from the shards at"):
        PairBatches(corpus / "train" / "pairs", corpus / "valid" / "shards", tokenizer, micro_batch=1)
    with pytest.raises(UserError, match="15 samples cannot feed 16 processes"):
        _batches(corpus, tokenizer, micro_batch=1, world=16)


# ---- real runs ----------------------------------------------------------------------------------
def _env(**extra) -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false", **extra}


def _settings(tiny, ds_config, out, *extra) -> list[str]:
    root, encoder = tiny
    sets = [f"data.pairs={root / 'train' / 'pairs'}", f"data.shards={root / 'train' / 'shards'}",
            f"model.encoder={encoder}", "model.window_overlap=8", "model.pair_dim=16",
            f"training.deepspeed={ds_config}", "model.encoder_dropout=0.0", "examples.blank_prob=0.3",
            "training.log_every=1", "training.warmup_ratio=0.0", *extra]
    return [x for s in sets for x in ("--set", s)] + ["--output-dir", str(out)]


def _metrics(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_every_step_is_applied_across_a_short_last_step(tiny, tmp_path):
    """ZeRO-2, 1 pair x 2 accumulation steps, 15 pairs: each epoch ends with a one-pair step. Every
    one of the 16 optimizer steps of two epochs is applied (an unpadded short step left DeepSpeed's
    boundary one micro-batch off: every later step went unapplied and the run stopped as
    non-finite, found on a 621-pair real corpus)."""
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain",
                           *_settings(tiny, kr.deepspeed_json(tmp_path, 2, 1, 2), out, "training.epochs=2",
                                      "training.checkpoints=false")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    metrics = _metrics(out)
    assert [r["step"] for r in metrics] == list(range(1, 17))
    assert [r["epoch"] for r in metrics] == [1] * 8 + [2] * 8  # an epoch's last step is logged in it
    assert all(r["skipped_steps"] == 0 for r in metrics) and "not finite" not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_zero_stages_reach_the_same_loss(tiny, tmp_path):
    """One process, the same seed: ZeRO-1, -2 and -3 give the same loss at every one of 20 steps
    (within 1e-3), and the loss falls."""
    losses = {}
    for stage in (1, 2, 3):
        out = tmp_path / f"zero{stage}"
        proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "pretrain",
                               *_settings(tiny, kr.deepspeed_json(tmp_path, stage, 2, 1), out, "training.max_steps=20", "training.epochs=3",
                                          "training.checkpoints=false")],
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert f"ZeRO stage {stage}" in proc.stdout
        losses[stage] = [r["loss"] for r in _metrics(out)]
    assert len(losses[1]) == 20
    for stage in (2, 3):
        assert max(abs(a - b) for a, b in zip(losses[1], losses[stage])) < 1e-3, (losses[1], losses[stage])
    epoch = 8  # 15 pairs, global batch 2
    assert sum(losses[1][-epoch:]) < sum(losses[1][:epoch])


def launch(tiny, out, ds_config, *extra, procs=2, port=29651, node_env=None) -> subprocess.CompletedProcess:
    env = _env(NUM_PROCS=str(procs), MASTER_PORT=str(port), PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}", **(node_env or {}))
    proc = subprocess.run(["bash", "launch/deepspeed_pretrain.sh", *_settings(tiny, ds_config, out, *extra)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def check_two_rank_run(out: Path, total_pairs: int, epochs: int) -> None:
    """Both ranks' samples are disjoint and together cover each epoch; the encoder loads."""
    from transformers import AutoModel

    from dsdocre.data.encoding import load_tokenizer

    seen = {r: [json.loads(x) for x in (out / "samples" / f"rank-{r}.jsonl").read_text().splitlines()]
            for r in (0, 1)}
    for epoch in range(1, epochs + 1):
        keys = [[k for s in seen[r] if s["epoch"] == epoch for k in s["keys"]] for r in (0, 1)]
        assert not set(keys[0]) & set(keys[1])
        assert len(keys[0]) + len(keys[1]) == total_pairs == len(set(keys[0]) | set(keys[1]))
    model = AutoModel.from_pretrained(out / "encoder")
    assert model.config.hidden_size == 32  # the tiny BERT the runs train
    assert load_tokenizer(out / "encoder")[1] == 0  # the markers are in the exported tokenizer


@pytest.mark.slow
@pytest.mark.parametrize("stage,port", [(2, 29651), (3, 29661)])
def test_two_processes_under_the_launcher(tiny, tmp_path, stage, port):
    out = tmp_path / "run"
    proc = launch(tiny, out, kr.deepspeed_json(tmp_path, stage, 1, 1), "training.epochs=2", "training.log_samples=true",
                  "training.checkpoint_every=5", "training.keep_checkpoints=1",
                  f"data.valid_pairs={tiny[0] / 'valid' / 'pairs'}",
                  f"data.valid_shards={tiny[0] / 'valid' / 'shards'}", port=port)
    assert "world 2" in proc.stdout and f"ZeRO stage {stage}" in proc.stdout
    check_two_rank_run(out, 15, 2)
    # both ranks hashed a share of the data while the engine was built; rank 0 recorded the verdict
    for rank in (0, 1):
        startup = json.loads((out / "startup" / f"rank-{rank}.json").read_text())
        marks = startup["seconds_since_process_start"]
        assert startup["hash_s"] > 0 and marks["engine"] <= marks["verified"] <= marks["first_step"]
    assert (out / "verified.json").exists() and (out / "verified-valid.json").exists()
    losses = [r["loss"] for r in _metrics(out)]
    assert len(losses) == 16 and sum(losses[8:]) < sum(losses[:8])  # the second epoch's loss is lower
    valid = json.loads((out / "valid.json").read_text())
    assert valid["before"].keys() == valid["after"].keys() and all(
        v["instances"] > 0 and 0 < v["chance"] < 100 for v in valid["after"].values())
    assert sorted(p.name for p in (out / "checkpoints").glob("step*")) == ["step00000016"]  # the newest kept
    # per-task curves went to TensorBoard through DeepSpeed's monitor (rank 0)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(next((out / "tensorboard").rglob("events.out.tfevents*"))))
    events.Reload()
    assert {"pretrain/loss", "pretrain/ra_accuracy", "pretrain/mm_intra_loss"} <= set(events.Tags()["scalars"])
    assert [e.step for e in events.Scalars("pretrain/loss")] == list(range(1, 17))


@pytest.mark.slow
def test_a_shard_corrupted_in_place_stops_both_ranks_naming_it(tiny, tmp_path):
    """One byte of a document shard flipped (same size, so the size checks pass): the ranks hash
    their shares while the engine is built, and both stop before the first step, the rank that
    hashed the shard naming it."""
    import shutil

    from dsdocre.data import manifest as mf

    root = tmp_path / "data"
    shutil.copytree(tiny[0] / "train", root / "train")
    data = (root, tiny[1])
    shards = root / "train" / "shards"
    target = shards / mf.load(shards)["shards"][1]["name"]
    damaged = bytearray(target.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF
    target.write_bytes(bytes(damaged))
    ds_config = kr.deepspeed_json(tmp_path, 2, 1, 1)
    env = _env(NUM_PROCS="2", MASTER_PORT="29671", PYTHON=sys.executable,
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    proc = subprocess.run(["bash", "launch/deepspeed_pretrain.sh", *_settings(data, ds_config, tmp_path / "bad",
                                                                               "training.max_steps=2")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{target}: sha256" in out and "(corrupted)" in out and "another rank found a data file" in out, out[-3000:]
    assert not (tmp_path / "bad" / "metrics.jsonl").exists()  # no step was taken on the damaged data
    assert not (tmp_path / "bad" / "verified.json").exists()


@pytest.mark.slow
def test_two_nodes_on_localhost_pretrain(tiny, tmp_path):
    """Two launcher invocations (node ranks 0 and 1, one process each, loopback master) form one
    world of two and pre-train together, each rank on its own half of every step. (The launcher is
    the same for every stage: this is its two-node test; fine-tuning's ranks are tested with two
    processes under it, tests/stages/test_finetune.py.)"""
    from test_launch import launch_two_nodes

    out = tmp_path / "run"
    nodes = launch_two_nodes("pretrain", _settings(tiny, kr.deepspeed_json(tmp_path, 2, 1, 1), out,
                                                   "training.log_samples=true"), tmp_path, {}, timeout=600)
    for rank, node in enumerate(nodes):
        assert node.returncode == 0, f"node {rank}:\n" + node.stdout[-3000:] + node.stderr[-3000:]
        logs = node.stdout + node.stderr
        # each node's launcher computed the same world of two from the generated two-node hostfile
        assert "dist_world_size=2" in logs and f"node_rank={rank}" in logs, logs[-3000:]
    assert "world 2" in nodes[0].stdout  # rank 0's line: the process group really has two members
    check_two_rank_run(out, 15, 1)
