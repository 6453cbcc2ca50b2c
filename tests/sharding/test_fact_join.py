"""`dsdocre fact-join`: fact index, document pairs, the per-fact cap, determinism, Ray = in-process,
pair shards sized by --pairs-per-shard, a killed join resumed."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsdocre.data import manifest as mf  # noqa: E402
from dsdocre.errors import UserError  # noqa: E402
from sharding import fact_join as fj  # noqa: E402
from sharding.fact_join import bucket_range, fact_join, iter_pairs, pair_shard_count, sample_pairs  # noqa: E402
from sharding.shard import shard_corpus  # noqa: E402


def make_doc(title: str, names: list[str], labels, kb_ids=None) -> dict:
    sents, vertex_set = [], []
    for i, name in enumerate(names):
        words = name.split()
        sents.append(words + ["is", "here", "."])
        mention = {"name": name, "pos": [0, len(words)], "sent_id": i, "type": "MISC"}
        if kb_ids:
            mention["kb_id"] = kb_ids[i]
        vertex_set.append([mention])
    return {"title": title, "sents": sents, "vertexSet": vertex_set,
            "labels": [{"h": h, "t": t, "r": r, "evidence": []} for h, t, r in labels]}


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Docs 0-2 share (Paris -> France) by name; docs 3-4 share (Q1 -> Q2) by KB id, and doc 4
    also shares (Paris -> France) with 0-2; doc 5 has a fact of its own; doc 6 duplicates doc 0's title."""
    root = tmp_path_factory.mktemp("fj")
    docs = [
        make_doc("d0", ["Paris", "France", "Seine"], [(0, 1, "P17"), (2, 1, "P17")]),
        make_doc("d1", ["Berlin", "paris ,", "FRANCE"], [(1, 2, "P17")]),
        make_doc("d2", ["France", "Paris"], [(1, 0, "P17"), (0, 1, "P36")]),
        make_doc("d3", ["Ada", "London"], [(0, 1, "P19")], kb_ids=["Q1", "Q2"]),
        make_doc("d4", ["Lovelace", "Londres", "Paris", "France"], [(0, 1, "P19"), (2, 3, "P17")],
                 kb_ids=["Q1", "Q2", None, None]),
        make_doc("d5", ["Rome", "Italy"], [(0, 1, "P17")]),
        make_doc("d0", ["Paris", "France"], [(0, 1, "P17")]),
    ]
    (root / "docs.json").write_text(json.dumps(docs))
    shard_corpus([root / "docs.json"], root / "shards", docs_per_shard=3, workers=0, progress=False, log=None)
    return root / "shards"


def pairs_of(out: Path) -> dict[tuple[str, str], dict]:
    return {(p["a"]["title"], p["b"]["title"]): p for p in iter_pairs(out)}


def test_pairs_share_facts_with_entity_indices(shards, tmp_path):
    m = fact_join(shards, tmp_path / "out", max_pairs_per_fact=100, workers=0, partitions=3, log=None)
    pairs = pairs_of(tmp_path / "out")
    # Paris->France is in d0, d1, d2, d4 and the duplicate d0 (document 6, never paired with d0).
    assert set(pairs) == {("d0", "d1"), ("d0", "d2"), ("d0", "d4"), ("d1", "d2"), ("d1", "d4"), ("d2", "d4"),
                          ("d1", "d0"), ("d2", "d0"), ("d4", "d0"), ("d3", "d4")}
    p = pairs[("d3", "d4")]
    assert p["shared_facts"] == [{"head": "kb:Q1", "tail": "kb:Q2", "a": [0, 1], "b": [0, 1],
                                  "relations_a": ["P19"], "relations_b": ["P19"]}]
    assert p["shared_entities"] == [["kb:Q1", 0, 0], ["kb:Q2", 1, 1]]
    p = pairs[("d1", "d2")]
    assert p["shared_facts"][0]["head"] == "name:paris" and p["shared_facts"][0]["a"] == [1, 2]
    assert p["shared_facts"][0]["b"] == [1, 0] and p["shared_facts"][0]["relations_b"] == ["P17"]
    assert p["a"]["shard"] == "shard-000000.tar" and p["a"]["key"] == "0000-0000000001"
    assert m["counts"]["documents"] == 7 and m["counts"]["pairs"] == len(pairs) == 10
    # The index: fact -> documents (with the documents' entity indices).
    index = [json.loads(x) for f in m["fact_index"] for x in (tmp_path / "out" / f["name"]).read_text().splitlines()]
    paris = next(x for x in index if (x["head"], x["tail"]) == ("name:paris", "name:france"))
    assert [d["key"] for d in paris["docs"]] == ["0000-0000000000", "0000-0000000001", "0000-0000000002",
                                                 "0000-0000000004", "0000-0000000006"]
    assert m["counts"]["facts"] == len(index) == 5  # + seine->france, france->paris, Q1->Q2, rome->italy
    mf.verify(tmp_path / "out", expected_format="dsdocre-pairs")


def test_cap_per_fact_is_deterministic(shards, tmp_path):
    a = fact_join(shards, tmp_path / "a", max_pairs_per_fact=2, seed=7, workers=0, log=None)
    b = fact_join(shards, tmp_path / "b", max_pairs_per_fact=2, seed=7, workers=0, log=None)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]
    pairs = pairs_of(tmp_path / "a")
    via_paris = [k for k, p in pairs.items() if any(f["head"] == "name:paris" for f in p["shared_facts"])]
    assert len(via_paris) <= 2 and ("d3", "d4") in pairs  # the capped fact gives at most 2 pairs
    assert a["counts"]["capped_facts"] == 1


def test_sample_pairs():
    assert sample_pairs(3, 8, random.Random(0)) == [(0, 1), (0, 2), (1, 2)]
    drawn = sample_pairs(1000, 8, random.Random("x"))
    assert len(set(drawn)) == 8 and all(i < j < 1000 for i, j in drawn)
    assert drawn == sample_pairs(1000, 8, random.Random("x"))


def test_refuses_corrupted_shards(shards, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(shards, bad)
    (bad / "shard-000001.tar").write_bytes(b"x")
    with pytest.raises(mf.ShardVerificationError, match="shard-000001.tar"):
        fact_join(bad, tmp_path / "out", workers=0, log=None)


def test_on_ray_equals_in_process(shards, tmp_path):
    import ray

    # address="local": a Ray of this test's own, never another one running on the machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 << 20)
    try:
        on_ray = fact_join(shards, tmp_path / "ray", max_pairs_per_fact=2, seed=1, partitions=3, pairs_per_shard=2,
                           log=None)
    finally:
        ray.shutdown()
    local = fact_join(shards, tmp_path / "local", max_pairs_per_fact=2, seed=1, partitions=3, pairs_per_shard=2,
                      workers=0, log=None)
    assert on_ray == local and len(local["shards"]) == 2  # 3 pairs drawn, 2 per shard
    assert list(iter_pairs(tmp_path / "ray")) == list(iter_pairs(tmp_path / "local"))


# --------------------------------------------------------------------------------------------
# Pair shards sized by --pairs-per-shard
# --------------------------------------------------------------------------------------------
def test_pair_shard_count_and_bucket_ranges():
    assert pair_shard_count(0, 10_000) == 1 and pair_shard_count(1, 10_000) == 1
    assert pair_shard_count(10_000, 10_000) == 1 and pair_shard_count(10_001, 10_000) == 2
    assert pair_shard_count(1_000_000, 10_000) == 100  # the default at a million pairs
    assert pair_shard_count(10**12, 1) == fj.PAIR_BUCKETS  # at most one bucket per shard
    for q_count in (1, 3, 100, 4095, fj.PAIR_BUCKETS):
        ranges = [bucket_range(q, q_count) for q in range(q_count)]
        assert ranges[0][0] == 0 and ranges[-1][1] == fj.PAIR_BUCKETS  # contiguous, disjoint, every bucket
        assert all(hi > lo for lo, hi in ranges) and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert {hi - lo for lo, hi in (bucket_range(q, 100) for q in range(100))} == {40, 41}


def _records(out: Path) -> list[dict]:
    return sorted(iter_pairs(out), key=lambda p: (p["a"]["key"], p["b"]["key"]))


@pytest.mark.parametrize("pairs_per_shard, expected", [(3, 4), (1, 10), (7, 2)])
def test_pairs_per_shard_sets_the_shards_and_keeps_every_pair(shards, tmp_path, pairs_per_shard, expected):
    one = fact_join(shards, tmp_path / "one", max_pairs_per_fact=100, workers=0, log=None)
    many = fact_join(shards, tmp_path / "many", max_pairs_per_fact=100, pairs_per_shard=pairs_per_shard, workers=0,
                     log=None)
    drawn = many["counts"]["fact_pairs"]
    assert drawn == 10 and expected == max(1, min(fj.PAIR_BUCKETS, -(-drawn // pairs_per_shard)))
    assert one["pair_shards"] == len(one["shards"]) == 1 and one["pairs_per_shard"] == fj.DEFAULT_PAIRS_PER_SHARD
    assert many["pair_shards"] == len(many["shards"]) == expected and many["pairs_per_shard"] == pairs_per_shard
    assert [s["name"] for s in many["shards"]] == [f"pairs-{q:06d}.tar" for q in range(expected)]
    assert one["partitions"] == many["partitions"] == 3  # the fact partitions (3 document shards)
    assert one["fact_index"] == many["fact_index"] and one["counts"] == many["counts"]
    # The very same pair records: none lost, none duplicated, none changed.
    keys = [(p["a"]["key"], p["b"]["key"]) for p in iter_pairs(tmp_path / "many")]
    assert len(keys) == len(set(keys)) == many["counts"]["pairs"] == sum(s["pairs"] for s in many["shards"]) == 10
    assert _records(tmp_path / "many") == _records(tmp_path / "one")
    mf.verify(tmp_path / "many", expected_format="dsdocre-pairs")
    again = fact_join(shards, tmp_path / "again", max_pairs_per_fact=100, pairs_per_shard=pairs_per_shard, workers=0,
                      log=None)
    assert again == many  # every file's sha256: the same bytes


@pytest.mark.parametrize("bad", [0, -5, 2.5, True, "10"])
def test_pairs_per_shard_is_validated(shards, tmp_path, bad):
    with pytest.raises(UserError, match="--pairs-per-shard must be a whole number of at least 1"):
        fact_join(shards, tmp_path / "out", pairs_per_shard=bad, workers=0, log=None)
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_cli_pairs_per_shard(shards, tmp_path, capsys):
    from dsdocre import cli

    with pytest.raises(SystemExit):
        cli.main(["fact-join", "--help"])
    assert "--pairs-per-shard" in capsys.readouterr().out
    assert cli.main(["fact-join", "--shards", str(shards), "--out", str(tmp_path / "bad"), "--workers", "0",
                     "--pairs-per-shard", "0"]) != 0
    assert "--pairs-per-shard must be a whole number of at least 1" in capsys.readouterr().err
    assert cli.main(["fact-join", "--shards", str(shards), "--out", str(tmp_path / "out"), "--workers", "0",
                     "--pairs-per-shard", "4"]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["pairs_per_shard"] == 4 and manifest["pair_shards"] == len(manifest["shards"]) == 2


# --------------------------------------------------------------------------------------------
# A killed join, run again: what verifies is kept, the rest redone, the same bytes
# --------------------------------------------------------------------------------------------
class Killed(Exception):
    pass


def _files(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def _stats(out: Path, names) -> dict[str, tuple]:
    return {n: ((out / n).stat().st_ino, (out / n).stat().st_mtime_ns) for n in names}


@pytest.mark.parametrize("kill, drop_work, kept", [
    ("pairs-000002", False, "tasks: 2 run, 8 verified and kept [maps 3/3, reducers 3/3, pair shards 2/4]"),
    ("pairs-000002", True, "tasks: 8 run, 2 verified and kept [maps 0/3, reducers 0/3, pair shards 2/4]"),
    ("facts-00001", False, "tasks: 6 run, 4 verified and kept [maps 3/3, reducers 1/3, pair shards 0/4]"),
])
def test_killed_join_resumes_to_the_same_bytes(shards, tmp_path, monkeypatch, kill, drop_work, kept):
    """The driver dies while the task writing ``kill`` runs (tasks before it finished); with
    ``drop_work`` the .work files are lost as well. The re-run keeps what verifies, recognises the
    pair shards it wrote (4 of them: 10 pairs drawn, 3 per shard) and writes the same files."""
    opts = {"max_pairs_per_fact": 100, "seed": 3, "pairs_per_shard": 3, "workers": 0}
    ref = fact_join(shards, tmp_path / "ref", log=None, **opts)
    out = tmp_path / "out"

    def dies(point):
        if point == kill:
            raise Killed(point)
    monkeypatch.setattr(fj, "fault_point", dies)
    with pytest.raises(Killed):
        fact_join(shards, out, log=None, **opts)
    monkeypatch.undo()
    assert not (out / "manifest.json").exists()
    if drop_work:
        import shutil

        shutil.rmtree(out / ".work")
    before = _stats(out, [p.name for p in out.glob("pairs-*.tar")])
    assert len(before) == (2 if kill.startswith("pairs") else 0)
    lines = []
    again = fact_join(shards, out, log=lines.append, **opts)
    assert kept in lines[0], lines[0]
    assert again == ref and _files(out) == _files(tmp_path / "ref")
    assert _stats(out, before) == before  # the kept pair shards were not rewritten
    assert not (out / ".work").exists() and not list(out.glob("*.tmp-*"))
    # Run again, finished: nothing to do. With another target: nothing of the earlier job is kept,
    # and no pair shard of the earlier layout is left behind.
    lines.clear()
    assert fact_join(shards, out, log=lines.append, **opts) == ref
    assert "tasks: 0 run, 10 verified and kept [maps 3/3, reducers 3/3, pair shards 4/4]" in lines[0], lines[0]
    lines.clear()
    other = fact_join(shards, out, log=lines.append, **{**opts, "pairs_per_shard": 100})
    assert "tasks: 7 run, 0 verified and kept [maps 0/3, reducers 0/3, pair shards 0/1]" in lines[0], lines[0]
    assert sorted(p.name for p in out.glob("pairs-*")) == ["pairs-000000.tar", "pairs-000000.tar.idx"] and other["pair_shards"] == 1
    assert _records(out) == _records(tmp_path / "ref")
