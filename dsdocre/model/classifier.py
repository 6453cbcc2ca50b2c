"""The relation classifier (fine-tuning) and its ``save_pretrained`` / ``from_pretrained``.

:class:`RelationClassifier`: document encoder (:mod:`dsdocre.model.encoder`) -> entity states -> head/tail projections -> pair bilinear (hidden
  256, on :mod:`dsdocre.kernels`) -> linear over 97 classes (NA + 96 relations), trained with
  multi-label binary cross-entropy.

A saved model is a directory in the ``save_pretrained`` style::

    model_dir/
      encoder/               the fine-tuned encoder + tokenizer: AutoModel.from_pretrained(model_dir/encoder)
      heads.safetensors      everything that is not the encoder
      dsdocre_model.json     ModelConfig, the relation ids, the special token ids (CLS, SEP, PAD),
                             the encoder's input limit and vocabulary size, the tokenizer
                             fingerprint, the decision threshold
"""

from __future__ import annotations

import json
from typing import Literal, Optional
from pathlib import Path

import torch
from torch import nn

from dsdocre.config import Section
from dsdocre.data.encoding import MarkerTokenizer, load_tokenizer, resolve_encoder_dir
from dsdocre.errors import UserError
from dsdocre.kernels import PairBilinear
from dsdocre.model.encoder import DocumentEncoder, pool_entities
from dsdocre.relations import relation_ids


def fp32(tensor: torch.Tensor) -> torch.Tensor:
    """A CPU copy for saving: floating-point tensors in float32 (what the model trained in, bf16 or
    fp16 under DeepSpeed, is not what a loader should have to know), others as they are."""
    tensor = tensor.detach().cpu()
    return (tensor.float() if tensor.is_floating_point() else tensor).contiguous()


def save_encoder_fp32(encoder_model, state: dict, folder: Path) -> None:
    """``encoder_model.save_pretrained(folder)`` with the weights of ``state`` in float32, and a
    config that says so: a model trained in bf16 loads back as the float32 model its heads are."""
    encoder_model.save_pretrained(folder, state_dict={k: fp32(v) for k, v in state.items()})
    config_path = Path(folder) / "config.json"
    config = json.loads(config_path.read_text())
    for key in ("dtype", "torch_dtype"):  # transformers 5 writes "dtype", 4.x "torch_dtype"
        if key in config:
            config[key] = "float32"
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


class ModelConfig(Section):
    """The ``model:`` section of a training config; stored with every saved model."""

    encoder: str = "default"  # a BERT-family directory, or "default" for the packaged MiniLM
    pair_dim: int = 256  # size of the relation representation r(i, k) (the paper: 256)
    entity_projection: bool = True  # tanh(Linear) on head and tail entity states before the bilinear
    pair_activation: Literal["none", "relu", "tanh"] = "none"  # between bilinear and classifier
    window_overlap: int = 128  # tokens shared by consecutive windows of a long document
    bilinear_impl: Literal["auto", "factored", "triton", "gathered"] = "auto"  # dsdocre.kernels implementation
    max_entities: int = 128  # marker vocabulary size (entities per document)
    dropout: float = 0.1  # on entity states and pair features
    encoder_dropout: Optional[float] = None  # the encoder's hidden/attention dropout; null = its own config
    num_classes: int = 97


class RelationClassifier(nn.Module):
    """The fine-tuning model: every kept entity pair -> logits over NA + 96 relations.

    ``tokenizer`` (a :class:`MarkerTokenizer`) gives the special token ids the encoder wraps each
    window in, the number of marker tokens added to the vocabulary, and the tokenizer's own length
    limit; they are saved with the model and restored by :meth:`from_pretrained`.
    """

    TASK = "relation_classification"  # stored with the model; from_pretrained refuses another task's
    CONFIG = ModelConfig  # the model section a saved model's ``dsdocre_model.json`` is read back into

    def __init__(self, config: ModelConfig, tokenizer: MarkerTokenizer, encoder_dir: str | None = None,
                 added_tokens: int = 0):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.special_ids = (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)
        self.encoder = DocumentEncoder(resolve_encoder_dir(encoder_dir or config.encoder), config.window_overlap,
                                       added_tokens, tokenizer_max_length=tokenizer.tokenizer.model_max_length,
                                       dropout=config.encoder_dropout)
        d = self.encoder.hidden_size
        self.dropout = nn.Dropout(config.dropout)
        if config.entity_projection:
            self.head_proj = nn.Linear(d, d)
            self.tail_proj = nn.Linear(d, d)
        self.pair = PairBilinear(d, d, config.pair_dim, impl=config.bilinear_impl)
        self.classifier = nn.Linear(config.pair_dim, config.num_classes)

    def entity_states(self, batch: dict) -> torch.Tensor:
        cls_id, sep_id, pad_id = self.special_ids
        states = self.encoder(batch["tokens"], batch["lengths"], cls_id, sep_id, pad_id)
        return pool_entities(states, batch["mention_pos"], batch["mention_mask"])

    def forward(self, batch: dict) -> torch.Tensor:
        """logits [B, P, num_classes] for the pairs ``batch["heads"], batch["tails"]``."""
        entities = self.dropout(self.entity_states(batch))
        if self.config.entity_projection:
            left, right = torch.tanh(self.head_proj(entities)), torch.tanh(self.tail_proj(entities))
        else:
            left = right = entities
        if self.config.pair_activation == "none":
            # Bilinear then linear with nothing between is one bilinear form: fuse them.
            return self.pair(left, batch["heads"], batch["tails"], right=right,
                             pair_mask=batch["pair_mask"], out_proj=self.classifier)
        pairs = self.pair(left, batch["heads"], batch["tails"], right=right, pair_mask=batch["pair_mask"])
        act = torch.relu if self.config.pair_activation == "relu" else torch.tanh
        return self.classifier(self.dropout(act(pairs)))

    def external_parameters(self) -> list:
        """Parameters read outside their own module's forward: the fused path hands the classifier's
        weight to the pair operator, so ``self.classifier`` never runs its forward and ZeRO-3 must be
        told to gather it for this module's (``deepspeed.zero.register_external_parameter``)."""
        if self.config.pair_activation != "none":
            return []
        return [self.classifier.weight, self.classifier.bias]

    # ---- save_pretrained / from_pretrained ------------------------------------------------
    def save_pretrained(self, out_dir: str | Path, **metadata) -> None:
        """The model directory, complete or not at all; ``metadata`` (threshold, epoch, ...) goes
        into ``dsdocre_model.json`` beside what a loader needs."""
        from safetensors.torch import save_file

        from dsdocre.savedir import write_atomically

        cls_id, sep_id, pad_id = self.special_ids
        meta = {"task": self.TASK, "model": self.config.model_dump(), "relations": list(relation_ids()),
                "special_token_ids": {"cls": cls_id, "sep": sep_id, "pad": pad_id},
                "max_input_tokens": self.encoder.max_len, "vocab_size": self.encoder.model.config.vocab_size,
                "tokenizer_fingerprint": self.tokenizer.fingerprint(), **metadata}

        def write(tmp: Path) -> None:
            save_encoder_fp32(self.encoder.model, self.encoder.model.state_dict(), tmp / "encoder")
            self.tokenizer.tokenizer.save_pretrained(tmp / "encoder")
            heads = {k: fp32(v) for k, v in self.state_dict().items() if not k.startswith("encoder.")}
            save_file(heads, str(tmp / "heads.safetensors"))
            (tmp / "dsdocre_model.json").write_text(json.dumps(meta, indent=2))

        # Complete or not at all (swapped in with renames), with checksums the loader verifies.
        write_atomically(write, Path(out_dir))

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> tuple["RelationClassifier", dict]:
        """``(model, metadata)`` from a directory written by :meth:`save_pretrained`; the model
        carries its tokenizer (``model.tokenizer``) and special token ids."""
        from safetensors.torch import load_file

        from dsdocre.savedir import require_sound

        model_dir = Path(model_dir)
        require_sound(model_dir)
        meta_path = model_dir / "dsdocre_model.json"
        if not meta_path.is_file():
            raise UserError(f"{model_dir} is not a dsdocre model directory (no dsdocre_model.json); "
                            "pass the model/ folder that `dsdocre finetune` wrote")
        meta = json.loads(meta_path.read_text())
        if meta.get("task", RelationClassifier.TASK) != cls.TASK:
            raise UserError(f"{model_dir} holds a {meta.get('task')} model, not a {cls.TASK} model")
        if meta.get("relations") != list(relation_ids()):
            raise UserError(f"{model_dir}: relation inventory differs from this version's")
        config = cls.CONFIG.model_validate({k: v for k, v in meta["model"].items() if k in cls.CONFIG.model_fields})
        tokenizer, added = load_tokenizer(model_dir / "encoder", config.max_entities)
        if added:
            raise UserError(f"{model_dir}: the saved tokenizer lacks marker tokens; was it saved by dsdocre?")
        if meta.get("tokenizer_fingerprint") and meta["tokenizer_fingerprint"] != tokenizer.fingerprint():
            raise UserError(f"{model_dir}: tokenizer fingerprint differs from the one the model was trained with")
        model = cls(config, tokenizer, encoder_dir=str(model_dir / "encoder"))
        saved = meta.get("special_token_ids")
        if saved:  # the ids the model was trained with win over whatever the tokenizer now says
            model.special_ids = (saved["cls"], saved["sep"], saved["pad"])
        missing, unexpected = model.load_state_dict(load_file(str(model_dir / "heads.safetensors")), strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise UserError(f"{model_dir}: heads do not match the model (missing {missing}, unexpected {unexpected})")
        return model, meta
