"""benchmarks/scale.py in its small mode (a few hundred documents, what CI can afford): every
stage runs, the result file has the keys issue 32 names, and what it reports is what happened:
the loader walked exactly its rank's share of the pairs, each rank's start-up phases are in order,
and the launcher run killed with SIGKILL and resumed trained the undisturbed run's weights from
the same pairs. The sizes and timings themselves are not asserted (speed belongs in benchmarks/)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> dict:
    work = tmp_path_factory.mktemp("scale")
    out = work / "scale.json"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.scale", "--small", "--work", str(work / "work"),
                           "--out", str(out), "--port", "29871"], cwd=ROOT, capture_output=True, text=True,
                          timeout=1200, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_small_mode_writes_every_key_the_issue_names(small):
    for key in ("sizes", "rss_growth", "throughput_ratio", "first_step_s", "loader_bytes_per_doc",
                "loader_bytes_per_pair", "resume", "machine"):
        assert key in small, key
    assert small["sizes"] == [150, 450]
    for n in map(str, small["sizes"]):
        for stage in ("shard", "score", "fact_join"):
            assert small[n][stage]["wall_s"] > 0 and small[n][stage]["peak_rss_mb"]
        assert small[n]["shard"]["docs"] + small[n]["shard"]["rejected"] == int(n)  # every document accounted for
        assert small[n]["score"]["docs"] == small[n]["shard"]["docs"]
    assert set(small["first_step_s"]) == {"rank0", "rank1"}


@pytest.mark.slow
def test_the_loader_walks_exactly_its_ranks_share(small):
    for n in map(str, small["sizes"]):
        pairs = small[n]["fact_join"]["pairs"]
        global_batch, world = 2 * 2, 2  # micro-batch 2 per rank, world 2
        share = sum(-(-min(global_batch, pairs - b) // world) for b in range(0, pairs, global_batch))
        for layout, row in small[n]["loader_default"].items():
            assert row["pairs_walked"] == share and row["epochs_walked"] == 1, (n, layout)


@pytest.mark.slow
def test_start_up_phases_are_in_order(small):
    for n in map(str, small["sizes"]):
        for rank, marks in small[n]["launch"]["ranks"].items():
            phases = [marks[p] for p in ("set-up", "data", "engine", "verified", "first_step")]
            assert phases == sorted(phases) and phases[0] > 0, (n, rank, marks)
            assert marks["hash_s"] > 0  # each rank hashed its share of the files (a fresh run)


@pytest.mark.slow
def test_killed_and_resumed_run_equals_the_undisturbed_one(small):
    assert small["kill_resume"]["killed"]
    assert small["resume"] == {"identical": True, "repeated": 0, "missed": 0}
