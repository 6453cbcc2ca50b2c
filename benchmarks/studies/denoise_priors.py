"""Do cheap document-structure priors add anything to the rank model's ranking of valid's pairs?

    python -m benchmarks.studies.denoise_priors [--rank DIR] [--work runs/denoise_priors] [--weights 0.25 0.5 1 2]
        [--ensemble DIR ...]

The rank model (``--rank``: a ``dsdocre denoise train`` model folder; without it the default
``configs/denoise_redocred.yaml`` model is trained under ``--work``, about 30 min on 2 cores) scores
every ordered pair of every Re-DocRED valid document. That ranking is the baseline; each prior is
added to its scores as ``score + λ·prior`` and the recall of valid's gold facts inside the top
2·N_ent and 3·N_ent pairs is measured again, for each λ of ``--weights``. The priors are learnt
from ``train.json`` only:

- ``type_pair``: the log-odds, in train.json, that an ordered pair with the head's and the tail's
  entity types (the most frequent type among each entity's mentions) holds a gold fact;
- ``structure``: a logistic regression over train.json's ordered pairs on the type pair, the
  sentence distance between the closest mentions, the sentences the two share, each entity's
  mention count and first sentence (the features a bilinear over max-pooled mention states might
  not see); its ranking alone is reported too;
- ``inverse``: the score of the reversed pair (half of Re-DocRED's gold pairs have their reverse
  gold as well).

With ``--ensemble``, other rank models (another seed, say) score the same pairs, and the mean of
all the models' scores is ranked too: is the single model's variance what holds recall back?

The weight λ is chosen on valid, so a gain is optimistic; a prior that gains little even so has
nothing for the rank model to learn. Writes ``benchmarks/results/denoise_priors.json`` (percent).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

from benchmarks._common import dsdocre_step, machine_info, pin_threads, real_data_dir, shown

ROOT = Path(__file__).resolve().parents[2]
CONFIG = "configs/denoise_redocred.yaml"
DISTANCE_EDGES = (0, 1, 2, 4, 8)  # sentence-distance buckets: <=0, <=1, <=2, <=4, <=8, more
COUNT_EDGES = (1, 2, 3, 5)  # mention-count buckets
FIRST_SENTENCE_EDGES = (0, 1, 3)


def bucket(value: int, edges: tuple[int, ...]) -> int:
    return next((i for i, edge in enumerate(edges) if value <= edge), len(edges))


def entity_type(mentions: list[dict]) -> str:
    return Counter(m["type"] for m in mentions).most_common(1)[0][0]


def pair_features(doc: dict, h: int, t: int) -> list[str]:
    """The named one-hot features of the ordered pair (h, t) of a DocRED-format document."""
    head, tail = doc["vertexSet"][h], doc["vertexSet"][t]
    head_sents, tail_sents = {m["sent_id"] for m in head}, {m["sent_id"] for m in tail}
    distance = min(abs(a - b) for a in head_sents for b in tail_sents)
    types = f"{entity_type(head)}-{entity_type(tail)}"
    return [f"types={types}", f"distance={bucket(distance, DISTANCE_EDGES)}",
            f"types={types},distance={bucket(distance, (0, 1, 3))}",
            f"shared_sentences={bucket(len(head_sents & tail_sents), (0, 1, 2))}",
            f"head_mentions={bucket(len(head), COUNT_EDGES)}", f"tail_mentions={bucket(len(tail), COUNT_EDGES)}",
            f"head_first={bucket(min(head_sents), FIRST_SENTENCE_EDGES)}",
            f"tail_first={bucket(min(tail_sents), FIRST_SENTENCE_EDGES)}"]


def ordered_pairs(doc: dict) -> list[tuple[int, int]]:
    """Every ordered pair (h != t), in the order fine-tuning and scoring enumerate them."""
    from dsdocre.data.examples import all_ordered_pairs

    heads, tails = all_ordered_pairs(len(doc["vertexSet"]))
    return list(zip(heads.tolist(), tails.tolist()))


def gold_pairs(doc: dict) -> set:
    return {(lab["h"], lab["t"]) for lab in doc.get("labels", [])}


def type_pair_prior(train: list[dict]):
    """A function doc -> [N, N] log-odds that a pair of these entity types is gold in ``train``."""
    import numpy as np

    gold, seen = Counter(), Counter()
    for doc in train:
        types = [entity_type(e) for e in doc["vertexSet"]]
        labelled = gold_pairs(doc)
        for h, t in ordered_pairs(doc):
            seen[types[h], types[t]] += 1
            gold[types[h], types[t]] += (h, t) in labelled

    def prior(doc: dict):
        types = [entity_type(e) for e in doc["vertexSet"]]
        out = np.zeros((len(types), len(types)))
        for h, t in ordered_pairs(doc):
            p = (gold[types[h], types[t]] + 0.5) / (seen[types[h], types[t]] + 1.0)  # add-half smoothing
            out[h, t] = np.log(p / (1 - p))
        return out

    return prior


def structure_prior(train: list[dict]):
    """A function doc -> [N, N] logits of a logistic regression on ``pair_features``, fitted on ``train``."""
    import numpy as np
    import torch

    def features(doc: dict) -> tuple[list, list]:
        pairs = ordered_pairs(doc)
        return pairs, [pair_features(doc, h, t) for h, t in pairs]

    train_features = [features(doc) for doc in train]
    names = sorted({f for _, per_pair in train_features for fs in per_pair for f in fs})
    index = {name: i for i, name in enumerate(names)}

    def design(per_pair: list) -> "torch.Tensor":
        x = torch.zeros(len(per_pair), len(names))
        for row, fs in enumerate(per_pair):
            for f in fs:
                if f in index:  # a feature value train.json never shows adds nothing
                    x[row, index[f]] = 1.0
        return x

    x = torch.cat([design(per_pair) for _, per_pair in train_features])
    y = torch.cat([torch.tensor([float(p in labelled) for p in pairs])
                   for labelled, (pairs, _) in zip(map(gold_pairs, train), train_features)])
    weight = torch.zeros(len(names), requires_grad=True)
    bias = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = (torch.nn.functional.binary_cross_entropy_with_logits(x @ weight + bias, y)
                + 1e-4 * weight.square().sum())  # a little L2: rare one-hot features stay finite
        loss.backward()
        return loss

    optimizer.step(closure)

    def prior(doc: dict):
        pairs, per_pair = features(doc)
        n = len(doc["vertexSet"])
        out = np.zeros((n, n))
        with torch.no_grad():
            logits = (design(per_pair) @ weight + bias).numpy()
        for (h, t), value in zip(pairs, logits):
            out[h, t] = value
        return out

    return prior


def rank_scores(rank_dir: Path, docs: list) -> list:
    """The rank model's [N, N] scores of every ordered pair of each document, with its own tokenizer."""
    from dsdocre.model import RankModel
    from dsdocre.model.rank import score_documents

    model, _ = RankModel.from_pretrained(rank_dir)
    return score_documents(model, [model.tokenizer.encode(d) for d in docs])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rank", type=Path, help="a trained rank model folder (default: train one under --work)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.25, 0.5, 1.0, 2.0],
                        help="the weights λ of score + λ·prior to try (default: %(default)s)")
    parser.add_argument("--ensemble", type=Path, nargs="*", default=[], metavar="DIR",
                        help="other rank model folders whose scores are averaged with --rank's")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "denoise_priors")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/denoise_priors.json")
    args = parser.parse_args()
    data = real_data_dir()
    if data is None:
        return 0
    threads = pin_threads()
    from dsdocre.denoise import kept_recall

    rank = args.rank
    if rank is None:
        run = dsdocre_step(args.work, "rank", ["denoise", "train", "--config", CONFIG, "--output-dir",
                                               args.work / "rank"], "model")
        rank = run / "model"
    from dsdocre.data.reader import load_gold_documents

    train = json.loads((data / "train.json").read_text())
    docs = load_gold_documents(data / "valid.json")
    scores = rank_scores(rank, docs)
    raw_valid = [d.to_json() for d in docs]
    meta = json.loads((rank / "dsdocre_model.json").read_text())

    def recall(ranking) -> dict:
        measured = kept_recall(docs, ranking, ("2n", "3n"))
        return {"2n": measured["fact_recall_at_2n"], "3n": measured["fact_recall_at_3n"]}

    baseline = recall(scores)
    type_prior, structure = type_pair_prior(train), structure_prior(train)
    priors = {"type_pair": [type_prior(d) for d in raw_valid], "structure": [structure(d) for d in raw_valid],
              "inverse": [s.T for s in scores]}
    rows = {}
    for name, values in priors.items():
        by_weight = {str(w): recall([s + w * p for s, p in zip(scores, values)]) for w in args.weights}
        best = max(by_weight, key=lambda w: by_weight[w]["2n"])
        rows[name] = {"by_weight": by_weight, "best_weight": float(best),
                      "gain_at_2n": round(by_weight[best]["2n"] - baseline["2n"], 2),
                      "gain_at_3n": round(by_weight[best]["3n"] - baseline["3n"], 2)}
    rows["structure"]["alone"] = recall(priors["structure"])
    rows["type_pair"]["alone"] = recall(priors["type_pair"])
    ensemble = None
    if args.ensemble:
        others = [rank_scores(path, docs) for path in args.ensemble]
        mean = recall([sum(group) / len(group) for group in zip(scores, *others)])
        ensemble = {"models": [shown(rank)] + [shown(p) for p in args.ensemble],
                    "alone": [baseline] + [recall(s) for s in others], "mean": mean,
                    "gain_at_2n": round(mean["2n"] - baseline["2n"], 2)}

    machine = machine_info()
    result = {"rank_model": {"path": shown(rank), "train_file": meta.get("train_file"), "model": meta.get("model"),
                             "epoch": meta.get("epoch"), "valid": meta.get("valid")},
              "baseline_recall": baseline, "priors": rows, "ensemble": ensemble, "weights": args.weights, "threads": threads,
              "machine": machine, "command": machine["command"], "date": machine["date"],
              "note": "the weight is chosen on valid by recall at 2n (optimistic); priors learnt from train.json"}
    args.out.write_text(json.dumps(result, indent=2) + "\n")

    print(f"\n{'ranking':<34}{'recall@2n':>10}{'recall@3n':>10}{'gain@2n':>9}")
    print(f"{'rank model alone (baseline)':<34}{baseline['2n']:>10.2f}{baseline['3n']:>10.2f}{'':>9}")
    for name, row in rows.items():
        best = row["by_weight"][str(row["best_weight"])]
        label = f"+ {row['best_weight']:g} x {name}"
        print(f"{label:<34}{best['2n']:>10.2f}{best['3n']:>10.2f}{row['gain_at_2n']:>+9.2f}")
        if "alone" in row:
            print(f"{'  ' + name + ' alone':<34}{row['alone']['2n']:>10.2f}{row['alone']['3n']:>10.2f}")
    if ensemble:
        for path, alone in zip(ensemble["models"][1:], ensemble["alone"][1:]):
            print(f"{'  ' + Path(path).parent.name + ' alone':<34}{alone['2n']:>10.2f}{alone['3n']:>10.2f}")
        label = f"mean of {len(ensemble['models'])} rank models"
        print(f"{label:<34}{ensemble['mean']['2n']:>10.2f}{ensemble['mean']['3n']:>10.2f}{ensemble['gain_at_2n']:>+9.2f}")
    print(f"-> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
