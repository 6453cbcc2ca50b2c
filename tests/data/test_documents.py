"""Document model, streaming reader, validation and `dsdocre validate`."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest

from dsdocre.data.documents import Document, write_documents
from dsdocre.data.reader import iter_raw_documents, load_valid_documents
from dsdocre.data.validation import validate_document


def make_doc(title: str = "Doc") -> dict:
    return {
        "title": title,
        "sents": [["Alice", "Smith", "was", "born", "in", "Paris", "."], ["She", "lives", "in", "France", "."]],
        "vertexSet": [
            [{"name": "Alice Smith", "pos": [0, 2], "sent_id": 0, "type": "PER", "kb_id": "Q1"}],
            [{"name": "Paris", "pos": [5, 6], "sent_id": 0, "type": "LOC", "global_pos": [5, 5]}],
            [{"name": "France", "pos": [3, 4], "sent_id": 1, "type": "LOC"}],
        ],
        "labels": [{"r": "P19", "h": 0, "t": 1, "evidence": [0]},
                   {"h": 1, "t": 2, "r": "P17", "evidence": [0, 1], "score": 0.5}],
    }


def test_round_trip_keeps_every_field_and_key_order():
    raw = make_doc()
    doc = Document.from_json(raw)
    assert doc.to_json() == raw
    assert json.dumps(doc.to_json()) == json.dumps(raw)  # byte-identical, key order included
    assert doc.entities[0][0].kb_id == "Q1"
    assert doc.labels[1].evidence == (0, 1)
    assert doc.pair_is_intra(0, 1) and not doc.pair_is_intra(0, 2)


def test_unlabeled_document_has_no_labels():
    raw = make_doc()
    del raw["labels"]
    assert validate_document(raw) == []
    assert Document.from_json(raw).labels is None
    assert "labels" not in Document.from_json(raw).to_json()


# One document per kind of fault: (mutation, the field the problem must name, words of the message)
FAULTS = [
    ("mention pos outside sentence", lambda d: d["vertexSet"][1][0].update(pos=[5, 9]),
     "vertexSet[1][0].pos", "outside sentence 0"),
    ("entity index out of range", lambda d: d["labels"][0].update(t=7), "labels[0].t", "out of range"),
    ("unknown relation", lambda d: d["labels"][0].update(r="P99999"), "labels[0].r", "unknown relation"),
    ("empty vertexSet", lambda d: d.update(vertexSet=[], labels=[]), "vertexSet", "empty"),
    ("duplicate label", lambda d: d["labels"].append(dict(d["labels"][0])), "labels[2]", "duplicate"),
    ("wrong type: title", lambda d: d.update(title=123), "title", "expected a string"),
    ("wrong type: sent_id", lambda d: d["vertexSet"][0][0].update(sent_id="0"), "vertexSet[0][0].sent_id",
     "expected an integer"),
    ("missing field", lambda d: d.pop("sents"), "sents", "missing"),
    ("sentence does not exist", lambda d: d["vertexSet"][2][0].update(sent_id=4), "vertexSet[2][0].sent_id",
     "does not exist"),
    ("self relation", lambda d: d["labels"][0].update(t=0), "labels[0]", "same entity"),
    ("evidence out of range", lambda d: d["labels"][0].update(evidence=[5]), "labels[0].evidence", "outside"),
    ("empty entity", lambda d: d["vertexSet"].append([]), "vertexSet[3]", "non-empty list of mentions"),
]


@pytest.mark.parametrize("name,mutate,field,words", FAULTS, ids=[f[0] for f in FAULTS])
def test_each_fault_is_named_precisely(name, mutate, field, words):
    raw = make_doc("Faulty")
    mutate(raw)
    problems = validate_document(raw, index=3, source="x.json")
    assert any(p.field == field and words in p.message for p in problems), [str(p) for p in problems]
    p = next(p for p in problems if p.field == field)
    assert str(p).startswith("x.json: document 3 ")


def test_valid_document_has_no_problems():
    assert validate_document(make_doc()) == []


def test_validate_command_reports_all_planted_faults(tmp_path):
    docs = [make_doc("Good one")]
    for i, (name, mutate, _, _) in enumerate(FAULTS):
        raw = make_doc(f"Faulty {i}")
        mutate(raw)
        docs.append(raw)
    path = tmp_path / "faulty.json"
    path.write_text(json.dumps(docs))
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "validate", "--json", str(path)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    reported = [json.loads(line) for line in proc.stdout.splitlines()]
    for i, (name, _, field, words) in enumerate(FAULTS, start=1):
        hits = [r for r in reported if r["index"] == i and r["field"] == field and words in r["message"]]
        assert hits, f"fault {name!r} in document {i} not reported"
    assert not any(r["index"] == 0 for r in reported)  # the good document is clean
    assert f"{len(FAULTS) + 1} documents, {len(FAULTS)} with problems" in proc.stderr


def test_validate_command_exits_zero_on_a_clean_file(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text("\n".join(json.dumps(make_doc(f"D{i}")) for i in range(3)))
    proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "validate", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "3 documents, 0 with problems" in proc.stderr


def test_load_valid_documents_rejects_with_reasons_and_loses_nothing(tmp_path):
    bad = make_doc("Bad")
    bad["labels"][0]["r"] = "P0"
    docs = [make_doc("A"), bad, make_doc("A"), make_doc("C")]  # the second "A" is a duplicate title
    path = tmp_path / "in.json"
    write_documents(docs, path)
    rejected_path = tmp_path / "rejected.jsonl"
    kept, rejected = load_valid_documents(path, rejected_path=rejected_path, log=None)
    assert [d.title for d in kept] == ["A", "C"]
    assert [(r.index, r.title) for r in rejected] == [(1, "Bad"), (2, "A")]
    assert len(kept) + len(rejected) == len(docs)
    records = [json.loads(line) for line in rejected_path.read_text().splitlines()]
    assert "unknown relation id 'P0'" in records[0]["reasons"][0]
    assert "duplicate" in records[1]["reasons"][0]


def test_require_labels_rejects_unlabeled_documents(tmp_path):
    raw = make_doc()
    del raw["labels"]
    path = tmp_path / "u.json"
    write_documents([raw], path)
    kept, rejected = load_valid_documents(path, require_labels=True, log=None)
    assert not kept and "needs annotated documents" in rejected[0].problems[0].message


def test_streaming_reader_reads_json_and_jsonl(tmp_path):
    docs = [make_doc(f"D{i}") for i in range(5)]
    (tmp_path / "a.json").write_text(json.dumps(docs))
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    assert list(iter_raw_documents(tmp_path / "a.json")) == docs
    assert list(iter_raw_documents(tmp_path / "a.jsonl")) == docs


def test_broken_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"title": "x", ')
    with pytest.raises(ValueError, match="broken.json"):
        list(iter_raw_documents(path))


def test_validation_does_not_mutate_input():
    raw = make_doc()
    before = copy.deepcopy(raw)
    validate_document(raw)
    assert raw == before
