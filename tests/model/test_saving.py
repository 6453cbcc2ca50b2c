"""A model trained in bf16 (DeepSpeed casts the whole model on a GPU) saves and loads back as a
float32 model whose encoder and heads agree: before, the encoder came back in bf16 beside float32
heads and the first forward pass failed with a dtype mismatch."""

from __future__ import annotations

import json

import pytest
import torch

from dsdocre.data.encoding import load_tokenizer
from dsdocre.model.classifier import ModelConfig, RelationClassifier
from dsdocre.model.rank import RankModel
from dsdocre.testing import tiny_bert


@pytest.fixture
def tiny_encoder(tmp_path):
    folder = tmp_path / "encoder"
    folder.mkdir()
    return tiny_bert(folder)


def _batch(model) -> dict:
    from dsdocre.data.documents import Document
    from dsdocre.data.examples import build_examples, collate

    doc = Document.from_json({"title": "t", "sents": [["the", "city", "of", "river"], ["born", "near", "a", "city"]],
                              "vertexSet": [[{"name": "city", "sent_id": 0, "pos": [1, 2], "type": "LOC"}],
                                            [{"name": "river", "sent_id": 0, "pos": [3, 4], "type": "LOC"}],
                                            [{"name": "city", "sent_id": 1, "pos": [3, 4], "type": "LOC"}]],
                              "labels": []})
    return collate(build_examples([doc], model.tokenizer), model.tokenizer.pad_id)


@pytest.mark.parametrize("cls", [RelationClassifier, RankModel])
def test_a_bf16_model_saves_and_loads_as_float32(tiny_encoder, tmp_path, cls):
    tokenizer, added = load_tokenizer(tiny_encoder, 8)
    config = ModelConfig(encoder=tiny_encoder, max_entities=8, pair_dim=16, window_overlap=8)
    torch.manual_seed(0)
    trained = cls(config, tokenizer, encoder_dir=tiny_encoder, added_tokens=added).to(torch.bfloat16)
    trained.save_pretrained(tmp_path / "model")

    saved_config = json.loads((tmp_path / "model" / "encoder" / "config.json").read_text())
    assert saved_config.get("dtype", saved_config.get("torch_dtype")) == "float32"
    loaded, _ = cls.from_pretrained(tmp_path / "model")
    assert {p.dtype for p in loaded.parameters()} == {torch.float32}
    for (name, a), (_, b) in zip(trained.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a.float(), b), name  # the bf16 weights, exactly, in float32
    loaded.eval()
    with torch.no_grad():
        logits = loaded(_batch(loaded))  # raised "expected both operands to have the same dtype" before
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_the_pretrained_encoder_export_is_float32(tiny_encoder, tmp_path):
    from transformers import AutoModel

    from dsdocre.train.checkpoint import export_encoder

    tokenizer, _ = load_tokenizer(tiny_encoder, 8)
    encoder = AutoModel.from_pretrained(tiny_encoder).to(torch.bfloat16)
    state = {f"encoder.model.{k}": v for k, v in encoder.state_dict().items()}
    export_encoder(encoder, tokenizer.tokenizer, state, tmp_path / "export", "encoder.model.", step=1)
    again = AutoModel.from_pretrained(tmp_path / "export")  # no dtype given: what the config says
    assert {p.dtype for p in again.parameters()} == {torch.float32}
    assert torch.equal(again.embeddings.word_embeddings.weight, encoder.embeddings.word_embeddings.weight.float())
