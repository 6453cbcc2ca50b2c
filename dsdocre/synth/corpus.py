"""Writing the synthetic corpus: per-split statistics (:class:`_SplitStats`) and
:func:`generate_corpus`, which writes the document files, the DS truth, ``kb.json`` and
``stats.json`` (see the package docstring)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from dsdocre.synth.builder import iter_documents
from dsdocre.synth.kb import get_kb
from dsdocre.synth.splits import SPLITS

# --------------------------------------------------------------------------------------------
# Statistics and writing
# --------------------------------------------------------------------------------------------
class _SplitStats:
    def __init__(self, distant: bool):
        self.distant = distant
        self.c = dict(docs=0, sentences=0, words=0, entities=0, mentions=0, labels=0, intra_labels=0,
                      inter_labels=0, entity_pairs=0, labelled_pairs=0, multi_label_pairs=0)
        if distant:
            self.c.update(stated=0, noise=0, stated_intra=0, stated_inter=0, noise_intra=0, noise_inter=0)

    def add(self, doc: dict, meta: dict) -> None:
        c = self.c
        n = len(doc["vertexSet"])
        c["docs"] += 1
        c["sentences"] += len(doc["sents"])
        c["words"] += sum(len(s) for s in doc["sents"])
        c["entities"] += n
        c["mentions"] += sum(len(v) for v in doc["vertexSet"])
        c["entity_pairs"] += n * (n - 1)
        ss = meta["sent_sets"]
        pairs: dict[tuple[int, int], int] = {}
        for lab in doc["labels"]:
            h, t = lab["h"], lab["t"]
            pairs[(h, t)] = pairs.get((h, t), 0) + 1
            c["labels"] += 1
            c["intra_labels" if ss[h] & ss[t] else "inter_labels"] += 1
        c["labelled_pairs"] += len(pairs)
        c["multi_label_pairs"] += sum(1 for v in pairs.values() if v > 1)
        if self.distant:
            for key, facts in (("stated", meta["stated"]), ("noise", meta["noise"])):
                for h, t, _ in facts:
                    c[key] += 1
                    c[f"{key}_intra" if ss[h] & ss[t] else f"{key}_inter"] += 1

    def result(self) -> dict:
        c = dict(self.c)
        d = max(c["docs"], 1)
        out = dict(c)
        out["per_doc"] = {k: round(c[k] / d, 2) for k in ("sentences", "entities", "mentions", "labels")}
        out["inter_fraction"] = round(c["inter_labels"] / max(c["labels"], 1), 4)
        out["na_pair_fraction"] = round(1 - c["labelled_pairs"] / max(c["entity_pairs"], 1), 4)
        if self.distant:
            out["noise_rate_inter"] = round(c["noise_inter"] / max(c["stated_inter"] + c["noise_inter"], 1), 4)
            out["noise_rate_intra"] = round(c["noise_intra"] / max(c["stated_intra"] + c["noise_intra"], 1), 4)
            out["noise_rate"] = round(c["noise"] / max(c["labels"], 1), 4)
        return out


def _dumps(obj) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def generate_corpus(out_dir, num_docs: int, seed: int, noise_rate: float = 0.6, dev_docs: int | None = None,
                    test_docs: int | None = None, distant_docs: int | None = None, progress: bool = True) -> dict:
    """Write the corpus (see the module docstring) to ``out_dir``; returns the statistics
    (also written to ``stats.json``)."""
    if num_docs < 0:
        raise ValueError("num_docs must be >= 0")
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError("noise_rate must be in [0, 1)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    dev_n = max(50, num_docs // 5) if dev_docs is None else dev_docs
    counts = {"train_annotated": num_docs, "dev": dev_n, "test": dev_n if test_docs is None else test_docs,
              "train_distant": num_docs if distant_docs is None else distant_docs}
    t0 = time.time()
    kb = get_kb(seed)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=sum(counts.values()), desc="synth", unit="doc", file=sys.stderr,
                   disable=sum(counts.values()) < 2000, mininterval=0.5 if sys.stderr.isatty() else 15.0)
    files = {"train_annotated": "train_annotated.json", "dev": "dev.json", "test": "test.json",
             "train_distant": "train_distant.json"}
    split_stats = {}
    for split in SPLITS:
        st = _SplitStats(split == "train_distant")
        truth = open(out / "train_distant_truth.jsonl", "w", encoding="utf-8") if st.distant else None
        with open(out / files[split], "w", encoding="utf-8") as fh:
            fh.write("[")
            for i, (doc, meta) in enumerate(iter_documents(split, seed, counts[split], noise_rate=noise_rate,
                                                           kb=kb, with_meta=True)):
                fh.write(("\n" if i == 0 else ",\n") + _dumps(doc))
                st.add(doc, meta)
                if truth is not None:
                    truth.write(_dumps({"title": doc["title"], "stated": [list(x) for x in meta["stated"]],
                                        "noise": [list(x) for x in meta["noise"]]}) + "\n")
                if bar is not None:
                    bar.update(1)
            fh.write("\n]\n")
        if truth is not None:
            truth.close()
        split_stats[split] = st.result()
    if bar is not None:
        bar.close()
    with open(out / "kb.json", "w", encoding="utf-8") as fh:
        fh.write(_dumps(kb.to_json()))
        fh.write("\n")
    ds = split_stats["train_distant"]
    stats = {
        "seed": seed,
        "noise_rate_target": noise_rate,
        "noise_rate_inter": ds["noise_rate_inter"],
        "files": {s: files[s] for s in SPLITS} | {"truth": "train_distant_truth.jsonl", "kb": "kb.json"},
        "splits": split_stats,
        "kb": {"entities": len(kb.names), "facts": sum(len(f) for f in kb.link_facts), "links": len(kb.links),
               "relations": kb.relations()},
    }
    with open(out / "stats.json", "w", encoding="utf-8") as fh:
        json.dump(stats, fh, indent=2)
        fh.write("\n")
    stats["elapsed_s"] = round(time.time() - t0, 2)  # returned, not written: the files stay reproducible
    return stats
