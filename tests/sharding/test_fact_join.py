"""`dsdocre fact-join`: fact index, document pairs, the per-fact cap, determinism, Ray = in-process."""

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
from sharding.fact_join import fact_join, iter_pairs, sample_pairs  # noqa: E402
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
        on_ray = fact_join(shards, tmp_path / "ray", max_pairs_per_fact=2, seed=1, partitions=3, log=None)
    finally:
        ray.shutdown()
    local = fact_join(shards, tmp_path / "local", max_pairs_per_fact=2, seed=1, partitions=3, workers=0, log=None)
    assert on_ray == local
    assert list(iter_pairs(tmp_path / "ray")) == list(iter_pairs(tmp_path / "local"))
