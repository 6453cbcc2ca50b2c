"""Inference precision and batch size by device: bf16 autocast on a GPU that has bf16, float32 on
the CPU (whose outputs must not change)."""

from __future__ import annotations

import contextlib

import torch

from dsdocre.model.device import default_batch_size, inference_precision


def test_cpu_inference_stays_float32_and_gpu_inference_autocasts_to_bf16(monkeypatch):
    assert isinstance(inference_precision("cpu"), contextlib.nullcontext)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(torch, "autocast", lambda device_type, dtype: ("autocast", device_type, dtype))
    assert inference_precision("cuda:0") == ("autocast", "cuda", torch.bfloat16)  # (a CPU build has no CUDA autocast)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 0))  # no native bf16
    assert isinstance(inference_precision("cuda:0"), contextlib.nullcontext)
    assert default_batch_size("cpu") == 4 and default_batch_size(torch.device("cuda", 1)) == 32


def test_cpu_scores_are_unchanged_by_the_precision_context(tmp_path):
    """The rank model's scores on the CPU are those of a plain float32 forward pass."""
    from dsdocre.data.documents import Document
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.model.classifier import ModelConfig
    from dsdocre.model.rank import RankModel, score_documents
    from dsdocre.testing import tiny_bert

    (tmp_path / "enc").mkdir()
    encoder = tiny_bert(tmp_path / "enc")
    tokenizer, added = load_tokenizer(encoder, 8)
    torch.manual_seed(0)
    model = RankModel(ModelConfig(encoder=encoder, max_entities=8, pair_dim=16, window_overlap=8), tokenizer,
                      encoder_dir=encoder, added_tokens=added).eval()
    doc = Document.from_json({"title": "t", "sents": [["the", "city", "of", "river", "near", "a", "city"]],
                              "vertexSet": [[{"name": "city", "sent_id": 0, "pos": [1, 2], "type": "LOC"}],
                                            [{"name": "river", "sent_id": 0, "pos": [3, 4], "type": "LOC"}],
                                            [{"name": "city", "sent_id": 0, "pos": [6, 7], "type": "LOC"}]],
                              "labels": []})
    encoding = tokenizer.encode(doc)
    scored = score_documents(model, [encoding])[0]
    from dsdocre.data.examples import PairExample, collate

    empty = torch.zeros(0, dtype=torch.long).numpy()
    batch = collate([PairExample(None, encoding, empty, empty, torch.zeros(0, 97).numpy())], tokenizer.pad_id)
    with torch.no_grad():
        plain = model.score_all_pairs(batch)[0].float().numpy()
    assert (scored == plain).all()
