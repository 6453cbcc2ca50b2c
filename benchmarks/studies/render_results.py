"""Generated tables for the docs, drawn from ``benchmarks/results/*.json``.

    python -m benchmarks.studies.render_results           # rewrite the tables in place (README.md,
                                                          # docs/results.md, docs/shards.md, studies/README.md)
    python -m benchmarks.studies.render_results --check   # exit 1 if a file would change

A table lives between two marker comments in a Markdown file::

    <!-- table:paper_table -->
    (everything here is generated: do not edit it by hand)
    <!-- /table -->

Each name is a function of this module's ``TABLES``; it reads the result files and returns the
block, a table and at times a generated sentence, ending with the files it read. A number in a
generated block cannot drift from its result file: after a benchmark writes a new result, run this
and commit both; ``tests/test_docs.py`` runs ``--check``. Prose around the markers is hand-written
and says what the tables mean without restating their numbers.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

from benchmarks._common import ROOT
from benchmarks.studies import plot_paper_table as paper

RESULTS = ROOT / "benchmarks" / "results"
FILES = [ROOT / "README.md", ROOT / "docs" / "results.md", ROOT / "docs" / "shards.md", ROOT / "docs" / "scale.md",
         ROOT / "benchmarks" / "studies" / "README.md"]
MARKER = re.compile(r"(<!-- table:([\w-]+) -->\n)(.*?)(<!-- /table -->)", re.S)
METRICS = (("precision", "P"), ("recall", "R"), ("f1", "F1"), ("ign_f1", "Ign F1"), ("intra_f1", "Intra F1"),
           ("inter_f1", "Inter F1"))
CUTS = ("1n", "1.5n", "2n", "3n", "4n", "6n", "all")


# ---- helpers ----------------------------------------------------------------------------------
def load(name: str) -> dict:
    return json.loads((RESULTS / f"{name}.json").read_text())


def num(value, digits: int = 2) -> str:
    """A figure as the tables print it: fixed decimals, thousands separated; '' for None."""
    return "" if value is None else f"{value:,.{digits}f}"


def signed(value, digits: int = 2) -> str:
    return "" if value is None else f"{value:+.{digits}f}"


def interval(lo_hi) -> str:
    return f"[{lo_hi[0]:+.2f}, {lo_hi[1]:+.2f}]"


def minutes(seconds, digits: int = 1) -> str:
    return "" if seconds is None else f"{seconds / 60:.{digits}f}"


def table(header: list[str], rows: list[list], right: int = 1) -> str:
    """A Markdown table; the columns from ``right`` on are right-aligned (figures)."""
    align = ["---" if i < right else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join("" if c is None else str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def source(*names: str) -> str:
    return "_From " + ", ".join(f"`benchmarks/results/{n}.json`" for n in names) + "._"


def block(*parts: str) -> str:
    return "\n\n".join(p for p in parts if p)


# ---- the paper table and its rows -------------------------------------------------------------
def paper_results() -> dict:
    return load("paper_table")


def t_paper_table() -> str:
    return block(paper.markdown(paper_results()), source("paper_table"))


def gap_pairs(results: dict) -> list[tuple[str, str]]:
    """(row, reference) for every gap ``paper_table.py --compare`` measures: each row against the
    reference rows before it, or against the rows its config names."""
    from benchmarks.studies.paper_table import REFERENCE_ROWS

    pairs = []
    named = {name: row.get("references") for name, row in results.get("config", {}).get("rows", {}).items()}
    for name in results["config"]["rows"]:
        own = named.get(name)
        for ref in (REFERENCE_ROWS if own is None else own):
            if name not in results["rows"] or ref not in results["rows"]:
                continue
            if own is None and name in REFERENCE_ROWS and REFERENCE_ROWS.index(name) <= REFERENCE_ROWS.index(ref):
                continue
            pairs.append((name, ref))
    return pairs


def t_paper_gaps() -> str:
    results = paper_results()
    published = results["config"].get("paper", {})
    rows = []
    for name, ref in gap_pairs(results):
        c = results.get("comparisons", {}).get(f"{name} vs {ref}")
        if c:
            f1 = f"{c['f1_diff']:+.2f} {interval(c['f1_ci95'])}"
            ign = f"{c['ign_f1_diff']:+.2f} {interval(c['ign_f1_ci95'])}"
            ahead = f"{100 * c['f1_a_ahead']:.1f}%"
        else:  # no per-document counts for one of the two rows: the plain gap, no interval
            f1 = f"{results['rows'][name]['valid_f1'] - results['rows'][ref]['valid_f1']:+.2f} (no interval)"
            ign = f"{results['rows'][name]['valid_ign_f1'] - results['rows'][ref]['valid_ign_f1']:+.2f}"
            ahead = ""
        theirs = (signed(published[name]["f1"] - published[ref]["f1"])
                  if name in published and ref in published else "")
        rows.append([name, ref, f1, ign, ahead, theirs])
    return block(table(["row", "against", "F1 gap [95% interval]", "Ign F1 gap [95% interval]",
                        "resamples with the row ahead", "the paper's F1 gap"], rows, right=2),
                 source("paper_table"))


def epoch_f1(record: dict, epoch: int):
    return next((p["f1"] for p in record.get("finetune_epochs") or [] if p["epoch"] == epoch), None)


def t_paper_curves() -> str:
    results = paper_results()
    rows = []
    for name in results["config"]["rows"]:
        rec = results["rows"].get(name)
        if not rec:
            continue
        pre = rec.get("pretrain") or {}
        pretraining = ""
        if pre:
            pretraining = f"{pre['steps']} steps, {minutes(pre['train_seconds'], 0)} min"
            if pre.get("shared_from"):
                pretraining = f"shared with {pre['shared_from']}"
        epochs = rec.get("finetune_epochs") or []
        rows.append([name, pretraining, num(epoch_f1(rec, 1)), num(epoch_f1(rec, 4)),
                     f"{rec['best_epoch']} of {len(epochs)}", num(rec["valid_f1"]),
                     minutes(rec.get("finetune_train_seconds"), 0)])
    return block(table(["row", "pre-training", "F1 after epoch 1", "after epoch 4", "best epoch (of those run)",
                        "F1 there", "fine-tuning min"], rows, right=2), source("paper_table"))


def t_paper_corpora() -> str:
    results = paper_results()
    rows = []
    for name, c in results["corpora"].items():
        synthetic = c.get("synthetic")
        what = ", ".join(Path(s).relative_to(Path(s).parents[1]).as_posix() for s in c["sources"])
        if synthetic:
            what += f" + {synthetic['docs']:,} synthetic ({synthetic['generator']}, seed {synthetic['seed']})"
        rows.append([f"`{name}`", what, f"{c['ds_docs']:,}", f"{c['ds_labelled_docs']:,}", f"{c['ds_labels']:,}",
                     f"{c['ds_pairs']:,}", c["kept_per_distant_doc"]])
    return block(table(["corpus (`configs/paper_table.yaml`)", "documents from", "distant documents",
                        "with a label", "KB labels", "document pairs after denoising", "pairs kept per document"],
                       rows, right=2), source("paper_table"))


def t_paper_100_detail() -> str:
    results = paper_results()
    rows = [[name, *(num(results["rows"][name]["valid"][k]) for k, _ in METRICS)]
            for name in results["config"]["rows"] if "100 training docs" in name and name in results["rows"]]
    return block(table(["row", *(h for _, h in METRICS)], rows), source("paper_table"))


def t_paper_synthetic() -> str:
    results = paper_results()
    corpora = results["corpora"]
    base = "at 2n (100 training docs)"
    lines = [("BERT+D", f"BERT+D {base}"),
             (f"BERT+D+P, DocRED's unlabelled documents ({corpora['docred_unlabeled']['ds_pairs']} pairs)",
              f"BERT+D+P {base}"),
             (f"BERT+D+P, the same plus {corpora['unlabeled_and_synthetic']['synthetic']['docs']:,} synthetic "
              f"documents ({corpora['unlabeled_and_synthetic']['ds_pairs']} pairs)",
              "BERT+D+P at 2n with synthetic documents (100 training docs)")]
    rows = []
    for label, row in lines:
        seeds = [results["rows"].get(row), results["rows"].get(row.replace("docs)", "docs; seed 43)"))]
        rows.append([label, *(num(r["valid_f1"]) if r else "not run" for r in seeds)])
    return block(table(["row (100 training docs, 2·N_ent kept), valid F1", "seed 42", "seed 43"], rows),
                 source("paper_table"))


def t_bert_seeds() -> str:
    results = paper_results()
    names = ["BERT", "BERT (seed 43)", "BERT (seed 44)"]
    recs = [results["rows"][n] for n in names if n in results["rows"]]
    rows = [[r["finetune_config"]["training"]["seed"], num(r["valid_f1"]), num(r["valid_ign_f1"]), r["best_epoch"],
             num((r.get("finetune_epochs") or [{}])[-1].get("f1"))] for r in recs]
    f1 = [r["valid_f1"] for r in recs]
    spread = (f"Range {max(f1) - min(f1):.2f}, standard deviation {statistics.stdev(f1):.2f} over {len(f1)} seeds."
              if len(f1) > 1 else "")
    return block(table(["training seed (BERT's recipe)", "F1", "Ign F1", "best epoch", "F1 at the last epoch"], rows),
                 spread, source("paper_table"))


# ---- fine-tuning ------------------------------------------------------------------------------
def t_finetune_realdata() -> str:
    r = load("finetune_realdata")
    rows = [["after epoch 1 (baseline in the same run)", *(num(r["baseline_first_epoch"][k]) for k, _ in METRICS)],
            [f"best epoch ({r['best_epoch']} of {r['epochs']})", *(num(r["valid"][k]) for k, _ in METRICS)]]
    return block(table(["", *(h for _, h in METRICS)], rows),
                 f"Wall time {minutes(r['wall_s'])} min ({minutes(r['train_s'])} min training, "
                 f"{r['train_docs_per_s']} training documents/s"
                 + ("; other jobs shared the cores, see the file's note" if r.get("cores_shared") else "")
                 + f"); peak RSS {r['peak_rss_mb'] / 1000:.1f} GB.",
                 source("finetune_realdata"))


def t_bert_d_vs_bert() -> str:
    six, four = load("denoise_quality"), load("denoise_quality_rank_25_epochs_bert_d_4n")
    bert = load("finetune_realdata")
    rows = [["BERT (`finetune_realdata.json`)", *(num(bert["valid"][k]) for k, _ in METRICS), bert["best_epoch"], ""]]
    for label, r in ((f"BERT+D, 10-epoch rank model, k_d = {six['k_d']}", six),
                     (f"BERT+D, 25-epoch rank model, k_d = {four['k_d']}", four)):
        rows.append([label, *(num(r["valid"]["BERT+D"][k]) for k, _ in METRICS), r["bert_d"]["best_epoch"],
                     minutes(r["bert_d"]["train_seconds"])])
    return block(table(["row", *(h for _, h in METRICS), "best epoch", "training min"], rows),
                 source("finetune_realdata", "denoise_quality", "denoise_quality_rank_25_epochs_bert_d_4n"))


# ---- pre-denoising ----------------------------------------------------------------------------
def describe_rank_training(training: dict) -> str:
    negatives = training["negatives_per_positive"]
    return (f"up to {training['positives_per_doc']} labelled pairs per document, each against "
            + ("**every** NA pair of its document" if negatives == 0 else f"{negatives} sampled NA pairs")
            + f", {training['epochs']} epochs")


def t_denoise_rank_training() -> str:
    q, q25, cut = load("denoise_quality"), load("denoise_quality_rank_25_epochs"), load("denoise_cut")
    release, earlier = q["release_recipe"], q["release_recipe"]["that_run_rank_model"]
    rows = [[describe_rank_training(release["config"]["training"]) + " (the release's sampling; earlier run)",
             num(release["valid_recall_at_2n"]), num(release["valid_recall_at_3n"]), minutes(release["train_seconds"])],
            [describe_rank_training(earlier["training"]) + " (earlier run)",
             num(earlier["valid_recall_at_2n"]), num(earlier["valid_recall_at_3n"]), minutes(earlier["train_seconds"])],
            [describe_rank_training(q["rank_model"]["config"]["training"]) + " (`configs/denoise_redocred.yaml`)",
             num(q["valid_recall_at_2n"]), num(q["valid_recall_at_3n"]), minutes(q["rank_model"]["train_seconds"])],
            [describe_rank_training(q25["rank_model"]["config"]["training"])
             + " (`--set training.epochs=25`; `denoise_quality_rank_25_epochs.json`)",
             num(q25["valid_recall_at_2n"]), num(q25["valid_recall_at_3n"]), minutes(q25["rank_model"]["train_seconds"])],
            ["reference ranker: the fine-tuned BERT classifier itself (highest relation probability per pair)",
             num(cut["cuts"]["2n"]["gold_facts_inside_classifier_ranking"]),
             num(cut["cuts"]["3n"]["gold_facts_inside_classifier_ranking"]), "(the BERT run)"]]
    curve = q25["rank_model"]["recall_per_epoch"]
    by_epoch = ", ".join(f"{p['epoch']}: {p['2n']:.2f}" for p in curve)
    return block(table(["rank model training (400 training documents)", "valid gold facts inside 2·N_ent",
                        "inside 3·N_ent", "training min"], rows),
                 f"The 25-epoch run's recall at 2·N_ent after each epoch: {by_epoch}.",
                 source("denoise_quality", "denoise_quality_rank_25_epochs", "denoise_cut"))


def t_denoise_learning_curve() -> str:
    r = load("denoise_learning_curve")
    rows = [[p["docs"], num(p["recall_at_2n"]), num(p["recall_at_3n"]), p["best_epoch"], minutes(p["train_seconds"])]
            for p in r["points"]]
    rows.append(["best possible choice of pairs (oracle: each document's pairs with the most gold facts)",
                 num(r["oracle_recall"]["2n"]), num(r["oracle_recall"]["3n"]), "", ""])
    fit, fit3 = r["fit"]["recall_at_2n"], r["fit"]["recall_at_3n"]
    sentence = (f"Fit `recall = a + b·log2(docs)`: {fit['gain_per_doubling']:+.2f} points per doubling at 2·N_ent "
                f"({fit3['gain_per_doubling']:+.2f} at 3·N_ent), largest residual "
                f"{max(abs(x) for x in fit['residuals']):.2f}; at {r['target_docs']:,} documents it gives "
                f"{fit['at_{}_docs'.format(r['target_docs'])]:.2f}, and {r['bar']:.0f} at about "
                f"{r['docs_for_bar_at_2n']:,} documents.")
    return block(table(["training documents", "valid gold facts inside 2·N_ent", "inside 3·N_ent", "best epoch",
                        "training min"], rows), sentence, source("denoise_learning_curve"))


def t_denoise_priors() -> str:
    r = load("denoise_priors")
    p = r["priors"]
    labels = {"type_pair": "the entity-type pair's log-odds of holding a fact",
              "structure": "a logistic regression on type pair, sentence distance, shared sentences, mention "
                           "counts, first sentence",
              "inverse": "the reversed pair's score"}
    rows = [[f"the rank model ({r['rank_model']['epoch']} epochs)", num(r["baseline_recall"]["2n"]),
             num(r["baseline_recall"]["3n"]), ""]]
    for key, label in labels.items():
        best = p[key]["by_weight"][str(float(p[key]["best_weight"]))]
        rows.append([f"+ {label} (λ = {p[key]['best_weight']:g})", num(best["2n"]), num(best["3n"]),
                     signed(p[key]["gain_at_2n"])])
    for key in ("type_pair", "structure"):
        rows.append([f"{labels[key]}, alone", num(p[key]["alone"]["2n"]), num(p[key]["alone"]["3n"]), ""])
    second = r["ensemble"]["alone"][1]
    rows.append(["the same rank model trained with seed 43", num(second["2n"]), num(second["3n"]), ""])
    rows.append(["the mean of the two models' scores", num(r["ensemble"]["mean"]["2n"]),
                 num(r["ensemble"]["mean"]["3n"]), signed(r["ensemble"]["gain_at_2n"])])
    return block(table(["ranking of valid's pairs", "inside 2·N_ent", "inside 3·N_ent", "gain at 2·N_ent"], rows),
                 source("denoise_priors"))


def t_denoise_synthetic() -> str:
    s = load("denoise_quality")["synthetic"]
    rows = [[num(s["rank_model_valid"]["fact_recall_at_2n"]), s["keep"], num(s["noise_recall"]),
             num(s["noise_precision"]), num(s["stated_kept"])]]
    return block(table(["dev facts inside 2·N_ent", "pairs kept per distant document",
                        "noise labels dropped (noise recall)", "dropped labels that are noise (noise precision)",
                        "labels the text states, kept"], rows, right=0), source("denoise_quality"))


def cut_table(name: str) -> str:
    r = load(name)
    rows = [[k, *(num(r["cuts"][k][m]) for m in ("precision", "recall", "f1", "ign_f1", "gold_facts_inside",
                                                  "gold_facts_inside_classifier_ranking"))]
            for k in CUTS if k in r["cuts"]]
    return block(table(["k_d", "P", "R", "F1", "Ign F1", "gold facts inside the cut",
                        "inside the classifier's own top k_d"], rows),
                 f"Best k_d: {r['best_k_d']}.", source(name))


def t_denoise_cut() -> str:
    return cut_table("denoise_cut")


def t_denoise_cut_100() -> str:
    return cut_table("denoise_cut_100_training_docs")


OWN_RANK = (("own_rank", "10 epochs (`configs/denoise_redocred.yaml --set data.max_train_docs=100`)"),
            ("own_rank_25_epochs", "25 epochs (`--set training.epochs=25`)"),
            ("own_rank_relation_head", "25 epochs with the relation head (`--set model.relation_head=true`)"))


def t_denoise_own_rank() -> str:
    rows = []
    uncut = None
    for suffix, label in OWN_RANK:
        r = load(f"denoise_cut_100_training_docs_{suffix}")
        uncut = r["cuts"]["all"]["f1"]
        best = r["cuts"][r["best_k_d"]]
        rows.append([label, num(r["cuts"]["2n"]["gold_facts_inside"]), r["best_k_d"], num(best["f1"]),
                     signed(best["f1"] - uncut), f"`{suffix}`"])
    ref = load("denoise_cut_100_training_docs")
    best = ref["cuts"][ref["best_k_d"]]
    rows.append(["for reference: the rank model of the 400 documents", num(ref["cuts"]["2n"]["gold_facts_inside"]),
                 ref["best_k_d"], num(best["f1"]), signed(best["f1"] - ref["cuts"]["all"]["f1"]), "(the table above)"])
    return block(table(["rank model, trained on the first 100 training documents", "inside its top 2·N_ent",
                        "best k_d", "F1 there", f"over uncut ({num(uncut)})", "result `<name>`"], rows),
                 source(*(f"denoise_cut_100_training_docs_{s}" for s, _ in OWN_RANK), "denoise_cut_100_training_docs"))


def t_denoise_equal_annotations() -> str:
    r = load("denoise_equal_annotations")
    rows = [["BERT", *(num(r["rows"]["BERT"][k]) for k, _ in METRICS)],
            [f"BERT+D, {r['keep']} kept ({num(r['valid_gold_facts_inside_cut'])}% of valid's gold facts inside)",
             *(num(r["rows"]["BERT+D"][k]) for k, _ in METRICS)]]
    gap = r["gap"]
    return block(table([f"row (the first {r['training_docs']} training documents)", *(h for _, h in METRICS)], rows),
                 f"BERT+D − BERT: {gap['f1_diff']:+.2f} F1 {interval(gap['f1_ci95'])}, "
                 f"{gap['ign_f1_diff']:+.2f} Ign F1 {interval(gap['ign_f1_ci95'])} (paired bootstrap over the "
                 f"{gap['documents']} valid documents, {gap['resamples']:,} resamples). The rank model's best epoch: "
                 f"{r['rank_model']['epoch']}.", source("denoise_equal_annotations"))


def t_denoise_throughput() -> str:
    r = load("denoise_throughput")
    s = r["pairs_per_s"]
    rows = [["scoring alone", num(s["scoring_bilinear"], 0), num(s["scoring_collapsed"], 0),
             f"{r['scoring_speedup']:,.0f}x"],
            [f"scoring alone, documents with 20+ entities ({r['scoring']['20_plus_entities']['documents']})",
             num(r["scoring"]["20_plus_entities"]["bilinear"], 0), num(r["scoring"]["20_plus_entities"]["collapsed"], 0),
             f"{r['scoring_speedup_20_plus_entities']:,.0f}x"],
            ["end to end (encoder included)", num(s["end_to_end_bilinear"], 0), num(s["end_to_end_collapsed"], 0),
             f"{r['end_to_end_speedup']}x"]]
    d = r["documents"]
    ray = (f"Ray Data over {d['ray']:,} documents ({d['ray_pairs']:,} pairs; the {d['ray_distinct']} training documents "
           f"cycled under new titles): {num(s['ray_1'], 0)} pairs/s with 1 actor, {num(s['ray_2'], 0)} with 2, "
           f"**{r['ray_2_over_1']}x** ({r['ray_seconds']['1']} s and {r['ray_seconds']['2']} s). Start-up "
           f"(Ray, and each actor loading the model; measured as a pass over two one-document shards): "
           f"{r['ray_startup_seconds']['1']} s with 1 actor, {r['ray_startup_seconds']['2']} s with 2. Without it: "
           f"{num(s['ray_1_net'], 0)} and {num(s['ray_2_net'], 0)} pairs/s, {r['ray_2_over_1_net']}x.")
    return block(table(["pairs/s", "the release's way (gather pairs, `nn.Bilinear`, linear)",
                        "collapsed `H M Tᵀ + c`", "ratio"], rows),
                 f"Single-process rows: {d['single_process']} valid documents ({d['mean_entities']} entities on "
                 f"average, {d['pairs']:,} pairs), every process on one thread. " + ray, source("denoise_throughput"))


# ---- pre-training -----------------------------------------------------------------------------
PRETRAIN_TASKS = {"mm_intra": "MM intra (blanked mention → its entity)",
                  "mm_inter": "MM inter (entity of d_B → the same entity in d_A)",
                  "rd_intra": "RD intra (the labelled pair among 5 NA pairs)",
                  "rd_inter": "RD inter",
                  "ra": "RA (d_A's instance of d_B's fact)"}


def t_pretrain_tasks() -> str:
    r = load("pretrain_tasks")
    rows = [[PRETRAIN_TASKS.get(k, k), num(t["chance"], 1), num(t["untrained"], 1), f"**{num(t['trained'], 1)}**",
             num(t["trained_over_chance"], 1), t["instances"]] for k, t in r["tasks"].items()]
    s = r["setup"]
    return block(table(["task", "chance", "untrained", "after one epoch", "× chance", "held-out instances"], rows),
                 f"`{s['config']}` for {s['epochs']} epoch ({s['steps']} steps, {minutes(s['wall_seconds'])} min) on "
                 f"{s['train_pairs']} pairs of {s['train_documents']} synthetic distant documents; accuracy on "
                 f"{s['heldout_pairs']} held-out pairs of {s['heldout_documents']} documents of another seed.",
                 source("pretrain_tasks"))


def t_pretrain_throughput() -> str:
    r = load("pretrain_throughput")
    rows = []
    for label, key in (("ZeRO-1 (baseline)", "zero1"), ("ZeRO-2", "zero2"), ("ZeRO-3", "zero3")):
        c = r["cpu"][key]
        rows.append([label, num(c["procs_1"]["tokens_per_s"], 1), num(c["procs_2"]["tokens_per_s"], 1),
                     f"{c['procs_2_over_1']:.2f}x",
                     f"{100 * c['procs_1']['data_wait_fraction']:.2f}% / {100 * c['procs_2']['data_wait_fraction']:.2f}%",
                     f"{c['procs_1']['peak_rss_mb']:.0f} / {c['procs_2']['peak_rss_mb']:.0f}"])
    b = r["zero2_global_batch_16"]
    rows.append(["ZeRO-2, the paper's batch of 16 pairs", num(b["procs_1"]["tokens_per_s"], 1),
                 num(b["procs_2"]["tokens_per_s"], 1), f"{b['procs_2_over_1']:.2f}x",
                 f"{100 * b['procs_1']['data_wait_fraction']:.2f}% / {100 * b['procs_2']['data_wait_fraction']:.2f}%",
                 f"{b['procs_1']['peak_rss_mb']:.0f} / {b['procs_2']['peak_rss_mb']:.0f}"])

    def split(run):
        return [f"{run['step_seconds'] * run['time_split'][k]:.2f}" for k in ("forward", "backward", "optimizer")]

    splits = table(["batch of 16 pairs, ZeRO-2", "step (s)", "forward (s)", "backward (s)", "optimizer (s)"],
                   [["1 process", f"{b['procs_1']['step_seconds']:.2f}", *split(b["procs_1"])],
                    ["2 processes", f"{b['procs_2']['step_seconds']:.2f}", *split(b["procs_2"])]])
    pair = r["independent_pair"]
    worst = max(r["max_loss_difference_vs_zero1_procs_1"].values())
    return block(table(["", "tokens/s, 1 process", "tokens/s, 2 processes", "2 / 1", "data wait (of the step)",
                        "peak RSS per process (MB), 1 / 2"], rows), splits,
                 f"Two independent 1-process runs at once (no communication): {pair['tokens_per_s_total']} tokens/s "
                 f"together, {pair['over_one_process']:.2f}x one process. The six batch-4 runs follow one loss curve: "
                 f"the largest difference from ZeRO-1 / 1 process over {r['setup']['steps']} steps is {worst:g}.",
                 source("pretrain_throughput"))


# ---- scale and reliability --------------------------------------------------------------------
def t_shard_throughput() -> str:
    r = load("shard_throughput")
    keys = ("single_process", "ray_1", "ray_2")
    rows = [["documents/s", *(num(r["docs_per_s"][k], 0) for k in keys)],
            ["MB/s", *(num(r["mb_per_s"][k]) for k in keys)],
            ["documents/s after the warm-up", *(num(r["docs_per_s_after_warmup"][k], 0) for k in keys)],
            ["documents/s including `ray.init`", *(num(r["docs_per_s_incl_ray_init"][k], 0) for k in keys)]]
    big = r["large_file"]
    return block(table(["", "single-process loop", "Ray, 1 worker", "Ray, 2 workers"], rows),
                 f"Input: {r['docs']:,} synthetic documents in one {r['input_bytes'] / 1e6:.0f} MB JSON array. Two "
                 f"workers reach **{r['scaling_2_over_1']:.2f}x** one worker ({r['scaling_2_over_1_after_warmup']:.2f}x "
                 f"after warm-up); shards byte-identical across runs: {str(r['shards_identical_across_runs']).lower()}. "
                 f"A {big['input_bytes'] / 1e9:.2f} GB array ({big['docs']:,} documents) with {big['workers']} workers: "
                 f"{num(big['docs_per_s'], 0)} documents/s, peak RSS {big['peak_rss_mb']['driver']:.0f} MB for the "
                 f"driver and {big['peak_rss_mb']['worker_max']:.0f} MB for the largest worker.",
                 source("shard_throughput"))


def t_kill_resume() -> str:
    r = load("kill_resume")
    rows = [[r["kills"], r["kills_inside_checkpoint_writes"], f"{r['world_size']} / ZeRO-{r['zero_stage']}",
             f"{r['steps']} ({r['epochs']} epochs)", r["checkpoint_every"], str(r["identical"]).lower(),
             r["max_abs_difference"], r["samples_repeated"], r["samples_missed"], minutes(r["wall_seconds"])]]
    return block(table(["kills", "inside a checkpoint write", "processes / ZeRO", "steps", "checkpoint every",
                        "final weights identical", "largest difference", "samples repeated", "samples missed",
                        "min"], rows, right=0), source("kill_resume"))


def bytes_mb(n) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.2f} GB"
    return f"{n / 1e6:.1f} MB" if n < 1e7 else f"{n / 1e6:,.0f} MB"


def t_bilinear() -> str:
    r = load("bilinear")
    c = r["cpu"]
    shape = c["shape"]
    rows = [["forward + backward time", f"{c['factored_fwd_bwd_s']:.2f} s", f"{c['gathered_fwd_bwd_s']:.0f} s",
             f"**{c['speedup_fwd_bwd']:.0f}x** (the einsum: {c['einsum_speedup_fwd_bwd']:.0f}x)"],
            ["peak memory", bytes_mb(c["factored_peak_fwd_bwd_bytes"]), bytes_mb(c["gathered_peak_fwd_bwd_bytes"]),
             f"{c['memory_ratio']:.2f}x (at most {c['memory_ratio_upper_bound']:.2f}x: the returned `grad W` is "
             f"{bytes_mb(c['returned_grad_bytes'])})"],
            ["working memory (without `grad W`)", bytes_mb(c["factored_peak_work_fwd_bwd_bytes"]),
             bytes_mb(c["gathered_peak_work_fwd_bwd_bytes"]), f"{c['working_memory_ratio']:.1f}x"]]
    grid = r["grid"]["cpu"]

    def ratio(row, what):
        f, g = row["impls"]["factored"]["fwd_bwd"], row["impls"]["gathered"]["fwd_bwd"]
        return g[what] / f[what]

    speed = [ratio(row, "median_s") for row in grid]
    by_n = {}
    for row in grid:
        by_n.setdefault(row["N"], []).append(row)
    parts = []
    for n in sorted(by_n, reverse=True):
        work = [ratio(row, "peak_work_bytes") for row in by_n[n]]
        if min(work) >= 1:
            parts.append(f"{min(work):.1f}x–{max(work):.0f}x lower at N = {n}")
        else:
            f = [row["impls"]["factored"]["fwd_bwd"]["peak_work_bytes"] for row in by_n[n]]
            g = [row["impls"]["gathered"]["fwd_bwd"]["peak_work_bytes"] for row in by_n[n]]
            parts.append(f"at N = {n} the factored path holds more ({bytes_mb(min(f))}–{bytes_mb(max(f))} against "
                         f"{bytes_mb(min(g))}–{bytes_mb(max(g))})")
    ds, os_, ns = (sorted({row[k] for row in grid}) for k in ("d", "o", "N"))
    def braces(values):
        return "{" + ", ".join(map(str, values)) + "}"

    return block(table([f"d = {shape['d']}, o = {shape['o']}, N = {shape['N']} ({shape['P']} pairs), CPU "
                        f"{shape['dtype']}", "factored (ours)", "gathered `nn.Bilinear`", "ratio"], rows, right=1),
                 f"Over the grid (d ∈ {braces(ds)}, o ∈ {braces(os_)}, N ∈ {braces(ns)}): forward + backward "
                 f"{min(speed):.0f}x–{max(speed):.0f}x faster; working memory " + "; ".join(parts) + ".",
                 source("bilinear"))


def _scale_rows(r: dict) -> list[list]:
    sizes = [str(n) for n in r["sizes"]]

    def per(f):
        return [f(r[n]) for n in sizes]

    loader = "world2_workers0"
    return [
        ["document pairs (fact-join, default cap)", *per(lambda x: num(x["fact_join"]["pairs"], 0))],
        ["shard: documents/s", *per(lambda x: num(x["shard"]["docs_per_s"], 0))],
        ["denoise score, keep 20: documents/s", *per(lambda x: num(x["score"]["docs_per_s"], 0))],
        ["fact-join: pairs/s", *per(lambda x: num(x["fact_join"]["pairs_per_s"], 0))],
        ["largest data-stage process (MB)", *per(lambda x: num(max(v for st in ("shard", "score", "fact_join")
                                                                      for v in x[st]["peak_rss_mb"].values()), 0))],
        ["loader alone, rank 0 of 2 (MB)", *per(lambda x: num(x["loader_default"][loader]["peak_rss_mb"]["loader"], 0))],
        ["training rank, 2 processes (MB)", *per(lambda x: num(x["launch"]["peak_rss_mb"].get("training_rank"), 0))],
        ["launch to first step, rank 0 / rank 1 (s)",
         *per(lambda x: f"{x['launch']['ranks']['rank0']['first_step']:.1f} / {x['launch']['ranks']['rank1']['first_step']:.1f}")],
    ]


def t_scale() -> str:
    r = load("scale")
    resume = r["resume"]
    return block(table(["synthetic distant documents", *(num(n, 0) for n in r["sizes"])], _scale_rows(r)),
                 f"Killed with SIGKILL at step {r['kill_resume']['kill_at']} of {r['kill_resume']['steps']} and resumed "
                 f"(2 processes, ZeRO-2): weights {'identical' if resume['identical'] else 'DIFFERENT'}, "
                 f"{resume['repeated']} pairs repeated, {resume['missed']} missed. Tiny random encoder: the data "
                 "path's cost, not the encoder's (`docs/scale.md`).", source("scale"))


def t_scale_growth() -> str:
    r = load("scale")
    growth = table(["process kind (stage)", f"peak RSS at {num(max(r['sizes']), 0)} / at {num(min(r['sizes']), 0)}"],
                   [[k, f"{v:.2f}x"] for k, v in sorted(r["rss_growth"].items())])
    marginal = r.get("marginal_throughput_ratio") or {}
    ratios = table(["stage", "throughput ratio (wall)", "marginal ratio (no fixed start)"],
                   [[k, f"{v:.2f}", f"{marginal[k]:.2f}" if marginal.get(k) is not None else ""]
                    for k, v in sorted(r["throughput_ratio"].items())])
    return block(growth, ratios, source("scale"))


def t_scale_projection() -> str:
    """The measured slopes carried to 1M documents and to a node of 8 GPUs (arithmetic, not measured)."""
    r = load("scale")
    big, small = str(max(r["sizes"])), str(min(r["sizes"]))
    base = r[small]["loader_default"]["world2_workers0"]["peak_rss_mb"]["loader"]
    per_doc, per_pair = r["loader_bytes_per_doc"], r["loader_bytes_per_pair"] or 0.0
    pairs_big = r[big]["fact_join"]["pairs"]
    docs_1m, pairs_1m = 1_000_000, 10 * pairs_big  # the default cap's pairs, ten times the corpus
    loader_1m = base + (per_doc * (docs_1m - int(small)) + per_pair * pairs_1m) / 2**20
    worker = r[big]["loader_default"].get("world2_workers2", {}).get("peak_rss_mb", {}).get("loader_worker")
    rank = r[big]["launch"]["peak_rss_mb"].get("training_rank")
    rows = [["loader's own memory per document / per pair (slopes)", f"{per_doc:,.1f} B / {per_pair:,.1f} B"],
            ["loader process at 1M documents and ~" + f"{pairs_1m / 1e6:.1f}M pairs (rank 0 of 2, projected)",
             f"{loader_1m:,.0f} MB (at {int(small):,}: {base:,.0f} MB)"],
            ["a node of 8 GPUs, 1 rank + 2 loader workers each (CPU tiny-encoder ranks measured at "
             f"{big}: rank {rank:,.0f} MB, worker {worker or 0:,.0f} MB)",
             f"{8 * ((rank or 0) + 2 * (worker or 0)) / 1024:,.1f} GB of loader and rank processes, "
             "plus the GPU model's host copy"]]
    first = r["first_step_s"]
    ranks = {n: r[n]["launch"]["ranks"] for n in map(str, r["sizes"])}
    rows.append(["hashing every file, each rank its half, behind the engine's set-up, at "
                 + ", ".join(f"{int(n):,}" for n in ranks),
                 ", ".join(f"{x['rank0']['hash_s']:.2f} + {x['rank1']['hash_s']:.2f} s" for x in ranks.values())
                 + "; waited for after the engine: " + ", ".join(
                     f"{max(x[k]['verified'] - x[k]['engine'] for k in x):.2f} s" for x in ranks.values())])
    rows.append(["launch to first step, rank 1, " + " / ".join(f"{int(n):,}" for n in first["rank1"]),
                 " / ".join(f"{v:.1f} s" for v in first["rank1"].values())])
    return block(table(["", "figure"], rows, right=9),
                 "_Projected rows are arithmetic on the measured slopes (`benchmarks/results/scale.json`), not "
                 "measurements; the 1M-document pair count assumes the pairs grow with the corpus as from 30k to "
                 "100k (linear at the default cap of 8 pairs per fact)._")


def t_pool_reopen() -> str:
    """The loader's walk with the default pool of open shards and a cut one (docs/scale.md)."""
    r = load("pool_reopen")
    rows = [[name, f"{row['pairs_per_s']:,.0f}", f"{row['reopens_per_pair']:.2f}", f"{row['ratio_to_baseline']:.2f}x"]
            for name, row in r["rows"].items()]
    return block(table(["corpus (documents), open shards per folder", "pairs/s", "shards reopened per pair",
                        f"vs {r['baseline']}"], rows, right=1),
                 f"_Rank 0 of 2 reads its first {r['pairs']:,} pairs with both documents and their kept labels, "
                 "one thread, the second of two runs of each; from `benchmarks/results/pool_reopen.json`._")


def t_headline() -> str:
    """The README's scale and reliability figures, each from its result file."""
    shard, score = load("shard_throughput"), load("denoise_throughput")
    pre, kill, bil, faults = load("pretrain_throughput"), load("kill_resume"), load("bilinear"), load("fault_table")
    big = shard["large_file"]
    z2 = pre["cpu"]["zero2"]
    rows = [["Sharding on Ray (validate, tokenize, write WebDataset)",
             f"{num(shard['docs_per_s']['ray_2'], 0)} documents/s with 2 workers, {shard['scaling_2_over_1']:.2f}x "
             f"one worker; a {big['input_bytes'] / 1e9:.2f} GB JSON array in {big['peak_rss_mb']['driver']:.0f} MB "
             f"(driver) and {big['peak_rss_mb']['worker_max']:.0f} MB (largest worker)", "`shard_throughput.json`"],
            ["Pre-denoising, all pairs of a document as one product",
             f"scoring {score['scoring_speedup']:,.0f}x the release's gathered bilinear, {score['end_to_end_speedup']}x "
             f"end to end; Ray Data with 2 actors {score['ray_2_over_1']}x one", "`denoise_throughput.json`"],
            ["Pair-bilinear kernel, forward + backward (CPU, fp32, N = 42)",
             f"{bil['cpu']['speedup_fwd_bwd']:.0f}x faster than gathered `nn.Bilinear`, "
             f"{bil['cpu']['working_memory_ratio']:.1f}x less working memory", "`bilinear.json`"],
            ["Pre-training on 2 processes (ZeRO-2, CPU)",
             f"{z2['procs_2_over_1']:.2f}x one process at batch 4, "
             f"{pre['zero2_global_batch_16']['procs_2_over_1']:.2f}x at batch 16; ZeRO-1/2/3 on 1 or 2 processes "
             f"follow one loss curve (within {max(pre['max_loss_difference_vs_zero1_procs_1'].values()):g})",
             "`pretrain_throughput.json`"],
            ["Kill and resume (SIGKILL at random moments, 2 processes)",
             f"{kill['kills']} kills ({kill['kills_inside_checkpoint_writes']} inside checkpoint writes): final "
             f"weights {'bit-identical' if kill['identical'] else 'DIFFERENT'}, {kill['samples_repeated']} samples "
             f"repeated, {kill['samples_missed']} missed", "`kill_resume.json`"],
            ["Faults tried by the tests and the stress run",
             f"{len(faults['faults'])} kinds, {sum(f['times'] for f in faults['faults']):,} times; lost: "
             + (str(sum(int(f["lost"]) for f in faults["faults"]))
                if all(str(f["lost"]).isdigit() for f in faults["faults"]) else "see the file")
             + f" (tests exit code {faults['tests_exit_code']})", "`fault_table.json`"]]
    check = load("gpu_check")
    verdicts = ", ".join(f"{n} {s}" for s, n in check["counts"].items() if n)
    skipped = sorted({c["reason"] for c in check["checks"] if c["status"] == "skipped"})
    rows.append([f"Device check (`python -m benchmarks.gpu_check`, {check['mode']} mode)",
                 f"{len(check['checks'])} checks: {verdicts}" + (f" ({'; '.join(skipped)})" if skipped else ""),
                 "`gpu_check.json`"])
    return block(table(["", "figure", "result file (`benchmarks/results/`)"], rows, right=9),
                 "_Measured on 2 CPU cores, no GPU; each file records its machine, command and date._")


# ---- the studies' index (benchmarks/studies/README.md) ----------------------------------------
def outside(ci) -> bool:
    return ci[0] > 0 or ci[1] < 0


def c_finetune_realdata() -> str:
    r = load("finetune_realdata")
    return (f"valid F1 {num(r['valid']['f1'])} / Ign F1 {num(r['valid']['ign_f1'])} at epoch {r['best_epoch']} of "
            f"{r['epochs']} (after epoch 1: {num(r['baseline_first_epoch']['f1'])})")


def c_denoise_quality() -> str:
    q, q25 = load("denoise_quality"), load("denoise_quality_rank_25_epochs")
    four = load("denoise_quality_rank_25_epochs_bert_d_4n")
    return (f"the rank model keeps {num(q['valid_recall_at_2n'])}% of valid's gold facts in its top 2·N_ent "
            f"({num(q25['valid_recall_at_2n'])}% after 25 epochs), short of 85%; BERT+D − BERT is "
            f"{q['valid_f1']['BERT+D'] - q['valid_f1']['BERT']:+.2f} F1 at {q['k_d']} and "
            f"{four['valid_f1']['BERT+D'] - four['valid_f1']['BERT']:+.2f} with the 25-epoch model at {four['k_d']}: "
            "ties")


def c_denoise_cut() -> str:
    a, b = load("denoise_cut"), load("denoise_cut_100_training_docs")

    def one(r):
        return f"{r['best_k_d']} (F1 {num(r['cuts'][r['best_k_d']]['f1'])} against {num(r['cuts']['all']['f1'])} uncut)"

    return (f"the best cut depends on the pair of models: {one(a)} for the classifier of 400 documents, {one(b)} "
            f"for the classifier of 100")


def c_denoise_learning_curve() -> str:
    r = load("denoise_learning_curve")
    return (f"{r['fit']['recall_at_2n']['gain_per_doubling']:+.2f} points of recall at 2·N_ent per doubling of the "
            f"annotated documents; {r['bar']:.0f}% takes about {r['docs_for_bar_at_2n']:,} documents")


def c_denoise_priors() -> str:
    r = load("denoise_priors")
    best = max(v["gain_at_2n"] for v in r["priors"].values())
    return (f"the best prior adds {best:+.2f} at 2·N_ent and a second model's mean "
            f"{r['ensemble']['gain_at_2n']:+.2f}: structure does not close the gap")


def c_denoise_equal_annotations() -> str:
    g = load("denoise_equal_annotations")["gap"]
    return (f"BERT+D − BERT is {g['f1_diff']:+.2f} F1 {interval(g['f1_ci95'])}, "
            f"{'outside' if outside(g['f1_ci95']) else 'inside'} the interval")


def c_pretrain_tasks() -> str:
    ratios = [t["trained_over_chance"] for t in load("pretrain_tasks")["tasks"].values()]
    return f"every task learns: {min(ratios):.1f}x to {max(ratios):.1f}x chance on held-out pairs after one epoch"


def c_paper_table() -> str:
    comparisons = paper_results().get("comparisons", {})
    few = [c for k, c in comparisons.items() if "100 training docs" in k]
    many = [c for k, c in comparisons.items() if "100 training docs" not in k]
    return (f"at 400 training documents {sum(outside(c['f1_ci95']) for c in many)} of {len(many)} measured gaps are "
            f"outside their 95% interval; at 100, {sum(outside(c['f1_ci95']) for c in few)} of {len(few)}, among "
            "them every BERT+D+P − BERT+D (both cuts, both seeds) and BERT+D − BERT at 2·N_ent")


STUDIES = (
    ("finetune_realdata", "What does the paper's BERT row reach on real Re-DocRED with the packaged MiniLM?",
     "python -m benchmarks.studies.finetune_realdata", ["finetune_realdata"], c_finetune_realdata),
    ("denoise_quality", "How many of valid's gold facts does the rank model keep, and does fine-tuning on its kept "
     "pairs (BERT+D) beat BERT?", "python -m benchmarks.studies.denoise_quality --rank-run DIR [--keep 4n]",
     ["denoise_quality", "denoise_quality_rank_25_epochs", "denoise_quality_rank_25_epochs_bert_d_4n"],
     c_denoise_quality),
    ("denoise_cut", "How many pairs per annotated document (k_d) should a fixed classifier keep?",
     "python -m benchmarks.studies.denoise_cut --bert DIR --rank DIR [--out FILE]",
     ["denoise_cut", "denoise_cut_100_training_docs", "denoise_cut_100_training_docs_own_rank",
      "denoise_cut_100_training_docs_own_rank_25_epochs", "denoise_cut_100_training_docs_own_rank_relation_head"],
     c_denoise_cut),
    ("denoise_learning_curve", "How many annotated documents would 85% recall at 2·N_ent take?",
     "python -m benchmarks.studies.denoise_learning_curve --docs 200 100 --recorded FILE",
     ["denoise_learning_curve"], c_denoise_learning_curve),
    ("denoise_priors", "Would document-structure priors, or a second rank model, close the gap without more "
     "documents?", "python -m benchmarks.studies.denoise_priors --rank DIR --ensemble DIR", ["denoise_priors"],
     c_denoise_priors),
    ("denoise_equal_annotations", "With a rank model trained on the same 100 documents as the classifier, does "
     "BERT+D beat BERT?", "python -m benchmarks.studies.denoise_equal_annotations --docs 100 --keep 3n",
     ["denoise_equal_annotations"], c_denoise_equal_annotations),
    ("pretrain_tasks", "Does each pre-training task learn something that holds on another knowledge base?",
     "python -m benchmarks.studies.pretrain_tasks", ["pretrain_tasks"], c_pretrain_tasks),
    ("paper_table", "Do the paper's Table 1 and 2 gaps hold on real data, and where?",
     "python -m benchmarks.studies.paper_table [--rows NAMES] [--compare]", ["paper_table"], c_paper_table),
)


def t_studies() -> str:
    rows = [[f"`{name}.py`", question, f"`{command}`", "<br>".join(f"`{f}.json`" for f in files), conclude()]
            for name, question, command, files, conclude in STUDIES]
    return table(["study", "question", "command", "result (`benchmarks/results/`)", "conclusion (from the result)"],
                 rows, right=9)


TABLES = {name[2:]: fn for name, fn in globals().items() if name.startswith("t_") and callable(fn)}


# ---- the files --------------------------------------------------------------------------------
def render(text: str, where: str) -> str:
    def one(match: re.Match) -> str:
        name = match.group(2)
        if name not in TABLES:
            raise SystemExit(f"{where}: no table named {name!r} (known: {', '.join(sorted(TABLES))})")
        return f"{match.group(1)}{TABLES[name]()}\n{match.group(4)}"

    return MARKER.sub(one, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a file would change")
    parser.add_argument("files", nargs="*", type=Path, help=f"default: {', '.join(str(f.relative_to(ROOT)) for f in FILES)}")
    args = parser.parse_args(argv)
    stale = []
    for path in args.files or FILES:
        text = path.read_text()
        new = render(text, str(path))
        if new != text:
            stale.append(path)
            if not args.check:
                path.write_text(new)
                print(f"rewrote the tables of {path}")
    if args.check and stale:
        print("tables out of date (run python -m benchmarks.studies.render_results): "
              + ", ".join(str(p) for p in stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
