"""Pre-denoising: the rank model's collapsed scoring equals its training path, kept-pair selection,
Relation Detection candidates, and the scoring job (in-process) with its manifest, accounting,
re-runs and the fact join on kept labels. The scoring job on Ray Data (equal to the in-process run,
with a killed actor, a removed node, a killed and restarted job): tests/sharding/test_ray_faults.py."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_same_saved_weights, deepspeed_config, launch_stage, tiny_bert

from dsdocre.data import manifest as mf
from dsdocre.errors import UserError

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false"}


def _cli(*args) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _random_rank_model_and_documents(tmp_path, projection=True, relation_head=False):
    """A tiny rank model with non-trivial weights everywhere (eval mode) and three random documents
    of 4, 3 and 2 entities with every ordered pair a candidate, all NA."""
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.data.examples import PairExample, all_ordered_pairs
    from dsdocre.model import RankModel, RankModelConfig
    from dsdocre.relations import NUM_CLASSES

    encoder = tiny_bert(tmp_path)
    tok, added = load_tokenizer(encoder, max_entities=4)
    torch.manual_seed(1)
    model = RankModel(RankModelConfig(dropout=0.0, max_entities=4, window_overlap=8, pair_dim=16,
                                      entity_projection=projection, relation_head=relation_head),
                      tok, encoder_dir=encoder, added_tokens=added).eval()
    with torch.no_grad():  # a fresh classifier bias is not zero either
        for p in model.parameters():
            if p.dim() <= 2 and not p.shape[0] == model.encoder.model.config.vocab_size:
                p.add_(torch.randn_like(p) * 0.1)
    rng = random.Random(0)
    examples = []
    for n_ent, length in [(4, 30), (3, 12), (2, 7)]:
        ids = [rng.randrange(25, 36) for _ in range(length)]
        starts = [[rng.randrange(length)] for _ in range(n_ent)]
        enc = type("E", (), {"input_ids": ids, "mention_starts": starts, "num_entities": n_ent})()
        h, t = all_ordered_pairs(n_ent)
        labels = np.zeros((len(h), NUM_CLASSES), np.float32)
        labels[:, 0] = 1
        examples.append(PairExample(None, enc, h, t, labels))
    return model, tok, examples


# ---- the collapsed bilinear form is the training-time module ---------------------------------------
@pytest.mark.parametrize("projection,relation_head", [(True, False), (False, False), (True, True)])
def test_scoring_all_pairs_is_the_training_path(tmp_path, projection, relation_head):
    """With or without the auxiliary relation head: the score is output 0 of the same linear layer."""
    from dsdocre.data.examples import collate
    from dsdocre.relations import NUM_CLASSES

    model, tok, examples = _random_rank_model_and_documents(tmp_path, projection, relation_head)
    batch = collate(examples, tok.pad_id)
    assert model(batch).shape[-1] == (1 + NUM_CLASSES if relation_head else 1)
    with torch.no_grad():
        trained = model.pair_scores(batch)  # the kernels' pair op, pair by pair
        collapsed = model.score_all_pairs(batch)  # H M T^T + c
        # the paper release's way, written out: gather every pair, nn.Bilinear, then the linear score
        left, right = model.projected_entities(batch)
        bilinear = torch.nn.Bilinear(left.shape[-1], right.shape[-1], 16)
        bilinear.weight.copy_(model.pair.weight)
        bilinear.bias.copy_(model.pair.bias)
    for b, e in enumerate(examples):
        for p, (h, t) in enumerate(zip(e.heads, e.tails)):
            reference = model.classifier(bilinear(left[b, h][None], right[b, t][None]))[0, 0]
            assert torch.allclose(trained[b, p], collapsed[b, h, t], atol=1e-5)
            assert torch.allclose(reference, collapsed[b, h, t], atol=1e-5)
    # training against every NA pair goes through the collapsed form with gradients: same values,
    # and the gradient of one score reaches the bilinear weight as the pair op's does
    differentiable = model(batch, all_pairs=True)
    assert differentiable.requires_grad and torch.allclose(differentiable, collapsed, atol=1e-6)
    h, t = int(examples[0].heads[5]), int(examples[0].tails[5])
    grad_collapsed = torch.autograd.grad(differentiable[0, h, t], model.pair.weight)[0]
    grad_pair_op = torch.autograd.grad(model.pair_scores(batch)[0, 5], model.pair.weight)[0]
    assert torch.allclose(grad_collapsed, grad_pair_op, atol=1e-5) and grad_collapsed.abs().sum() > 0


def test_the_relation_detection_losses_agree_across_training_paths(tmp_path):
    """Against every NA pair, the collapsed form (no head) and output 0 of the pair-by-pair pass (with
    the head) give the same loss; the head adds exactly weight x its multi-label BCE."""
    from dsdocre.data.examples import collate
    from dsdocre.denoise import RankTrainingConfig, RelationDetectionLoss

    model, tok, examples = _random_rank_model_and_documents(tmp_path, relation_head=True)
    for ex, labelled in zip(examples, ([0, 5, 9], [2], [0])):
        ex.labels[labelled, 0], ex.labels[labelled, 3] = 0, 1
    idx = [0, 1, 2]

    def loss(relation_head, weight=0.0, epoch=1):
        detection = RelationDetectionLoss(examples, tok.pad_id, RankTrainingConfig(
            negatives_per_positive=0, positives_per_doc=2, relation_loss_weight=weight), relation_head,
            epoch_of=lambda: epoch)
        return detection(model, idx, "cpu")

    collapsed, pair_by_pair = loss(False), loss(True)
    assert torch.allclose(collapsed, pair_by_pair, atol=1e-5) and collapsed > 0
    assert not torch.allclose(loss(False, epoch=2), collapsed)  # another epoch draws other positives
    batch = collate(examples, tok.pad_id)
    with torch.no_grad():
        relation_logits = model(batch)[..., 1:][batch["pair_mask"]]
    bce = torch.nn.functional.binary_cross_entropy_with_logits(relation_logits, batch["labels"][batch["pair_mask"]])
    assert torch.allclose(loss(True, weight=2.0) - pair_by_pair, 2.0 * bce, atol=1e-5)


def test_a_positive_among_all_negatives_is_the_grouped_cross_entropy():
    """The all-negatives Relation Detection loss equals cross-entropy over explicit groups
    [positive, every negative] with the positive as the target."""
    from dsdocre.denoise import positive_among_all_negatives

    g = torch.Generator().manual_seed(0)
    scores = torch.randn(40, generator=g) * 3
    positives, negatives = [3, 17, 30], [i for i in range(40) if i not in (3, 17, 30, 8)]
    groups = torch.stack([torch.cat([scores[p:p + 1], scores[negatives]]) for p in positives])
    expected = torch.nn.functional.cross_entropy(groups, torch.zeros(3, dtype=torch.long), reduction="none")
    assert torch.allclose(positive_among_all_negatives(scores, positives, negatives), expected, atol=1e-5)


# ---- which pairs are kept -----------------------------------------------------------------------------
def test_top_pairs_keeps_the_best_ordered_pairs_deterministically():
    from dsdocre.model.rank import check_keep_spec, keep_count, top_pairs

    scores = np.array([[9.0, 0.5, 0.5], [0.7, 9.0, 0.1], [0.5, 0.2, 9.0]])  # the diagonal never counts
    assert top_pairs(scores, 2) == [(1, 0, 0.7), (0, 1, 0.5)]  # tie 0.5: (0, 1) before (0, 2), (2, 0)
    assert [p[:2] for p in top_pairs(scores, "1n")] == [(1, 0), (0, 1), (0, 2)]
    assert len(top_pairs(scores, 20)) == 6 and len(top_pairs(scores, "3n")) == 6  # never more than N(N-1)
    assert keep_count("2n", 19) == 38 and keep_count("20", 19) == 20 and keep_count("2n", 1) == 0
    for bad in ("0", "-2n", "two", "n2"):
        with pytest.raises(ValueError, match="keep"):
            check_keep_spec(bad)


def test_relation_detection_candidates():
    from dsdocre.data.examples import PairExample, all_ordered_pairs
    from dsdocre.data.examples import rank_candidates
    from dsdocre.relations import NUM_CLASSES

    h, t = all_ordered_pairs(5)  # 20 pairs
    labels = np.zeros((20, NUM_CLASSES), np.float32)
    labels[:, 0] = 1
    positive_rows = [2, 7, 11, 15]
    labels[positive_rows, 0] = 0
    labels[positive_rows, 5] = 1
    e = PairExample(None, None, h, t, labels)
    heads, tails, groups = rank_candidates(e, random.Random(3), positives=3, negatives=5)
    assert groups == 3 and len(heads) == 18
    rows = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(h, t))}
    picked = [rows[(int(a), int(b))] for a, b in zip(heads, tails)]
    for g in range(3):
        group = picked[g * 6:(g + 1) * 6]
        assert group[0] in positive_rows and not set(group[1:]) & set(positive_rows)
        assert len(set(group[1:])) == 5
    assert len({picked[g * 6] for g in range(3)}) == 3  # three different positives
    no_positive = PairExample(None, None, h, t, np.eye(20, NUM_CLASSES, dtype=np.float32) * 0 + labels * 0)
    no_positive.labels[:, 0] = 1
    assert rank_candidates(no_positive, random.Random(0))[2] == 0


# ---- the stage end to end, small -------------------------------------------------------------------
@pytest.fixture(scope="module")
def denoise_run(tmp_path_factory):
    """A tiny corpus, its distant part sharded, and a rank model trained for two steps."""
    root = tmp_path_factory.mktemp("denoise")
    _cli("synth", "--docs", 16, "--dev-docs", 6, "--test-docs", 4, "--distant-docs", 10, "--seed", 7,
         "--out", root / "corpus", "--no-progress")
    _cli("shard", "--input", root / "corpus" / "train_distant.json", "--out", root / "shards",
         "--docs-per-shard", 4, "--workers", 0)
    _cli("denoise", "train", "--set", f"data.train={root / 'corpus' / 'train_annotated.json'}",
         "--set", f"data.valid={root / 'corpus' / 'dev.json'}", "--set", "training.epochs=1",
         "--set", "training.max_steps=2", "--output-dir", root / "rank")
    return root


def test_rank_model_training_records_valid_recall(denoise_run):
    records = [json.loads(x) for x in (denoise_run / "rank" / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["steps"] == 2
    valid = records[-1]["valid"]
    assert 0 <= valid["fact_recall_at_2n"] <= valid["fact_recall_at_3n"] <= 100
    meta = json.loads((denoise_run / "rank" / "model" / "dsdocre_model.json").read_text())
    assert meta["task"] == "pair_ranking" and meta["model"]["num_classes"] == 1
    from dsdocre.model import RelationClassifier

    with pytest.raises(UserError, match="pair_ranking model"):
        RelationClassifier.from_pretrained(denoise_run / "rank" / "model")


def test_rank_model_with_the_relation_head_trains_saves_and_scores(denoise_run, tmp_path):
    """model.relation_head adds 97 relation logits (auxiliary loss); the saved model says so, loads
    back as a rank model, and scores with output 0 alone. Sampled negatives are refused with it."""
    from dsdocre.data.reader import load_gold_documents
    from dsdocre.model import RankModel
    from dsdocre.model.rank import score_documents

    corpus = denoise_run / "corpus"
    common = ["--set", f"data.train={corpus / 'train_annotated.json'}", "--set", f"data.valid={corpus / 'dev.json'}",
              "--set", "training.epochs=1", "--set", "training.max_steps=2", "--set", "model.relation_head=true"]
    refused = subprocess.run([sys.executable, "-m", "dsdocre.cli", "denoise", "train", *common,
                              "--set", "training.negatives_per_positive=5", "--output-dir", tmp_path / "refused"],
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert refused.returncode != 0 and "negatives_per_positive: 0" in refused.stderr
    _cli("denoise", "train", *common, "--set", "training.negatives_per_positive=0", "--output-dir", tmp_path / "rank")
    meta = json.loads((tmp_path / "rank" / "model" / "dsdocre_model.json").read_text())
    assert meta["model"]["relation_head"] is True and meta["model"]["num_classes"] == 98
    model, _ = RankModel.from_pretrained(tmp_path / "rank" / "model")
    assert model.classifier.out_features == 98
    docs = load_gold_documents(corpus / "dev.json")
    scores = score_documents(model, [model.tokenizer.encode(d) for d in docs])
    assert [s.shape for s in scores] == [(d.num_entities, d.num_entities) for d in docs]
    record = json.loads((tmp_path / "rank" / "metrics.jsonl").read_text().splitlines()[-1])
    assert record["steps"] == 2 and 0 <= record["valid"]["fact_recall_at_2n"] <= 100


@pytest.mark.slow
def test_rank_model_training_on_two_processes_computes_what_one_process_computes(denoise_run, tmp_path):
    """Each document's positives are drawn from (seed, epoch, document), so the process layout
    does not change what is learnt: 2 processes x micro-batch 2 under the launcher (ZeRO-2) reach
    the weights, epoch loss and valid recall of 1 process x micro-batch 2 x 2 accumulation steps,
    after 3 steps. The loss is the real-data config's: each positive against every NA pair of its
    document, all pairs scored at once through the collapsed form."""
    corpus = denoise_run / "corpus"
    settings = ["--encoder", tiny_bert(tmp_path), "--set", "model.window_overlap=8", "--set", "model.pair_dim=16",
                "--set", f"data.train={corpus / 'train_annotated.json'}", "--set", f"data.valid={corpus / 'dev.json'}",
                "--set", "training.epochs=1", "--set", "training.max_steps=3",
                "--set", "model.dropout=0.0", "--set", "model.encoder_dropout=0.0",
                "--set", "training.positives_per_doc=4", "--set", "training.negatives_per_positive=0"]
    _cli("denoise", "train", *settings, "--set", f"training.deepspeed={deepspeed_config(tmp_path, 'one.json', 2, 2)}",
         "--output-dir", tmp_path / "one")
    two = launch_stage("denoise-train", *settings,
                       "--set", f"training.deepspeed={deepspeed_config(tmp_path, 'two.json', 2, 1)}",
                       "--output-dir", tmp_path / "two", port=29647)
    assert "world 2" in two.stdout
    records = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()]
               for n in ("one", "two")}
    assert len(records["two"]) == 1  # rank 0 alone scores valid
    assert records["one"][0]["steps"] == records["two"][0]["steps"] == 3
    assert records["one"][0]["loss"] == pytest.approx(records["two"][0]["loss"], rel=1e-4)
    assert records["one"][0]["valid"] == records["two"][0]["valid"]
    assert_same_saved_weights(tmp_path / "one" / "model", tmp_path / "two" / "model")


def test_scoring_in_process_accounts_for_every_document_and_reruns_skip(denoise_run, tmp_path):
    from dsdocre.data.scored import load_kept_pairs
    from sharding.denoise_score import score_shards

    out = tmp_path / "scored"
    manifest = score_shards(denoise_run / "rank" / "model", denoise_run / "shards", out, keep="20", workers=0,
                            progress=False)
    source = mf.load(denoise_run / "shards")
    assert manifest["counts"] == {"input": source["counts"]["sharded"], "scored": source["counts"]["sharded"],
                                  "rejected": 0}
    assert [s["source"] for s in manifest["shards"]] == [s["name"] for s in source["shards"]]
    kept = load_kept_pairs(out)
    docs = json.loads((denoise_run / "corpus" / "train_distant.json").read_text())
    assert set(kept) == {d["title"] for d in docs}
    for d in docs:
        n = len(d["vertexSet"])
        pairs = kept[d["title"]]
        assert len(pairs) == min(20, n * (n - 1)) and all(h != t for h, t in pairs)
        assert len({tuple(p) for p in pairs}) == len(pairs)

    # a re-run keeps everything; a corrupted scored shard is redone and comes back identical
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("scored-*.tar")}
    again = score_shards(denoise_run / "rank" / "model", denoise_run / "shards", out, keep="20", workers=0,
                         progress=False)
    assert again == manifest
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("scored-*.tar")} == before
    victim = out / manifest["shards"][1]["name"]
    victim.write_bytes(victim.read_bytes()[:-100] + b"x" * 100)
    with pytest.raises(UserError, match="fail verification"):
        load_kept_pairs(out)
    assert score_shards(denoise_run / "rank" / "model", denoise_run / "shards", out, keep="20", workers=0,
                        progress=False) == manifest
    # another keep is another job: the shards are redone
    other = score_shards(denoise_run / "rank" / "model", denoise_run / "shards", out, keep="2n", workers=0,
                         progress=False)
    assert other["keep"] == "2n" and other["shards"][0]["sha256"] != manifest["shards"][0]["sha256"]


def test_fact_join_counts_only_kept_labels(denoise_run, tmp_path):
    from sharding.fact_join import fact_join

    proc = _cli("denoise", "score", "--model", denoise_run / "rank" / "model", "--shards", denoise_run / "shards",
                "--out", tmp_path / "kept1", "--keep", 1, "--workers", 0, "--no-progress")
    from dsdocre.data.scored import FORMAT, FORMAT_VERSION

    scored = mf.load(tmp_path / "kept1", FORMAT, FORMAT_VERSION)
    assert f"input {scored['counts']['input']} documents = scored {scored['counts']['scored']} + rejected 0" \
        in proc.stdout
    everything = fact_join(denoise_run / "shards", tmp_path / "all", workers=0, log=None)
    _cli("fact-join", "--shards", denoise_run / "shards", "--out", tmp_path / "kept", "--kept", tmp_path / "kept1",
         "--workers", 0)
    through_kept = mf.load(tmp_path / "kept", "dsdocre-pairs")
    docs = json.loads((denoise_run / "corpus" / "train_distant.json").read_text())
    labels = sum(len(d.get("labels", [])) for d in docs)
    assert everything["counts"]["labels_dropped_by_denoiser"] == 0
    # keeping one pair per document keeps the labels of that pair only
    kept_labels = 0
    from dsdocre.data.scored import load_kept_pairs

    kept = load_kept_pairs(tmp_path / "kept1")
    for d in docs:
        (h, t), = kept[d["title"]]
        kept_labels += sum(1 for lab in d.get("labels", []) if (lab["h"], lab["t"]) == (h, t))
    assert through_kept["counts"]["labels_dropped_by_denoiser"] == labels - kept_labels
    assert through_kept["counts"]["fact_mentions"] <= len(docs) < everything["counts"]["fact_mentions"]
    assert through_kept["kept_pairs"]["manifest_sha256"] == mf.sha256_file(tmp_path / "kept1" / "manifest.json")
    assert scored["pairs_kept"] == len(docs)


def test_kept_pairs_must_cover_every_document(tmp_path):
    from dsdocre.data.documents import Document
    from dsdocre.data.examples import build_examples

    doc = Document.from_json({"title": "A", "sents": [["x", "y"]], "labels": [],
                              "vertexSet": [[{"name": "x", "pos": [0, 1], "sent_id": 0, "type": "T"}],
                                            [{"name": "y", "pos": [1, 2], "sent_id": 0, "type": "T"}]]})

    class Tok:
        def encode(self, d):
            return None

    with pytest.raises(UserError, match="1 documents have no kept pairs .first: 'A'"):
        build_examples([doc], Tok(), {"B": [[0, 1]]})
    (example,) = build_examples([doc], Tok(), {"A": [[1, 0]]})
    assert example.heads.tolist() == [1] and example.tails.tolist() == [0]


def test_select_keep_is_checked_before_training_and_its_recall_is_measured():
    """A select_keep that is no cut fails when the config is read, naming the key; one that is not
    among the reported cuts is measured too (before, it raised KeyError after the first epoch)."""
    from dsdocre.config import validate
    from dsdocre.denoise import DenoiseConfig, recall_specs

    data = {"data": {"train": "t.json", "valid": "v.json"}}
    with pytest.raises(UserError, match=r"select_keep: .*keep '3x'"):
        validate(DenoiseConfig, {**data, "select_keep": "3x"})
    assert validate(DenoiseConfig, {**data, "select_keep": "4N"}).select_keep == "4n"
    assert recall_specs("4n") == ("2n", "3n", "20", "4n") and recall_specs("3n") == ("2n", "3n", "20")
