"""Checkpoints of a training run: DeepSpeed's own ``save_checkpoint`` / ``load_checkpoint`` (model,
optimizer and scheduler state, each rank's ZeRO partition) with the loop's client state (step,
data position, RNG), and the encoder exported beside them in the ``save_pretrained`` layout.

Layout under the run's output folder::

    checkpoints/
      latest              the tag of the newest complete checkpoint (DeepSpeed writes it last)
      step00000040/       one DeepSpeed checkpoint (every rank's files) + client state
    encoder/              the newest checkpoint's encoder: AutoModel.from_pretrained(encoder/) loads it,
                          and `dsdocre finetune --set model.encoder=encoder/` starts from it

A crash while saving leaves ``latest`` naming the previous checkpoint, so a resume never reads a
half-written one; the exported encoder is swapped in with renames (complete or absent).
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from dsdocre.data.manifest import write_json_atomic
from dsdocre.train import distributed
from dsdocre.train.engine import full_state_dict

CHECKPOINTS = "checkpoints"
ENCODER = "encoder"


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def rng_state() -> dict:
    import torch

    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def latest_path(run_dir: str | Path) -> Path:
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    return ckpt_dir / (ckpt_dir / "latest").read_text().strip()


def has_checkpoint(run_dir: str | Path) -> bool:
    return (Path(run_dir) / CHECKPOINTS / "latest").is_file()


def saved_fingerprint(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / CHECKPOINTS / "run.json"
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


def save(engine, run_dir: str | Path, step: int, client_state: dict, keep: int = 2,
         export: Callable[[dict, Path], None] | None = None, fingerprint: str | None = None) -> Path:
    """Save a checkpoint on every rank (a collective), then (rank 0) export with ``export(full
    state dict, folder)`` and drop all but the newest ``keep`` checkpoints."""
    import torch

    ckpt_dir = Path(run_dir) / CHECKPOINTS
    tag = tag_of(step)
    # Each rank's RNG (DeepSpeed keeps rank 0's client state only), written before DeepSpeed's own
    # files and its `latest` pointer, which moves last.
    (ckpt_dir / tag).mkdir(parents=True, exist_ok=True)
    torch.save(rng_state(), ckpt_dir / tag / f"rng-rank{distributed.rank()}.pt")
    if fingerprint is not None and distributed.is_main_process():
        write_json_atomic(ckpt_dir / "run.json", {"fingerprint": fingerprint})
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=client_state, save_latest=True)
    if distributed.is_main_process():
        tags = sorted(p.name for p in ckpt_dir.glob("step*") if p.is_dir())
        for old in tags[:-keep] if keep > 0 else []:
            shutil.rmtree(ckpt_dir / old, ignore_errors=True)
    if export:
        export_only(engine, run_dir, export)
    else:
        distributed.barrier()
    return ckpt_dir / tag


def export_only(engine, run_dir: str | Path, export: Callable[[dict, Path], None]) -> None:
    """Only the export (no DeepSpeed checkpoint): a collective under ZeRO-3, written by rank 0."""
    state = full_state_dict(engine)
    if distributed.is_main_process():
        export_atomically(lambda folder: export(state, folder), Path(run_dir) / ENCODER)
    distributed.barrier()


def write_records(path: str | Path, records: list[dict]) -> None:
    """A JSON-lines record file rewritten as ``records`` (atomically): a resumed run's file holds
    what its checkpoint had seen, never what a killed run wrote after it."""
    from dsdocre.data.manifest import tmp_path

    path = Path(path)
    tmp = tmp_path(path)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(path)


def keep_records_up_to(path: str | Path, step: int) -> None:
    """Keep the lines of a JSON-lines record file whose ``step`` is at most ``step``."""
    path = Path(path)
    if path.exists():
        write_records(path, [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step])


def load_latest(engine, run_dir: str | Path) -> dict | None:
    """Restore the newest complete checkpoint into ``engine``; its client state, or None when the
    run has none (a fresh start)."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    if not (ckpt_dir / "latest").is_file():
        return None
    import torch

    path, client_state = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        raise RuntimeError(f"{ckpt_dir}: 'latest' names {(ckpt_dir / 'latest').read_text().strip()}, "
                           "which DeepSpeed could not load")
    rng = ckpt_dir / (ckpt_dir / "latest").read_text().strip() / f"rng-rank{distributed.rank()}.pt"
    if rng.exists():  # absent when resuming on more processes than wrote the checkpoint
        set_rng_state(torch.load(rng, weights_only=False))
    return client_state


def export_atomically(write: Callable[[Path], None], folder: Path) -> None:
    """``write(tmp)`` into a fresh temporary folder, then swap it in: complete or absent."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write(tmp)
    if folder.exists():
        old = folder.with_name(folder.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        folder.replace(old)
        tmp.replace(folder)
        shutil.rmtree(old)
    else:
        tmp.replace(folder)


def export_encoder(encoder_model, tokenizer, state: dict, folder: Path, prefix: str, **metadata) -> None:
    """The encoder (a transformers model) with the weights in ``state`` under ``prefix``, and its
    tokenizer (marker tokens included), in the ``save_pretrained`` layout."""
    weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    encoder_model.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)
    (folder / "dsdocre_pretrain.json").write_text(json.dumps(metadata, indent=2))
