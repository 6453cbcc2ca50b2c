"""Shared fixtures. Tests run offline on the packaged encoder and never need a GPU."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def encoder_dir() -> str:
    from dsdocre.data.encoding import default_encoder_dir

    return default_encoder_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "redocred" / "train.json").exists():
        pytest.skip(f"real data not present at {SHARED_DATA} (only CI and developers have ../shared)")
    return SHARED_DATA


# ---- small randomly initialised encoders built here (no download) ---------------------------------
def tiny_bert(tmp_path, max_positions=64):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"[unused{i}]" for i in range(20)] + \
        [w for w in "the a of in city river was born lives near word".split()]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    BertTokenizerFast(str(tmp_path / "vocab.txt"), model_max_length=48).save_pretrained(tmp_path)
    config = BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=max_positions)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(tmp_path)
    return str(tmp_path)


def tiny_roberta(tmp_path, max_positions=66):
    """A RoBERTa with a byte-level BPE trained here: no [unusedK] tokens, positions offset by padding."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaConfig, RobertaModel, RobertaTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the city of river was born lives near a word"] * 20, vocab_size=300,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(tmp_path))
    tok = RobertaTokenizerFast(vocab_file=str(tmp_path / "vocab.json"), merges_file=str(tmp_path / "merges.txt"),
                               model_max_length=max_positions - 2)
    tok.save_pretrained(tmp_path)
    config = RobertaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                           intermediate_size=64, max_position_embeddings=max_positions, pad_token_id=1,
                           bos_token_id=0, eos_token_id=2)
    torch.manual_seed(0)
    RobertaModel(config).save_pretrained(tmp_path)
    return str(tmp_path)



# ---- several processes under the deepspeed launcher ----------------------------------------------
def launch_stage(stage: str, *args, procs: int = 2, port: int = 29617):
    """``launch/deepspeed_stage.sh STAGE ARGS`` with ``procs`` processes on this machine (CPU, gloo)."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
           "TOKENIZERS_PARALLELISM": "false", "NUM_PROCS": str(procs), "MASTER_PORT": str(port),
           "PYTHON": sys.executable, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    proc = subprocess.run(["bash", "launch/deepspeed_stage.sh", stage, *map(str, args)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def deepspeed_config(tmp_path: Path, name: str, micro: int, accumulation: int, base: str = "finetune_zero2.json") -> Path:
    """A copy of ``configs/deepspeed/BASE`` with another micro-batch and accumulation."""
    import json

    cfg = json.loads((ROOT / "configs/deepspeed" / base).read_text())
    cfg.update(train_micro_batch_size_per_gpu=micro, gradient_accumulation_steps=accumulation)
    (tmp_path / name).write_text(json.dumps(cfg))
    return tmp_path / name


def assert_same_saved_weights(model_a: Path, model_b: Path) -> None:
    """Two saved models (``save_pretrained`` layout) hold the same non-empty tensors, to float tolerance."""
    from safetensors.torch import load_file

    for pattern in ("heads.safetensors", "encoder/*.safetensors"):
        a, b = (load_file(str(next(m.glob(pattern)))) for m in (model_a, model_b))
        assert a.keys() == b.keys() and a, pattern
        for name in a:
            assert torch.allclose(a[name].float(), b[name].float(), atol=2e-5, rtol=1e-4), f"{pattern}: {name}"


# ---- the fault table (docs/reliability.md) ------------------------------------------------------
@pytest.fixture
def fault_record(request):
    """``fault_record(fault=..., how=..., times=N, outcome=..., lost=0)``: a fault this test tried
    and what happened, appended to the JSON-lines file named by ``DSDOCRE_FAULT_LOG`` (set by
    ``benchmarks/fault_table.py``, which builds docs/reliability.md from it). Call it after the
    test's assertions: a failing test records nothing. Without the variable it does nothing."""
    import json

    def record(*, fault: str, how: str, times: int, outcome: str, lost: int | str = 0) -> None:
        path = os.environ.get("DSDOCRE_FAULT_LOG")
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"fault": fault, "how": how, "times": times, "outcome": outcome,
                                    "lost": lost, "test": request.node.nodeid}) + "\n")

    return record
