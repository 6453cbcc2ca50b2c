"""``dsdocre pretrain``: the three denoising pre-training tasks (Sec. 3.2) on a DeepSpeed engine.

Reads top to bottom: set-up (config, tokenizer, data, model, engine, resume), the held-out tasks
scored once before training (the untrained encoder's accuracy), the loop (a step = ``accumulation``
micro-batches of document pairs; DeepSpeed's backward and step), checkpoints with the encoder
exported, the held-out tasks scored again. Inputs are the documented folders of the earlier
stages (``docs/shards.md``): ``data.pairs`` (fact-join), ``data.shards`` (the document shards),
and the denoiser's scored shards when the pairs were joined through kept labels. Outputs in
``output_dir``::

    checkpoints/       DeepSpeed checkpoints (every rank's ZeRO partition) with the loop's state:
                       step, data position, RNG; `latest` names the newest complete one
    encoder/           the newest checkpoint's encoder (save_pretrained layout, marker tokens in its
                       tokenizer): `dsdocre finetune --encoder DIR`, AutoModel.from_pretrained(DIR)
    metrics.jsonl      every `log_every` steps: per-task loss and accuracy, tokens/s, the step's
                       time split (data wait, forward, backward, optimizer)
    valid.json         held-out per-task accuracy before and after training, beside chance level
    tensorboard/       DeepSpeed's monitor (when the DeepSpeed JSON enables it)

ZeRO stage 1, 2 or 3, the optimizer, CPU offload and batch layout come from the DeepSpeed JSON
(``training.deepspeed``); precision from ``training.precision`` (bf16 on GPU, fp32 on CPU). Run as
one process, or under the deepspeed launcher (``launch/deepspeed_pretrain.sh``) on one or many
nodes. A re-run with the same ``output_dir`` resumes from the newest checkpoint.
"""

from __future__ import annotations

import argparse
import json
import resource
from typing import Optional

from dsdocre import fsio
from dsdocre.config import Section, add_stage_arguments, load_stage_config
from dsdocre.model.pretrain import TASKS, TaskSwitches
from dsdocre.train import distributed
from dsdocre.train.config import TrainingConfig
from dsdocre.train.distributed import log


class PretrainDataConfig(Section):
    pairs: str  # document pairs sharing a fact (`dsdocre fact-join` output)
    shards: str  # the document shards the pairs were joined from (`dsdocre shard` output)
    scored: Optional[str] = None  # the denoiser's scored shards the join kept labels from (default: as the pairs' manifest names)
    valid_pairs: Optional[str] = None  # held-out document pairs: per-task accuracy before and after training
    valid_shards: Optional[str] = None  # the document shards of valid_pairs
    loader_workers: int = 0  # DataLoader worker processes building steps ahead (0 = in the training process)


class ExamplesConfig(Section):
    blank_prob: float = 0.7  # alpha: every mention of an entity blanked with this probability
    negatives: int = 5  # k_n NA pairs beside each Relation Detection positive


class PretrainModelConfig(Section):
    encoder: str = "default"  # a BERT-family model directory; "default" = the packaged MiniLM
    pair_dim: int = 256  # size of r = Bilinear(e_h, e_t), shared by RD and RA
    window_overlap: int = 128  # tokens shared by consecutive encoder windows of a long document
    max_entities: int = 128  # entity marker pairs in the vocabulary
    bilinear_impl: str = "auto"  # dsdocre.kernels implementation of the pair heads
    encoder_dropout: Optional[float] = None  # the encoder's dropout; null = its config's


class PretrainTrainingConfig(TrainingConfig):
    deepspeed: str = "configs/deepspeed/pretrain_zero2.json"
    epochs: int = 1
    log_every: int = 10  # optimizer steps between metrics.jsonl lines
    checkpoints: bool = True  # DeepSpeed checkpoints (false: only the encoder is exported, at the end)
    checkpoint_every: int = 200  # optimizer steps between checkpoints (and one at the end)
    log_samples: bool = False  # each rank lists the pair keys of every step in samples/rank-N.jsonl (audits)


class PretrainConfig(Section):
    output_dir: str = "runs/pretrain"
    data: PretrainDataConfig
    model: PretrainModelConfig = PretrainModelConfig()
    tasks: TaskSwitches = TaskSwitches()  # which tasks run: the paper's Table 2 ablations
    examples: ExamplesConfig = ExamplesConfig()
    training: PretrainTrainingConfig = PretrainTrainingConfig()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_stage_arguments(parser, "configs/pretrain.yaml", "training.max_steps=100")


def run(args: argparse.Namespace) -> int:
    pretrain(load_stage_config(PretrainConfig, args))
    return 0


def pretrain(config: PretrainConfig) -> dict:
    """Pre-train, checkpoint, export the encoder. Returns the run's summary (rank 0; {} elsewhere)."""
    distributed.prepare_environment()
    from dsdocre.config import to_plain
    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.data.pretrain_data import VERIFIED, VERIFIED_VALID, PairBatches, data_folders
    from dsdocre.model.pretrain import PretrainModel
    from dsdocre.train import checkpoint
    from dsdocre.train.engine import batch_layout, build_engine, deepspeed_config, start, total_steps
    from dsdocre.train.loop import MicroResult, StepInfo, train

    data_cfg, train_cfg, model_cfg = config.data, config.training, config.model
    clock = _StartupClock()
    out_dir = start(train_cfg, config.output_dir)
    main, world, rank = distributed.is_main_process(), distributed.world_size(), distributed.rank()

    # ---- the run's identity and the newest verified checkpoint, if any -----------------------------
    fingerprint = checkpoint.run_fingerprint(config)
    plan = checkpoint.resume_plan(train_cfg, out_dir, fingerprint)  # before the engine: it may need the universal form
    ds_config = deepspeed_config(train_cfg, out_dir, plan)

    # ---- data: this rank's steps of document pairs (deterministic, resumable) ---------------------
    micro_batch, accumulation = batch_layout(ds_config)
    encoder_dir = resolve_encoder_dir(model_cfg.encoder)
    tokenizer, added = load_tokenizer(encoder_dir, model_cfg.max_entities)
    examples = dict(blank_prob=config.examples.blank_prob, negatives=config.examples.negatives)
    clock.mark("set-up")
    # Every rank checks sizes and builds its loader; hashing every file (the one part of the start
    # that reads the whole corpus) is split over the ranks and runs while the engine is built.
    valid_shards = data_cfg.valid_shards or data_cfg.shards
    verification = _Verification(out_dir, [(VERIFIED, data_folders(data_cfg.pairs, data_cfg.shards, data_cfg.scored))]
                                 + ([(VERIFIED_VALID, data_folders(data_cfg.valid_pairs, valid_shards, None))]
                                    if data_cfg.valid_pairs else []))
    data = _on_every_rank(lambda: PairBatches(
        data_cfg.pairs, data_cfg.shards, tokenizer, micro_batch=micro_batch, accumulation=accumulation,
        rank=rank, world=world, seed=train_cfg.seed, scored_dir=data_cfg.scored, workers=data_cfg.loader_workers,
        checksums=False, **examples))
    valid = None
    if data_cfg.valid_pairs:
        valid = _on_every_rank(lambda: PairBatches(
            data_cfg.valid_pairs, valid_shards, tokenizer, micro_batch=micro_batch, seed=train_cfg.seed,
            shuffle=False, checksums=False, **examples))
    verification.start()
    clock.mark("data")
    steps_total = total_steps(train_cfg, data.steps_per_epoch())

    # ---- model and engine, restored from the checkpoint -------------------------------------------
    model = PretrainModel(encoder_dir, config.tasks, pair_dim=model_cfg.pair_dim,
                          window_overlap=model_cfg.window_overlap, added_tokens=added,
                          tokenizer_max_length=tokenizer.tokenizer.model_max_length,
                          special_ids=(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id),
                          bilinear_impl=model_cfg.bilinear_impl, encoder_dropout=model_cfg.encoder_dropout)
    engine = build_engine(model, train_cfg, ds_config, data.steps_per_epoch())
    device = engine.device
    resumed = checkpoint.restore(engine, train_cfg, plan)
    clock.mark("engine")
    verification.finish()  # every file's hash agreed before any sample is used
    clock.mark("verified")
    clock.extra["hash_s"] = verification.seconds
    resumed_step = resumed["step"] if resumed else 0
    log(f"pretrain: {encoder_dir}; tasks {', '.join(config.tasks.enabled())}; "
        f"{sum(p.numel() for p in model.parameters()) / 1e6:.1f}M parameters; ZeRO stage "
        f"{engine.zero_optimization_stage()}; world {world}; {data.stream.total} document pairs, "
        f"global batch {data.stream.global_batch}, {data.steps_per_epoch()} steps/epoch; {steps_total} steps")

    def to_device(batch: dict) -> dict:  # from pinned memory (loader workers on a GPU), without blocking
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    valid_scores = {}
    if resumed and (out_dir / "valid.json").exists():  # the untrained encoder's scores, from the first start
        valid_scores = {"before": json.loads((out_dir / "valid.json").read_text()).get("before")}
    if valid is not None and not resumed:
        valid_scores["before"] = evaluate_tasks(engine, valid, to_device)
        log("held-out, before training: " + _format_scores(valid_scores["before"]))

    # ---- the loop: a step is `accumulation` micro-batches of document pairs; metrics every log_every --
    metrics_path = out_dir / "metrics.jsonl"
    samples_path = out_dir / "samples" / f"rank-{rank}.jsonl"
    if train_cfg.log_samples:
        samples_path.parent.mkdir(exist_ok=True)
    # A fresh run starts its records; a resumed one keeps them up to its checkpoint's step (what a
    # killed run wrote after it is redone, so it would otherwise be counted twice).
    for path, mine in ((metrics_path, main), (samples_path, train_cfg.log_samples)):
        if mine:
            checkpoint.keep_records_up_to(path, resumed_step)
    window = _Window()
    last_step = {"step": resumed_step}  # the step the exported encoder was trained to

    def loss_of(micro: dict) -> MicroResult:
        out = engine(to_device(micro))
        weight = float(micro["weight"])
        return MicroResult(out["loss"] * micro["weight"].to(device), weight, out)

    def on_step(info: StepInfo) -> None:
        if not clock.done:  # this rank's start-up, for the scale benchmark (startup/rank-N.json)
            clock.mark("first_step")
            clock.write(out_dir / "startup" / f"rank-{rank}.json")
        last_step["step"] = step = info.step
        for result in info.results:
            window.add_task_metrics(result.outputs, result.finite)
        if train_cfg.log_samples:
            batch = info.batch
            with open(samples_path, "a") as f:
                f.write(json.dumps({"step": step, "epoch": batch.epoch, "batch": batch.batch, "keys": batch.keys})
                        + "\n")
        window.add_step(info.batch, info.times)
        if step % train_cfg.log_every == 0 or info.finished:
            # the epoch of the window's last step (after an epoch's last step the stream is already in the next)
            record = {**window.flush(step, info.batch.epoch), "skipped_steps": info.skipped_total}
            if main:
                with open(metrics_path, "a") as f:
                    f.write(json.dumps(record) + "\n")
                engine.monitor.write_events([(f"pretrain/{k}", v, step) for k, v in record.items()
                                             if isinstance(v, float)])

    def export(state: dict, folder) -> None:
        checkpoint.export_encoder(engine.module.encoder.model, tokenizer.tokenizer, state, folder, "encoder.model.",
                                  step=last_step["step"], tasks=config.tasks.enabled(), config=to_plain(config))

    summary = train(engine, train_cfg, data, loss_of, name="pretrain", run_dir=out_dir, fingerprint=fingerprint,
                    resumed=resumed, on_step=on_step, export=export)

    if valid is not None:
        valid_scores["after"] = evaluate_tasks(engine, valid, to_device)
        log("held-out, after training:  " + _format_scores(valid_scores["after"]))
    data.close()
    if not main:
        return {}
    summary = {"steps": summary["steps"], "train_seconds": summary["train_seconds"], "world": world,
               "skipped_steps": summary["skipped_steps"], "zero_stage": engine.zero_optimization_stage(),
               "encoder": str(out_dir / checkpoint.ENCODER), "valid": valid_scores}
    if valid_scores:
        fsio.write_json_atomic(out_dir / "valid.json", valid_scores, indent=2)
    log(f"pretrain done: {summary['steps']} steps in {summary['train_seconds']:.0f}s; encoder exported to "
        f"{out_dir / checkpoint.ENCODER}")
    return summary


class _StartupClock:
    """Seconds from the process's start to each phase's end: set-up (imports, process group,
    tokenizer, resume plan), data (sizes checked, the loader built; its share of the hashing
    started), engine (built, checkpoint restored), verified (the ranks agreed on every file's hash:
    the wait for the slowest rank's share) and the first step; ``hash_s``: this rank's hashing."""

    def __init__(self):
        import psutil

        self.created = psutil.Process().create_time()  # the process's start, as the launcher began it
        self.marks: dict[str, float] = {}
        self.extra: dict[str, float] = {}

    @property
    def done(self) -> bool:
        return "first_step" in self.marks

    def mark(self, phase: str) -> None:
        import time

        self.marks[phase] = round(time.time() - self.created, 3)

    def write(self, path) -> None:
        path.parent.mkdir(exist_ok=True)
        fsio.write_json_atomic(path, {"seconds_since_process_start": self.marks, **self.extra}, indent=None)


def _on_every_rank(build):
    """``build()`` on every rank; a user error on any rank stops them all (each with a message)
    rather than leaving the others waiting in the next collective."""
    from dsdocre.errors import UserError

    distributed.init_process_group()
    result, error = None, None
    try:
        result = build()
    except UserError as err:
        error = err
    if distributed.agree(int(error is not None)):
        raise error or UserError("another rank could not read the pre-training data (its error says why)")
    return result


class _Verification:
    """Every file of the run's data folders hashed against its manifest once per run.

    The files are dealt to the ranks by size (``pretrain_data.hash_share``), each rank hashes its
    part in a background thread (hashlib releases the GIL) while the engine is built, and the ranks
    agree on the verdict before the first step: no rank waits for another to read the whole corpus,
    and a start's cost falls with the world size. Rank 0 then records what was verified in the
    run's folder (a stamp per group of folders); a restart whose files are unchanged (same
    manifests, sizes, modification times) hashes nothing. Sizes were checked by every rank already
    (``checksums=False`` loaders), so a truncated file is named before the engine is built."""

    def __init__(self, out_dir, groups: list[tuple[str, list]]):
        self.out_dir, self.groups = out_dir, groups
        self.seconds = 0.0
        self._thread = None
        self._pending: list[tuple[str, list]] = []  # the groups this start hashes (start() decides)
        self._problems: list[str] = []

    def start(self) -> None:
        import threading

        from dsdocre.data.pretrain_data import hash_share, verified_before

        main = distributed.is_main_process()
        # rank 0's stamp decides for every rank (the others may not see the run's folder yet)
        needed = distributed.agree_flags([int(main and not verified_before(self.out_dir / stamp, folders))
                                          for stamp, folders in self.groups])
        self._pending = [g for g, flag in zip(self.groups, needed) if flag]
        for (stamp, folders), flag in zip(self.groups, needed):
            log(f"{folders[0]}: " + ("hashing every file, split over the ranks, while the engine is built" if flag
                                     else "verified by an earlier start of this run; sizes checked"))
        share = [item for _, folders in self._pending
                 for item in hash_share(folders, distributed.rank(), distributed.world_size())]
        if share:
            self._thread = threading.Thread(target=self._hash, args=(share,), name="verify-data", daemon=True)
            self._thread.start()

    def _hash(self, share) -> None:
        import time

        from dsdocre.data.pretrain_data import hash_problems

        t0 = time.perf_counter()
        try:
            self._problems = hash_problems(share)
        except OSError as err:
            self._problems = [f"{err.filename}: {err.strerror}"]
        self.seconds = round(time.perf_counter() - t0, 3)

    def finish(self) -> None:
        from dsdocre.data import manifest as mf
        from dsdocre.data.pretrain_data import record_verified
        from dsdocre.errors import UserError

        if self._thread is not None:
            self._thread.join()
        if distributed.agree(int(bool(self._problems))):
            if self._problems:
                raise mf.verification_failure(str(len(self._problems)), self._problems)
            raise UserError("another rank found a data file that does not match its manifest (its error names it)")
        if distributed.is_main_process():
            for stamp, folders in self._pending:
                record_verified(self.out_dir / stamp, folders)


def evaluate_tasks(engine, valid, to_device) -> dict:
    """Per-task accuracy on the held-out pairs, beside chance (a uniform guess among each
    instance's real candidates). Ranks share the steps round-robin and run the same number of
    forward passes (a rank short of steps repeats its first with weight 0: ZeRO-3 gathers each
    layer's parameters from every rank); the counts are summed over ranks."""
    import torch

    world, rank = distributed.world_size(), distributed.rank()
    steps = list(valid)
    if not steps:
        return {}
    per_rank = -(-len(steps) // world)
    mine = [(s, 1.0) for s in steps[rank::world]]
    mine += [(steps[0], 0.0)] * (per_rank - len(mine))
    sums = torch.zeros(len(TASKS), 3, dtype=torch.float64)  # correct, instances, chance summed over instances
    engine.eval()
    with torch.no_grad():
        for s, weight in mine:
            for micro in s.micro_batches:
                out = engine(to_device(micro))
                for i, task in enumerate(TASKS):
                    if weight and f"{task}_count" in out:
                        n = float(out[f"{task}_count"])
                        sums[i] += torch.tensor([float(out[f"{task}_accuracy"]) * n, n,
                                                 float(out[f"{task}_chance"]) * n], dtype=torch.float64)
    engine.train()
    # summed over ranks on the collective's device (NCCL takes no CPU tensor)
    sums = torch.tensor(distributed.sum_over_ranks(sums.flatten().tolist()), dtype=torch.float64).view_as(sums)
    return {task: {"accuracy": round(100 * float(c / n), 2), "chance": round(100 * float(ch / n), 2),
                   "instances": int(n)}
            for task, (c, n, ch) in zip(TASKS, sums.tolist()) if n}


def _format_scores(scores: dict) -> str:
    return "; ".join(f"{t} {s['accuracy']:.1f}% (chance {s['chance']:.1f}%)" for t, s in scores.items())


class _Window:
    """Sums over the steps since the last metrics line, kept on the device (float64) and read once
    per line: no host read per micro-batch."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.tasks: dict[str, object] = {}  # per task: [loss x n, accuracy x n, n]
        self.loss = None  # [sum of the finite losses, their micro-batches]
        self.steps = self.pairs = self.tokens = 0
        self.times = {"data_wait": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0, "step": 0.0}

    def add_task_metrics(self, out: dict, finite) -> None:
        """One real micro-batch's outputs; ``finite`` (a bool tensor): whether its loss was finite
        (a non-finite one adds nothing)."""
        import torch

        def f64(x):
            return torch.as_tensor(x, dtype=torch.float64, device=out["loss"].device)

        loss = torch.where(finite, torch.stack([f64(out["loss"].detach()), f64(1.0)]), f64(0.0))
        self.loss = loss if self.loss is None else self.loss + loss
        for task in TASKS:
            if f"{task}_loss" in out:
                n = f64(out[f"{task}_count"])
                sums = torch.stack([f64(out[f"{task}_loss"].detach()) * n, f64(out[f"{task}_accuracy"]) * n, n])
                sums = torch.where(finite, sums, f64(0.0))
                self.tasks[task] = sums if task not in self.tasks else self.tasks[task] + sums

    def add_step(self, step, times: dict[str, float]) -> None:
        self.steps += 1
        self.pairs += step.pairs
        self.tokens += step.tokens
        for k in self.times:
            self.times[k] += times[k]

    def flush(self, step: int, epoch: int) -> dict:
        """One metrics line (every rank calls it): losses, accuracies, tokens and pairs summed over all
        ranks; times are rank 0's."""
        import torch

        loss = self.loss.tolist() if self.loss is not None else [0.0, 0.0]
        tasks = [x for t in TASKS for x in (self.tasks[t].tolist() if t in self.tasks else [0.0, 0.0, 0.0])]
        # [loss sum, micro-batches, tokens, pairs] then per task [loss x n, accuracy x n, n], summed over ranks
        sums = torch.tensor(distributed.sum_over_ranks(loss + [self.tokens, self.pairs] + tasks), dtype=torch.float64)
        tokens, pairs = float(sums[2]), float(sums[3])
        sums = torch.cat([sums[:2], sums[4:]])
        seconds = max(self.times["step"], 1e-9)
        # no loss when every micro-batch of the window was skipped as non-finite
        record = {"step": step, "epoch": epoch, "loss": float(sums[0] / sums[1]) if float(sums[1]) else None}
        for i, task in enumerate(TASKS):
            loss, acc, n = sums[2 + 3 * i: 5 + 3 * i].tolist()
            if n:
                record[f"{task}_loss"] = loss / n
                record[f"{task}_accuracy"] = acc / n
        record.update({"tokens_per_s": tokens / seconds, "pairs_per_s": pairs / seconds,
                       "step_seconds": seconds / max(self.steps, 1),
                       **{f"{k}_fraction": v / seconds for k, v in self.times.items() if k != "step"},
                       "steps_in_window": self.steps, "tokens": tokens, "seconds": seconds,
                       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})  # this rank's
        self.reset()
        return record
