"""Tests for dsdocre.synth: the synthetic annotated + distantly supervised corpus."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import pytest

from dsdocre.relations import relation_names
from dsdocre import synth
from dsdocre.synth import generate_corpus, iter_documents

SEED = 3
FILES = ("train_annotated.json", "dev.json", "test.json", "train_distant.json",
         "train_distant_truth.jsonl", "kb.json", "stats.json")
DOC_FILES = ("train_annotated.json", "dev.json", "test.json", "train_distant.json")
ANNOTATED = ("train_annotated.json", "dev.json", "test.json")


def small_corpus(out: Path, seed: int = SEED, **kw) -> dict:
    kw.setdefault("dev_docs", 40)
    kw.setdefault("test_docs", 30)
    kw.setdefault("distant_docs", 300)
    return generate_corpus(out, 120, seed, progress=False, **kw)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    small_corpus(out)
    return out


def load(path: Path):
    return json.loads(path.read_text())


def truth_lines(corpus: Path) -> list[dict]:
    return [json.loads(line) for line in (corpus / "train_distant_truth.jsonl").read_text().splitlines()]


def sent_sets(doc: dict) -> list[set[int]]:
    return [{m["sent_id"] for m in ent} for ent in doc["vertexSet"]]


# ------------------------------------------------------------------------------------------------
def test_files_and_counts(corpus):
    for name in FILES:
        assert (corpus / name).is_file(), name
    assert len(load(corpus / "train_annotated.json")) == 120
    assert len(load(corpus / "dev.json")) == 40
    assert len(load(corpus / "test.json")) == 30
    assert len(load(corpus / "train_distant.json")) == 300
    assert len(truth_lines(corpus)) == 300
    stats = load(corpus / "stats.json")
    assert stats["seed"] == SEED
    assert stats["splits"]["train_annotated"]["docs"] == 120
    assert stats["splits"]["train_distant"]["docs"] == 300


def test_default_dev_test_sizes(tmp_path):
    stats = generate_corpus(tmp_path, 10, SEED, progress=False, distant_docs=5)
    assert stats["splits"]["dev"]["docs"] == 50 and stats["splits"]["test"]["docs"] == 50
    assert stats["splits"]["train_annotated"]["docs"] == 10


def test_deterministic_for_a_seed(corpus, tmp_path):
    synth.clear_kb_cache()  # rebuild the KB too
    small_corpus(tmp_path / "again")
    for name in FILES:
        assert (corpus / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    small_corpus(tmp_path / "other", seed=SEED + 1)
    for name in FILES:
        assert (corpus / name).read_bytes() != (tmp_path / "other" / name).read_bytes(), name


# sha256 of each file of generate_corpus(out, 12, SEED, dev_docs=4, test_docs=4, distant_docs=12),
# computed with the single-module dsdocre/synth.py before it became a package: the output of a seed
# must not change (a deliberate change of the generator updates these).
PINNED_SHA256 = {
    "train_annotated.json": "2a06f668a694b20b606b330df094a294a35996c313f13d186c771efea9167379",
    "dev.json": "c1ca4fd020364386dbfe8e297669f458971a84ab549c2e30598b1fde93be4d19",
    "test.json": "63aa5ef81a0a5e05f9b70f4e9bc4c7e7844095fe384561ec377d325d21898d1f",
    "train_distant.json": "0ff0947c66abe3f9f45043068b9207f5075c78fa2d5a89786ee1f6ed64ca41a1",
    "train_distant_truth.jsonl": "13112e848a3447fdabba5c9f6f95ab5b3fc7340eda4979c079c6bbf1e3fc08f6",
    "kb.json": "c90043aa9853f4ba6c7fb0f6ded3c66f965f9681c765462f082a9a5e8855985d",
    "stats.json": "ef2b70942a32b5ad3049f29809f4af4db1174312e6a872482c30f4f8902030f9",
}


def test_corpus_bytes_are_pinned(tmp_path):
    generate_corpus(tmp_path, 12, SEED, dev_docs=4, test_docs=4, distant_docs=12, progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(PINNED_SHA256)
    got = {name: hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in PINNED_SHA256}
    assert got == PINNED_SHA256


def test_package_layout():
    """The public names stay importable from dsdocre.synth; the library modules do not load the
    command-line code, and the command module keeps the CLI hooks."""
    import argparse
    import subprocess
    import sys

    from dsdocre.synth import SPLITS, KnowledgeBase, command, get_kb
    from dsdocre.synth import builder, corpus, kb, splits

    assert SPLITS is splits.SPLITS == ("train_annotated", "dev", "test", "train_distant")
    assert KnowledgeBase is kb.KnowledgeBase and get_kb is kb.get_kb and synth.clear_kb_cache is kb.clear_kb_cache
    assert generate_corpus is corpus.generate_corpus and iter_documents is builder.iter_documents
    parser = argparse.ArgumentParser(prog="dsdocre synth")
    command.add_arguments(parser)
    assert parser.parse_args(["--out", "x"]).docs == 1000
    code = ("import sys, dsdocre.synth; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('argparse', 'ray', 'sharding', 'torch') "
            "or m == 'dsdocre.synth.command']; print(bad); sys.exit(bool(bad))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_no_synth_module_imports_another_modules_private_name():
    """A name one module of the package takes from another is public: a leading underscore means
    "this module's own", and a reader renaming it must not break a sibling."""
    import ast

    private = []
    for path in Path(synth.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dsdocre"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private


def test_documents_are_independent_of_their_range():
    whole = list(iter_documents("train_distant", SEED, 12))
    part = list(iter_documents("distant", SEED, 4, start=8))
    assert part == whole[8:]


def test_every_document_is_valid(corpus):
    rels = set(relation_names())
    for name in DOC_FILES:
        for d_i, doc in enumerate(load(corpus / name)):
            where = f"{name}[{d_i}] {doc['title']!r}"
            sents = doc["sents"]
            assert 3 <= len(sents) <= 16, where
            assert all(s and all(isinstance(w, str) and w and " " not in w for w in s) for s in sents), where
            ents = doc["vertexSet"]
            assert 2 <= len(ents) <= 20, where
            kb_ids = set()
            for ent in ents:
                assert ent, where  # at least one mention
                assert len({m["kb_id"] for m in ent}) == 1 and len({m["type"] for m in ent}) == 1, where
                kb_ids.add(ent[0]["kb_id"])
                for m in ent:
                    assert m["type"] in {"PER", "ORG", "LOC", "TIME", "NUM", "MISC"}, where
                    assert 0 <= m["sent_id"] < len(sents), where
                    s, e = m["pos"]
                    assert 0 <= s < e <= len(sents[m["sent_id"]]), where
                    assert " ".join(sents[m["sent_id"]][s:e]) == m["name"], where
            assert len(kb_ids) == len(ents), where  # one entity per KB id
            seen = set()
            for lab in doc["labels"]:
                h, t, r = lab["h"], lab["t"], lab["r"]
                assert 0 <= h < len(ents) and 0 <= t < len(ents) and h != t, where
                assert r in rels, where
                assert (h, t, r) not in seen, where
                seen.add((h, t, r))
                assert all(0 <= x < len(sents) for x in lab["evidence"]), where


def test_mentions_do_not_overlap(corpus):
    for name in DOC_FILES:
        for doc in load(corpus / name):
            spans = sorted((m["sent_id"], *m["pos"]) for ent in doc["vertexSet"] for m in ent)
            for (s1, _, e1), (s2, b2, _) in zip(spans, spans[1:]):
                assert s1 != s2 or e1 <= b2, doc["title"]


def test_documents_module_validator_accepts_them(corpus):
    from dsdocre.data import validation

    for name in DOC_FILES:
        for i, doc in enumerate(load(corpus / name)):
            assert validation.validate_document(doc, i, name) == []


def test_titles_unique_across_files(corpus):
    titles = [doc["title"] for name in DOC_FILES for doc in load(corpus / name)]
    assert len(titles) == len(set(titles))
    assert [x["title"] for x in truth_lines(corpus)] == [d["title"] for d in load(corpus / "train_distant.json")]


def test_annotated_facts_are_expressed_in_their_evidence(corpus):
    """Each label's evidence sentences mention both entities; an inter-sentence label (no sentence
    mentions both) needs at least two evidence sentences."""
    intra = inter = 0
    for name in ANNOTATED:
        for doc in load(corpus / name):
            ss = sent_sets(doc)
            for lab in doc["labels"]:
                ev = set(lab["evidence"])
                assert ev, doc["title"]
                assert ss[lab["h"]] & ev and ss[lab["t"]] & ev, (doc["title"], lab)
                if ss[lab["h"]] & ss[lab["t"]]:
                    intra += 1
                else:
                    inter += 1
                    assert len(ev) >= 2, (doc["title"], lab)
    assert intra and inter
    assert 0.25 <= inter / (intra + inter) <= 0.55


def test_labels_agree_with_the_kb(corpus):
    """Annotated labels are KB facts; DS labels are exactly all KB facts between the document's
    entities (recomputed here from kb.json)."""
    kb = load(corpus / "kb.json")
    facts = {tuple(f) for f in kb["facts"]}
    by_pair: dict[tuple[str, str], set[str]] = {}
    for h, r, t in facts:
        by_pair.setdefault((h, t), set()).add(r)
    for name in DOC_FILES:
        for doc in load(corpus / name):
            ids = [ent[0]["kb_id"] for ent in doc["vertexSet"]]
            for ent in doc["vertexSet"]:
                info = kb["entities"][ent[0]["kb_id"]]
                assert info["type"] == ent[0]["type"]
                assert {m["name"] for m in ent} <= set(info["aliases"])
            got = {(lab["h"], lab["t"], lab["r"]) for lab in doc["labels"]}
            assert all((ids[h], r, ids[t]) in facts for h, t, r in got), doc["title"]
            if name == "train_distant.json":
                want = {(h, t, r) for h, t in itertools.permutations(range(len(ids)), 2)
                        for r in by_pair.get((ids[h], ids[t]), ())}
                assert got == want, doc["title"]
                assert all(lab["evidence"] == [] for lab in doc["labels"])


def test_truth_file_matches_distant_labels(corpus):
    docs = load(corpus / "train_distant.json")
    n_noise = 0
    for doc, truth in zip(docs, truth_lines(corpus)):
        stated = {tuple(x) for x in truth["stated"]}
        noise = {tuple(x) for x in truth["noise"]}
        assert not stated & noise
        assert stated | noise == {(lab["h"], lab["t"], lab["r"]) for lab in doc["labels"]}
        n_noise += len(noise)
    assert n_noise > 0


def test_distant_stated_facts_are_expressed():
    """Facts the DS text states are written like annotated ones: their evidence (from the
    generator's metadata; DS labels carry none) mentions both entities."""
    for doc, meta in iter_documents("train_distant", SEED, 60, start=1000, with_meta=True):
        ss = sent_sets(doc)
        assert ss == meta["sent_sets"]
        assert sorted(meta["stated"] + meta["noise"]) == sorted((x["h"], x["t"], x["r"]) for x in doc["labels"])
        assert set(meta["evidence"]) == set(meta["stated"])
        for (h, t, r), ev in meta["evidence"].items():
            assert ss[h] & set(ev) and ss[t] & set(ev), (doc["title"], h, t, r)


def test_multi_label_pairs_and_both_kinds_of_facts(corpus):
    stats = load(corpus / "stats.json")
    for split in ("train_annotated", "train_distant"):
        s = stats["splits"][split]
        assert s["multi_label_pairs"] > 0, split
        assert s["intra_labels"] > 0 and s["inter_labels"] > 0, split
        assert s["na_pair_fraction"] > 0.7, split  # most entity pairs hold no relation
    pairs = {}
    for doc in load(corpus / "train_annotated.json"):
        for lab in doc["labels"]:
            pairs.setdefault((doc["title"], lab["h"], lab["t"]), set()).add(lab["r"])
    assert any(len(rs) > 1 for rs in pairs.values())
    used = {r for rs in pairs.values() for r in rs}
    assert len(used) >= 20  # many relations, each with its own patterns


def test_realized_noise_rate_default(corpus):
    stats = load(corpus / "stats.json")
    ds = stats["splits"]["train_distant"]
    assert stats["noise_rate_target"] == 0.6
    assert abs(ds["noise_rate_inter"] - 0.6) <= 0.1
    # recompute it from the files
    docs = load(corpus / "train_distant.json")
    noise = total = 0
    for doc, truth in zip(docs, truth_lines(corpus)):
        ss = sent_sets(doc)
        bad = {tuple(x) for x in truth["noise"]}
        for lab in doc["labels"]:
            if not ss[lab["h"]] & ss[lab["t"]]:
                total += 1
                noise += (lab["h"], lab["t"], lab["r"]) in bad
    assert total > 100
    assert noise / total == pytest.approx(ds["noise_rate_inter"], abs=1e-3)


@pytest.mark.parametrize("rate", [0.3, 0.8])
def test_realized_noise_rate_other_targets(tmp_path, rate):
    stats = generate_corpus(tmp_path, 0, SEED, noise_rate=rate, dev_docs=0, test_docs=0, distant_docs=300,
                            progress=False)
    assert abs(stats["splits"]["train_distant"]["noise_rate_inter"] - rate) <= 0.1


def test_kb_json(corpus):
    kb = load(corpus / "kb.json")
    rels = set(relation_names())
    assert len(kb["entities"]) > 1000
    for kb_id, info in itertools.islice(kb["entities"].items(), 2000):
        assert kb_id.startswith("Q") and 1 <= len(info["aliases"]) <= 3 and info["aliases"][0] == info["name"]
    used = {r for _, r, _ in kb["facts"]}
    assert used <= rels and 20 <= len(used) <= 45
    assert all(h in kb["entities"] and t in kb["entities"] and h != t for h, _, t in kb["facts"])
    assert len({tuple(f) for f in kb["facts"]}) == len(kb["facts"])
    types = {k: v["type"] for k, v in kb["entities"].items()}
    for h, r, t in kb["facts"]:
        if r in ("P569", "P570", "P571", "P577"):
            assert types[t] == "TIME"
        if r in ("P19", "P20", "P27", "P17", "P131", "P159"):
            assert types[t] == "LOC"
        if r in ("P19", "P20", "P27", "P569", "P108", "P69"):
            assert types[h] == "PER"


def test_cli(tmp_path, capsys):
    from dsdocre.cli import main

    out = tmp_path / "cli"
    assert main(["synth", "--docs", "20", "--seed", str(SEED), "--out", str(out), "--dev-docs", "5",
                 "--test-docs", "5", "--distant-docs", "20", "--noise-rate", "0.5"]) == 0
    assert "train_distant" in capsys.readouterr().out
    stats = load(out / "stats.json")
    assert stats["noise_rate_target"] == 0.5 and stats["splits"]["dev"]["docs"] == 5
    assert len(load(out / "train_annotated.json")) == 20
