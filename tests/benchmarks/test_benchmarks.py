"""The benchmark scripts' own logic: summaries, GPU peak lookup, and a smoke run of the CPU path.

The numbers benchmarks produce are not asserted here (timing belongs in ``benchmarks/``); what is
checked is that a run writes the result keys the issues name and that the summary arithmetic means
what the result file says it means. The scripts are modules of the ``benchmarks`` package
(``benchmarks/`` for speed, scale and reliability, ``benchmarks/studies/`` for the quality studies),
imported from the checkout (``python -m pytest`` puts it on the path).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import bilinear as bench

ROOT = Path(__file__).resolve().parents[2]


def _phase(seconds, peak, work):
    return {"median_s": seconds, "peak_bytes": peak, "peak_work_bytes": work, "achieved_flops": 1e12,
            "fraction_of_peak": 0.5}


def _row(dtype, impls):
    return {"B": 1, "N": 42, "P": 1722, "d": 768, "o": 256, "dtype": dtype,
            "impls": {name: {"fwd": _phase(*fwd), "fwd_bwd": _phase(*fb)} for name, (fwd, fb) in impls.items()}}


def test_cpu_summary_reports_total_and_working_memory():
    grads = 600
    row = _row("float32", {
        "factored": ((0.1, 40, 38), (0.4, grads + 70, 70)),
        "einsum": ((0.2, 600, 598), (0.8, grads + 600, 600)),
        "gathered": ((2.0, 20, 18), (300.0, grads + 3500, 3500)),
    })
    s = bench.cpu_summary([row])
    assert s["speedup_fwd_bwd"] == pytest.approx(750.0)
    assert s["memory_ratio"] == pytest.approx(4100 / 670)
    # no implementation can go below the returned gradients themselves
    assert s["memory_ratio_upper_bound"] == pytest.approx(4100 / 600)
    assert s["working_memory_ratio"] == pytest.approx(3500 / 70)
    assert s["returned_grad_bytes"] == grads
    assert s["einsum_memory_ratio"] == pytest.approx(4100 / 1200)
    assert s["einsum_working_memory_ratio"] == pytest.approx(3500 / 600)
    assert s["accept_speedup_50x"] and s["accept_working_memory_10x"]
    assert not s["accept_memory_10x"]
    assert bench.cpu_summary([_row("float32", {"factored": ((1, 1, 1), (1, 1, 1))})]) is None


def test_gpu_summary_compares_triton_with_gathered_and_the_best_plain_torch_form():
    rows = [_row("bfloat16", {
        "triton": ((0.001, 10, 9), (0.002, 610, 10)),
        "factored": ((0.002, 40, 38), (0.005, 670, 70)),
        "einsum": ((0.003, 600, 598), (0.004, 1200, 600)),
        "gathered": ((0.01, 20, 18), (0.1, 4100, 3500)),
    })]
    s = bench.gpu_summary(rows)
    assert s["speedup_fwd_bwd_bf16"] == pytest.approx(50.0)
    assert s["speedup_vs_best_plain_torch_fwd_bwd_bf16"] == pytest.approx(2.0)  # einsum is the faster plain form
    assert s["memory_ratio_bf16"] == pytest.approx(4100 / 610)
    assert s["working_memory_ratio_bf16"] == pytest.approx(350.0)
    assert s["fraction_of_peak"] == 0.5
    assert "speedup_fwd_bwd_fp32" not in s
    assert bench.gpu_summary([]) is None


@pytest.mark.parametrize("name, key", [
    ("NVIDIA H100 80GB HBM3", "H100"),
    ("NVIDIA H100 PCIe", "H100 PCIe"),
    ("NVIDIA H200", "H200"),
    ("NVIDIA A100-SXM4-80GB", "A100"),
])
def test_gpu_peak_lookup(name, key):
    expected = dict(bench.GPU_PEAKS)[key]["bf16"]
    assert bench.gpu_peak(name, "bf16", None) == expected
    assert bench.gpu_peak(name, "bf16", 123.0) == 123e12
    assert bench.gpu_peak("Some Unknown GPU", "bf16", None) is None


def test_bilinear_quick_run_writes_the_result_keys(tmp_path):
    out = tmp_path / "bilinear.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "benchmarks.bilinear", "--quick", "--device", "cpu",
                           "--threads", "1", "--out", str(out)], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    assert result["gpu"] is None
    for key in ("speedup_fwd_bwd", "memory_ratio", "working_memory_ratio"):
        assert result["cpu"][key] > 0
    assert result["command"] == result["machine"]["command"]  # the module form, as it was run
    assert result["command"].startswith("python -m benchmarks.bilinear --quick --device cpu --threads 1 --out ")
    assert result["machine"]["date"]
    assert {(r["d"], r["o"], r["N"]) for r in result["grid"]["cpu"]} == {(48, o, n) for o in (16, 7) for n in (5, 12)}
    for row in result["grid"]["cpu"]:
        assert set(row["impls"]) == {"factored", "einsum", "gathered"}


# ---- benchmarks/studies/paper_table.py: which rows a run does, and how their records are kept ---------------
def test_paper_table_config_names_runnable_configs():
    """Every row of configs/paper_table.yaml names a pre-training config that validates, and the
    table holds the paper's eight rows."""
    from benchmarks.studies import paper_table

    from dsdocre.config import load_config
    from dsdocre.pretrain import PretrainConfig

    config = load_config(paper_table.PaperTableConfig, ROOT / "configs/paper_table.yaml", [])
    paper_rows = ["BERT", "BERT+D", "BERT+D+P", "w/o MM", "w/o RD", "w/o RA", "w/o Inter", "w/o Intra"]
    assert list(config.rows)[:8] == paper_rows and list(config.paper) == paper_rows
    assert {paper_table.row_corpus(config, row) for row in config.rows.values()} == {None, *config.corpora}
    for name, row in config.rows.items():
        if row.pretrain:
            load_config(PretrainConfig, ROOT / row.pretrain, ["data.pairs=p", "data.shards=s"])
    assert [paper_table.slug(n) for n in config.rows] == ["bert", "bert_d", "bert_d_p", "wo_mm", "wo_rd", "wo_ra",
                                                          "wo_inter", "wo_intra", "bert_d_p_larger_corpus",
                                                          "bert_seed_43", "bert_seed_44", "bert_100_training_docs",
                                                          "bert_d_100_training_docs", "bert_d_p_100_training_docs",
                                                          "bert_100_training_docs_seed_43",
                                                          "bert_d_100_training_docs_seed_43",
                                                          "bert_d_p_100_training_docs_seed_43",
                                                          "bert_d_at_2n_100_training_docs",
                                                          "bert_d_p_at_2n_100_training_docs",
                                                          "bert_d_at_2n_100_training_docs_seed_43",
                                                          "bert_d_p_at_2n_100_training_docs_seed_43",
                                                          "bert_d_p_at_2n_with_synthetic_documents_100_training_docs",
                                                          "bert_d_p_at_2n_with_synthetic_documents_100_training_docs_seed_43"]
    paper_table.check_rows(config, "configs/paper_table.yaml")
    broken = config.model_copy(update={"rows": {**config.rows, "A, B": config.rows["BERT"],
                                                "C": config.rows["BERT"].model_copy(update={"references": ["BERT (seed 45)"]}),
                                                "D": config.rows["BERT"].model_copy(update={"keep_annotated": "2n"})},
                                      "corpora": {**config.corpora, "empty": paper_table.CorpusConfig()}})
    with pytest.raises(SystemExit, match=r"(?s)'A, B': its name holds a comma.*'D' sets keep_annotated: 2n but does "
                                         r"not pre-denoise.*corpus 'empty' has neither files nor synthetic_docs"
                                         r".*'C' names 'BERT \(seed 45\)'"):
        paper_table.check_rows(broken, "x.yaml")
    for name, row in config.rows.items():  # a row's own references are rows of the table, listed before it
        assert all(list(config.rows).index(ref) < list(config.rows).index(name) for ref in row.references or [])
        if row.pretrained_by:  # shares the pre-training of an earlier row with the same pre-training config
            source = config.rows[row.pretrained_by]
            assert (source.pretrain, source.pretrain_set, source.corpus) == (row.pretrain, row.pretrain_set, row.corpus)
    inputs = {"train": "train.json", "valid": "valid.json",
              "kept": {keep: {split: f"{split}-{keep}" for split in ("train", "valid")} for keep in ("6n", "2n")}}
    seeds = {name: paper_table.finetune_config(config.rows[name], config, inputs, Path("out")).training.seed
             for name in ("BERT", "BERT (seed 43)")}
    assert seeds == {"BERT": 42, "BERT (seed 43)": 43}
    kept = {name: paper_table.finetune_config(config.rows[name], config, inputs, Path("out")).data.kept_pairs
            for name in ("BERT", "BERT+D", "BERT+D at 2n (100 training docs)")}
    assert kept == {"BERT": None, "BERT+D": ["train-6n", "valid-6n"],  # the table's cut, or the row's own
                    "BERT+D at 2n (100 training docs)": ["train-2n", "valid-2n"]}


def test_paper_table_corpus_with_synthetic_documents(tmp_path):
    """A corpus given as a list is files only; one with ``synthetic_docs`` gets that many synthetic
    distant documents, written once with the synthetic KB's labels, the counts beside them."""
    from benchmarks.studies import paper_table

    from dsdocre.config import load_config
    from dsdocre.synth.builder import iter_documents

    config = load_config(paper_table.PaperTableConfig, ROOT / "configs/paper_table.yaml", [])
    assert paper_table.corpus_spec(config, "docred_unlabeled") == paper_table.CorpusConfig(
        files=["docred/unlabeled.json"])
    mixed = paper_table.corpus_spec(config, "unlabeled_and_synthetic")
    assert (mixed.files, mixed.synthetic_docs) == (["docred/unlabeled.json"], 1000)
    path = tmp_path / "synthetic.json"
    stats = paper_table.write_synthetic_distant(path, 30, seed=3)
    docs = json.loads(path.read_text())
    assert docs == list(iter_documents("train_distant", 3, 30))
    assert stats == {"documents": 30, "labelled_documents": sum(bool(d["labels"]) for d in docs),
                     "labels": sum(len(d["labels"]) for d in docs)}
    assert stats["labels"] > 30
    path.write_text("[]")  # complete once its counts are there: not written again
    assert paper_table.write_synthetic_distant(path, 30, seed=3) == stats and path.read_text() == "[]"


def test_paper_table_skips_finished_rows_and_redoes_named_ones(tmp_path):
    from benchmarks.studies import paper_table

    from dsdocre.config import load_config

    config = load_config(paper_table.PaperTableConfig, ROOT / "configs/paper_table.yaml", [])
    path = tmp_path / "paper_table.json"
    results = paper_table.load_results(path)
    assert paper_table.rows_to_run(config, results, None, []) == list(config.rows)
    results["rows"]["BERT"] = {"valid_f1": 55.0}
    paper_table.save_results(path, results)
    again = paper_table.load_results(path)  # what a run started again reads
    assert again["rows"] == {"BERT": {"valid_f1": 55.0}} and not list(tmp_path.glob("paper_table.json.tmp*"))
    assert paper_table.rows_to_run(config, again, None, []) == list(config.rows)[1:]
    assert paper_table.rows_to_run(config, again, ["BERT", "w/o RA"], []) == ["w/o RA"]
    assert paper_table.rows_to_run(config, again, None, ["BERT"]) == list(config.rows)
    with pytest.raises(SystemExit, match="no row 'w/o XY'"):
        paper_table.rows_to_run(config, again, ["w/o XY"], [])


def test_paper_table_row_is_added_to_the_file_as_it_is_on_disk(tmp_path):
    """Two runs filling different rows of one file: the second to finish keeps the first's row."""
    from benchmarks.studies import paper_table

    path = tmp_path / "paper_table.json"
    paper_table.save_results(path, {"rows": {}, "ds_docs": 1000})
    paper_table.record_row(path, "BERT", {"valid_f1": 55.0})  # the other run, finishing first
    results = paper_table.record_row(path, "BERT+D+P", {"valid_f1": 56.0})
    assert results == paper_table.load_results(path) == {
        "rows": {"BERT": {"valid_f1": 55.0}, "BERT+D+P": {"valid_f1": 56.0}}, "ds_docs": 1000}


def _scored_folder(folder: Path, checksums):
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"shards": [{"sha256": c} for c in checksums]}))
    return folder


@pytest.fixture
def adoptable(tmp_path):
    """A finished BERT+D fine-tuning run as another benchmark records it, with this table's recipe."""
    from benchmarks.studies import paper_table

    from dsdocre.config import load_config, to_plain

    config = load_config(paper_table.PaperTableConfig, ROOT / "configs/paper_table.yaml", [])
    inputs = {"train": tmp_path / "train.json", "valid": tmp_path / "valid.json",
              "kept": {"6n": {"train": _scored_folder(tmp_path / "table/train-6n", ["a", "b"]),
                              "valid": _scored_folder(tmp_path / "table/valid-6n", ["c"])}}}
    run = tmp_path / "earlier_run"
    (run / "model").mkdir(parents=True)
    valid = {"precision": 56.31, "recall": 55.52, "f1": 55.91, "ign_f1": 55.05, "intra_f1": 57.86, "inter_f1": 54.49}
    (run / "model" / "dsdocre_model.json").write_text(json.dumps({"valid": valid, "epoch": 15, "threshold": 0.31}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e, "steps": 100 * e, "train_seconds": 190.0 * e, "valid": {
        "f1": 50.0 + e, "ign_f1": 49.0 + e, "precision": 0.0}}) + "\n" for e in (1, 2, 3)))
    their_config = to_plain(paper_table.finetune_config(config.rows["BERT+D"], config, inputs, tmp_path))
    their_config["output_dir"] = str(run)
    their_config["data"]["kept_pairs"] = [str(_scored_folder(tmp_path / f"earlier/{s}", c))
                                          for s, c in (("train", ["a", "b"]), ("valid", ["c"]))]
    del their_config["training"]["precision"]  # an older schema: a setting not recorded
    result = tmp_path / "earlier.json"
    result.write_text(json.dumps({"bert_d": {"config": their_config}, "command": "python earlier.py", "date": "d"}))
    return paper_table, config, inputs, result, their_config


def test_paper_table_adopts_an_earlier_run_with_the_same_recipe_and_kept_pairs(adoptable):
    paper_table, config, inputs, result, _ = adoptable
    record = paper_table.adopt_row("BERT+D", config.rows["BERT+D"], config, inputs, f"{result}:bert_d")
    assert (record["valid_f1"], record["valid_ign_f1"], record["best_epoch"]) == (55.91, 55.05, 15)
    assert record["valid"]["inter_f1"] == 54.49 and record["finetune_train_seconds"] == 570.0
    assert record["adopted"]["command"] == "python earlier.py"
    assert record["adopted"]["unrecorded_settings"] == ["training.precision"]
    assert record["finetune_epochs"][-1] == {"epoch": 3, "train_seconds": 570.0, "f1": 53.0, "ign_f1": 52.0,
                                             "steps": 300}
    del record["finetune_epochs"]  # a row recorded before the field existed
    results = {"rows": {"BERT+D": record, "BERT": {"model": "/nonexistent/model"}}}
    assert paper_table.add_missing_epoch_curves(results) == ["BERT+D"]
    assert [p["f1"] for p in results["rows"]["BERT+D"]["finetune_epochs"]] == [51.0, 52.0, 53.0]
    assert paper_table.add_missing_epoch_curves(results) == []  # nothing new to fill


def test_paper_table_refuses_to_adopt_a_run_that_is_not_the_row(adoptable):
    paper_table, config, inputs, result, their_config = adoptable
    source = json.loads(result.read_text())
    source["bert_d"]["config"]["training"]["epochs"] = 14
    result.write_text(json.dumps(source))
    with pytest.raises(SystemExit, match="training.epochs: 14"):
        paper_table.adopt_row("BERT+D", config.rows["BERT+D"], config, inputs, f"{result}:bert_d")
    source["bert_d"]["config"]["training"]["epochs"] = their_config["training"]["epochs"]
    result.write_text(json.dumps(source))
    _scored_folder(inputs["kept"]["6n"]["valid"].parent / "other-valid", ["changed"])
    inputs["kept"]["6n"]["valid"] = inputs["kept"]["6n"]["valid"].parent / "other-valid"  # the table kept other pairs
    with pytest.raises(SystemExit, match="data.kept_pairs"):
        paper_table.adopt_row("BERT+D", config.rows["BERT+D"], config, inputs, f"{result}:bert_d")
    with pytest.raises(SystemExit, match="the BERT row fine-tunes on every pair"):
        paper_table.adopt_row("BERT", config.rows["BERT"], config, inputs, f"{result}:bert_d")
    with pytest.raises(SystemExit, match="pre-trained"):
        paper_table.adopt_row("BERT+D+P", config.rows["BERT+D+P"], config, inputs, f"{result}:bert_d")


def test_paper_table_records_its_shared_stages_and_refuses_others(tmp_path):
    """The sha256 of the rank model's weights, the kept pairs and the document pairs go into the
    result file; stages rebuilt differently stop the run instead of joining the recorded rows."""
    from benchmarks.studies import paper_table

    model = tmp_path / "rank/model"
    model.mkdir(parents=True)
    (model / "dsdocre_checksums.json").write_text(json.dumps({"files": {
        "dsdocre_model.json": {"sha256": "m"}, "heads.safetensors": {"sha256": "h"},
        "encoder/model.safetensors": {"sha256": "e"}}}))
    inputs = {"rank_model": model, "kept": {"6n": {"train": _scored_folder(tmp_path / "train-6n", ["a", "b"]),
                                                   "valid": _scored_folder(tmp_path / "valid-6n", ["c"])},
                                            "2n": {"train": _scored_folder(tmp_path / "train-2n", ["a2", "b2"]),
                                                   "valid": _scored_folder(tmp_path / "valid-2n", ["c2"])}},
              "corpora": {"docred_unlabeled": {"kept": _scored_folder(tmp_path / "scored-20", ["d"]),
                                               "pairs": _scored_folder(tmp_path / "pairs", ["p", "q"])}}}
    checksums = paper_table.shared_stage_checksums(inputs)
    assert checksums == {"rank_model": ["e", "h"], "kept_train": ["a", "b"], "kept_valid": ["c"],
                         "kept_train_2n": ["a2", "b2"], "kept_valid_2n": ["c2"],  # a row's own cut
                         "docred_unlabeled_kept": ["d"], "docred_unlabeled_pairs": ["p", "q"]}
    assert paper_table.shared_stage_checksums({"train": "t", "valid": "v", "corpora": {}}) == {}  # BERT rows only
    paper_table.check_shared_stages({"rows": {}}, checksums, tmp_path)  # nothing recorded yet
    recorded = {"rows": {}, "shared_stage_sha256": {**checksums, "larger_kept": ["x"]}}
    paper_table.check_shared_stages(recorded, checksums, tmp_path)  # the same stages (a subset of them)
    rebuilt = {**checksums, "kept_valid": ["c2"]}
    with pytest.raises(SystemExit, match="sha256 differs: kept_valid"):
        paper_table.check_shared_stages(recorded, rebuilt, tmp_path)


def test_paper_table_row_shares_only_the_same_pretraining(tmp_path):
    """A row that names ``pretrained_by`` fine-tunes from that row's encoder only when its own
    pre-training config is the same (output folder and crash settings aside) and the encoder is there."""
    from benchmarks.studies import paper_table

    config = {"output_dir": str(tmp_path / "a" / "pretrain"), "data": {"pairs": "p", "shards": "s"},
              "tasks": {"mm_intra": True, "ra": True}, "training": {"max_steps": 304, "seed": 42, "checkpoints": True}}
    results = {"rows": {"A": {"pretrain": {"steps": 304, "train_seconds": 1500.0, "config": config}}}}
    ours = {**config, "output_dir": str(tmp_path / "b" / "pretrain"),
            "training": {**config["training"], "checkpoints": False}}
    with pytest.raises(SystemExit, match="not on this machine"):
        paper_table.shared_pretraining("B", "A", ours, results)
    (tmp_path / "a" / "pretrain" / "encoder").mkdir(parents=True)
    (tmp_path / "a" / "pretrain" / "encoder" / "config.json").write_text("{}")
    shared = paper_table.shared_pretraining("B", "A", ours, results)
    assert shared["encoder"] == str(tmp_path / "a" / "pretrain" / "encoder")
    assert shared["shared_from"] == "A" and shared["steps"] == 304 and shared["config"] == config
    for changed, key in ((["training", "max_steps"], "training.max_steps"), (["tasks", "ra"], "tasks.ra"),
                         (["data", "pairs"], "data.pairs")):
        other = json.loads(json.dumps(ours))
        other[changed[0]][changed[1]] = "changed"
        with pytest.raises(SystemExit, match=f"differ in {key}$"):
            paper_table.shared_pretraining("B", "A", other, results)
    with pytest.raises(SystemExit, match="no recorded pre-training"):
        paper_table.shared_pretraining("B", "C", ours, results)


def test_paper_table_compares_rows_on_their_recorded_predictions(tmp_path):
    """Each gap once (a row against the reference rows before it), from the predictions beside each
    row's model; predictions that do not score the recorded F1 are refused."""
    from benchmarks.studies import paper_table

    def doc(title):
        return {"title": title, "sents": [["x", "y"]], "labels": [{"h": 0, "t": 1, "r": "P1"}, {"h": 1, "t": 0, "r": "P2"}],
                "vertexSet": [[{"name": "x", "pos": [0, 1], "sent_id": 0}], [{"name": "y", "pos": [1, 2], "sent_id": 0}]]}

    (tmp_path / "redocred").mkdir()
    (tmp_path / "redocred/valid.json").write_text(json.dumps([doc("a"), doc("b")]))
    (tmp_path / "redocred/train.json").write_text(json.dumps([]))
    rows = {}
    for name, preds, f1 in (("BERT", [("a", 0, 1, "P1")], 40.0), ("BERT+D", [("a", 0, 1, "P1"), ("b", 0, 1, "P1")], 66.67),
                            ("w/o RA", [("b", 1, 0, "P2")], 40.0)):
        run = tmp_path / paper_table.slug(name)
        run.mkdir()
        (run / "valid_predictions.json").write_text(json.dumps(
            [{"title": t, "h_idx": h, "t_idx": r_t, "r": r} for t, h, r_t, r in preds]))
        rows[name] = {"model": str(run / "model"), "valid_f1": f1}
    out = paper_table.compare_rows({"rows": rows}, tmp_path, resamples=200)
    assert list(out) == ["BERT+D vs BERT", "w/o RA vs BERT", "w/o RA vs BERT+D"]
    assert [c["f1_diff"] for c in out.values()] == [26.67, 0.0, -26.67]
    assert rows["BERT+D"]["valid_document_counts"] == [[1, 1, 0, 2], [1, 1, 0, 2]]  # kept with the row

    # Without the run folders (a fresh checkout) the recorded counts give the same gaps; a row with
    # neither keeps its earlier gaps, and gaps it never had stay absent.
    for name in rows:
        (tmp_path / paper_table.slug(name) / "valid_predictions.json").unlink()
    rows["w/o Inter"] = {"model": str(tmp_path / "gone" / "model"), "valid_f1": 10.0}
    again = paper_table.compare_rows({"rows": rows, "comparisons": {**out, "w/o Inter vs BERT": {"f1_diff": -1.0}}},
                                     tmp_path, resamples=200)
    assert again == {**out, "w/o Inter vs BERT": {"f1_diff": -1.0}}
    del rows["w/o Inter"]

    # A row that names its references is compared with those rows only (here: one trained on other data).
    rows["w/o Inter"] = {"model": str(tmp_path / "gone" / "model"), "valid_f1": 40.0,
                         "valid_document_counts": [[1, 1, 0, 2], [0, 0, 0, 2]]}
    named = paper_table.compare_rows({"rows": rows, "config": {"rows": {"w/o Inter": {"references": ["w/o RA"]}}}},
                                     tmp_path, resamples=200)
    assert list(named) == [*out, "w/o Inter vs w/o RA"] and named["w/o Inter vs w/o RA"]["f1_diff"] == 0.0
    del rows["w/o Inter"]

    for name, rec in rows.items():  # the run folders are back, with predictions not of the recorded F1
        (tmp_path / paper_table.slug(name) / "valid_predictions.json").write_text("[]")
    with pytest.raises(SystemExit, match="not the recorded epoch's predictions"):
        paper_table.compare_rows({"rows": rows}, tmp_path, resamples=200)


def test_paper_table_readme_table_puts_ours_beside_the_paper():
    from benchmarks.studies import plot_paper_table

    results = {"config": {"rows": {"BERT": {}, "BERT+D": {}, "w/o MM": {}, "BERT+D+P (larger corpus)": {},
                                   "BERT (few)": {"references": []}, "BERT+D+P (few)": {"references": ["BERT (few)"]}},
                          "paper": {"BERT": {"f1": 55.67, "ign_f1": 53.32}, "BERT+D": {"f1": 57.42, "ign_f1": 55.88},
                                    "w/o MM": {"f1": 58.39, "ign_f1": 56.76}}},
               "rows": {"BERT": {"valid_f1": 55.77, "valid_ign_f1": 55.02},
                        "BERT+D": {"valid_f1": 55.91, "valid_ign_f1": 55.05},
                        "BERT (few)": {"valid_f1": 40.0, "valid_ign_f1": 39.0},
                        "BERT+D+P (few)": {"valid_f1": 42.5, "valid_ign_f1": 41.0}},
               "comparisons": {"BERT+D vs BERT": {"f1_diff": 0.14, "f1_ci95": [-0.97, 1.31]},
                               "BERT+D+P (few) vs BERT (few)": {"f1_diff": 2.5, "f1_ci95": [0.5, 4.25]}}}
    assert plot_paper_table.markdown(results).splitlines()[2:] == [
        "| BERT | 55.77 | 55.02 | +0.00 | 55.67 | 53.32 | +0.00 |",
        "| BERT+D | 55.91 | 55.05 | +0.14 [-0.97, +1.31] | 57.42 | 55.88 | +1.75 |",
        "| w/o MM | not run | not run |  | 58.39 | 56.76 | +2.72 |",
        "| BERT+D+P (larger corpus) | not run | not run |  | – | – |  |",
        "| BERT (few) | 40.00 | 39.00 |  | – | – |  |",  # its own baseline: no gap to BERT, trained on other data
        "| BERT+D+P (few) | 42.50 | 41.00 | +2.50 [+0.50, +4.25] vs BERT (few) | – | – |  |"]


def test_benchmark_steps_run_once_and_refuse_another_commands_output(tmp_path):
    from benchmarks._common import STEP_STAMP, dsdocre_step

    args = ["synth", "--docs", 2, "--dev-docs", 1, "--test-docs", 1, "--distant-docs", 1, "--seed", 3,
            "--out", tmp_path / "corpus", "--no-progress"]
    folder = dsdocre_step(tmp_path, "corpus", args, "train_annotated.json")
    assert len(json.loads((folder / "train_annotated.json").read_text())) == 2
    assert json.loads((folder / STEP_STAMP).read_text())["command"] == ["dsdocre", *map(str, args)]
    (folder / "train_annotated.json").write_text("[]")  # a second call must not write it again
    assert dsdocre_step(tmp_path, "corpus", args, "train_annotated.json") == folder
    assert (folder / "train_annotated.json").read_text() == "[]"
    with pytest.raises(SystemExit, match="not by dsdocre synth --docs 5"):
        dsdocre_step(tmp_path, "corpus", ["synth", "--docs", 5, *args[2:]], "train_annotated.json")
    (folder / STEP_STAMP).unlink()
    with pytest.raises(SystemExit, match="an unrecorded command"):
        dsdocre_step(tmp_path, "corpus", args, "train_annotated.json")


def test_learning_curve_oracle_keeps_the_pairs_with_most_facts():
    from benchmarks.studies import denoise_learning_curve as curve

    entities = [{"name": "x"}] * 2  # 2 entities: 2·N_ent = 4 pairs kept, 1·N_ent = 2
    labels = [{"h": 0, "t": 1, "r": f"P{i}"} for i in range(3)] + [{"h": 1, "t": 0, "r": "P9"}]
    doc = {"vertexSet": entities, "labels": labels}
    assert curve.oracle_recall([doc], 2) == 100.0
    assert curve.oracle_recall([doc], 0.5) == 75.0  # one pair: the one holding 3 of the 4 facts
    three = {"vertexSet": [{"name": "y"}] * 3,
             "labels": [{"h": h, "t": t, "r": "P1"} for h in range(3) for t in range(3) if h != t]}
    assert curve.oracle_recall([doc, three], 1) == 70.0  # both pairs (4 facts) + 3 of 6 pairs (3 facts), of 10


def test_learning_curve_fit_is_log_linear_in_the_documents():
    from benchmarks.studies import denoise_learning_curve as curve

    points = [{"docs": d, "r": 50 + 5 * k} for k, d in enumerate((100, 200, 400))]
    a, b = curve.fit_log2(points, "r")
    assert b == pytest.approx(5.0)
    assert a + b * curve.math.log2(3200) == pytest.approx(75.0)  # 5 more doublings of 100


def test_learning_curve_refuses_a_recorded_point_of_another_config(tmp_path):
    from benchmarks.studies import denoise_learning_curve as curve

    result = {"valid_recall_at_2n": 60.0, "valid_recall_at_3n": 70.0, "date": "d", "command": "c",
              "rank_model": {"best_epoch": 3, "recall_per_epoch": [], "train_seconds": 1.0,
                             "config": {"output_dir": "runs/x", "data": {"max_train_docs": 0},
                                        "model": {"pair_dim": 256}, "training": {"epochs": 25}}}}
    path = tmp_path / "recorded.json"
    path.write_text(json.dumps(result))
    point = curve.recorded_point(path, 400, 25)
    assert (point["docs"], point["recall_at_2n"], point["best_epoch"]) == (400, 60.0, 3)
    with pytest.raises(SystemExit, match=r"training differs .* epochs \(25 vs 10\)"):
        curve.recorded_point(path, 400, 10)
    result["rank_model"]["config"]["model"]["pair_dim"] = 128
    path.write_text(json.dumps(result))
    with pytest.raises(SystemExit, match=r"model differs .* pair_dim \(128 vs 256\)"):
        curve.recorded_point(path, 400, 25)


def _priors_doc(mentions, labels):
    """A DocRED-format document: ``mentions`` is, per entity, a list of (sent_id, type)."""
    return {"vertexSet": [[{"name": f"e{e}", "sent_id": s, "type": ty, "pos": [0, 1]} for s, ty in ms]
                          for e, ms in enumerate(mentions)],
            "labels": [{"h": h, "t": t, "r": "P17"} for h, t in labels]}


def test_priors_pair_features_read_distance_shared_sentences_and_types():
    from benchmarks.studies import denoise_priors as priors

    doc = _priors_doc([[(0, "PER"), (3, "PER"), (3, "ORG")], [(3, "LOC")], [(9, "TIME")]], [])
    features = priors.pair_features(doc, 0, 1)
    assert "types=PER-LOC" in features  # the most frequent mention type of each entity
    assert "distance=0" in features and "shared_sentences=1" in features
    # values are bucket indices: 3 mentions fall in (2, 3], bucket 2; first sentence 3 in (1, 3], bucket 2
    assert "head_mentions=2" in features and "head_first=0" in features and "tail_first=2" in features
    far = priors.pair_features(doc, 1, 2)
    assert "distance=4" in far and "shared_sentences=0" in far  # 6 sentences apart: the (4, 8] bucket


def test_priors_rank_what_train_json_labels_above_what_it_never_does():
    from benchmarks.studies import denoise_priors as priors

    # in "train", PER -> LOC pairs in one sentence are gold; everything else is not
    train = [_priors_doc([[(0, "PER")], [(0, "LOC")], [(5, "TIME")]], [(0, 1)]) for _ in range(20)]
    test = _priors_doc([[(2, "PER")], [(2, "LOC")], [(8, "TIME")]], [])
    for prior in (priors.type_pair_prior(train), priors.structure_prior(train)):
        scores = prior(test)
        others = [scores[h, t] for h, t in priors.ordered_pairs(test) if (h, t) != (0, 1)]
        assert scores.shape == (3, 3) and scores[0, 1] > max(others)


def test_machine_info_records_the_versions_that_decide_float_results():
    import transformers
    from benchmarks._common import machine_info

    info = machine_info(command="x", packages=("pyyaml",))
    assert info["transformers"] == transformers.__version__
    assert {"deepspeed", "ray", "webdataset", "tokenizers", "numpy"} <= {k for k, v in info.items() if v}
    assert info["pyyaml"] is not None and info["command"] == "x"
    from benchmarks._common import installed_version

    assert installed_version("no-such-distribution-here") is None


def test_model_flops_are_the_written_out_count():
    """BERT-base: N = 12 (4 d^2 + 2 d f) = 84,934,656 non-embedding weights; training costs
    6 N + 12 L s d per token (s = 512: 566,231,040 FLOPs); 1M tokens/s on an H100 (989 TFLOP/s
    bf16 dense) is 57.25% MFU; an unknown device has no MFU rather than a guessed one."""
    from benchmarks.flops import encoder_training_flops_per_token, mfu, pair_head_training_flops

    assert encoder_training_flops_per_token(12, 768, 3072, 512) == 6 * 84_934_656 + 12 * 12 * 512 * 768 == 566_231_040
    bert_base = {"num_hidden_layers": 12, "hidden_size": 768, "intermediate_size": 3072}
    assert round(mfu(1e6, bert_base, 512, "NVIDIA H100 80GB HBM3")["mfu"], 4) == 0.5725
    assert mfu(1e6, bert_base, 512, "a CPU")["mfu"] is None
    assert pair_head_training_flops(10, 768, 256) == 6 * 10 * 768 * 768 * 256
