"""``dsdocre denoise score``: the pre-denoising pass on Ray Data.

Every ordered entity pair of every document of a verified shard folder is scored by the rank
model, and the top ``keep`` pairs of each document are written as scored shards::

    scored/
      manifest.json        written last: its presence means the job finished
      rejected.jsonl       documents that could not be scored, with the reason (may be empty)
      scored-000000.tar    one per input shard, same documents in the same order, same keys
      .progress/           resume state: one record per finished shard (not for readers)

A sample is ``{key}.kept.json``: ``{"title", "num_entities", "kept": [[h, t], ...] (best first),
"scores": [...], "all_scores": [[...], ...] (only with --all-scores)}``. The format is in
``docs/shards.md`` (section 4).

How it runs: the shards still to do form a Ray Dataset (one row per shard) and go through
``map_batches`` with :class:`ShardScorer`, a callable class on an actor pool: each actor loads the
model once, then for each shard runs one encoder pass per document and scores all of a
document's pairs at once (``RankModel.score_all_pairs``: ``H M Tᵀ + c``). Ray Data restarts an
actor that dies and retries its shard; the shard is written under a temporary name and renamed
when complete, so a half-written one is never taken for a result. A re-run keeps every scored
shard whose record matches its source shard, model and ``keep`` and whose file still hashes to
its recorded sha256. ``workers=0`` runs the same code in-process without Ray.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

from dsdocre import fsio
from dsdocre.data import manifest as mf
from dsdocre.data.tar_index import write_index
from dsdocre.data.scored import FORMAT, FORMAT_VERSION
from dsdocre.errors import UserError
from sharding.shard import fault_point

PROGRESS_DIR = ".progress"
# Said when the disk fills while a scored shard, a progress record or the manifest is written.
_SCORED_STAND = "the shards scored so far stand (a re-run keeps them and scores the rest)"


def model_id(model_dir: str | Path) -> str:
    """Identifies a saved rank model by its bytes (metadata and heads; the encoder via its fingerprint)."""
    model_dir = Path(model_dir)
    h = hashlib.sha256()
    for name in ("dsdocre_model.json", "heads.safetensors"):
        path = model_dir / name
        if not path.is_file():
            raise UserError(f"{model_dir} is not a dsdocre model directory (no {name}); pass the model/ folder "
                            "that `dsdocre denoise train` wrote")
        h.update(mf.sha256_file(path).encode())
    for path in sorted((model_dir / "encoder").glob("*.safetensors")):
        h.update(mf.sha256_file(path).encode())
    return h.hexdigest()[:16]


def scored_name(shard_name: str) -> str:
    return shard_name.replace("shard-", "scored-", 1)


class ShardScorer:
    """The Ray Data callable class: loads the rank model once per actor, then scores whole shards."""

    def __init__(self, model_dir: str, out_dir: str, keep: str, all_scores: bool, batch_size: int | None,
                 device: str, job: dict):
        from dsdocre.inference import resolve_device
        from dsdocre.model import RankModel

        from dsdocre.model.device import default_batch_size

        self.device = resolve_device(device)
        self.model, _ = RankModel.from_pretrained(model_dir)
        self.model.to(self.device).eval()
        self.batch_size = batch_size or default_batch_size(self.device)  # chosen for the device when not given
        self.out, self.keep, self.all_scores, self.job = Path(out_dir), keep, all_scores, job

    def __call__(self, batch: dict) -> dict:
        records = [self.score_shard(str(path), str(name), str(sha)) for path, name, sha in
                   zip(batch["path"], batch["name"], batch["sha256"])]
        return {"record": [json.dumps(r) for r in records]}

    def score_shard(self, path: str, name: str, source_sha256: str) -> dict:
        import webdataset as wds

        from dsdocre.data.encoding import EncodedDocument
        from dsdocre.model.rank import score_documents, top_pairs

        samples, rejected = [], []
        for sample in wds.WebDataset([path], shardshuffle=False, empty_check=False):
            key = sample["__key__"]
            try:
                doc = json.loads(sample["json"])
                encoded = EncodedDocument.from_json(json.loads(sample["enc.json"]))
                if encoded.num_entities != len(doc["vertexSet"]):
                    raise ValueError(f"encoding has {encoded.num_entities} entities, the document "
                                     f"{len(doc['vertexSet'])}")
            except (KeyError, ValueError, TypeError) as err:
                rejected.append({"key": key, "shard": name, "reasons": [f"cannot score: {err}"]})
                continue
            samples.append((key, doc, encoded))
        scores = score_documents(self.model, [e for _, _, e in samples], self.batch_size, self.device)

        out_name = scored_name(name)
        pairs_scored = pairs_kept = 0
        # Under a temporary name unique to this attempt, fsync'ed, renamed: complete, or not there at all.
        with fsio.atomic_path(self.out / out_name, what_stands=_SCORED_STAND) as tmp:
            with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0, user="dsdocre", group="dsdocre") as sink:
                for (key, doc, encoded), s in zip(samples, scores):
                    kept = top_pairs(s, self.keep)
                    n = encoded.num_entities
                    pairs_scored += n * (n - 1)
                    pairs_kept += len(kept)
                    record = {"title": doc["title"], "num_entities": n, "kept": [[h, t] for h, t, _ in kept],
                              "scores": [round(v, 5) for _, _, v in kept]}
                    if self.all_scores:
                        record["all_scores"] = [[round(float(v), 5) for v in row] for row in s]
                    sink.write({"__key__": key, "kept.json": json.dumps(record, separators=(",", ":")).encode()})
                f.flush()
                fault_point(Path(out_name).stem)  # tests only: hold here, half-written, when asked to
        index = write_index(self.out / out_name, what_stands=_SCORED_STAND)  # readers find samples without a scan
        result = {"name": out_name, "source": name, "source_sha256": source_sha256, "docs": len(samples),
                  "bytes": (self.out / out_name).stat().st_size, "sha256": mf.sha256_file(self.out / out_name),
                  "index": index,
                  "pairs_scored": pairs_scored, "pairs_kept": pairs_kept, "rejected": rejected, **self.job}
        fsio.write_json_atomic(self.out / PROGRESS_DIR / f"{Path(out_name).stem}.json", result, indent=None,
                               what_stands=_SCORED_STAND)
        return result


def _reusable(out: Path, entry: dict, job: dict) -> dict | None:
    try:
        record = json.loads((out / PROGRESS_DIR / f"{Path(scored_name(entry['name'])).stem}.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if record.get("source_sha256") != entry["sha256"] or any(record.get(k) != v for k, v in job.items()):
        return None
    intact = all(mf.check_file(out, e) is None for e in (record, record.get("index") or {"name": "?"}))
    return record if intact else None


def score_shards(model_dir: str | Path, shard_dir: str | Path, out_dir: str | Path, *, keep: str = "6n",
                 all_scores: bool = False, workers: int | None = None, address: str | None = None,
                 batch_size: int | None = None, device: str = "auto", progress: bool = True, log=print) -> dict:
    """Score every document of ``shard_dir`` with the rank model at ``model_dir``; write ``out_dir``.
    Returns the manifest; ``log`` gets one line: how many shards were scored, how many kept."""
    from dsdocre.model.rank import check_keep_spec

    started = time.perf_counter()
    try:
        keep = check_keep_spec(keep)
    except ValueError as err:
        raise UserError(str(err)) from None
    model_dir, shard_dir, out = Path(model_dir), Path(shard_dir), Path(out_dir)
    job = {"model_id": model_id(model_dir), "keep": keep, "all_scores": bool(all_scores),
           "format_version": FORMAT_VERSION}
    meta = json.loads((model_dir / "dsdocre_model.json").read_text())
    if meta.get("task") != "pair_ranking":
        raise UserError(f"{model_dir} holds a {meta.get('task')} model; denoise score needs a rank model "
                        "(`dsdocre denoise train`)")
    try:  # every source shard verified, and tokenized the way the model reads
        source = mf.verify(shard_dir, expected_fingerprint=meta.get("tokenizer_fingerprint"))
    except mf.ShardVerificationError as err:
        raise UserError(str(err)) from None
    out.mkdir(parents=True, exist_ok=True)
    (out / PROGRESS_DIR).mkdir(exist_ok=True)
    for folder in (out, out / PROGRESS_DIR):  # left by a worker or driver killed mid-write
        for stale in folder.glob("*.tmp-*"):
            stale.unlink()

    done = {e["name"]: r for e in source["shards"] if (r := _reusable(out, e, job))}
    todo = [{"path": str(shard_dir / e["name"]), "name": e["name"], "sha256": e["sha256"]}
            for e in source["shards"] if e["name"] not in done]
    if todo:
        args = dict(model_dir=str(model_dir), out_dir=str(out), keep=keep, all_scores=bool(all_scores),
                    batch_size=batch_size, device=device, job=job)
        if workers == 0:
            scorer = ShardScorer(**args)
            results = [scorer.score_shard(t["path"], t["name"], t["sha256"]) for t in todo]
        else:
            results = _score_on_ray(todo, args, workers, address, device, progress)
        done.update({r["source"]: r for r in results})
    manifest = _finish(out, shard_dir, source, done, job, model_dir)
    if log is not None:
        seconds = time.perf_counter() - started
        scored_now = sum(done[t["name"]]["docs"] for t in todo)
        log(f"{len(source['shards'])} shards ({len(todo)} scored, {len(source['shards']) - len(todo)} verified and "
            f"kept) in {out}, {seconds:.1f} s ({scored_now / max(seconds, 1e-9):.1f} documents/s scored)")
    return manifest


def _score_on_ray(todo: list[dict], args: dict, workers: int | None, address: str | None, device: str,
                  progress: bool) -> list[dict]:
    import ray

    from sharding import ray_setup

    started = ray_setup.connect(address, num_cpus=workers)
    try:
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = progress
        if not progress:  # Ray Data's periodic progress log lines, too
            logging.getLogger("ray.data").setLevel(logging.WARNING)
        actors, gpus, cpus = plan_actors(workers, len(todo), ray_setup.cluster_cpus(),
                                         float(ray.cluster_resources().get("GPU", 0)), device)
        dataset = ray.data.from_items(todo, override_num_blocks=len(todo))
        scored = dataset.map_batches(
            ShardScorer, fn_constructor_kwargs=args, batch_size=1, compute=ray.data.ActorPoolStrategy(size=actors),
            num_cpus=cpus, num_gpus=gpus, runtime_env=ray_setup.RUNTIME_ENV)
        # Ray Data restarts an actor that dies (its process killed, or its node lost) and retries
        # its shard (its defaults for actor pools: max_restarts=-1, max_task_retries=-1); atomic
        # writes make the retry safe. Only the small records travel back (the scored shards are on
        # disk), so they are inlined in the driver, never lost with a node.
        return [json.loads(row["record"]) for row in scored.take_all()]
    finally:
        if started:
            ray.shutdown()


# Scoring actors that share one GPU when --workers is not given: one actor's batches of a
# BERT-sized rank model in bf16 leave most of a GPU idle.
ACTORS_PER_GPU = 4


def plan_actors(workers: int | None, shards: int, cluster_cpus: int, cluster_gpus: float,
                device: str) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor) for scoring ``shards`` shards on a Ray cluster.

    On GPUs (``device`` auto or cuda, and the cluster has some) the actors share them in equal
    fractions, so any number of workers fits (a whole GPU each made more workers than GPUs wait
    forever for one); on CPUs each actor takes one CPU, and more workers than the cluster has CPUs
    is an error, not a wait. Never more actors than shards."""
    if device in ("auto", "cuda") and cluster_gpus > 0:
        actors = max(1, min(workers or int(cluster_gpus * ACTORS_PER_GPU), shards))
        return actors, round(min(1.0, cluster_gpus / actors), 4), 0
    if device == "cuda":
        raise UserError("--device cuda: the Ray cluster has no GPU (use --device auto or cpu)")
    if workers and workers > cluster_cpus:
        raise UserError(f"--workers {workers}: the Ray cluster has {cluster_cpus} CPUs and each scoring actor takes "
                        f"one; use at most {cluster_cpus} workers (or add nodes)")
    return max(1, min(workers or cluster_cpus, shards)), 0, 1


def _finish(out: Path, shard_dir: Path, source: dict, done: dict, job: dict, model_dir: Path) -> dict:
    for folder in (out, out / PROGRESS_DIR):  # what workers that died mid-write left (their shard was redone)
        for stale in folder.glob("*.tmp-*"):
            stale.unlink()
    shards, rejected = [], []
    for entry in source["shards"]:
        record = done[entry["name"]]
        shards.append({k: record[k] for k in ("name", "source", "docs", "bytes", "sha256", "index", "pairs_scored",
                                             "pairs_kept")})
        rejected.extend(record["rejected"])
    with fsio.atomic_open(out / mf.REJECTED, "w", what_stands=_SCORED_STAND) as f:
        for r in rejected:
            f.write(json.dumps(r) + "\n")
    counts = {"input": source["counts"]["sharded"], "scored": sum(s["docs"] for s in shards), "rejected": len(rejected)}
    if counts["input"] != counts["scored"] + counts["rejected"]:
        raise RuntimeError(f"accounting error: input {counts['input']} != scored {counts['scored']} + "
                           f"rejected {counts['rejected']}")
    manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "source": str(shard_dir.resolve()),
                "source_manifest_sha256": mf.sha256_file(shard_dir / mf.MANIFEST), "model": str(model_dir.resolve()),
                **job, "tokenizer_fingerprint": source.get("tokenizer_fingerprint"), "counts": counts,
                "pairs_scored": sum(s["pairs_scored"] for s in shards),
                "pairs_kept": sum(s["pairs_kept"] for s in shards),
                "rejected_file": mf.REJECTED, "shards": shards}
    fsio.write_json_atomic(out / mf.MANIFEST, manifest, indent=1, what_stands=_SCORED_STAND)
    return manifest
