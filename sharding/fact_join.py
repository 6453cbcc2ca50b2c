"""``dsdocre fact-join``: the fact -> documents index, and document pairs that share a fact.

Pre-training draws pairs of documents (A, B) that share a relational fact: the same head entity
and the same tail entity (entity keys: :func:`sharding.entities.entity_key`, the KB id when the
mentions carry one, else the normalized longest mention name). This is a map-reduce on Ray tasks
over the document shards of ``dsdocre shard``:

1. map, one task per document shard: every labelled pair (h, t) of every document gives an entry
   (fact, document, h, t, relations), sent to fact partition hash(fact) mod R (R = ``partitions``);
2. reduce by fact, one task per fact partition: group the documents of each fact (written as the
   index ``facts-{p:05d}.jsonl``), then draw document pairs: all pairs when a fact has at most
   ``max_pairs_per_fact`` of them, else that many, sampled with a seed drawn from (seed, fact),
   so very common facts (a country and its capital) cannot dominate. Each pair goes to pair bucket
   hash(pair) mod B (B = :data:`PAIR_BUCKETS`, a fixed, fine grain);
3. reduce by pair, one task per pair shard: once every reducer has counted its drawn pairs, the
   number of pair shards is Q = ceil(pairs drawn / ``pairs_per_shard``), clamped to [1, B]; pair
   shard q reads the bucket range [q*B//Q, (q+1)*B//Q) of every reducer, merges the facts through
   which each pair was drawn and writes ``pairs-{q:06d}.tar`` (one ``{key}.pair.json`` sample per
   pair). So the pair shards follow the corpus (about ``pairs_per_shard`` pairs each), not R.

Everything is a pure function of (shards, max_pairs_per_fact, seed, partitions, pairs_per_shard):
re-running gives the same files. Files are written under temporary names and renamed;
``manifest.json`` comes last.

Faults. Each task writes its output to the output folder (a file system every node sees, as for
``dsdocre shard``) and returns only a small record: the map and fact-reduce tasks write their
partitioned entries to ``.work/`` (one JSON Lines file per task, partition or bucket p at the byte
range ``offsets[p]:offsets[p+1]``), and the next step reads its partition (or its contiguous range
of buckets) from there. A task whose worker or node dies is run again (``max_retries``) and writes
the same bytes; nothing the job needs lives only in a worker's memory or object store. Every finished task leaves a record in ``.progress/``
(what it read, what it wrote, the sha256 of its files, its counts); a re-run of a job that was
killed keeps every output whose record matches this job and whose files still hash to the record,
and runs only the rest: the pair shards that are missing, the reducers they need (when their
``.work`` file is gone) and the maps those need. Q is a function of the job (the reducers' counts
are), so the pair shards an earlier run of the same job left are the same Q shards: a record of
one names Q and its bucket range, and is kept only when both are this run's. ``.work/`` is deleted
when the job finishes.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import random
import shutil
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

from dsdocre import fsio
from dsdocre.errors import UserError
from dsdocre.data import manifest as mf
from dsdocre.data.tar_index import write_index
from sharding.entities import entity_key
from sharding.shard import fault_point

FORMAT = "dsdocre-pairs"
FACTS_PATTERN = "facts-{:05d}.jsonl"
PAIRS_PATTERN = "pairs-{:06d}.tar"
WORK_DIR = ".work"  # the partitioned outputs of the map and fact-reduce tasks (deleted at the end)
PROGRESS_DIR = ".progress"  # one record per finished task: what a re-run may keep
# Said when the disk fills while an output, a work file, a progress record or the manifest is written.
_JOIN_STANDS = "the outputs finished so far stand (a re-run keeps them and writes the rest)"
REDUCE_PATTERN = "reduce-{:05d}.jsonl"
# The grain at which the reduce-by-fact tasks route drawn pairs: bucket hash(pair) mod PAIR_BUCKETS,
# byte offsets per bucket in each reducer's .work file. Pair shard q of Q reads the contiguous range
# [q*B//Q, (q+1)*B//Q) from every reducer, so Q can be chosen after the reducers have counted the
# pairs, and the output does not depend on the cluster. Why 4096: fine enough for up to ~41M pairs
# at the default target before shards must grow past it (Q <= B), with shards of equal size to
# within a bucket (at 1M pairs and Q = 100: ranges of 40 or 41 buckets, ~2.5%); coarse enough that
# a reducer's record (4097 offsets, tens of kB) stays small. Part of the job: changing it moves
# pairs between shards.
PAIR_BUCKETS = 4096
DEFAULT_PAIRS_PER_SHARD = 10_000


def pair_shard_count(pairs_drawn: int, pairs_per_shard: int, buckets: int = PAIR_BUCKETS) -> int:
    """Q = ceil(pairs_drawn / pairs_per_shard), clamped to [1, buckets]. ``pairs_drawn`` is the
    reducers' count of drawn (pair, fact) entries: an upper bound on the distinct pairs (a pair drawn
    through two facts counts twice), so shards hold at most about ``pairs_per_shard`` pairs each."""
    return max(1, min(buckets, -(-pairs_drawn // pairs_per_shard)))


def bucket_range(q: int, shards: int, buckets: int = PAIR_BUCKETS) -> tuple[int, int]:
    """The pair buckets [lo, hi) of pair shard ``q`` of ``shards``: contiguous, disjoint, covering all."""
    return q * buckets // shards, (q + 1) * buckets // shards


def _bucket(text: str, n: int) -> int:
    """Stable across processes and runs (unlike hash(), which is salted per process)."""
    return zlib.crc32(text.encode()) % n


def document_facts(doc: dict) -> dict[tuple[str, str], tuple[int, int, list[str]]]:
    """fact (head key, tail key) -> (h, t, relations) of one document.

    When several entity pairs of a document have the same keys (two entities with the same name),
    the first by (h, t) stands for the fact. Pairs whose head and tail have the same key are not
    facts about two entities and are skipped.
    """
    keys = [entity_key(ent) for ent in doc["vertexSet"]]
    by_pair: dict[tuple[int, int], set[str]] = defaultdict(set)
    for lab in doc.get("labels") or ():
        by_pair[(lab["h"], lab["t"])].add(lab["r"])
    facts: dict[tuple[str, str], tuple[int, int, list[str]]] = {}
    for (h, t) in sorted(by_pair):
        hk, tk = keys[h], keys[t]
        if hk is None or tk is None or hk == tk or (hk, tk) in facts:
            continue
        facts[(hk, tk)] = (h, t, sorted(by_pair[(h, t)]))
    return facts


# --------------------------------------------------------------------------------------------
# Files: written under a unique temporary name and renamed; partitioned work files
# --------------------------------------------------------------------------------------------
def _entry(path: Path) -> dict:
    """The manifest entry {bytes, sha256} of a file put in place by :func:`_atomic`."""
    return {"bytes": path.stat().st_size, "sha256": mf.sha256_file(path)}


@contextlib.contextmanager
def _atomic(path: Path, point: str):
    """A temporary path unique to this attempt (a retried task, or one still running on a node
    taken for dead, never writes into another attempt's file), fsync'ed and renamed into place
    when the block ends: complete, or not there at all."""
    with fsio.atomic_path(path, what_stands=_JOIN_STANDS) as tmp:
        yield tmp
        fault_point(point)  # tests only: hold the task here, before its output is in place, when asked to


def _write_partitions(out: Path, name: str, parts: list[list], point: str) -> dict:
    """One JSON Lines file under .work/ holding every partition, partition p at bytes
    [offsets[p], offsets[p+1]); its entry {name, bytes, sha256, offsets}."""
    path = out / WORK_DIR / name
    path.parent.mkdir(exist_ok=True)
    offsets = [0]
    with _atomic(path, point) as tmp:
        with open(tmp, "wb") as f:
            for items in parts:
                for item in items:
                    f.write(json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
                offsets.append(f.tell())
    return {"name": f"{WORK_DIR}/{name}", **_entry(path), "offsets": offsets}


def _read_span(out: Path, name: str, start: int, end: int) -> list:
    """The items at bytes [start, end) of the .work file ``name``."""
    with open(out / name, "rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return [json.loads(line) for line in data.splitlines()]


def _read_partition(out: Path, entry: dict, part: int) -> list:
    return _read_span(out, entry["name"], entry["offsets"][part], entry["offsets"][part + 1])


def _compact_offsets(record: dict) -> dict:
    """A reducer's record with its 4,097 pair-bucket offsets as one int64 array: the driver holds
    one record per fact partition (up to 64), ~160 KB each as a list of Python ints, 32 KB so."""
    from array import array

    record["pairs_file"]["offsets"] = array("q", record["pairs_file"]["offsets"])
    return record


def _bucket_span(record: dict, lo: int, hi: int) -> dict:
    """Where a reducer's .work file holds pair buckets [lo, hi): one contiguous byte range."""
    entry = record["pairs_file"]
    return {"name": entry["name"], "start": int(entry["offsets"][lo]), "end": int(entry["offsets"][hi])}


def _progress_path(out: Path, stem: str) -> Path:
    return out / PROGRESS_DIR / f"{stem}.json"


def _save_record(out: Path, stem: str, record: dict) -> dict:
    path = _progress_path(out, stem)
    path.parent.mkdir(exist_ok=True)
    fsio.write_json_atomic(path, record, indent=None, what_stands=_JOIN_STANDS)
    return record


# --------------------------------------------------------------------------------------------
# The three steps (plain functions: Ray runs them as tasks; --workers 0 calls them in-process)
# --------------------------------------------------------------------------------------------
def map_shard(shard_path: str, shard_name: str, partitions: int, kept_path: str | None, out_dir: str,
              key: dict) -> dict:
    """Step 1: the fact entries of one document shard, by fact partition, into
    ``.work/map-{shard}.jsonl``; returns its record (counts and the file's entry). With
    ``kept_path`` (the denoiser's scored shard of this shard), only DS labels on kept pairs count."""
    import webdataset as wds

    kept = None
    if kept_path is not None:
        kept = {s["__key__"]: {tuple(p) for p in json.loads(s["kept.json"])["kept"]}
                for s in wds.WebDataset([kept_path], shardshuffle=False, empty_check=False)}
    parts: list[list] = [[] for _ in range(partitions)]
    stats = {"documents": 0, "documents_with_facts": 0, "fact_mentions": 0, "labels_dropped_by_denoiser": 0}
    for sample in wds.WebDataset([shard_path], shardshuffle=False, empty_check=False):
        doc = json.loads(sample["json"])
        if kept is not None:
            pairs = kept[sample["__key__"]]
            labels = doc.get("labels") or []
            doc["labels"] = [lab for lab in labels if (lab["h"], lab["t"]) in pairs]
            stats["labels_dropped_by_denoiser"] += len(labels) - len(doc["labels"])
        facts = document_facts(doc)
        stats["documents"] += 1
        stats["documents_with_facts"] += bool(facts)
        stats["fact_mentions"] += len(facts)
        for (hk, tk), (h, t, rels) in facts.items():
            parts[_bucket(f"{hk}\t{tk}", partitions)].append(
                [hk, tk, sample["__key__"], shard_name, doc["title"], h, t, rels])
    stem = f"map-{Path(shard_name).stem}"
    out = Path(out_dir)
    entry = _write_partitions(out, f"{stem}.jsonl", parts, stem)
    return _save_record(out, stem, {**key, **entry, "stats": stats})


def sample_pairs(n: int, cap: int, rng: random.Random) -> list[tuple[int, int]]:
    """Index pairs i < j of n documents: all of them, or ``cap`` distinct ones drawn at random."""
    total = n * (n - 1) // 2
    if total <= cap:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen: set[tuple[int, int]] = set()
    while len(chosen) < cap:  # cap << total for the facts this applies to: few rejections
        i, j = rng.randrange(n), rng.randrange(n)
        if i != j:
            chosen.add((min(i, j), max(i, j)))
    return sorted(chosen)


def reduce_facts(part: int, out_dir: str, max_pairs_per_fact: int, seed: int, buckets: int, key: dict,
                 *map_records: dict) -> dict:
    """Step 2: gather fact partition ``part`` from every map file, write its fact index, and the
    drawn document pairs by pair bucket (``buckets`` of them) into ``.work/reduce-{part}.jsonl``;
    returns its record (``stats.fact_pairs``: the pairs drawn)."""
    out = Path(out_dir)
    groups: dict[tuple[str, str], list[list]] = defaultdict(list)
    for record in map_records:
        for hk, tk, key_, shard, title, h, t, rels in _read_partition(out, record, part):
            groups[(hk, tk)].append([key_, shard, title, h, t, rels])
    pair_parts: list[list] = [[] for _ in range(buckets)]
    stats = {"facts": len(groups), "shared_facts": 0, "capped_facts": 0, "fact_pairs": 0}
    path = out / FACTS_PATTERN.format(part)
    with _atomic(path, path.stem) as tmp:
        with open(tmp, "w") as f:
            for fact in sorted(groups):
                docs = sorted(groups[fact])
                f.write(json.dumps({"head": fact[0], "tail": fact[1],
                                    "docs": [{"key": d[0], "shard": d[1], "h": d[3], "t": d[4], "relations": d[5]}
                                             for d in docs]}, ensure_ascii=False) + "\n")
                if len(docs) < 2:
                    continue
                stats["shared_facts"] += 1
                stats["capped_facts"] += len(docs) * (len(docs) - 1) // 2 > max_pairs_per_fact
                rng = random.Random(f"{seed}\t{fact[0]}\t{fact[1]}")  # str seeds are stable across runs
                for i, j in sample_pairs(len(docs), max_pairs_per_fact, rng):
                    a, b = docs[i], docs[j]
                    if a[2] == b[2]:  # the same title twice: a duplicated document, not two documents
                        continue
                    stats["fact_pairs"] += 1
                    pair_parts[_bucket(f"{a[0]}\t{b[0]}", buckets)].append(
                        [a[0], b[0], a[1], b[1], a[2], b[2],
                         {"head": fact[0], "tail": fact[1], "a": [a[3], a[4]], "b": [b[3], b[4]],
                          "relations_a": a[5], "relations_b": b[5]}])
    facts_file = {"name": path.name, "facts": len(groups), **_entry(path)}
    pairs_file = _write_partitions(out, REDUCE_PATTERN.format(part), pair_parts, f"reduce-{part:05d}")
    return _save_record(out, path.stem, {**key, "facts_file": facts_file, "pairs_file": pairs_file, "stats": stats})


def write_pairs(part: int, out_dir: str, key: dict, *spans: dict) -> dict:
    """Step 3: gather the pairs of pair shard ``part`` from every reducer (``spans``: for each, the
    byte range of its .work file that holds this shard's buckets, :func:`_bucket_span`), merge the
    facts of each document pair, write one pair shard; returns its record."""
    import webdataset as wds

    out = Path(out_dir)
    pairs: dict[tuple[str, str], dict] = {}
    for span in spans:
        for ka, kb, sa, sb, ta, tb, fact in _read_span(out, span["name"], span["start"], span["end"]):
            rec = pairs.setdefault((ka, kb), {"a": {"key": ka, "shard": sa, "title": ta},
                                              "b": {"key": kb, "shard": sb, "title": tb}, "shared_facts": []})
            rec["shared_facts"].append(fact)
    path = out / PAIRS_PATTERN.format(part)
    with _atomic(path, path.stem) as tmp:
        with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0, user="dsdocre", group="dsdocre") as sink:
            for ka, kb in sorted(pairs):
                rec = pairs[(ka, kb)]
                rec["shared_facts"].sort(key=lambda x: (x["head"], x["tail"]))
                shared = {(x["head"], x["a"][0], x["b"][0]) for x in rec["shared_facts"]}
                shared |= {(x["tail"], x["a"][1], x["b"][1]) for x in rec["shared_facts"]}
                rec["shared_entities"] = [list(s) for s in sorted(shared)]
                sink.write({"__key__": f"{ka}_{kb}", "pair.json": json.dumps(rec, ensure_ascii=False).encode()})
    entry = _entry(path)
    index = write_index(path, what_stands=_JOIN_STANDS)  # the loader finds each pair without a scan
    return _save_record(out, path.stem, {**key, "name": path.name, "pairs": len(pairs), **entry, "index": index})


# --------------------------------------------------------------------------------------------
# Resuming: which outputs of an earlier (killed) run of the same job verify
# --------------------------------------------------------------------------------------------
def _matches(record: dict, key: dict) -> bool:
    return all(record.get(k) == v for k, v in key.items())


def _kept_record(out: Path, stem: str, key: dict, *files: str | None) -> dict | None:
    """The record ``.progress/{stem}.json`` when it belongs to the job ``key`` and the files it
    names are intact (``files``: the record's fields holding file entries; None: the record itself)."""
    try:
        record = json.loads(_progress_path(out, stem).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or not _matches(record, key):
        return None
    try:
        if any(mf.check_file(out, record if f is None else record[f]) is not None for f in files):
            return None
    except (KeyError, TypeError):  # a record of another layout
        return None
    return record


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def fact_join(shard_dir: str | Path, out_dir: str | Path, *, max_pairs_per_fact: int = 8, seed: int = 0,
              partitions: int | None = None, pairs_per_shard: int = DEFAULT_PAIRS_PER_SHARD,
              workers: int | None = None, address: str | None = None, kept_dir: str | Path | None = None,
              max_retries: int = 3, log=print) -> dict:
    """Run the join over verified document shards; return the manifest written to ``out_dir``.
    ``partitions``: fact partitions (map and reduce-by-fact tasks, fact index files);
    ``pairs_per_shard``: the target number of document pairs per pair shard.
    ``kept_dir``: the denoiser's scored shards of ``shard_dir``; only labels on kept pairs count.
    Outputs of an earlier, unfinished run of the same job that verify are kept (module docstring)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    shard_dir, out = Path(shard_dir), Path(out_dir)
    source = mf.verify(shard_dir)  # never join over a corrupted or unfinished corpus
    if max_pairs_per_fact < 1:
        raise UserError("--max-pairs-per-fact must be at least 1")
    if isinstance(pairs_per_shard, bool) or not isinstance(pairs_per_shard, int) or pairs_per_shard < 1:
        raise UserError(f"--pairs-per-shard must be a whole number of at least 1 (the target number of document "
                        f"pairs per pair shard), got {pairs_per_shard!r}")
    out.mkdir(parents=True, exist_ok=True)
    (out / mf.MANIFEST).unlink(missing_ok=True)  # unfinished until the new manifest is written
    for folder in (out, out / WORK_DIR, out / PROGRESS_DIR):
        for stale in folder.glob("*.tmp-*"):  # left by a worker or a driver killed mid-write
            stale.unlink()
    kept_paths: dict[str, str | None] = {s["name"]: None for s in source["shards"]}
    kept_shas: dict[str, str | None] = dict(kept_paths)
    kept_manifest_sha = None
    if kept_dir is not None:
        from dsdocre.data.scored import FORMAT as SCORED, FORMAT_VERSION as SCORED_VERSION

        scored = mf.verify(kept_dir, expected_format=SCORED, expected_version=SCORED_VERSION)
        if scored["source_manifest_sha256"] != mf.sha256_file(shard_dir / mf.MANIFEST):
            raise UserError(f"{kept_dir} was scored from another corpus than {shard_dir}: re-run `dsdocre denoise "
                            f"score --shards {shard_dir}`")
        kept_paths = {s["source"]: str(Path(kept_dir) / s["name"]) for s in scored["shards"]}
        kept_shas = {s["source"]: s["sha256"] for s in scored["shards"]}
        kept_manifest_sha = mf.sha256_file(Path(kept_dir) / mf.MANIFEST)
    shards = [(str(shard_dir / s["name"]), s["name"]) for s in source["shards"]]
    R = partitions or max(1, min(64, len(shards)))
    source_sha = mf.sha256_file(shard_dir / mf.MANIFEST)

    # What a finished task's record must say for a re-run to keep its output: a map task depends
    # on its shard (and scored shard) and R; the later steps on the whole job (the pair buckets and
    # the target number of pairs per shard included: they decide which pairs go to which shard).
    map_keys = {s["name"]: {"source_sha256": s["sha256"], "kept_sha256": kept_shas[s["name"]], "partitions": R,
                            "format_version": mf.FORMAT_VERSION} for s in source["shards"]}
    job = {"job": hashlib.sha256(json.dumps([mf.FORMAT_VERSION, source_sha, kept_manifest_sha, max_pairs_per_fact,
                                             seed, R, PAIR_BUCKETS, pairs_per_shard]).encode()).hexdigest()[:16]}

    def pair_key(q: int, count: int) -> dict:  # what pair shard q of Q is: its record must say the same
        return {**job, "pair_shards": count, "buckets": list(bucket_range(q, count))}

    # Pair shards of an earlier run of this job that verify. Q is known only once the reducers have
    # counted their pairs, but it is a function of the job: every such record names the same Q.
    earlier_pairs: dict[int, dict] = {}
    for path in (out / PROGRESS_DIR).glob("pairs-*.json"):
        q = path.stem.removeprefix("pairs-")
        if not (q.isdigit() and path.stem == Path(PAIRS_PATTERN.format(int(q))).stem):
            continue
        r = _kept_record(out, path.stem, job, None, "index")
        count = r.get("pair_shards") if r else None
        if isinstance(count, int) and 0 <= int(q) < count and _matches(r, pair_key(int(q), count)):
            earlier_pairs[int(q)] = r
    earlier_q = {r["pair_shards"] for r in earlier_pairs.values()}
    all_pairs_kept = len(earlier_q) == 1 and set(earlier_pairs) == set(range(earlier_q.pop()))
    # A missing pair shard reads every reducer's .work file; a reducer redone reads every map's.
    reduce_files = ("facts_file",) if all_pairs_kept else ("facts_file", "pairs_file")
    reduces_kept = {p: r for p in range(R)
                    if (r := _kept_record(out, Path(FACTS_PATTERN.format(p)).stem, job, *reduce_files))}
    map_files = (None,) if len(reduces_kept) < R else ()  # else only the record's counts are needed
    maps_kept = {name: r for _, name in shards
                 if (r := _kept_record(out, f"map-{Path(name).stem}", map_keys[name], *map_files))}

    started = False
    if workers == 0:
        run_map, run_reduce, run_pairs = map_shard, reduce_facts, write_pairs

        def resolve(x):
            return x
    else:
        import ray

        from sharding import ray_setup

        started = ray_setup.connect(address, workers)
        # max_retries: a task whose worker or node dies runs again (elsewhere) and writes the same
        # files. Exceptions raised by the code itself would fail the same way again: not retried.
        opts = {"num_cpus": 1, "max_retries": max_retries, "retry_exceptions": False,
                "runtime_env": ray_setup.RUNTIME_ENV}
        run_map = ray.remote(map_shard).options(**opts).remote
        run_reduce = ray.remote(reduce_facts).options(**opts).remote
        run_pairs = ray.remote(write_pairs).options(**opts).remote

        def resolve(x):
            return x if isinstance(x, dict) else ray.get(x)
    try:
        # On Ray, the reducers get the maps' records (object references): each runs as soon as its
        # inputs exist. Only records travel; the entries are in the .work files.
        maps = [maps_kept.get(name) or run_map(path, name, R, kept_paths[name], str(out), map_keys[name])
                for path, name in shards]
        reduces = [reduces_kept.get(p) or run_reduce(p, str(out), max_pairs_per_fact, seed, PAIR_BUCKETS, job, *maps)
                   for p in range(R)]
        # The number of pair shards needs every reducer's count: wait for them all before the pair tasks.
        reduce_records = [_compact_offsets(resolve(x)) for x in tqdm(reduces, desc="fact-join reduce", unit="part",
                                                                      file=sys.stderr, disable=log is None)]
        Q = pair_shard_count(sum(r["stats"]["fact_pairs"] for r in reduce_records), pairs_per_shard)
        pairs_kept = {q: r for q, r in earlier_pairs.items()
                      if q < Q and _matches(r, pair_key(q, Q))}
        if all_pairs_kept and len(pairs_kept) < Q:  # a bug: the reducers' .work files were not checked
            raise RuntimeError(f"{out}: an earlier run of this job wrote {len(earlier_pairs)} pair shards, its "
                               f"reducers' counts give {Q}; delete {out / PROGRESS_DIR} and run again")

        def run_pair_shard(q: int):
            lo, hi = bucket_range(q, Q)  # each task gets only its byte range of every reducer's file
            return run_pairs(q, str(out), pair_key(q, Q), *(_bucket_span(r, lo, hi) for r in reduce_records))

        pairs = [pairs_kept.get(q) or run_pair_shard(q) for q in range(Q)]
        pair_records = [resolve(x) for x in tqdm(pairs, desc="fact-join pairs", unit="shard", file=sys.stderr,
                                                  disable=log is None)]
        map_records = [resolve(x) for x in maps]
    finally:
        if started:
            import ray

            ray.shutdown()

    counts = {k: sum(r["stats"][k] for r in map_records)
              for k in ("documents", "documents_with_facts", "fact_mentions", "labels_dropped_by_denoiser")}
    counts.update({k: sum(r["stats"][k] for r in reduce_records)
                   for k in ("facts", "shared_facts", "capped_facts", "fact_pairs")})
    counts["pairs"] = sum(r["pairs"] for r in pair_records)
    manifest = {
        "format": FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "source": {"path": str(shard_dir.resolve()), "manifest_sha256": source_sha,
                   "tokenizer_fingerprint": source["tokenizer_fingerprint"]},
        "kept_pairs": None if kept_dir is None else {"path": str(Path(kept_dir).resolve()),
                                                     "manifest_sha256": kept_manifest_sha},
        "max_pairs_per_fact": max_pairs_per_fact,
        "seed": seed,
        "partitions": R,
        "pairs_per_shard": pairs_per_shard,
        "pair_buckets": PAIR_BUCKETS,
        "pair_shards": Q,
        "counts": counts,
        "fact_index": [{k: r["facts_file"][k] for k in ("name", "facts", "bytes", "sha256")} for r in reduce_records],
        "shards": [{k: r[k] for k in ("name", "pairs", "bytes", "sha256", "index")} for r in pair_records],
    }
    # What an earlier run over other shards or with more partitions left, and the scratch files.
    names = {e["name"] for e in manifest["fact_index"] + manifest["shards"]}
    for path in [*out.glob(FACTS_PATTERN.replace("{:05d}", "*")), *out.glob(PAIRS_PATTERN.replace("{:06d}", "*")),
                 *out.glob(PAIRS_PATTERN.replace("{:06d}", "*") + ".idx")]:
        if path.name.removesuffix(".idx") not in names:
            path.unlink()
    records = {Path(n).stem for n in names} | {f"map-{Path(name).stem}" for _, name in shards}
    for path in (out / PROGRESS_DIR).glob("*.json"):
        if path.stem not in records:
            path.unlink()
    shutil.rmtree(out / WORK_DIR, ignore_errors=True)
    for folder in (out, out / PROGRESS_DIR):  # what workers that died mid-write left (their task was re-run)
        for stale in folder.glob("*.tmp-*"):
            stale.unlink()
    fsio.write_json_atomic(out / mf.MANIFEST, manifest, indent=1, what_stands=_JOIN_STANDS)
    if log is not None:
        kept = len(maps_kept) + len(reduces_kept) + len(pairs_kept)
        log(f"{counts['documents']} documents, {counts['facts']} distinct facts, {counts['shared_facts']} shared "
            f"by 2+ documents ({counts['capped_facts']} capped at {max_pairs_per_fact} pairs): "
            f"{counts['pairs']} document pairs in {len(pair_records)} shards -> {out} "
            f"({time.perf_counter() - t0:.1f} s; tasks: {len(shards) + R + Q - kept} run, {kept} verified and kept "
            f"[maps {len(maps_kept)}/{len(shards)}, reducers {len(reduces_kept)}/{R}, pair shards "
            f"{len(pairs_kept)}/{Q}])")
    return manifest


def iter_pairs(pair_dir: str | Path, verify: bool = True):
    """Every pair record, in order, read with plain WebDataset."""
    import webdataset as wds

    paths = mf.shard_paths(pair_dir, verify_checksums=verify, expected_format=FORMAT)
    if paths:
        for sample in wds.WebDataset(paths, shardshuffle=False, empty_check=False):
            yield json.loads(sample["pair.json"])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Index fact -> documents over the shards of `dsdocre shard` (a fact = head entity + tail entity, "
        "entities keyed by KB id, else by normalized name) and write the document pairs that share at "
        "least one fact as WebDataset shards of pair records, at most --max-pairs-per-fact pairs drawn "
        "per fact (deterministic for --seed). A map-reduce of Ray tasks; a task whose worker or node dies "
        "is re-run, and re-running a killed job keeps the outputs that verify. Format: docs/shards.md.")
    parser.add_argument("--shards", required=True, metavar="DIR", help="output folder of `dsdocre shard` (verified)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="output folder (what an unfinished run of the same job left there and verifies is "
                             "kept; other files are replaced)")
    parser.add_argument("--max-pairs-per-fact", type=int, default=8, metavar="K",
                        help="pairs drawn per fact at most (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-fact pair sampling (default 0)")
    parser.add_argument("--kept", metavar="DIR", help="the denoiser's scored shards of --shards "
                        "(`dsdocre denoise score`): only distant labels on kept pairs make facts")
    parser.add_argument("--partitions", type=int, default=None, metavar="R",
                        help="fact partitions = map-side partitions = reduce-by-fact tasks = fact index files "
                             "(default: the number of document shards, at most 64); the number of pair shards "
                             "follows --pairs-per-shard instead")
    parser.add_argument("--pairs-per-shard", type=int, default=DEFAULT_PAIRS_PER_SHARD, metavar="N",
                        help=f"target document pairs per pair shard (default {DEFAULT_PAIRS_PER_SHARD}): the join "
                             f"writes ceil(pairs drawn / N) pair shards, at least 1 and at most {PAIR_BUCKETS} "
                             f"(pairs are hashed into {PAIR_BUCKETS} buckets and each shard takes a contiguous range "
                             "of them, so shard sizes vary a little). Pairs drawn through several facts count once "
                             "per fact, so shards may hold somewhat fewer than N. Part of the job: a re-run with "
                             "another N keeps none of an earlier unfinished run's outputs")
    parser.add_argument("--address", default=None, metavar="RAY_ADDRESS", help="join a running Ray cluster")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="CPUs of the local Ray (default: all); 0 runs in this process without Ray")
    parser.add_argument("--max-retries", type=int, default=3,
                        help="times a task is re-run when its worker or node dies (default 3)")


def run(args: argparse.Namespace) -> int:
    try:
        fact_join(args.shards, args.out, max_pairs_per_fact=args.max_pairs_per_fact, seed=args.seed,
                  partitions=args.partitions, pairs_per_shard=args.pairs_per_shard, workers=args.workers,
                  address=args.address, kept_dir=args.kept, max_retries=args.max_retries)
    except (OSError, ValueError, mf.ShardVerificationError) as err:
        print(f"dsdocre fact-join: {err}", file=sys.stderr)
        return 1
    return 0
