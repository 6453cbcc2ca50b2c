"""``dsdocre fact-join``: the fact -> documents index, and document pairs that share a fact.

Pre-training draws pairs of documents (A, B) that share a relational fact: the same head entity
and the same tail entity (entity keys: :func:`sharding.entities.entity_key`, the KB id when the
mentions carry one, else the normalized longest mention name). This is a map-reduce on Ray tasks
over the document shards of ``dsdocre shard``:

1. map, one task per document shard: every labelled pair (h, t) of every document gives an entry
   (fact, document, h, t, relations), sent to partition hash(fact) mod R;
2. reduce by fact, one task per partition: group the documents of each fact (written as the
   index ``facts-{p:05d}.jsonl``), then draw document pairs: all pairs when a fact has at most
   ``max_pairs_per_fact`` of them, else that many, sampled with a seed drawn from (seed, fact),
   so very common facts (a country and its capital) cannot dominate. Each pair goes to partition
   hash(pair) mod R;
3. reduce by pair, one task per partition: merge the facts through which each pair was drawn and
   write the pair shard ``pairs-{q:06d}.tar`` (one ``{key}.pair.json`` sample per pair).

Everything is a pure function of (shards, max_pairs_per_fact, seed, partitions): re-running gives
the same files. Files are written under temporary names and renamed; ``manifest.json`` comes last.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import zlib
from collections import defaultdict
from pathlib import Path

from dsdocre.errors import UserError
from dsdocre.data import manifest as mf
from sharding.entities import entity_key

FORMAT = "dsdocre-pairs"
FACTS_PATTERN = "facts-{:05d}.jsonl"
PAIRS_PATTERN = "pairs-{:06d}.tar"


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
# The three steps (plain functions: Ray runs them as tasks; --workers 0 calls them in-process)
# --------------------------------------------------------------------------------------------
def map_shard(shard_path: str, shard_name: str, partitions: int, kept_path: str | None = None) -> list:
    """Step 1: [stats] + one list of fact entries per fact partition. With ``kept_path`` (the
    denoiser's scored shard of this shard), only DS labels on kept pairs count."""
    import webdataset as wds

    kept = None
    if kept_path is not None:
        kept = {s["__key__"]: {tuple(p) for p in json.loads(s["kept.json"])["kept"]}
                for s in wds.WebDataset([kept_path], shardshuffle=False, empty_check=False)}
    parts: list[list[tuple]] = [[] for _ in range(partitions)]
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
                (hk, tk, sample["__key__"], shard_name, doc["title"], h, t, rels))
    return [stats] + parts


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


def reduce_facts(part: int, out_dir: str, max_pairs_per_fact: int, seed: int, partitions: int,
                 *entry_lists: list) -> list:
    """Step 2: write the fact index of one partition; return [stats, record] + pair partitions."""
    groups: dict[tuple[str, str], list[tuple]] = defaultdict(list)
    for entries in entry_lists:
        for hk, tk, key, shard, title, h, t, rels in entries:
            groups[(hk, tk)].append((key, shard, title, h, t, rels))
    pair_parts: list[list[tuple]] = [[] for _ in range(partitions)]
    stats = {"facts": len(groups), "shared_facts": 0, "capped_facts": 0, "fact_pairs": 0}
    path = Path(out_dir) / FACTS_PATTERN.format(part)
    tmp = mf.tmp_path(path)
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
                pair_parts[_bucket(f"{a[0]}\t{b[0]}", partitions)].append(
                    (a[0], b[0], a[1], b[1], a[2], b[2],
                     {"head": fact[0], "tail": fact[1], "a": [a[3], a[4]], "b": [b[3], b[4]],
                      "relations_a": a[5], "relations_b": b[5]}))
    os.replace(tmp, path)
    record = {"name": path.name, "facts": len(groups), "bytes": path.stat().st_size, "sha256": mf.sha256_file(path)}
    return [stats, record] + pair_parts


def write_pairs(part: int, out_dir: str, *pair_lists: list) -> dict:
    """Step 3: merge the facts of each document pair; write one pair shard."""
    import webdataset as wds

    pairs: dict[tuple[str, str], dict] = {}
    for entries in pair_lists:
        for ka, kb, sa, sb, ta, tb, fact in entries:
            rec = pairs.setdefault((ka, kb), {"a": {"key": ka, "shard": sa, "title": ta},
                                              "b": {"key": kb, "shard": sb, "title": tb}, "shared_facts": []})
            rec["shared_facts"].append(fact)
    path = Path(out_dir) / PAIRS_PATTERN.format(part)
    tmp = mf.tmp_path(path)
    with open(tmp, "wb") as f, wds.TarWriter(f, encoder=False, mtime=0, user="dsdocre", group="dsdocre") as sink:
        for ka, kb in sorted(pairs):
            rec = pairs[(ka, kb)]
            rec["shared_facts"].sort(key=lambda x: (x["head"], x["tail"]))
            shared = {(x["head"], x["a"][0], x["b"][0]) for x in rec["shared_facts"]}
            shared |= {(x["tail"], x["a"][1], x["b"][1]) for x in rec["shared_facts"]}
            rec["shared_entities"] = [list(s) for s in sorted(shared)]
            sink.write({"__key__": f"{ka}_{kb}", "pair.json": json.dumps(rec, ensure_ascii=False).encode()})
    os.replace(tmp, path)
    return {"name": path.name, "pairs": len(pairs), "bytes": path.stat().st_size, "sha256": mf.sha256_file(path)}


# --------------------------------------------------------------------------------------------
# The driver
# --------------------------------------------------------------------------------------------
def fact_join(shard_dir: str | Path, out_dir: str | Path, *, max_pairs_per_fact: int = 8, seed: int = 0,
              partitions: int | None = None, workers: int | None = None, address: str | None = None,
              kept_dir: str | Path | None = None, log=print) -> dict:
    """Run the join over verified document shards; return the manifest written to ``out_dir``.
    ``kept_dir``: the denoiser's scored shards of ``shard_dir``; only labels on kept pairs count."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    shard_dir, out = Path(shard_dir), Path(out_dir)
    source = mf.verify(shard_dir)  # never join over a corrupted or unfinished corpus
    if max_pairs_per_fact < 1:
        raise UserError("--max-pairs-per-fact must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    for stale in list(out.glob("*.tmp-*")) + list(out.glob(FACTS_PATTERN.replace("{:05d}", "*"))) \
            + list(out.glob(PAIRS_PATTERN.replace("{:06d}", "*"))):
        stale.unlink()  # an earlier run's files: they are all rewritten
    (out / mf.MANIFEST).unlink(missing_ok=True)
    kept_paths: dict[str, str | None] = {s["name"]: None for s in source["shards"]}
    if kept_dir is not None:
        from dsdocre.data.scored import FORMAT as SCORED, FORMAT_VERSION as SCORED_VERSION

        scored = mf.verify(kept_dir, expected_format=SCORED, expected_version=SCORED_VERSION)
        if scored["source_manifest_sha256"] != mf.sha256_file(shard_dir / mf.MANIFEST):
            raise UserError(f"{kept_dir} was scored from another corpus than {shard_dir}: re-run `dsdocre denoise "
                            f"score --shards {shard_dir}`")
        kept_paths = {s["source"]: str(Path(kept_dir) / s["name"]) for s in scored["shards"]}
    shards = [(str(shard_dir / s["name"]), s["name"]) for s in source["shards"]]
    R = partitions or max(1, min(64, len(shards)))

    if workers == 0:
        maps = [map_shard(path, name, R, kept_paths[name]) for path, name in shards]
        reduces = [reduce_facts(p, str(out), max_pairs_per_fact, seed, R, *[m[1 + p] for m in maps])
                   for p in range(R)]
        map_stats = [m[0] for m in maps]
        fact_records = [r[1] for r in reduces]
        pair_records = [write_pairs(q, str(out), *[r[2 + q] for r in reduces]) for q in range(R)]
        reduce_stats = [r[0] for r in reduces]
    else:
        import ray

        from sharding import ray_setup

        started = ray_setup.connect(address, workers)
        try:
            opts = {"num_cpus": 1, "max_retries": 3, "runtime_env": ray_setup.RUNTIME_ENV}
            map_task = ray.remote(map_shard).options(num_returns=1 + R, **opts)
            reduce_task = ray.remote(reduce_facts).options(num_returns=2 + R, **opts)
            pair_task = ray.remote(write_pairs).options(**opts)
            # Ray passes each partition's object references to the reducers and runs a reducer as
            # soon as its inputs exist; intermediate data lives in the object store (spilled to disk
            # when it does not fit), never in the driver.
            maps = [map_task.remote(path, name, R, kept_paths[name]) for path, name in shards]
            reduces = [reduce_task.remote(p, str(out), max_pairs_per_fact, seed, R, *[m[1 + p] for m in maps])
                       for p in range(R)]
            pairs = [pair_task.remote(q, str(out), *[r[2 + q] for r in reduces]) for q in range(R)]
            pair_records = []
            for ref in tqdm(pairs, desc="fact-join", unit="part", file=sys.stderr, disable=log is None):
                pair_records.append(ray.get(ref))
            map_stats = ray.get([m[0] for m in maps])
            reduce_stats = ray.get([r[0] for r in reduces])
            fact_records = ray.get([r[1] for r in reduces])
        finally:
            if started:
                ray.shutdown()

    counts = {k: sum(s[k] for s in map_stats)
              for k in ("documents", "documents_with_facts", "fact_mentions", "labels_dropped_by_denoiser")}
    counts.update({k: sum(s[k] for s in reduce_stats) for k in ("facts", "shared_facts", "capped_facts", "fact_pairs")})
    counts["pairs"] = sum(r["pairs"] for r in pair_records)
    manifest = {
        "format": FORMAT,
        "format_version": mf.FORMAT_VERSION,
        "source": {"path": str(shard_dir.resolve()), "manifest_sha256": mf.sha256_file(shard_dir / mf.MANIFEST),
                   "tokenizer_fingerprint": source["tokenizer_fingerprint"]},
        "kept_pairs": None if kept_dir is None else {
            "path": str(Path(kept_dir).resolve()), "manifest_sha256": mf.sha256_file(Path(kept_dir) / mf.MANIFEST)},
        "max_pairs_per_fact": max_pairs_per_fact,
        "seed": seed,
        "partitions": R,
        "counts": counts,
        "fact_index": fact_records,
        "shards": pair_records,
    }
    mf.write_json_atomic(out / mf.MANIFEST, manifest)
    if log is not None:
        log(f"{counts['documents']} documents, {counts['facts']} distinct facts, {counts['shared_facts']} shared "
            f"by 2+ documents ({counts['capped_facts']} capped at {max_pairs_per_fact} pairs): "
            f"{counts['pairs']} document pairs in {len(pair_records)} shards -> {out} "
            f"({time.perf_counter() - t0:.1f} s)")
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
        "per fact (deterministic for --seed). A map-reduce of Ray tasks. Format: docs/shards.md.")
    parser.add_argument("--shards", required=True, metavar="DIR", help="output folder of `dsdocre shard` (verified)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (its earlier files are replaced)")
    parser.add_argument("--max-pairs-per-fact", type=int, default=8, metavar="K",
                        help="pairs drawn per fact at most (default 8)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-fact pair sampling (default 0)")
    parser.add_argument("--kept", metavar="DIR", help="the denoiser's scored shards of --shards "
                        "(`dsdocre denoise score`): only distant labels on kept pairs make facts")
    parser.add_argument("--partitions", type=int, default=None, metavar="R",
                        help="fact and pair partitions = fact index files = pair shards (default: the number "
                             "of document shards, at most 64)")
    parser.add_argument("--address", default=None, metavar="RAY_ADDRESS", help="join a running Ray cluster")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="CPUs of the local Ray (default: all); 0 runs in this process without Ray")


def run(args: argparse.Namespace) -> int:
    try:
        fact_join(args.shards, args.out, max_pairs_per_fact=args.max_pairs_per_fact, seed=args.seed,
                  partitions=args.partitions, workers=args.workers, address=args.address, kept_dir=args.kept)
    except (OSError, ValueError, mf.ShardVerificationError) as err:
        print(f"dsdocre fact-join: {err}", file=sys.stderr)
        return 1
    return 0
