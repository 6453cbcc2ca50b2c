"""Helpers for tests and benchmarks: tiny randomly initialised encoders, built on the spot.

The test suite (``tests/conftest.py``) and the benchmark scripts (``benchmarks/kill_resume.py``)
both need a BERT-family encoder that loads in milliseconds and needs no download. What they test
is the machinery around the encoder (DeepSpeed, checkpoints, the launcher, tokenization with
entity markers), not what it has learnt, so its weights are random (seeded) and its vocabulary is a
few words. Each builder writes a ``save_pretrained`` directory that ``--encoder DIR`` and
``transformers.AutoModel.from_pretrained`` accept, and returns its path::

    from dsdocre.testing import tiny_bert
    encoder = tiny_bert(tmp_path)            # 2 layers, hidden size 32, 64 positions

Nothing in the library imports this module; transformers and torch are imported when a builder runs.
"""

from __future__ import annotations

from pathlib import Path

#: The words of the tiny BERT's vocabulary after its special and ``[unusedK]`` tokens.
TINY_WORDS = "the a of in city river was born lives near word"


def tiny_bert(directory, max_positions: int = 64) -> str:
    """A 2-layer BERT (hidden size 32) with a word-level vocabulary that has ``[unused0..19]``
    (entity markers fit without resizing), saved with its fast tokenizer (``model_max_length``
    48) under ``directory``. Seeded: the same weights every time."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    directory = Path(directory)
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(20)] + TINY_WORDS.split()
    (directory / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(str(directory / "vocab.txt"), model_max_length=48).save_pretrained(directory)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(directory)
    return str(directory)


def tiny_roberta(directory, max_positions: int = 66) -> str:
    """A 2-layer RoBERTa with a byte-level BPE trained on the spot: no ``[unusedK]`` tokens (the
    encoder adds its markers and resizes the embeddings) and position ids offset by the padding
    index, so it holds ``max_positions - 2`` tokens. Seeded: the same weights every time."""
    import torch
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    directory = Path(directory)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the city of river was born lives near a word"] * 20, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(directory))
    tok = RobertaTokenizerFast(vocab_file=str(directory / "vocab.json"), merges_file=str(directory / "merges.txt"),
                               model_max_length=max_positions - 2)
    tok.save_pretrained(directory)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(directory)
    return str(directory)
