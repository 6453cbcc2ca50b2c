"""Checkpoints of a training run: DeepSpeed's own ``save_checkpoint`` / ``load_checkpoint`` (model,
optimizer and scheduler state, each rank's ZeRO partition) with the loop's client state (step,
data position, RNG), verified by checksums, and the encoder exported beside them in the
``save_pretrained`` layout.

Layout under the run's output folder::

    checkpoints/
      latest              the tag of the newest verified checkpoint (written last, atomically)
      run.json            the run's config fingerprint (a resume of another run is refused)
      step00000040/       one DeepSpeed checkpoint (every rank's files), rng-rank{r}.pt per rank,
                          and dsdocre_checksums.json: size and sha256 of every file, the world size
      step00000040_universal/  DeepSpeed's universal form of it, made when a run resumes on
                          another number of processes (ds_to_universal), with its own checksums
    encoder/              the newest checkpoint's encoder: AutoModel.from_pretrained(encoder/) loads it,
                          and `dsdocre finetune --set model.encoder=encoder/` starts from it

The guarantees (docs/reliability.md): a kill at any point of a save leaves ``latest`` naming the
previous checkpoint, whose checksums still hold; the torn folder has no checksum file and is
removed by the next save. A resume verifies the checkpoint it reads; one that fails (a file
missing, truncated or altered) is refused with the reason, and the newest older one that passes
is used. The exported encoder is written beside its old copy and swapped in with renames, with
its own checksum file (complete or absent; :func:`verify_export`). Checkpoints live on a file
system every rank sees (rank 0 writes the checksums of all ranks' files and verifies them).
"""

from __future__ import annotations

import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from dsdocre import fsio
from dsdocre.errors import UserError
from dsdocre.savedir import CHECKSUMS, verify_folder, write_checksums
from dsdocre.savedir import write_atomically as swap_in
from dsdocre.train import distributed, faults
from dsdocre.train.config import ELASTIC_KEYS, RESUMABLE_CHANGES, TrainingConfig
from dsdocre.train.distributed import full_state_dict, log

CHECKPOINTS = "checkpoints"
ENCODER = "encoder"
UNIVERSAL = "_universal"

# The loop's client-state key for the count of skipped (non-finite) steps. Not "skipped_steps":
# DeepSpeed keeps its own value under that name and leaves it out of the client state it returns.
SKIPPED_KEY = "nonfinite_steps_skipped"

# What the ranks send to agree() while choosing the checkpoint to resume from (the largest wins):
# rank 0 sends the step it verified, or REFUSED; the others send FOLLOW, below any step.
REFUSED = -2
FOLLOW = -(10 ** 9)


def tag_of(step: int) -> str:
    return f"step{step:08d}"


def rng_state() -> dict:
    """This process's generators: Python's, numpy's, torch's CPU one and, with CUDA, its GPU's
    (dropout on a GPU draws from it: without it a GPU resume is not exact)."""
    import torch

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()  # the current device's: this rank's GPU
    return state


def set_rng_state(state: dict) -> None:
    import torch

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def has_checkpoint(run_dir: str | Path) -> bool:
    """Whether the run has a checkpoint to resume from (``latest``, or a verified-looking folder
    when ``latest`` itself was lost)."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    return (ckpt_dir / "latest").is_file() or any(ckpt_dir.glob(f"step*/{CHECKSUMS}"))


def saved_fingerprint(run_dir: str | Path) -> str | None:
    path = Path(run_dir) / CHECKPOINTS / "run.json"
    return json.loads(path.read_text()).get("fingerprint") if path.is_file() else None


# ---- checksums ----------------------------------------------------------------------------------
def checkpoint_meta(folder: Path) -> dict:
    """The checksum file's record of a checkpoint (step, world size, ZeRO stage, files); for one
    written before checksums existed, its world size from the per-rank RNG files."""
    if not (folder / CHECKSUMS).is_file():
        return {"world_size": len(list(folder.glob("rng-rank*.pt"))), "legacy": True}
    return json.loads((folder / CHECKSUMS).read_text())


def _missing_rank_files(folder: Path, world: int) -> list[str]:
    """The files DeepSpeed and this module write per rank, absent from ``folder``."""
    wanted = [f"rng-rank{r}.pt" for r in range(world)]
    if any(folder.glob("zero_pp_rank_*_optim_states.pt")):
        wanted += [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in range(world)]
    missing = [name for name in wanted if not (folder / name).is_file()]
    if not any(folder.glob("*model_states.pt")):
        missing.append("*model_states.pt")
    return missing


# ---- save ---------------------------------------------------------------------------------------
def save(engine, run_dir: str | Path, step: int, client_state: dict, keep: int = 2,
         export: Callable[[dict, Path], None] | None = None, fingerprint: str | None = None) -> Path:
    """Save a checkpoint on every rank (a collective): DeepSpeed's files and each rank's RNG, then
    (rank 0) the checksums and, once they are written, ``latest``; then the older checkpoints
    beyond ``keep`` are dropped and (with ``export``) the encoder is exported."""
    import torch
    from deepspeed.checkpoint.constants import (UNIVERSAL_CHECKPOINT_INFO, UNIVERSAL_CHECKPOINT_VERSION_KEY,
                                                UNIVERSAL_CHECKPOINT_VERSION_VALUE)

    ckpt_dir = Path(run_dir) / CHECKPOINTS
    tag = tag_of(step)
    folder = ckpt_dir / tag
    main, world = distributed.is_main_process(), distributed.world_size()
    if main:
        if folder.exists():  # a torn save of this very step by a killed run
            shutil.rmtree(folder)
        shutil.rmtree(folder.with_name(tag + UNIVERSAL), ignore_errors=True)
        folder.mkdir(parents=True)
        if fingerprint is not None:
            fsio.write_json_atomic(ckpt_dir / "run.json", {"fingerprint": fingerprint})
    distributed.barrier()
    # The state DeepSpeed's ds_to_universal needs to reshape the checkpoint for another world size.
    state = {**client_state, "world_size": world,
             UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}
    disk_full = None
    try:
        # Each rank's RNG (DeepSpeed keeps rank 0's client state only), then DeepSpeed's files.
        torch.save(rng_state(), folder / f"rng-rank{distributed.rank()}.pt")
        engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state, save_latest=False)
    except Exception as err:  # noqa: BLE001 - a full disk is explained, anything else re-raised
        disk_full = _disk_full_error(err, ckpt_dir, folder)
        if disk_full is None:
            raise
    if distributed.agree(distributed.FAILED if disk_full else distributed.CONTINUE) == distributed.FAILED:
        if main:  # the torn save: its space back, and nothing that looks like a checkpoint
            shutil.rmtree(folder, ignore_errors=True)
        raise disk_full or UserError(f"another rank could not write its part of {folder} (a full disk; see its "
                                     "log); the previous checkpoint stands")
    faults.kill_if_armed("kill-after-checkpoint-files", step)
    failed = None
    if main:
        missing = _missing_rank_files(folder, world)
        if missing:
            failed = f"checkpoint {folder} is incomplete after saving: {', '.join(missing)} missing"
        else:
            write_checksums(folder, step=step, world_size=world, zero_stage=int(engine.zero_optimization_stage()))
            fsio.write_text_atomic(ckpt_dir / "latest", tag)
            _prune(ckpt_dir, keep)
    if distributed.agree(distributed.FAILED if failed else distributed.CONTINUE) == distributed.FAILED:
        raise RuntimeError(failed or "rank 0 could not complete the checkpoint; see its log")
    if export:
        export_only(engine, run_dir, export)
    return folder


def _disk_full_error(err: BaseException, ckpt_dir: Path, folder: Path) -> UserError | None:
    """The one-line error for a checkpoint that did not fit on its disk, or None when ``err`` is
    something else. torch's writer loses the errno (``basic_ios::clear: iostream error``,
    ``unexpected pos``), so a failed write counts as a full disk when the space left is below what
    the rest of the checkpoint needed (the size of the newest complete one)."""
    previous = _newest_complete(ckpt_dir)
    needed = _folder_bytes(previous) if previous is not None else None
    free = fsio.free_bytes(folder)
    short = free is not None and (free < (1 << 20) or (needed is not None and free < needed - _folder_bytes(folder)))
    if not (fsio.is_disk_full(err, folder) or short):
        return None
    stands = (f"the previous checkpoint {previous.name} stands (`latest` names it; a resume starts there)"
              if previous is not None else "no earlier checkpoint exists (nothing to resume from)")
    return fsio.disk_full_error(folder, needed, stands, written_bytes=_folder_bytes(folder), cause=err)


def _newest_complete(ckpt_dir: Path) -> Path | None:
    latest = ckpt_dir / "latest"
    folder = ckpt_dir / latest.read_text().strip() if latest.is_file() else None
    return folder if folder is not None and (folder / CHECKSUMS).is_file() else None


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def _prune(ckpt_dir: Path, keep: int) -> None:
    """Drop complete checkpoints beyond the newest ``keep``, and torn ones (no checksums) older
    than the newest complete one."""
    folders = sorted(p for p in ckpt_dir.glob("step*") if p.is_dir() and not p.name.endswith(UNIVERSAL))
    complete = [p for p in folders if (p / CHECKSUMS).is_file()]
    doomed = complete[:-keep] if keep > 0 else []
    doomed += [p for p in folders if p not in complete and complete and p.name < complete[-1].name]
    for folder in doomed:
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(folder.with_name(folder.name + UNIVERSAL), ignore_errors=True)


# ---- resume -------------------------------------------------------------------------------------
@dataclass
class ResumePlan:
    """The verified checkpoint a run resumes from, chosen before its engine exists (a checkpoint
    of another world size is read through DeepSpeed's universal form, which the engine must be
    configured for)."""

    folder: Path  # the checkpoint (its RNG files, its checksums)
    step: int
    saved_world: int
    universal: bool  # saved by another number of processes: load step*_universal

    def deepspeed_config(self, ds_config: dict) -> dict:
        if not self.universal:
            return ds_config
        return {**ds_config, "checkpoint": {**ds_config.get("checkpoint", {}), "load_universal": True}}

    @property
    def load_tag(self) -> str:
        return self.folder.name + (UNIVERSAL if self.universal else "")


def plan_resume(run_dir: str | Path) -> ResumePlan | None:
    """Every rank calls it (a collective). Rank 0 verifies the checkpoint ``latest`` names; one that
    fails is refused with its reasons and the newest older one that passes is chosen (a UserError
    when none does). A checkpoint written by another number of processes is converted once to
    DeepSpeed's universal form (``ds_to_universal``). None when there is nothing to resume."""
    ckpt_dir = Path(run_dir) / CHECKPOINTS
    if not has_checkpoint(run_dir):
        return None
    distributed.init_process_group()
    world = distributed.world_size()
    step = -1
    if distributed.is_main_process():
        try:
            step = _choose_verified(ckpt_dir)
            meta = checkpoint_meta(ckpt_dir / tag_of(step))
            if meta["world_size"] != world:
                _make_universal(ckpt_dir / tag_of(step))
        except BaseException as e:  # release the other ranks, then fail here
            distributed.agree(REFUSED)
            raise e
    step = distributed.agree(step if distributed.is_main_process() else FOLLOW)
    if step == REFUSED:
        raise RuntimeError(f"rank 0 refused the checkpoints under {ckpt_dir}; see its log")
    folder = ckpt_dir / tag_of(step)
    saved_world = checkpoint_meta(folder)["world_size"]
    return ResumePlan(folder, step, saved_world, universal=saved_world != world)


def _choose_verified(ckpt_dir: Path) -> int:
    latest = (ckpt_dir / "latest").read_text().strip() if (ckpt_dir / "latest").is_file() else None
    folders = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir() and not p.name.endswith(UNIVERSAL)),
                     reverse=True)
    # `latest` first; newer folders than it are torn saves (latest moves only after the checksums)
    order = [p for p in folders if p.name == latest] + [p for p in folders if latest is None or p.name < latest]
    refused = []
    for folder in order:
        legacy_world = checkpoint_meta(folder).get("legacy") and checkpoint_meta(folder)["world_size"]
        if folder.name == latest and legacy_world and not _missing_rank_files(folder, legacy_world):
            # written by dsdocre before checkpoints carried checksums (DeepSpeed then wrote `latest`
            # last): complete, but nothing to verify it against
            log(f"WARNING: {folder} has no checksums (saved by an older dsdocre): resuming from it unverified")
            return int(folder.name[len("step"):])
        problems = verify_folder(folder)
        if not problems:
            if refused:
                log(f"resuming from the older checkpoint {folder}")
            return int(folder.name[len("step"):])
        refused.append(f"{folder.name}: {'; '.join(problems[:3])}")
        if folder.name == latest or (folder / CHECKSUMS).is_file():
            log(f"WARNING: checkpoint {folder} refused: {'; '.join(problems[:3])}")
    raise UserError(f"no checkpoint under {ckpt_dir} passes verification ({' | '.join(refused) or 'none found'}); "
                    "restore the files, or start over with --set training.resume=false")


def _make_universal(folder: Path) -> None:
    """DeepSpeed's universal checkpoint of ``folder`` beside it (kept until the folder is pruned)."""
    target = folder.with_name(folder.name + UNIVERSAL)
    if target.is_dir() and not verify_folder(target):
        return
    import contextlib
    import io

    from deepspeed.checkpoint import ds_to_universal

    fsio.remove_stale_temps(target)  # a conversion that was killed
    tmp = fsio.temp_path(target)  # ds_to_universal makes the folder
    shutil.rmtree(target, ignore_errors=True)
    log(f"{folder} was written by {checkpoint_meta(folder)['world_size']} processes: converting it to "
        f"DeepSpeed's universal checkpoint for {distributed.world_size()}")
    import argparse

    args = argparse.Namespace(input_folder=str(folder), output_folder=str(tmp), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=False)
    with contextlib.redirect_stdout(io.StringIO()):  # it prints every step of its work
        ds_to_universal.main(args)
    write_checksums(tmp, source=folder.name)
    fsio.fsync_tree(tmp)
    tmp.replace(target)
    fsio.fsync_dir(target.parent)


def resume_from(engine, plan: ResumePlan, seed: int = 0) -> dict:
    """Restore ``plan``'s checkpoint into ``engine`` (model, optimizer, scheduler) and this rank's
    RNG; returns the loop's client state. A rank the checkpoint has no RNG file for (it was
    written by fewer processes) is seeded from (seed, rank, step)."""
    import torch

    path, client_state = engine.load_checkpoint(str(plan.folder.parent), tag=plan.load_tag)
    if path is None:
        raise RuntimeError(f"DeepSpeed could not load the checkpoint {plan.folder.parent / plan.load_tag}")
    rng = plan.folder / f"rng-rank{distributed.rank()}.pt"
    if rng.exists():
        set_rng_state(torch.load(rng, weights_only=False))
    else:
        distributed.seed_everything(seed + 1_000_003 * (distributed.rank() + 1) + plan.step)
        print(f"rank {distributed.rank()} has no RNG state in {plan.folder} (written by {plan.saved_world} "
              "processes): seeded from (seed, rank, step)", flush=True)
    return client_state


def export_only(engine, run_dir: str | Path, export: Callable[[dict, Path], None]) -> None:
    """Only the export (no DeepSpeed checkpoint): a collective under ZeRO-3, written by rank 0."""
    state = full_state_dict(engine)
    if distributed.is_main_process():
        swap_in(lambda folder: export(state, folder), Path(run_dir) / ENCODER,
                what_stands=f"the encoder exported before stands in {Path(run_dir) / ENCODER}")
    distributed.barrier()


def write_records(path: str | Path, records: list[dict]) -> None:
    """A JSON-lines record file rewritten as ``records`` (atomically): a resumed run's file holds
    what its checkpoint had seen, never what a killed run wrote after it."""
    fsio.write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in records))


def keep_records_up_to(path: str | Path, step: int) -> None:
    """Keep the lines of a JSON-lines record file whose ``step`` is at most ``step``."""
    path = Path(path)
    if path.exists():
        write_records(path, [r for r in map(json.loads, path.read_text().splitlines()) if r["step"] <= step])


def export_encoder(encoder_model, tokenizer, state: dict, folder: Path, prefix: str, **metadata) -> None:
    """The encoder (a transformers model) with the weights in ``state`` under ``prefix``, and its
    tokenizer (marker tokens included), in the ``save_pretrained`` layout."""
    from dsdocre.model.classifier import save_encoder_fp32

    save_encoder_fp32(encoder_model, {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}, folder)
    tokenizer.save_pretrained(folder)
    (folder / "dsdocre_pretrain.json").write_text(json.dumps(metadata, indent=2))


# ---- the run's identity and the resume plan --------------------------------------------------
def run_fingerprint(config) -> str:
    """A run's identity for resumption: its stage config and DeepSpeed JSON, less what a resumed
    run may change (:data:`RESUMABLE_CHANGES`, :data:`ELASTIC_KEYS`, ``output_dir``, ``data.loader_workers``)."""
    import hashlib

    from dsdocre.config import load_deepspeed_config, to_plain

    plain = to_plain(config)
    plain.pop("output_dir", None)
    plain.get("data", {}).pop("loader_workers", None)  # how many processes build the steps, not which steps
    training = plain.get("training", {})
    for key in RESUMABLE_CHANGES:
        training.pop(key, None)
    if "deepspeed" in training:  # the JSON's content, less how the global batch is cut over processes
        ds_config = load_deepspeed_config(training.pop("deepspeed"))
        training["deepspeed_json"] = {k: v for k, v in ds_config.items() if k not in ELASTIC_KEYS}
    return hashlib.sha256(json.dumps(plain, sort_keys=True).encode()).hexdigest()[:16]


def resume_plan(training: TrainingConfig, run_dir: str | Path, fingerprint: str) -> ResumePlan | None:
    """The verified checkpoint under ``run_dir`` to resume from, or None for a fresh start (no
    checkpoint, or ``training.resume`` off). Call before building the engine (a checkpoint of
    another world size needs the engine configured for DeepSpeed's universal form: apply
    ``plan.deepspeed_config``). A checkpoint of another run (another ``fingerprint``) is refused
    rather than continued. Every rank calls it."""
    if not training.resume or not has_checkpoint(run_dir):
        return None
    saved = saved_fingerprint(run_dir)
    if saved != fingerprint:
        raise UserError(f"{run_dir} holds a checkpoint of another run (config fingerprint {saved}, this run's "
                        f"{fingerprint}): use another output_dir, or --set training.resume=false to start over")
    return plan_resume(run_dir)


def restore(engine, training: TrainingConfig, plan: ResumePlan | None) -> dict | None:
    """The loop state of ``plan``'s checkpoint restored into ``engine`` (model, optimizer, scheduler,
    every rank's RNG), or None when there is no plan (a fresh start). Every rank calls it."""
    if plan is None:
        return None
    state = resume_from(engine, plan, training.seed)
    log(f"resuming from {plan.folder}" + (f" (written by {plan.saved_world} processes, read through DeepSpeed's "
                                          "universal checkpoint)" if plan.universal else ""))
    return state
