"""`dsdocre shard`: round trip, counts conserved, warnings, re-runs, corruption, Ray, --address.

Small on purpose (tens of documents, a few per shard): the whole file runs in about a minute
on two cores. Ray tests use a local Ray with 2 CPUs. A lost worker, a lost node and a job killed
and restarted: tests/sharding/test_ray_faults.py.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsdocre.data.documents import Document  # noqa: E402
from dsdocre.data.reader import iter_raw_documents  # noqa: E402
from dsdocre.data import manifest as mf  # noqa: E402
from sharding.corpus import iter_document_bytes  # noqa: E402
from sharding.shard import iter_samples, sample_key, shard_corpus  # noqa: E402

SHARED = Path(__file__).resolve().parents[2].parent / "shared"


# --------------------------------------------------------------------------------------------
# Fixtures: a small corpus with planted bad documents
# --------------------------------------------------------------------------------------------
def good_docs(n: int, seed: int = 3) -> list[dict]:
    from dsdocre.synth import iter_documents

    return list(iter_documents("annotated", seed, n))


def planted_bad(valid: dict) -> list[tuple[object, str]]:
    """(bad document, a word its rejection reason must contain)."""
    out_of_range = json.loads(json.dumps(valid))
    out_of_range["vertexSet"][0][0]["pos"] = [0, 999]
    unknown_relation = json.loads(json.dumps(valid))
    unknown_relation["labels"] = [{"h": 0, "t": 1, "r": "P99999", "evidence": []}]
    too_many_entities = json.loads(json.dumps(valid))
    too_many_entities.pop("labels", None)
    too_many_entities["vertexSet"] = [[{"name": "x", "pos": [0, 1], "sent_id": 0, "type": "MISC"}]] * 130
    return [({"title": "no text"}, "missing"), (out_of_range, "outside"), (unknown_relation, "unknown relation"),
            (42, "expected a JSON object"), (too_many_entities, "entities")]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """in.json (indented array: 20 good + 5 bad) and in.jsonl (8 good + 1 invalid JSON line)."""
    root = tmp_path_factory.mktemp("corpus")
    docs = good_docs(28)
    bad = planted_bad(docs[0])
    array = docs[:20]
    for k, (doc, _) in enumerate(bad):  # spread over the shards
        array.insert(3 + 4 * k, doc)
    (root / "in.json").write_text(json.dumps(array, indent=1, ensure_ascii=False))
    lines = [json.dumps(d, ensure_ascii=False) for d in docs[20:]]
    lines.insert(5, '{"title": "cut short", "sents": [["a"')
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "inputs": [str(root / "in.json"), str(root / "in.jsonl")],
            "n_input": len(array) + len(lines), "n_bad": len(bad) + 1,
            "reasons": [w for _, w in bad] + ["not valid JSON"]}


@pytest.fixture(scope="module")
def local_run(corpus, tmp_path_factory) -> dict:
    """The reference: the same work in this process, without Ray (--workers 0)."""
    out = tmp_path_factory.mktemp("local") / "shards"
    summary = shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    return {"out": out, "summary": summary, "manifest": json.loads((out / mf.MANIFEST).read_text())}


# --------------------------------------------------------------------------------------------
# The streaming reader
# --------------------------------------------------------------------------------------------
def test_reader_yields_exact_bytes_whatever_the_block_size(corpus, tmp_path):
    path = corpus["inputs"][0]
    expected = list(iter_raw_documents(path))
    text = Path(path).read_text()
    for block in (1, 5, 97, 1 << 20):  # blocks cut documents, strings and multi-byte characters
        raw = list(iter_document_bytes(path, block_chars=block))
        assert [json.loads(r) for r in raw] == expected
        assert all(r.decode() in text for r in raw)  # byte-exact slices of the input
    bad = tmp_path / "bad.json"
    for content, message in [('{"title": 1}', "expected '['"), ("[1, 2", "missing ']'"),
                             ("[1,]", "trailing comma"), ("[1 2]", "expected ','"), ("[1] [2]", "after the closing"),
                             ('[{"a": }]', "near character")]:
        bad.write_text(content)
        with pytest.raises(ValueError, match=re.escape(message)):
            list(iter_document_bytes(bad, block_chars=2))


# --------------------------------------------------------------------------------------------
# Counts, rejections, round trip (no Ray needed: the same functions run in-process)
# --------------------------------------------------------------------------------------------
def test_counts_conserved_and_rejections_explained(corpus, local_run):
    m = local_run["manifest"]
    assert m["counts"] == {"input": corpus["n_input"], "sharded": corpus["n_input"] - corpus["n_bad"],
                           "rejected": corpus["n_bad"]}
    assert sum(s["docs"] for s in m["shards"]) == m["counts"]["sharded"]
    assert [i["documents"] for i in m["inputs"]] == [25, 9]
    rejected = [json.loads(x) for x in (local_run["out"] / mf.REJECTED).read_text().splitlines()]
    assert len(rejected) == corpus["n_bad"]
    for rec, word in zip(rejected, corpus["reasons"]):
        assert word in " ".join(rec["reasons"]), rec
        assert rec["key"] == sample_key(0 if rec["source"].endswith(".json") else 1, rec["index"])
    assert [r["index"] for r in rejected] == [3, 7, 11, 15, 19, 5]  # positions in their files
    mf.verify(local_run["out"])  # every shard hashes to its manifest entry


def test_documents_with_only_warnings_are_sharded_as_the_loader_keeps_them(tmp_path):
    """A duplicated label is a warning (counted once, as DocRED's scorer does): the document is
    sharded, as load_valid_documents keeps it. A document with an error as well is rejected with
    every reason, the warning included, exactly as the loader rejects it."""
    from dsdocre.data.reader import load_valid_documents

    docs = good_docs(3)
    for doc in docs[1:]:
        doc["labels"].append(dict(doc["labels"][0]))
    docs[2]["vertexSet"][0][0]["pos"] = [0, 999]  # and an error
    path = tmp_path / "in.json"
    path.write_text(json.dumps(docs))
    out = tmp_path / "shards"
    summary = shard_corpus([path], out, docs_per_shard=2, workers=0, progress=False, log=None)
    assert summary.counts == {"input": 3, "sharded": 2, "rejected": 1}
    assert [doc for _, doc, _ in iter_samples(out)] == docs[:2]
    (rejected,) = [json.loads(x) for x in (out / mf.REJECTED).read_text().splitlines()]
    kept, (expected,) = load_valid_documents(path, log=None)
    assert [d.title for d in kept] == [d["title"] for d in docs[:2]]
    assert rejected["reasons"] == expected.to_json()["reasons"]
    assert "outside" in rejected["reasons"][0] and "duplicate of labels[0]" in rejected["reasons"][-1]


def test_round_trip_document_to_shard_to_identical_document(corpus, local_run):
    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir

    samples = {key: (doc, enc) for key, doc, enc in iter_samples(local_run["out"])}
    assert len(samples) == local_run["manifest"]["counts"]["sharded"]
    rejected = {json.loads(x)["key"] for x in (local_run["out"] / mf.REJECTED).read_text().splitlines()}
    tok, _ = load_tokenizer(resolve_encoder_dir(None))
    for f, path in enumerate(corpus["inputs"]):
        for i, raw in enumerate(iter_document_bytes(path)):
            key = sample_key(f, i)
            if key in rejected:
                assert key not in samples
                continue
            doc, enc = samples[key]
            original = json.loads(raw)
            assert doc == original and Document.from_json(doc).to_json() == original
            if i % 5 == 0:  # the stored encoding is the tokenizer's (spot check: loading is slow)
                assert enc == tok.encode(Document.from_json(original)).to_json()

    # Plain webdataset reads the shards too; the document bytes are the input's bytes.
    import webdataset as wds

    first = Path(corpus["inputs"][1])
    lines = [x.encode() for x in first.read_text().splitlines()]
    paths = [str(local_run["out"] / s["name"]) for s in local_run["manifest"]["shards"]]
    raw_by_key = {s["__key__"]: s["json"] for s in wds.WebDataset(paths, shardshuffle=False)}
    assert raw_by_key[sample_key(1, 0)] == lines[0]
    decoded = next(iter(wds.WebDataset(paths[:1], shardshuffle=False).decode()))
    assert set(decoded["enc.json"]) == {"input_ids", "mention_starts", "mention_sent_ids", "mention_ends"}


def test_rerun_skips_verified_shards_and_redoes_the_rest(corpus, local_run, tmp_path):
    out = tmp_path / "shards"
    first = shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    n = len(first.manifest["shards"])
    again = shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    assert (again.written, again.skipped) == (0, n)

    # Damage two shards (one flipped byte, one deleted), leave a torn temporary file behind.
    victim = out / "shard-000002.tar"
    data = bytearray(victim.read_bytes())
    data[700] ^= 0xFF
    victim.write_bytes(bytes(data))
    (out / "shard-000004.tar").unlink()
    (out / "shard-000005.tar.tmp-123-dead").write_bytes(b"half a shard")
    fixed = shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    assert (fixed.written, fixed.skipped) == (2, n - 2)
    assert json.loads((out / mf.MANIFEST).read_text()) == local_run["manifest"]
    assert not list(out.glob("*.tmp-*"))
    assert (out / mf.REJECTED).read_text() == (local_run["out"] / mf.REJECTED).read_text()

    # A changed input document redoes exactly the shard that holds it.
    changed = tmp_path / "changed.json"
    docs = json.loads(Path(corpus["inputs"][0]).read_text())
    docs[9]["title"] += " (revised)"
    changed.write_text(json.dumps(docs, indent=1, ensure_ascii=False))
    out2 = tmp_path / "shards2"
    shard_corpus([changed, corpus["inputs"][1]], out2, docs_per_shard=4, workers=0, progress=False, log=None)
    docs[9]["title"] = docs[9]["title"][: -len(" (revised)")]
    changed.write_text(json.dumps(docs, indent=1, ensure_ascii=False))
    redo = shard_corpus([changed, corpus["inputs"][1]], out2, docs_per_shard=4, workers=0, progress=False, log=None)
    assert (redo.written, redo.skipped) == (1, n - 1)


def test_a_full_disk_stops_sharding_with_one_line_and_keeps_the_finished_shards(corpus, local_run, tmp_path,
                                                                              monkeypatch):
    """The disk fills while shard 3 is written (at its fsync, as NFS reports it): one line naming
    the shard and the space, no temporary file left, the finished shards kept by the re-run."""
    import errno

    from dsdocre import fsio
    from dsdocre.errors import UserError

    out = tmp_path / "shards"
    real_fsync_file = fsio.fsync_file

    def fsync_file(path):
        if Path(path).name.startswith("shard-000003.tar"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync_file(path)

    monkeypatch.setattr(fsio, "fsync_file", fsync_file)
    with pytest.raises(UserError) as caught:
        shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    message = str(caught.value)
    assert "\n" not in message
    assert re.match(rf"{re.escape(str(out / 'shard-000003.tar'))}: no space left on the device; it ran out after "
                    r"writing [\d,]+ bytes .*, [\d,]+ bytes( \([\d.]+ \w+\))? free; the shards finished so far "
                    r"stand \(a re-run keeps them", message), message
    assert not list(out.rglob("*.tmp-*")) and not (out / "shard-000003.tar").exists()
    assert not (out / mf.MANIFEST).exists()
    monkeypatch.undo()
    again = shard_corpus(corpus["inputs"], out, docs_per_shard=4, workers=0, progress=False, log=None)
    assert again.skipped == 3 and json.loads((out / mf.MANIFEST).read_text()) == local_run["manifest"]


def test_corrupted_shard_is_detected_with_a_clear_error(local_run, tmp_path):
    import shutil

    out = tmp_path / "copy"
    shutil.copytree(local_run["out"], out)
    victim = out / "shard-000001.tar"
    data = bytearray(victim.read_bytes())
    data[1000] ^= 0x01  # one bit: same size, different content
    victim.write_bytes(bytes(data))
    with pytest.raises(mf.ShardVerificationError, match=r"shard-000001\.tar: sha256 .* \(corrupted\)") as err:
        mf.verify(out)
    assert "Re-run" in str(err.value) and "shard-000000" not in str(err.value)
    with pytest.raises(mf.ShardVerificationError, match="shard-000001"):
        list(iter_samples(out))
    (out / "shard-000003.tar").write_bytes(b"")  # truncated
    with pytest.raises(mf.ShardVerificationError, match=r"2 of \d+ files.*shard-000003\.tar: size 0"):
        mf.verify(out)
    (out / mf.MANIFEST).unlink()
    with pytest.raises(mf.ShardVerificationError, match="no manifest"):
        mf.verify(out)


def test_cli_reports_the_accounting(corpus, tmp_path, capsys):
    from dsdocre.cli import main

    code = main(["shard", "--input", *corpus["inputs"], "--out", str(tmp_path / "o"), "--docs-per-shard", "10",
                 "--workers", "0", "--no-progress"])
    assert code == 0
    said = capsys.readouterr().out
    n, bad = corpus["n_input"], corpus["n_bad"]
    assert f"input {n} documents = sharded {n - bad} + rejected {bad}" in said
    assert main(["shard", "--input", str(tmp_path / "missing.json"), "--out", str(tmp_path / "o2")]) == 1


# --------------------------------------------------------------------------------------------
# On Ray
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="class")
def ray_local():
    import ray

    # address="local": a Ray of this test's own, never another one running on the machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 << 20)
    yield
    ray.shutdown()


@pytest.mark.usefixtures("ray_local")
class TestLocalRay:
    def test_ray_shards_equal_the_in_process_shards(self, corpus, local_run, tmp_path):
        out = tmp_path / "ray"
        summary = shard_corpus(corpus["inputs"], out, docs_per_shard=4, progress=False, log=None)
        assert summary.manifest == local_run["manifest"]  # byte-identical shards, same sha256
        assert (out / mf.REJECTED).read_text() == (local_run["out"] / mf.REJECTED).read_text()
        assert len(summary.worker_max_rss_kb) >= 1
        # A re-run on Ray skips every verified shard.
        again = shard_corpus(corpus["inputs"], out, docs_per_shard=4, progress=False, log=None)
        assert again.written == 0 and again.manifest == local_run["manifest"]

    def test_cli_joins_a_running_cluster_with_address(self, corpus, local_run, tmp_path):
        """``dsdocre shard --address`` joins the running Ray (this test's) instead of starting one;
        every shard of a finished run verifies, so it keeps them all. (Lost workers, lost nodes and a
        killed job: tests/sharding/test_ray_faults.py.)"""
        import shutil
        import subprocess
        import sys

        import ray

        out = tmp_path / "shards"
        shutil.copytree(local_run["out"], out)  # byte-identical to what a Ray run writes (test above)
        address = ray.get_runtime_context().gcs_address
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        proc = subprocess.run([sys.executable, "-m", "dsdocre.cli", "shard", "--input", *corpus["inputs"],
                               "--out", str(out), "--docs-per-shard", "4", "--address", address, "--no-progress"],
                              capture_output=True, text=True, timeout=180, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        n = len(local_run["manifest"]["shards"])
        assert f"{n} shards (0 written, {n} verified and kept)" in proc.stdout, proc.stdout
        assert json.loads((out / mf.MANIFEST).read_text()) == local_run["manifest"]


def test_connect_starts_its_own_ray_unless_given_an_address(monkeypatch):
    """Without --address, a new local Ray (address="local"): a bare ray.init(num_cpus=...) would join
    $RAY_ADDRESS or the latest cluster started on the machine (/tmp/ray/ray_current_cluster) and
    fail there with "num_cpus must not be provided". With one, that cluster, without num_cpus."""
    import ray

    from sharding import ray_setup

    calls: list[dict] = []
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kwargs: calls.append(kwargs))
    assert ray_setup.connect(None, 2) is True
    assert calls[-1]["address"] == "local" and calls[-1]["num_cpus"] == 2
    assert calls[-1]["runtime_env"] is ray_setup.RUNTIME_ENV
    assert ray_setup.connect("10.0.0.1:6379", 2) is True
    assert calls[-1]["address"] == "10.0.0.1:6379" and "num_cpus" not in calls[-1]


def test_workers_get_the_test_hold_dir():
    """The fault-injection variables reach the workers through the jobs' runtime_env, when set
    (read when sharding.ray_setup is imported: a fresh interpreter)."""
    import subprocess
    import sys

    from sharding.shard import HOLD_DIR_ENV

    show = "import json, sharding.ray_setup as r; print(json.dumps(r.RUNTIME_ENV['env_vars']))"
    root = Path(__file__).resolve().parents[2]
    for value in ("/tmp/holds", None):
        env = {k: v for k, v in os.environ.items() if k != HOLD_DIR_ENV} | ({HOLD_DIR_ENV: value} if value else {})
        proc = subprocess.run([sys.executable, "-c", show], cwd=root, env=env, capture_output=True, text=True,
                              timeout=60, check=True)
        assert json.loads(proc.stdout).get(HOLD_DIR_ENV) == value


@pytest.mark.skipif(not (SHARED / "data" / "redocred" / "valid.json").exists(),
                    reason="shared data folder ../shared/data not present")
def test_real_redocred_round_trip(tmp_path):
    path = SHARED / "data" / "redocred" / "valid.json"
    summary = shard_corpus([path], tmp_path / "s", docs_per_shard=40, workers=0, progress=False, log=None)
    assert summary.counts == {"input": 100, "sharded": 100, "rejected": 0}
    docs = [doc for _, doc, _ in iter_samples(tmp_path / "s")]
    assert docs == list(iter_raw_documents(path))
