"""dsdocre.api on a tiny random model: its facts are what ``dsdocre predict`` writes for the same
input, documents given as dicts give what their file gives, and an invalid document is reported
with its reasons (or raises naming the document and field), never dropped silently."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import tiny_bert

from dsdocre.api import Fact, InvalidDocumentsError, load_model
from dsdocre.relations import relation_names

ROOT = Path(__file__).resolve().parents[2]


def _document(title: str, words: list[list[str]], entities: list[list[tuple[int, int, int]]]) -> dict:
    """A DocRED document; each entity a list of mentions (sentence, start, end)."""
    return {"title": title, "sents": words,
            "vertexSet": [[{"name": " ".join(words[s][a:b]), "pos": [a, b], "sent_id": s, "type": "LOC"}
                           for s, a, b in mentions] for mentions in entities]}


DOCUMENTS = [
    _document("River doc", [["the", "city", "lives", "near", "the", "river"], ["a", "word", "of", "the", "city"]],
              [[(0, 1, 2), (1, 4, 5)], [(0, 5, 6)], [(1, 1, 2)]]),
    _document("Born doc", [["the", "word", "was", "born", "in", "a", "city"]], [[(0, 1, 2)], [(0, 6, 7)]]),
    # sentence 0 has 3 words: the mention [2, 5) is outside it
    _document("Broken doc", [["the", "river", "city"]], [[(0, 0, 1)], [(0, 2, 5)]]),
    _document("Near doc", [["a", "river", "near", "the", "city"], ["the", "river", "was", "born"]],
              [[(0, 1, 2), (1, 1, 2)], [(0, 4, 5)]]),
]
INVALID_INDEX = 2


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    """A relation classifier on a 2-layer random BERT, saved as `dsdocre finetune` saves one."""
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.model import ModelConfig, RelationClassifier

    root = tmp_path_factory.mktemp("api")
    (root / "bert").mkdir()
    bert = tiny_bert(root / "bert")
    tokenizer, added = load_tokenizer(bert)
    torch.manual_seed(0)
    model = RelationClassifier(ModelConfig(dropout=0.0, window_overlap=8, pair_dim=16), tokenizer,
                               encoder_dir=bert, added_tokens=added)
    model.save_pretrained(root / "model", threshold=0.5)
    return root / "model"


@pytest.fixture(scope="module")
def documents_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("docs") / "docs.json"
    path.write_text(json.dumps(DOCUMENTS))
    return path


@pytest.fixture(scope="module")
def threshold(model_dir) -> float:
    """A threshold that keeps some facts and drops others, far (in 5-decimal scores) from any score:
    no fact is a rounding away from flipping between two processes."""
    scores = np.unique([f.score for f in load_model(model_dir, "cpu").predict(DOCUMENTS, threshold=0.0).facts])
    gaps = np.diff(scores)
    top = len(scores) * 3 // 4  # the widest gap in the top quarter
    cut = top + int(np.argmax(gaps[top:]))
    assert gaps[cut] > 1e-4
    return float((scores[cut] + scores[cut + 1]) / 2)


def _cli(*args) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc


def test_the_api_gives_the_facts_dsdocre_predict_writes(model_dir, documents_file, threshold, tmp_path):
    out = tmp_path / "result.json"
    proc = _cli("predict", "--model", model_dir, "--input", documents_file, "--out", out, "--threshold", threshold,
                "--device", "cpu")
    result = load_model(model_dir, device="cpu").predict(documents_file, threshold=threshold)

    written = json.loads(out.read_text())
    assert written == [{k: v for k, v in f.to_submission().items() if k != "score"} for f in result.facts]
    assert 0 < len(result.facts) < 3 * 96  # some facts, not every candidate
    rejected = [json.loads(line) for line in (tmp_path / "result.rejected.jsonl").read_text().splitlines()]
    assert rejected == [r.to_json() for r in result.invalid]
    assert f"{len(result.facts)} facts on 3 documents" in proc.stdout
    listing = out.with_suffix(".txt").read_text()
    top = max(result.facts, key=lambda f: f.score)
    assert (f"  {top.head_name} [{top.head}]  --{top.relation_name} ({top.relation})-->  {top.tail_name} "
            f"[{top.tail}]   p={top.score:.3f}") in listing


def test_documents_as_dicts_give_what_their_file_gives(model_dir, documents_file):
    extractor = load_model(model_dir, device=torch.device("cpu"))
    from_file = extractor.predict(documents_file, batch_size=2)
    from_dicts = extractor.predict(DOCUMENTS, batch_size=2)  # the same batches: padding moves the last bits
    assert from_dicts.facts == from_file.facts and from_file.facts
    assert from_dicts.threshold == from_file.threshold == extractor.threshold == 0.5  # saved with the model
    assert [r.to_json()["reasons"] for r in from_dicts.invalid] == [r.to_json()["reasons"] for r in from_file.invalid]
    assert from_file.invalid[0].source == str(documents_file) and from_dicts.invalid[0].source == "<documents>"


def test_facts_carry_names_and_scores(model_dir):
    result = load_model(model_dir, device="cpu").predict(DOCUMENTS, threshold=0.5)
    names = relation_names()
    river = result.documents[0]
    assert [d.title for d in result.documents] == ["River doc", "Born doc", "Near doc"]
    fact = next(f for f in result.facts if f.title == "River doc" and f.head == 0)
    assert isinstance(fact, Fact) and fact.head_name == river.entity_name(0) == "city"
    assert fact.tail_name == river.entity_name(fact.tail) and fact.relation_name == names[fact.relation]
    assert all(0.5 <= f.score <= 1 for f in result.facts)


def test_an_invalid_document_is_reported_with_its_reasons(model_dir):
    extractor = load_model(model_dir, device="cpu")
    result = extractor.predict(DOCUMENTS)
    assert [(r.index, r.title) for r in result.invalid] == [(INVALID_INDEX, "Broken doc")]
    problem = result.invalid[0].problems[0]
    assert problem.field == "vertexSet[1][0].pos" and "outside sentence 0" in problem.message
    assert "Broken doc" not in {f.title for f in result.facts}

    with pytest.raises(InvalidDocumentsError, match=r"document 2 'Broken doc': vertexSet\[1\]\[0\]\.pos") as err:
        extractor.predict(DOCUMENTS, on_invalid="raise")
    assert err.value.invalid[0].index == INVALID_INDEX
    assert not extractor.predict([]).facts  # nothing in, nothing out


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
