"""Pre-training examples built from real pair records of the fact join on the synthetic corpus:
every task instance points at what the method says it should."""

from __future__ import annotations

import random

import pytest

from dsdocre.data.encoding import BLANK
from dsdocre.data.pretrain_examples import DocumentStore, build_example, collate_pretrain


@pytest.fixture(scope="module")
def joined(tmp_path_factory, encoder_dir):
    from dsdocre.data.encoding import load_tokenizer
    from dsdocre.synth import generate_corpus
    from sharding.fact_join import fact_join, iter_pairs
    from sharding.shard import shard_corpus

    root = tmp_path_factory.mktemp("pretrain_examples")
    generate_corpus(root / "corpus", 4, 11, dev_docs=1, test_docs=1, distant_docs=120, progress=False)
    shard_corpus([root / "corpus" / "train_distant.json"], root / "shards", docs_per_shard=30, workers=0,
                 progress=False, log=None)
    fact_join(root / "shards", root / "pairs", workers=0, log=None)
    records = list(iter_pairs(root / "pairs"))
    assert len(records) >= 10, "the synthetic corpus should give document pairs that share facts"
    return root, records, load_tokenizer(encoder_dir)[0]


def test_instances_point_at_what_the_method_says(joined):
    root, records, tok = joined
    store = DocumentStore(root / "shards")
    counts = {"mm_intra": 0, "mm_inter": 0, "rd_intra": 0, "rd_inter": 0, "ra": 0}
    for i, record in enumerate(records[:20]):
        ex = build_example(record, store, tok, random.Random(i), blank_prob=0.3, negatives=3)
        raws = [store.document(record[s]["shard"], record[s]["key"])[0] for s in ("a", "b")]
        labelled = [{(lab["h"], lab["t"]) for lab in raw.get("labels", [])} for raw in raws]
        for side, pos, entity in ex.mm_intra:
            doc = ex.docs[side]
            assert doc.input_ids[pos] == tok.start_ids[entity]  # the query is that entity's start marker
            assert doc.input_ids[pos + 1] == tok.tokenizer.convert_tokens_to_ids(BLANK)  # its words blanked
            assert (side, entity, doc.mention_starts[entity].index(pos)) in ex.unpooled
            assert len(doc.mention_starts[entity]) >= 2  # the entity keeps a mention to match against
        for b_entity, a_entity in ex.mm_inter:
            names = [{m["name"].lower() for m in raws[s]["vertexSet"][e]} for s, e in ((0, a_entity), (1, b_entity))]
            kb = [{m.get("kb_id") for m in raws[s]["vertexSet"][e]} for s, e in ((0, a_entity), (1, b_entity))]
            assert names[0] & names[1] or kb[0] & kb[1] - {None}
        for task in ("rd_intra", "rd_inter"):
            for group in getattr(ex, task):
                (ps, ph), (_, pt) = group[0]
                assert (ph, pt) in labelled[ps]  # the positive is a labelled pair
                for (s, h), (s2, t) in group[1:]:
                    assert s == s2 and (h, t) not in labelled[s] and h != t  # negatives are NA pairs
                if task == "rd_intra":
                    assert len({s for (s, _), _ in group}) == 1
        for (q_h, q_t), cands, target in ex.ra:
            fact = next(f for f in record["shared_facts"] if [q_h[1], q_t[1]] == f["b"])
            assert cands[target] == ((0, fact["a"][0]), (0, fact["a"][1]))
            assert all((h, t) in labelled[0] for (_, h), (_, t) in cands) and len(cands) >= 2
        for task in counts:
            counts[task] += len(getattr(ex, task))
    assert all(counts.values()), counts  # every task has instances on this corpus
    batch = collate_pretrain([build_example(r, store, tok, random.Random(0)) for r in records[:4]], tok.pad_id)
    assert batch["tokens"].shape[0] == 8 and batch["rd_intra"].shape[-1] == 12  # 1 + 5 pairs, two ids each
    store.close()


def test_only_kept_labels_are_positives(joined, tmp_path):
    """With the denoiser's scored shards, a distant label whose pair was dropped is never a positive."""
    import json

    import webdataset as wds

    from dsdocre.data import manifest as mf
    from dsdocre.data.tar_index import write_index

    root, records, tok = joined
    # a scored folder that keeps exactly one labelled pair per document (the lowest one)
    (tmp_path / "scored").mkdir()
    store = DocumentStore(root / "shards")
    kept_of = {}
    for entry in mf.load(root / "shards")["shards"]:
        out = tmp_path / "scored" / entry["name"].replace("shard-", "scored-")
        with wds.TarWriter(str(out)) as sink:
            for sample in wds.WebDataset([str(root / "shards" / entry["name"])], shardshuffle=False):
                raw = json.loads(sample["json"])
                pairs = sorted({(lab["h"], lab["t"]) for lab in raw.get("labels", [])})[:1]
                kept_of[sample["__key__"]] = set(pairs)
                sink.write({"__key__": sample["__key__"],
                            "kept.json": json.dumps({"title": raw["title"], "kept": pairs}).encode()})
        write_index(out)  # as `dsdocre denoise score` does beside each scored shard
    store = DocumentStore(root / "shards", tmp_path / "scored")
    for i, record in enumerate(records[:20]):
        ex = build_example(record, store, tok, random.Random(i))
        keys = [record["a"]["key"], record["b"]["key"]]
        for group in ex.rd_intra + ex.rd_inter:
            (s, h), (_, t) = group[0]
            assert (h, t) in kept_of[keys[s]]
        for _, cands, _ in ex.ra:
            assert all((h, t) in kept_of[keys[0]] for (_, h), (_, t) in cands)
    store.close()


def test_a_step_pins_its_micro_batches_for_the_gpu(monkeypatch):
    """DataLoader(pin_memory=True) on a GPU machine calls Step.pin_memory: every tensor of every
    micro-batch goes to page-locked memory (a CPU-only torch cannot pin: stand-in)."""
    import torch

    from dsdocre.data.pretrain_data import Step

    pinned = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: pinned.append(self.shape) or self)
    step = Step(1, 0, [{"a": torch.zeros(2), "b": torch.ones(3)}, {"a": torch.zeros(4)}], 2, 10, ["k1", "k2"])
    assert step.pin_memory() is step and sorted(pinned) == [(2,), (3,), (4,)]
