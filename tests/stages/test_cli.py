"""The command line on a user's mistakes: a non-zero exit and one line
``dsdocre <command>: error: <message>`` on stderr that names the bad thing, never a traceback.

Every command here fails (or, for the gold-file warnings, finishes) before any model is loaded or
trained, so each test takes about as long as the interpreter takes to start.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _doc(title: str = "Paris doc", labels: list | None = None) -> dict:
    """A tiny valid DocRED document: two entities, one fact (Paris, country, France)."""
    return {
        "title": title,
        "sents": [["Paris", "is", "the", "capital", "of", "France", "."]],
        "vertexSet": [
            [{"name": "Paris", "pos": [0, 1], "sent_id": 0, "type": "LOC"}],
            [{"name": "France", "pos": [5, 6], "sent_id": 0, "type": "LOC"}],
        ],
        "labels": [{"h": 0, "t": 1, "r": "P17", "evidence": []}] if labels is None else labels,
    }


def _write(path: Path, data) -> Path:
    path.write_text(json.dumps(data))
    return path


def _cli(*args, cwd: Path = ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    """``python -m dsdocre.cli ARGS`` with this interpreter; the venv need not be activated."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _error_line(proc: subprocess.CompletedProcess, command: str, *names: str) -> str:
    """The one ``dsdocre <command>: error:`` line of a failed run, which must name each of ``names``."""
    report = f"exit {proc.returncode}\nstdout:\n{proc.stdout[-2000:]}\nstderr:\n{proc.stderr[-3000:]}"
    assert proc.returncode != 0, report
    assert "Traceback" not in proc.stderr, report
    prefix = f"dsdocre {command}: error: "
    errors = [line for line in proc.stderr.splitlines() if line.startswith(prefix)]
    assert len(errors) == 1, report
    for name in names:
        assert name in errors[0], f"{name!r} not named in: {errors[0]}"
    return errors[0]


@pytest.fixture
def gold(tmp_path) -> Path:
    return _write(tmp_path / "gold.json", [_doc()])


@pytest.fixture
def submission(tmp_path) -> Path:
    return _write(tmp_path / "p.json", [{"title": "Paris doc", "h_idx": 0, "t_idx": 1, "r": "P17"}])


# ---- validate -----------------------------------------------------------------------------------
def test_the_tiny_document_is_valid(gold):
    """The documents the other tests build are clean, so their failures are the ones intended."""
    proc = _cli("validate", gold)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert "1 documents, 0 with problems, 0 problems" in proc.stderr


@pytest.mark.parametrize("content, what", [
    (_doc(), "a JSON object"),   # one document, not wrapped in an array
    ({"a": 1}, "a JSON object"),
    ([], "no documents"),
], ids=["one-document-object", "other-object", "empty-array"])
def test_validate_refuses_a_file_that_holds_no_array_of_documents(tmp_path, content, what):
    path = _write(tmp_path / "docs.json", content)
    proc = _cli("validate", path)
    assert proc.returncode == 1
    _error_line(proc, "validate", str(path), what)


# ---- predict / evaluate -------------------------------------------------------------------------
def test_predict_with_a_missing_model_directory(tmp_path, gold):
    out = tmp_path / "result.json"
    proc = _cli("predict", "--model", "/nonexistent", "--input", gold, "--out", out)
    assert proc.returncode == 2
    _error_line(proc, "predict", "/nonexistent", "not a dsdocre model directory")
    assert not out.exists()


def test_evaluate_with_a_missing_submission_file(tmp_path, gold):
    missing = tmp_path / "missing.json"
    proc = _cli("evaluate", "--predictions", missing, "--input", gold)
    assert proc.returncode == 2
    _error_line(proc, "evaluate", str(missing), "no such file")


def test_evaluate_with_a_missing_gold_file(tmp_path, submission):
    missing = tmp_path / "missing.json"
    proc = _cli("evaluate", "--predictions", submission, "--input", missing)
    assert proc.returncode == 2
    _error_line(proc, "evaluate", str(missing), "no such file")


def test_evaluate_counts_a_duplicated_gold_label_once_with_a_warning(tmp_path, submission):
    fact = {"h": 0, "t": 1, "r": "P17", "evidence": []}
    gold = _write(tmp_path / "gold.json", [_doc(labels=[fact, dict(fact)])])
    proc = _cli("evaluate", "--predictions", submission, "--input", gold)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "error:" not in proc.stderr
    assert "warning" in proc.stderr and "duplicate" in proc.stderr and "'Paris doc'" in proc.stderr
    assert "gold=1 correct=1" in proc.stdout  # counted once: recall 100, not 50


def test_evaluate_stops_on_a_gold_document_that_cannot_be_scored(tmp_path, submission):
    bad = _doc(title="Out of range doc", labels=[{"h": 0, "t": 5, "r": "P17", "evidence": []}])
    gold = _write(tmp_path / "gold.json", [_doc(), bad])
    proc = _cli("evaluate", "--predictions", submission, "--input", gold)
    assert proc.returncode == 2
    _error_line(proc, "evaluate", "'Out of range doc'", "labels[0].t", "out of range")
    assert "All" not in proc.stdout  # no metrics over a smaller gold set


def test_evaluate_says_how_many_predictions_name_no_gold_document(tmp_path, gold):
    """A submission made for another gold file scores 0; the warning says why, with a few titles."""
    fact = {"h_idx": 0, "t_idx": 1, "r": "P17"}
    elsewhere = [{**fact, "title": f"Elsewhere {i}"} for i in range(5)] + [{**fact, "title": "Elsewhere 0", "r": "P1"}]
    stray = _write(tmp_path / "p.json", [{**fact, "title": "Paris doc"}, *elsewhere])
    proc = _cli("evaluate", "--predictions", stray, "--input", gold)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    warnings = [line for line in proc.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, proc.stderr
    assert "6 of 7 predictions" in warnings[0] and "5 titles" in warnings[0] and str(stray) in warnings[0]
    assert "'Elsewhere 0', 'Elsewhere 1', 'Elsewhere 2' and 2 more" in warnings[0]
    assert "predictions=7 gold=1 correct=1" in proc.stdout  # still scored as the official script scores

    proc = _cli("evaluate", "--predictions", _write(tmp_path / "ok.json", [{**fact, "title": "Paris doc"}]),
                "--input", gold)
    assert proc.returncode == 0 and "warning" not in proc.stderr


def test_evaluate_against_a_baseline_gives_the_gap_with_a_paired_bootstrap(tmp_path):
    fact = {"title": "Paris doc", "h_idx": 0, "t_idx": 1, "r": "P17"}
    gold = _write(tmp_path / "gold.json", [_doc(), _doc(title="Other doc")])
    both = _write(tmp_path / "both.json", [fact, {**fact, "title": "Other doc"}])
    one = _write(tmp_path / "one.json", [fact])
    proc = _cli("evaluate", "--predictions", both, "--baseline", one, "--input", gold, "--json", tmp_path / "m.json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    gap = json.loads((tmp_path / "m.json").read_text())["against_baseline"]
    # F1 100 against 66.67 (P 1, R 1/2); a resample of two documents gives a gap of 0 (Paris twice,
    # 1/4), 33.33 (one of each, 1/2) or 100 (Other twice: the baseline scores 0, 1/4)
    assert gap["documents"] == 2 and gap["f1_diff"] == 33.33 and gap["f1_ci95"] == [0.0, 100.0]
    assert 0.7 < gap["f1_a_ahead"] < 0.8
    assert "F1 +33.33 [+0.00, +100.00]" in proc.stdout
    stray = _write(tmp_path / "stray.json", [{**fact, "title": "Nowhere doc"}])
    proc = _cli("evaluate", "--predictions", both, "--baseline", stray, "--input", gold)
    assert proc.returncode == 2
    _error_line(proc, "evaluate", "cannot compare per document", "Nowhere doc")
    proc = _cli("evaluate", "--baseline", one, "--input", gold)
    assert proc.returncode == 2
    _error_line(proc, "evaluate", "--baseline", "--predictions")


# ---- finetune: config mistakes ------------------------------------------------------------------
def test_finetune_with_a_missing_config_file(tmp_path):
    proc = _cli("finetune", "--config", "missing.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    _error_line(proc, "finetune", "missing.yaml", "does not exist")


def test_finetune_override_with_a_misspelt_key_suggests_the_right_one():
    proc = _cli("finetune", "--set", "training.epochz=3")
    assert proc.returncode == 2
    _error_line(proc, "finetune", "training.epochz: unknown key", "did you mean 'training.epochs'")


def test_finetune_config_file_with_a_misspelt_section_suggests_the_right_one(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("output_dir: out\n"
                      "data:\n  train: train.json\n  valid: dev.json\n"
                      "trainng:\n  epochs: 3\n")
    proc = _cli("finetune", "--config", config, cwd=tmp_path)
    assert proc.returncode == 2
    _error_line(proc, "finetune", str(config), "trainng: unknown key", "did you mean 'training'")


def test_finetune_override_with_a_wrong_type_names_the_key():
    proc = _cli("finetune", "--set", "training.epochs=abc")
    assert proc.returncode == 2
    line = _error_line(proc, "finetune", "training.epochs:", "integer", "'abc'")
    assert "unknown key" not in line


# ---- finetune: the packaged default config from any directory ----------------------------------
def test_finetune_help_works_from_another_directory(tmp_path):
    proc = _cli("finetune", "--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "--config" in proc.stdout and "Traceback" not in proc.stderr


def test_finetune_finds_the_packaged_default_config_from_another_directory(tmp_path):
    """No configs/ under tmp_path: the packaged configs/finetune.yaml is read, validated, and the
    run gets as far as the data, which is missing."""
    assert not (tmp_path / "configs").exists()
    proc = _cli("finetune", "--set", "data.train=/nonexistent.json", "--set", "data.valid=/nonexistent.json",
                "--output-dir", tmp_path / "out", cwd=tmp_path)
    assert proc.returncode == 2
    line = _error_line(proc, "finetune", "/nonexistent.json", "no such file")
    assert "config" not in line


# ---- process exit -------------------------------------------------------------------------------

_ENTRY_SCRIPT = """
import atexit, os, sys
import torch.distributed as dist
atexit.register(lambda: print("interpreter teardown ran", flush=True))
if sys.argv[1] == "joined":
    dist.init_process_group("gloo", init_method="tcp://127.0.0.1:0", rank=0, world_size=1)
sys.argv = ["dsdocre", "validate", sys.argv[2]]
from dsdocre.cli import entry
entry()
"""


@pytest.mark.parametrize("group", ["joined", "none"])
def test_a_process_that_joined_a_process_group_ends_without_interpreter_teardown(tmp_path, gold, group):
    """Teardown of a left process group's C++ objects aborted a finished run now and then (exit -6):
    a process that was in a group ends with os._exit after flushing its output, one that was not
    ends normally. Both keep the command's exit code and everything it printed."""
    bad = _write(tmp_path / "bad.json", [{"title": "no sents"}])
    for path, code in ((gold, 0), (bad, 1)):
        proc = subprocess.run([sys.executable, "-c", _ENTRY_SCRIPT, group, str(path)], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        report = f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        assert proc.returncode == code, report
        assert str(path) in proc.stdout + proc.stderr, report  # the command's report was flushed
        assert ("interpreter teardown ran" in proc.stdout) == (group == "none"), report
