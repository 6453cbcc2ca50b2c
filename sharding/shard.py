"""``dsdocre shard``: DocRED-format JSON -> verified WebDataset shards, on Ray.

How the work is split, and why:

* The driver streams the inputs (never loading a file whole, see :mod:`sharding.corpus`) and cuts
  them by position: shard k holds documents [k*n, (k+1)*n) of the concatenated inputs. So what a
  shard holds and its name never depend on scheduling, retries or the number of workers, and a
  re-run produces byte-identical shards.
* One Ray task per shard validates, tokenizes (entity markers) and writes ``shard-{k:06d}.tar``
  under a temporary name, then renames it: a shard is complete or absent, never torn. A worker
  that dies mid-shard is retried (``max_retries``) and writes the same bytes.
* Each finished shard leaves a small record (``.progress/shard-{k:06d}.json``: counts, sha256,
  rejections, a hash of its input). A re-run skips shards whose record matches the input and
  whose file still hashes to the recorded sha256, and redoes the rest.
* ``manifest.json`` (every shard's name, document count, bytes, sha256; the tokenizer
  fingerprint; the counts) and ``rejected.jsonl`` are written last, atomically.
* At most ``2 x workers`` chunks are in flight, so the driver's memory is bounded whatever the
  input size; a worker holds one chunk and the tokenizer.

The sample format is documented in ``docs/shards.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from dsdocre import fsio
from dsdocre.errors import UserError
from dsdocre.data import manifest as mf
from dsdocre.data.tar_index import write_index
from sharding.corpus import iter_document_bytes

SHARD_PATTERN = "shard-{:06d}.tar"
PROGRESS_DIR = ".progress"
# Said when the disk fills while a shard, a progress record or the manifest is written.
_SHARDS_STAND = "the shards finished so far stand (a re-run keeps them and writes the rest)"
DEFAULT_DOCS_PER_SHARD = 1000


def shard_number(name: str) -> int:
    return int(name.split("-")[1].split(".")[0])


def sample_key(file_index: int, position: int) -> str:
    """Stable, sortable, dot-free (WebDataset splits keys at the first dot): input file + position."""
    return f"{file_index:04d}-{position:010d}"


# --------------------------------------------------------------------------------------------
# Fault injection, for tests only
# --------------------------------------------------------------------------------------------
HOLD_DIR_ENV = "DSDOCRE_TEST_HOLD_DIR"


def fault_point(point: str) -> None:
    """Test-only: let a test hold a task at a known moment, with its output half-written.

    Does nothing unless ``$DSDOCRE_TEST_HOLD_DIR`` names a folder (tests/sharding/test_ray_faults.py sets it
    in the workers' environment). Then, while the file ``{dir}/{point}.hold`` exists, the task
    announces itself in ``{dir}/{point}.{pid}.waiting`` and waits until the test deletes the hold
    file. Meanwhile the test knows which Ray worker process is mid-task: it can SIGKILL it, or
    remove its node, and nothing depends on timing. A retry of the task passes once the hold file
    is gone. Every job calls it once per output file, named by that file (``shard-000003``,
    ``scored-000001``, ``map-shard-000002``, ``facts-00001``, ``pairs-000000``).
    """
    folder = os.environ.get(HOLD_DIR_ENV)
    if not folder:
        return
    hold = Path(folder) / f"{point}.hold"
    if not hold.exists():
        return
    waiting = Path(folder) / f"{point}.{os.getpid()}.waiting"
    waiting.touch()
    deadline = time.monotonic() + 600  # a test that died without releasing: go on eventually
    while hold.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# Worker side: one chunk of documents -> one shard
# --------------------------------------------------------------------------------------------
_TOKENIZERS: dict = {}  # encoder -> MarkerTokenizer; one load per process


def get_tokenizer(encoder: str | None):
    """Load once per worker process: Ray reuses a worker for many tasks, and loading (with the
    transformers/torch import) costs seconds."""
    key = encoder or "default"
    if key not in _TOKENIZERS:
        from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir

        _TOKENIZERS[key], _ = load_tokenizer(resolve_encoder_dir(encoder))
    return _TOKENIZERS[key]


def tokenizer_fingerprint(encoder: str | None) -> str:
    return get_tokenizer(encoder).fingerprint()


def chunk_digest(chunk: list[tuple[int, int, bytes]]) -> str:
    """Identifies a shard's input (positions and bytes): a re-run redoes a shard whose input changed."""
    h = hashlib.sha256()
    for file_index, position, raw in chunk:
        h.update(f"{file_index}:{position}:{len(raw)}:".encode())
        h.update(raw)
    return h.hexdigest()


def _parse_and_check(raw: bytes, position: int, source: str, tokenizer):
    """(document dict, encoding dict, None) or (None, None, Rejection)."""
    from dsdocre.data.documents import Document
    from dsdocre.data.reader import Rejection
    from dsdocre.data.validation import Problem, validate_document

    def reject(problems):
        return None, None, Rejection.of(problems)

    try:
        # Decoded here, not by json.loads(bytes), which would take UTF-16/32 bytes for text.
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:  # a .jsonl line in Latin-1, CP1252, UTF-16...
        return reject([Problem(source, position, None, "<document>",
                               f"not UTF-8 text ({err.reason} at byte {err.start} of the line)")])
    try:
        doc = json.loads(text)
    except RecursionError:  # a bad .jsonl line: the same words as the library's reader
        return reject([Problem(source, position, None, "<document>", "not valid JSON: nested too deeply")])
    except ValueError as err:  # JSONDecodeError, or an integer of more than 4,300 digits
        return reject([Problem(source, position, None, "<document>", f"not valid JSON: {err}")])
    problems = validate_document(doc, position, source)
    errors = [p for p in problems if p.severity == "error"]
    if errors:  # rejected with every reason, warnings included (as load_valid_documents does)
        return reject(errors + [p for p in problems if p.severity != "error"])
    # Only warnings (a duplicated label, which counts once, as in DocRED's official scorer):
    # usable as it is, so sharded, as load_valid_documents keeps it.
    try:
        encoded = tokenizer.encode(Document.from_json(doc))
    except ValueError as err:  # e.g. more entities than the marker vocabulary has
        return reject([Problem(source, position, doc["title"], "vertexSet", str(err))])
    return doc, encoded.to_json(), None


def write_shard(out_dir: str, shard_index: int, chunk: list[tuple[int, int, bytes]], sources: list[str],
                encoder: str | None, input_sha256: str) -> dict:
    """Validate, tokenize and write one shard; return its record (also saved under .progress/).

    ``chunk`` holds (input file index, position in that file, the document's exact bytes).
    The tar is written with fixed metadata (owner, and mtime 0 as an integer: a float would add a
    pax header to every member), so the same chunk always gives the same bytes and the same
    sha256, whichever worker writes it and however often.
    """
    import webdataset as wds

    tokenizer = get_tokenizer(encoder)
    fingerprint = tokenizer.fingerprint()
    out = Path(out_dir)
    name = SHARD_PATTERN.format(shard_index)
    rejected: list[dict] = []
    docs = 0
    # Under a temporary name unique to this attempt, fsync'ed, renamed: complete, or not there at all.
    with fsio.atomic_path(out / name, what_stands=_SHARDS_STAND) as tmp:
        with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0, user="dsdocre",
                                                 group="dsdocre") as sink:
            for file_index, position, raw in chunk:
                source = sources[file_index]
                doc, encoding, rejection = _parse_and_check(raw, position, source, tokenizer)
                key = sample_key(file_index, position)
                if rejection is not None:
                    rejected.append({"key": key, "shard": name, **rejection.to_json()})
                    continue
                sink.write({"__key__": key,
                            "json": raw,  # the document exactly as it was in the input
                            "enc.json": json.dumps(encoding, separators=(",", ":")).encode()})
                docs += 1
            f.flush()
            fault_point(Path(name).stem)  # tests only: hold here, half-written, when asked to
    index = write_index(out / name, what_stands=_SHARDS_STAND)  # readers find samples without a scan
    record = {"name": name, "docs": docs, "bytes": (out / name).stat().st_size,
              "sha256": mf.sha256_file(out / name), "index": index, "input_documents": len(chunk),
              "input_sha256": input_sha256, "tokenizer_fingerprint": fingerprint,
              "format_version": mf.FORMAT_VERSION, "rejected": rejected}
    progress = _progress_path(out, name)
    progress.parent.mkdir(exist_ok=True)
    fsio.write_json_atomic(progress, record, indent=None, what_stands=_SHARDS_STAND)
    # Peak memory of this worker process so far (KiB on Linux): the benchmark reports it.
    record["stats"] = {"pid": os.getpid(), "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    return record


def _progress_path(out: Path, shard_name: str) -> Path:
    """The progress record of a finished shard: written last by its task, read on re-runs."""
    return out / PROGRESS_DIR / f"{Path(shard_name).stem}.json"


def _reusable(out: Path, shard_index: int, input_sha256: str, fingerprint: str) -> dict | None:
    """The record of a shard that a previous run finished for exactly this input, if it verifies."""
    try:
        record = json.loads(_progress_path(out, SHARD_PATTERN.format(shard_index)).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if (record.get("input_sha256") != input_sha256 or record.get("tokenizer_fingerprint") != fingerprint
            or record.get("format_version") != mf.FORMAT_VERSION):
        return None
    if any(mf.check_file(out, e) is not None for e in (record, record.get("index") or {"name": "?"})):
        return None  # the shard or its index missing, truncated or corrupted: redo it
    return record


# --------------------------------------------------------------------------------------------
# Driver side
# --------------------------------------------------------------------------------------------
@dataclass
class ShardSummary:
    manifest: dict
    written: int = 0  # shards (re)done by this run
    skipped: int = 0  # shards kept from a previous run (verified)
    seconds: float = 0.0
    warmup_seconds: float = 0.0  # until every worker had its tokenizer loaded (incl. starting Ray)
    input_bytes: int = 0
    worker_max_rss_kb: dict[int, int] = field(default_factory=dict)  # pid -> peak RSS

    @property
    def counts(self) -> dict:
        return self.manifest["counts"]


def iter_chunks(paths: list[str], docs_per_shard: int, counts: list[int],
                progress=None) -> Iterator[list[tuple[int, int, bytes]]]:
    """Shard-sized chunks of (file index, position, bytes) over the concatenated inputs."""
    chunk: list[tuple[int, int, bytes]] = []
    for file_index, path in enumerate(paths):
        for position, raw in enumerate(iter_document_bytes(path)):
            chunk.append((file_index, position, raw))
            counts[file_index] += 1
            if progress is not None:
                progress.update(len(raw))
            if len(chunk) == docs_per_shard:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


class _LocalPool:
    """The same work without Ray, one shard at a time in this process (``--workers 0``): the
    baseline that the benchmark compares Ray against, and a way to debug a worker's code."""

    def __init__(self):
        self.done: list[dict] = []

    def submit(self, *args) -> None:
        self.done.append(write_shard(*args))

    def in_flight(self) -> int:
        return 0

    def wait(self, block: bool = False) -> list[dict]:
        done, self.done = self.done, []
        return done


class _RayPool:
    """Shard tasks on Ray; the driver bounds how many are outstanding."""

    def __init__(self, max_retries: int):
        import ray

        from sharding.ray_setup import RUNTIME_ENV

        self.ray = ray
        # max_retries: a task whose worker (or node) dies is run again elsewhere. Exceptions raised
        # by the code itself are not retried: they would fail the same way again.
        self.task = ray.remote(write_shard).options(num_cpus=1, max_retries=max_retries,
                                                    retry_exceptions=False, runtime_env=RUNTIME_ENV)
        self.pending: list = []

    def submit(self, *args) -> None:
        self.pending.append(self.task.remote(*args))

    def in_flight(self) -> int:
        return len(self.pending)

    def wait(self, block: bool = False) -> list[dict]:
        """Records of finished tasks; with ``block``, wait until at least one has finished."""
        if not self.pending:
            return []
        ready, self.pending = self.ray.wait(self.pending, num_returns=1 if block else len(self.pending),
                                            timeout=None if block else 0)
        return self.ray.get(ready)


def shard_corpus(inputs: Iterable[str | Path], out_dir: str | Path, *, docs_per_shard: int = DEFAULT_DOCS_PER_SHARD,
                 encoder: str | None = None, workers: int | None = None, address: str | None = None,
                 max_retries: int = 3, progress: bool = True, log=print) -> ShardSummary:
    """Shard ``inputs`` into ``out_dir``; see the module docstring. ``workers=0`` runs without Ray.

    Returns the summary (manifest + this run's statistics); raises if the input cannot be read
    (a file that is not a JSON array / JSON Lines) or a task fails for a reason other than a
    lost worker.
    """
    from tqdm import tqdm

    t0 = time.perf_counter()
    paths = [str(Path(p).resolve()) for p in inputs]
    for p in paths:
        if not Path(p).is_file():
            raise FileNotFoundError(f"input {p} does not exist")
    if docs_per_shard < 1:
        raise UserError("--docs-per-shard must be at least 1")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / PROGRESS_DIR).mkdir(exist_ok=True)
    for stale in [*out.glob("*.tmp-*"), *(out / PROGRESS_DIR).glob("*.tmp-*")]:  # a worker or driver killed mid-write
        stale.unlink()

    started_ray = False
    if workers == 0:
        pool = _LocalPool()
        fingerprint = tokenizer_fingerprint(encoder)
        concurrency = 1
    else:
        import ray

        from sharding import ray_setup

        started_ray = ray_setup.connect(address, workers)
        concurrency = workers or ray_setup.cluster_cpus()
        pool = _RayPool(max_retries)
        # The fingerprint comes from the workers: the driver never imports transformers/torch and
        # stays small. One task per worker, all at once, so that every worker imports and loads
        # the tokenizer (seconds) at the same time rather than each on its first shard.
        warm = ray.remote(tokenizer_fingerprint).options(num_cpus=1, runtime_env=ray_setup.RUNTIME_ENV)
        fingerprints = set(ray.get([warm.remote(encoder) for _ in range(concurrency)]))
        if len(fingerprints) != 1:
            raise RuntimeError(f"workers load different tokenizers for {encoder or 'default'}: {fingerprints}")
        fingerprint = fingerprints.pop()

    sizes = [Path(p).stat().st_size for p in paths]
    counts = [0] * len(paths)
    records: dict[int, dict] = {}
    summary = ShardSummary(manifest={}, input_bytes=sum(sizes), warmup_seconds=time.perf_counter() - t0)

    def collect(done: list[dict]) -> None:
        for rec in done:
            stats = rec.pop("stats")  # every freshly written record has them
            pid = stats["pid"]
            summary.worker_max_rss_kb[pid] = max(summary.worker_max_rss_kb.get(pid, 0), stats["max_rss_kb"])
            # Only the summary stays in the driver; the rejections are read back from the shard's
            # progress record at the end, so the driver's memory does not grow with the input.
            rec["rejected"] = len(rec["rejected"])
            records[shard_number(rec["name"])] = rec

    bar = tqdm(total=sum(sizes), unit="B", unit_scale=True, desc="shard", disable=not progress,
               file=sys.stderr, mininterval=1.0)
    try:
        for shard_index, chunk in enumerate(iter_chunks(paths, docs_per_shard, counts, bar)):
            digest = chunk_digest(chunk)
            kept = _reusable(out, shard_index, digest, fingerprint)
            if kept is not None:
                kept["rejected"] = len(kept["rejected"])
                records[shard_index] = kept
                summary.skipped += 1
                continue
            # Backpressure: at most 2 chunks per worker in flight (one running, one queued), so the
            # driver holds a bounded number of chunks whatever the input size.
            collect(pool.wait(block=pool.in_flight() >= 2 * concurrency))
            pool.submit(str(out), shard_index, chunk, paths, encoder, digest)
            summary.written += 1
            del chunk
        while pool.in_flight():
            collect(pool.wait(block=True))
        collect(pool.wait())
        bar.update(bar.total - bar.n)  # the bar counts document bytes; the rest is brackets and commas
    finally:
        bar.close()
        if started_ray:
            import ray

            ray.shutdown()

    summary.manifest = _finish(out, paths, sizes, counts, records, fingerprint, encoder, docs_per_shard)
    summary.seconds = time.perf_counter() - t0
    c = summary.manifest["counts"]
    if log is not None:
        log(f"input {c['input']} documents = sharded {c['sharded']} + rejected {c['rejected']}"
            f"{f' (reasons in {out / mf.REJECTED})' if c['rejected'] else ''}; "
            f"{len(records)} shards ({summary.written} written, {summary.skipped} verified and kept) "
            f"in {out}, {summary.seconds:.1f} s")
    return summary


def _finish(out: Path, paths, sizes, counts, records: dict[int, dict], fingerprint, encoder, docs_per_shard) -> dict:
    """rejected.jsonl, then manifest.json (last: its presence means the job finished)."""
    n_shards = len(records)
    if sorted(records) != list(range(n_shards)):
        raise RuntimeError(f"internal error: shard records {sorted(records)[:5]}... are not 0..{n_shards - 1}")
    ordered = [records[k] for k in range(n_shards)]
    # Stale shards of an earlier run over a longer input or with other --docs-per-shard.
    keep = {r["name"] for r in ordered}
    for path in [*out.glob("shard-*.tar"), *out.glob("shard-*.tar.idx")]:
        if path.name.removesuffix(".idx") not in keep:
            path.unlink()
    for path in (out / PROGRESS_DIR).glob("shard-*.json"):
        if f"{path.stem}.tar" not in keep:
            path.unlink()

    for stale in [*out.glob("*.tmp-*"), *(out / PROGRESS_DIR).glob("*.tmp-*")]:  # a dead worker's (its task was re-run)
        stale.unlink()

    n_rejected = 0
    with fsio.atomic_open(out / mf.REJECTED, "w", what_stands=_SHARDS_STAND) as f:
        for rec in ordered:
            if not rec["rejected"]:
                continue
            progress = json.loads(_progress_path(out, rec["name"]).read_text())
            for rej in progress["rejected"]:
                f.write(json.dumps(rej) + "\n")
                n_rejected += 1

    n_input = sum(counts)
    n_sharded = sum(r["docs"] for r in ordered)
    if n_input != n_sharded + n_rejected or n_input != sum(r["input_documents"] for r in ordered):
        raise RuntimeError(f"documents lost: input {n_input} != sharded {n_sharded} + rejected {n_rejected}")
    manifest = {
        "format": mf.FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "tokenizer_fingerprint": fingerprint,
        "encoder": encoder or "default",
        "docs_per_shard": docs_per_shard,
        "inputs": [{"path": p, "bytes": s, "documents": c} for p, s, c in zip(paths, sizes, counts)],
        "counts": {"input": n_input, "sharded": n_sharded, "rejected": n_rejected},
        "rejected_file": mf.REJECTED,
        "shards": [{k: r[k] for k in ("name", "docs", "bytes", "sha256", "index")} for r in ordered],
    }
    fsio.write_json_atomic(out / mf.MANIFEST, manifest, indent=1, what_stands=_SHARDS_STAND)
    return manifest


# --------------------------------------------------------------------------------------------
# Reading shards back (for tests and later stages)
# --------------------------------------------------------------------------------------------
def iter_samples(shard_dir: str | Path, verify: bool = True) -> Iterator[tuple[str, dict, dict]]:
    """(key, document dict, encoding dict) for every sample, in order, with plain WebDataset."""
    import webdataset as wds

    paths = mf.shard_paths(shard_dir, verify_checksums=verify)
    if not paths:
        return
    for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
        yield sample["__key__"], json.loads(sample["json"]), json.loads(sample["enc.json"])


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Validate, tokenize (entity markers) and write DocRED-format documents as WebDataset .tar "
        "shards on Ray. Inputs are streamed (JSON arrays of any size, or JSON Lines). Each shard is "
        "written under a temporary name and renamed when complete; manifest.json lists every shard "
        "with its document count, size and sha256; invalid documents go to rejected.jsonl with "
        "their position and the reason. Re-running the same command skips shards that verify and "
        "redoes the rest. Format: docs/shards.md.")
    parser.add_argument("--input", nargs="+", required=True, metavar="FILE",
                        help="DocRED-format .json arrays or .jsonl files, sharded in this order")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (created)")
    parser.add_argument("--address", default=None, metavar="RAY_ADDRESS",
                        help="join a running Ray cluster (e.g. auto, or HOST:6379); default: start a local Ray. "
                             "On a cluster, --out must be on a file system that every node sees")
    parser.add_argument("--docs-per-shard", type=int, default=DEFAULT_DOCS_PER_SHARD, metavar="N",
                        help=f"documents per shard (default {DEFAULT_DOCS_PER_SHARD}); shard k holds input "
                             "documents [k*N, (k+1)*N)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="concurrent shard tasks (default: a local Ray with one per CPU, or every CPU "
                             "of the cluster); 0 runs in this process without Ray")
    parser.add_argument("--encoder", default=None, metavar="DIR",
                        help="encoder whose tokenizer to use (default: the packaged all-MiniLM-L6-v2)")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="times a shard task is re-run when its worker or node dies (default 3)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    try:
        shard_corpus(args.input, args.out, docs_per_shard=args.docs_per_shard, encoder=args.encoder,
                     workers=args.workers, address=args.address, max_retries=args.max_retries,
                     progress=not args.no_progress)
    except (OSError, ValueError) as err:
        print(f"dsdocre shard: {err}", file=sys.stderr)
        return 1
    return 0
