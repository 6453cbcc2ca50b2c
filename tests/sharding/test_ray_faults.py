"""The Ray jobs under faults: ``dsdocre shard``, ``dsdocre denoise score`` and ``dsdocre fact-join``
each lose a worker process, lose a node, and are killed as a whole and started again. Every time
the job finishes and its output equals an undisturbed run's: the same manifest (every output
file's name, bytes and sha256, the counts, so ``input = output + rejected``), the same
``rejected.jsonl``, every file re-hashed, no half-written file left.

How the faults land mid-job without depending on timing: every job calls
``sharding.shard.fault_point(<output name>)`` just before renaming an output into place. When the
test has created ``<hold dir>/<output name>.hold`` (the hold dir reaches the workers through the
environment, ``DSDOCRE_TEST_HOLD_DIR``), the task that writes that output stops there, its file
half-written, and announces its process id; the test then acts and deletes the hold file.

* lost Ray worker: SIGKILL that worker process (checked to be a ``ray::`` worker writing that file);
* lost Ray node: on a ``ray.cluster_utils.Cluster`` (a head without CPUs and two 1-CPU nodes),
  remove the node whose raylet runs the held worker (its raylet, object store and workers die);
* Ray job killed and restarted: run the command line in a subprocess with its own local Ray,
  hold one output while the others finish and verify, then SIGKILL the whole process tree (the
  driver, Ray's own processes, every worker) and run the same command again: its log must say it
  kept exactly the outputs that verified (their files untouched) and redid the rest.

The undisturbed reference of each job is its in-process run (``--workers 0``), shared by the
tests of the module; tests/sharding/test_sharding.py, tests/stages/test_denoise.py and
tests/sharding/test_fact_join.py show that an
undisturbed Ray run writes exactly the same files. ``tests/sharding/test_sharding.py::TestLocalRay::test_cli_joins_a_running_cluster_with_address``
covers joining a running cluster with ``--address``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pytest

for _var in ("OMP_NUM_THREADS", "RAYON_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dsdocre.data import manifest as mf  # noqa: E402
from sharding import ray_setup  # noqa: E402
from sharding.shard import HOLD_DIR_ENV  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
N_INPUT, N_BAD = 29, 3  # input documents (corpus), of which the shard job rejects 3
DOCS_PER_SHARD = 4  # -> 8 shards
KEEP = "2n"  # denoise score
# 112 (pair, fact) entries drawn (16 distinct pairs: the copied documents share all their facts):
# 40 per pair shard -> ceil(112 / 40) = 3 pair shards, as many as the fact partitions.
FACT_JOIN = {"partitions": 3, "max_pairs_per_fact": 2, "pairs_per_shard": 40}
JOB_TIMEOUT_S = 300

pytestmark = pytest.mark.slow  # every test runs Ray (several processes); still part of CI


# --------------------------------------------------------------------------------------------
# Inputs and the undisturbed reference runs (in-process), shared by the module
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def private_tmp():
    """A short private folder for Ray's files (RAY_TMPDIR: sessions, sockets, and the address file
    of the test cluster, which a concurrent ``ray.init()`` elsewhere must not find) and the holds."""
    root = Path(tempfile.mkdtemp(prefix="dsrf-", dir="/tmp"))
    (root / "hold").mkdir()
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """29 input documents in two files: 26 good (14 synthetic distant documents, and copies of some
    under other titles, so that documents share facts) and 3 that the shard job rejects."""
    from dsdocre.synth import iter_documents

    root = tmp_path_factory.mktemp("corpus")
    docs = list(iter_documents("distant", 5, 14))
    good = docs + [dict(d, title=d["title"] + " (second source)") for d in docs[:8]] \
        + [dict(d, title=d["title"] + " (third source)") for d in docs[:4]]
    array = good[:20]
    array.insert(5, {"title": "no text"})
    array.insert(13, 42)
    (root / "in.json").write_text(json.dumps(array, indent=1, ensure_ascii=False))
    lines = [json.dumps(d, ensure_ascii=False) for d in good[20:]]
    lines.insert(2, '{"title": "cut short", "sents": [["a"')
    (root / "in.jsonl").write_text("\n".join(lines) + "\n")
    assert len(array) + len(lines) == N_INPUT
    return {"inputs": [str(root / "in.json"), str(root / "in.jsonl")], "n_input": N_INPUT, "n_bad": N_BAD}


@pytest.fixture(scope="module")
def shard_ref(corpus, tmp_path_factory) -> Path:
    from sharding.shard import shard_corpus

    out = tmp_path_factory.mktemp("ref") / "shards"
    summary = shard_corpus(corpus["inputs"], out, docs_per_shard=DOCS_PER_SHARD, workers=0, progress=False, log=None)
    assert summary.counts == {"input": corpus["n_input"], "sharded": corpus["n_input"] - corpus["n_bad"],
                              "rejected": corpus["n_bad"]}
    assert len(summary.manifest["shards"]) == 8
    return out


@pytest.fixture(scope="module")
def rank_model(shard_ref, tmp_path_factory) -> Path:
    """A rank model on the packaged encoder with freshly initialised heads (seeded): what is scored
    does not matter here, only that every run scores with the same saved weights."""
    import torch

    from dsdocre.data.encoding import load_tokenizer, resolve_encoder_dir
    from dsdocre.model import ModelConfig, RankModel

    tokenizer, added = load_tokenizer(resolve_encoder_dir(None))
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("rank") / "model"
    RankModel(ModelConfig(pair_dim=16), tokenizer, added_tokens=added).save_pretrained(model_dir)  # small heads
    return model_dir


@pytest.fixture(scope="module")
def denoise_ref(rank_model, shard_ref, tmp_path_factory) -> Path:
    from sharding.denoise_score import score_shards

    import torch

    out = tmp_path_factory.mktemp("ref") / "scored"
    # One BLAS thread, as every scoring actor runs (ray_setup.WORKER_ENV): a score's last rounded
    # digit can depend on the thread count (the order of a matmul's sums), and the faulted runs
    # below must match this reference byte for byte.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        score_shards(rank_model, shard_ref, out, keep=KEEP, workers=0, progress=False, log=None)
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.fixture(scope="module")
def fact_ref(shard_ref, tmp_path_factory) -> Path:
    from sharding.fact_join import fact_join

    out = tmp_path_factory.mktemp("ref") / "pairs"
    manifest = fact_join(shard_ref, out, workers=0, log=None, **FACT_JOIN)
    assert manifest["counts"]["pairs"] > 0 and manifest["counts"]["capped_facts"] > 0
    assert manifest["pair_shards"] == len(manifest["shards"]) == 3
    return out


# --------------------------------------------------------------------------------------------
# The same output as the undisturbed run
# --------------------------------------------------------------------------------------------
def assert_same_output(out: Path, reference: Path) -> dict:
    """``out`` verifies (every file re-hashed) and holds what the undisturbed run wrote to ``reference``."""
    expected = json.loads((reference / mf.MANIFEST).read_text())
    if expected["format"] == "dsdocre-scored":
        from dsdocre.data.scored import FORMAT_VERSION as version
    else:
        version = mf.FORMAT_VERSION
    manifest = mf.verify(out, expected_format=expected["format"], expected_version=version)
    assert manifest == expected  # every file's name, bytes and sha256; the counts
    if (reference / mf.REJECTED).exists():
        assert (out / mf.REJECTED).read_text() == (reference / mf.REJECTED).read_text()
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name]
    assert not leftovers, f"half-written files left: {leftovers}"
    counts = manifest["counts"]
    if manifest["format"] == mf.FORMAT:
        assert counts == {"input": N_INPUT, "sharded": N_INPUT - N_BAD, "rejected": N_BAD}
    elif manifest["format"] == "dsdocre-scored":
        assert counts["input"] == counts["scored"] + counts["rejected"] == N_INPUT - N_BAD
    else:  # the fact join reads every sharded document
        assert counts["documents"] == N_INPUT - N_BAD
        assert not (out / ".work").exists()  # its scratch files are gone
    return manifest


# --------------------------------------------------------------------------------------------
# Holding a task mid-output, and finding its process
# --------------------------------------------------------------------------------------------
def alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


class Holds:
    """The test's side of ``sharding.shard.fault_point``."""

    def __init__(self, folder: Path):
        self.folder = folder

    def hold(self, point: str) -> None:
        (self.folder / f"{point}.hold").touch()

    def release(self) -> None:
        for path in self.folder.glob("*.hold"):
            path.unlink()

    def clear(self) -> None:
        for path in self.folder.iterdir():
            path.unlink()

    def find(self, point: str) -> int | None:
        """The pid of a live worker process held at ``point``, if any."""
        for marker in self.folder.glob(f"{point}.*.waiting"):
            pid = int(marker.name.split(".")[1])
            if alive(pid):
                return pid
        return None

    def waiting(self, point: str, check=lambda: None, timeout: float = JOB_TIMEOUT_S) -> int:
        """Wait for a worker held at ``point``; its pid. ``check`` raises if the job died meanwhile."""
        deadline = time.monotonic() + timeout
        while (pid := self.find(point)) is None:
            check()
            assert time.monotonic() < deadline, f"no task reached {point} in {timeout} s"
            time.sleep(0.02)
        return pid


@pytest.fixture
def holds(private_tmp):
    h = Holds(private_tmp / "hold")
    h.clear()
    yield h
    h.release()  # a failing test must not leave a task of a later one waiting
    h.clear()


def ray_worker(pid: int) -> str:
    """The process title of a Ray worker (``ray::<task or actor>``); fails for any other process."""
    import psutil

    title = " ".join(psutil.Process(pid).cmdline())
    assert title.startswith("ray::"), f"process {pid} is not a Ray worker: {title[:200]}"
    return title


def gone(pid: int, timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def sigkill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    assert gone(pid), f"process {pid} survived SIGKILL"


def in_background(fn, *args, **kwargs) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(fn, *args, **kwargs)
    pool.shutdown(wait=False)
    return future


def failed_early(job: Future):
    def check():
        if job.done():
            job.result()  # raises the job's error
            raise AssertionError("the job finished without reaching the held task")
    return check


# --------------------------------------------------------------------------------------------
# (a) lost worker and (b) lost node, in-process jobs on a ray.cluster_utils.Cluster
# --------------------------------------------------------------------------------------------
NODE_ARGS = {"num_cpus": 1, "object_store_memory": 80 << 20}


@pytest.fixture(scope="class")
def cluster(private_tmp):
    """A head without CPUs (the driver's node: never removed) and two 1-CPU worker nodes. The hold
    dir reaches every task through the jobs' runtime_env (``sharding.ray_setup.WORKER_ENV``)."""
    import ray
    from ray.cluster_utils import Cluster

    patch = pytest.MonkeyPatch()
    (private_tmp / "cluster").mkdir()
    patch.setenv("RAY_TMPDIR", str(private_tmp / "cluster"))
    patch.setitem(ray_setup.WORKER_ENV, HOLD_DIR_ENV, str(private_tmp / "hold"))
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "object_store_memory": 80 << 20})
        for _ in range(2):
            cluster.add_node(**NODE_ARGS)
        cluster.connect()
        cluster.wait_for_nodes()
        yield cluster
    finally:
        ray.shutdown()
        if cluster is not None:
            cluster.shutdown()  # also removes its address file
        patch.undo()


@pytest.fixture
def two_nodes(cluster):
    """Every test starts with two worker nodes (a node-loss test leaves one)."""
    while len(cluster.worker_nodes) < 2:
        cluster.add_node(**NODE_ARGS)
    cluster.wait_for_nodes()
    return cluster


def node_running(cluster, pid: int):
    """The worker node whose raylet started the worker process ``pid``."""
    import psutil
    from ray._private import ray_constants

    raylet = psutil.Process(pid).ppid()
    for node in cluster.worker_nodes:
        if node.all_processes[ray_constants.PROCESS_TYPE_RAYLET][0].process.pid == raylet:
            return node
    raise AssertionError(f"worker {pid} runs on no worker node (its parent is {raylet})")


def half_written(folder: Path, name: str, pid: int) -> None:
    """The held task's output is on disk under its temporary name (with the writer's pid), not yet in place."""
    torn = list(folder.glob(f"{name}.tmp-{pid}-*"))
    assert torn, f"no half-written {name} of process {pid} in {folder}"
    assert not (folder / name).exists()


def run_shard(corpus, out):
    from sharding.shard import shard_corpus

    return in_background(shard_corpus, corpus["inputs"], out, docs_per_shard=DOCS_PER_SHARD, progress=False,
                         log=None)


def run_denoise(rank_model, shard_ref, out):
    from sharding.denoise_score import score_shards

    return in_background(score_shards, rank_model, shard_ref, out, keep=KEEP, workers=2, progress=False, log=None)


def run_fact_join(shard_ref, out):
    from sharding.fact_join import fact_join

    return in_background(fact_join, shard_ref, out, log=None, **FACT_JOIN)


@pytest.mark.usefixtures("two_nodes")
class TestOnCluster:
    # ---- shard ---------------------------------------------------------------------------------
    def test_shard_survives_a_killed_worker(self, corpus, shard_ref, holds, tmp_path, fault_record):
        out = tmp_path / "shards"
        holds.hold("shard-000003")
        job = run_shard(corpus, out)
        pid = holds.waiting("shard-000003", failed_early(job))
        half_written(out, "shard-000003.tar", pid)
        assert "write_shard" in ray_worker(pid)
        sigkill(pid)
        holds.release()
        summary = job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, shard_ref)
        assert summary.written == 8 and summary.skipped == 0
        fault_record(fault="lost Ray worker",
                     how="shard job (8 shards) on a 2-node Ray cluster: SIGKILL the worker process "
                         "holding shard 3 half-written",
                     times=1, outcome="shard task retried on a new worker; manifest (per-shard sha256, counts "
                                      "input = sharded + rejected) and rejected.jsonl identical to an undisturbed "
                                      "run's",
                     lost=0)

    def test_shard_survives_a_removed_node(self, two_nodes, corpus, shard_ref, holds, tmp_path, fault_record):
        out = tmp_path / "shards"
        holds.hold("shard-000003")
        job = run_shard(corpus, out)
        pid = holds.waiting("shard-000003", failed_early(job))
        half_written(out, "shard-000003.tar", pid)
        two_nodes.remove_node(node_running(two_nodes, pid))
        assert len(two_nodes.worker_nodes) == 1
        assert gone(pid), "the held worker outlived its node"  # it exits when its raylet is gone
        holds.release()
        job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, shard_ref)
        fault_record(fault="lost Ray node",
                     how="shard job (8 shards) on a Ray cluster of two 1-CPU nodes: remove the node running "
                         "the task holding shard 3 half-written (ray.cluster_utils.Cluster.remove_node)",
                     times=1, outcome="shard task retried on the surviving node; manifest (per-shard sha256, counts) "
                                      "and rejected.jsonl identical to an undisturbed run's",
                     lost=0)

    # ---- denoise score (Ray Data, actor pool) ----------------------------------------------------
    def test_denoise_survives_a_killed_actor(self, rank_model, shard_ref, denoise_ref, holds, tmp_path,
                                             fault_record):
        out = tmp_path / "scored"
        holds.hold("scored-000003")
        job = run_denoise(rank_model, shard_ref, out)
        pid = holds.waiting("scored-000003", failed_early(job))
        half_written(out, "scored-000003.tar", pid)
        assert "ShardScorer" in ray_worker(pid)
        sigkill(pid)
        holds.release()
        job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, denoise_ref)
        fault_record(fault="lost Ray worker",
                     how="denoise score (Ray Data, 2 scoring actors, 8 shards) on a 2-node Ray cluster: SIGKILL "
                         "the actor process holding scored shard 3 half-written",
                     times=1, outcome="actor restarted and its shard retried; manifest (per-shard sha256, counts "
                                      "input = scored + rejected) identical to an undisturbed run's",
                     lost=0)

    def test_denoise_survives_a_removed_node(self, two_nodes, rank_model, shard_ref, denoise_ref, holds, tmp_path,
                                             fault_record):
        out = tmp_path / "scored"
        holds.hold("scored-000003")
        job = run_denoise(rank_model, shard_ref, out)
        pid = holds.waiting("scored-000003", failed_early(job))
        half_written(out, "scored-000003.tar", pid)
        two_nodes.remove_node(node_running(two_nodes, pid))
        assert len(two_nodes.worker_nodes) == 1
        assert gone(pid), "the held worker outlived its node"  # it exits when its raylet is gone
        holds.release()
        job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, denoise_ref)
        fault_record(fault="lost Ray node",
                     how="denoise score (Ray Data, 2 scoring actors, 8 shards) on a Ray cluster of two 1-CPU nodes: "
                         "remove the node of the actor holding scored shard 3 half-written",
                     times=1, outcome="the job finished on the surviving node; manifest (per-shard sha256, counts) "
                                      "identical to an undisturbed run's",
                     lost=0)

    # ---- fact-join (map-reduce of Ray tasks) -----------------------------------------------------
    def test_fact_join_survives_a_killed_worker(self, shard_ref, fact_ref, holds, tmp_path, fault_record):
        out = tmp_path / "pairs"
        holds.hold("facts-00001")
        job = run_fact_join(shard_ref, out)
        pid = holds.waiting("facts-00001", failed_early(job))
        half_written(out, "facts-00001.jsonl", pid)
        assert "reduce_facts" in ray_worker(pid)
        sigkill(pid)
        holds.release()
        job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, fact_ref)
        fault_record(fault="lost Ray worker",
                     how="fact-join (8 map, 3 reduce, 3 pair tasks) on a 2-node Ray cluster: SIGKILL the worker "
                         "process of reducer 1, its fact index file half-written",
                     times=1, outcome="reduce task retried; manifest (sha256 of every fact index file and pair "
                                      "shard, counts) identical to an undisturbed run's",
                     lost=0)

    def test_fact_join_survives_a_removed_node(self, two_nodes, shard_ref, fact_ref, holds, tmp_path, fault_record):
        out = tmp_path / "pairs"
        holds.hold("map-shard-000005")
        job = run_fact_join(shard_ref, out)
        pid = holds.waiting("map-shard-000005", failed_early(job))
        half_written(out / ".work", "map-shard-000005.jsonl", pid)
        two_nodes.remove_node(node_running(two_nodes, pid))
        assert len(two_nodes.worker_nodes) == 1
        assert gone(pid), "the held worker outlived its node"  # it exits when its raylet is gone
        holds.release()
        job.result(timeout=JOB_TIMEOUT_S)
        assert_same_output(out, fact_ref)
        fault_record(fault="lost Ray node",
                     how="fact-join (8 map, 3 reduce, 3 pair tasks) on a Ray cluster of two 1-CPU nodes: remove "
                         "the node running map task 5, its partition file half-written",
                     times=1, outcome="map task retried on the surviving node, the job finished there; manifest "
                                      "(every file's sha256, counts) identical to an undisturbed run's",
                     lost=0)


# --------------------------------------------------------------------------------------------
# (c) the whole job killed and started again (command line, its own local Ray)
# --------------------------------------------------------------------------------------------
def cli_env(private_tmp: Path, hold: bool) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1",
           "DS_ACCELERATOR": "cpu", "RAY_TMPDIR": str(private_tmp / "cli")}
    (private_tmp / "cli").mkdir(exist_ok=True)
    env.pop("RAY_ADDRESS", None)
    env.pop(HOLD_DIR_ENV, None)
    if hold:  # Ray's processes and workers inherit the driver's environment
        env[HOLD_DIR_ENV] = str(private_tmp / "hold")
    return env


def start_cli(args: list, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as f:
        return subprocess.Popen([sys.executable, "-m", "dsdocre.cli", *map(str, args)], cwd=ROOT, env=env,
                                stdout=f, stderr=subprocess.STDOUT)


def kill_process_tree(proc: subprocess.Popen) -> int:
    """SIGKILL the job as a whole: the driver and everything it started (Ray's GCS, raylet, workers,
    ...). Stops them first, top-down until no new process appears, so nothing escapes; returns how
    many processes were killed."""
    import psutil

    root = psutil.Process(proc.pid)
    stopped: dict[int, psutil.Process] = {}
    while True:
        try:
            tree = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            break
        new = [p for p in tree if p.pid not in stopped]
        if not new:
            break
        for p in new:
            try:
                p.send_signal(signal.SIGSTOP)
                stopped[p.pid] = p
            except psutil.NoSuchProcess:
                pass
    for p in stopped.values():
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=30)
    survivors = [pid for pid in stopped if not gone(pid, timeout=30)]
    assert not survivors, f"processes survived SIGKILL: {survivors}"
    return len(stopped)


def wait_until(condition, proc: subprocess.Popen, log: Path, what: str, timeout: float = JOB_TIMEOUT_S):
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the job ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)


def whole_file(record: dict) -> list[dict]:
    return [record]


def reducer_files(record: dict) -> list[dict]:
    """A reducer's outputs: its fact index, and its pair partitions (what a re-run needs of it)."""
    return [record["facts_file"], record["pairs_file"]]


def verified(out: Path, outputs: dict) -> dict[str, dict[str, tuple]]:
    """The outputs among ``outputs`` ({record stem: its files, a function of the record}) whose progress
    record ``out/.progress/{stem}.json`` is there and whose files are in place and hash to the record:
    {stem: {path: (inode, mtime) of the record and of each file}}."""
    found = {}
    for stem, files in outputs.items():
        record = out / ".progress" / f"{stem}.json"
        try:
            entries = files(json.loads(record.read_text()))
        except (OSError, ValueError):
            continue
        if all(mf.check_file(out, e) is None for e in entries):
            found[stem] = {str(p): (p.stat().st_ino, p.stat().st_mtime_ns)
                           for p in [record, *(out / e["name"] for e in entries)]}
    return found


def untouched(kept: dict[str, dict[str, tuple]]) -> None:
    """Neither the records nor the files of ``kept`` were rewritten (a fact-join's .work files are
    scratch, deleted when the job finishes: those that are gone are not compared)."""
    for stem, stats in kept.items():
        for path, stat in stats.items():
            if Path(path).exists() or ".work" not in path:
                assert (os.stat(path).st_ino, os.stat(path).st_mtime_ns) == stat, f"{stem}: {path} was rewritten"


def kill_and_restart(args: list, out: Path, private_tmp: Path, holds: Holds, point: str, tmp_path: Path,
                     outputs: dict) -> tuple[int, str]:
    """Run ``args`` holding ``point``; once every output in ``outputs`` (see :func:`verified`) verifies,
    SIGKILL the job as a whole; check what is on disk; run ``args`` again, to the end; check that
    the verified outputs were kept as they were. Returns (processes killed, the second run's log)."""
    holds.hold(point)
    log1 = tmp_path / "killed.log"
    proc = start_cli(args, cli_env(private_tmp, hold=True), log1)
    try:
        wait_until(lambda: holds.find(point) is not None, proc, log1, f"a task is held at {point}")
        wait_until(lambda: len(verified(out, outputs)) == len(outputs), proc, log1,
                   f"the {len(outputs)} other outputs verify")
    finally:
        killed = kill_process_tree(proc) if proc.poll() is None else 0
        holds.release()
    assert killed >= 3, "the driver, Ray's processes and its workers"
    assert proc.returncode == -signal.SIGKILL
    assert not (out / mf.MANIFEST).exists()  # the job did not finish
    kept = verified(out, outputs)
    assert set(kept) == set(outputs)

    log2 = tmp_path / "restarted.log"
    again = start_cli(args, cli_env(private_tmp, hold=False), log2)
    try:
        rc = again.wait(timeout=JOB_TIMEOUT_S)
    finally:
        if again.poll() is None:
            kill_process_tree(again)
    assert rc == 0, f"the re-run exited with {rc}:\n{log2.read_text()[-5000:]}"
    untouched(kept)  # the same files (same inode, same mtime): verified and kept, not redone
    return killed, log2.read_text()


def summary_line(log: str) -> str:
    """The job's own summary (the line that counts what it wrote and what it kept)."""
    lines = [line for line in log.splitlines() if "verified and kept" in line]
    assert len(lines) == 1, f"no summary line in the re-run's log:\n{log[-5000:]}"
    return lines[0]


class TestJobKilledAndRestarted:
    def test_shard(self, corpus, shard_ref, private_tmp, holds, tmp_path, fault_record):
        out = tmp_path / "shards"
        args = ["shard", "--input", *corpus["inputs"], "--out", out, "--docs-per-shard", DOCS_PER_SHARD,
                "--workers", 2, "--no-progress"]
        others = {f"shard-{k:06d}": whole_file for k in range(8) if k != 6}
        killed, log = kill_and_restart(args, out, private_tmp, holds, "shard-000006", tmp_path, others)
        line = summary_line(log)
        assert f"input {N_INPUT} documents = sharded {N_INPUT - N_BAD} + rejected {N_BAD}" in line, line
        assert "8 shards (1 written, 7 verified and kept)" in line, line
        assert_same_output(out, shard_ref)
        fault_record(fault="Ray job killed and restarted",
                     how=f"dsdocre shard (8 shards, local Ray, 2 workers): SIGKILL the whole job ({killed} processes: "
                         "driver, Ray, workers) once 7 shards verified, shard 6 half-written; run it again",
                     times=1, outcome="the re-run kept the 7 verified shards untouched and wrote 1; manifest "
                                      "(per-shard sha256, counts) and rejected.jsonl identical to an undisturbed run's",
                     lost=0)

    def test_denoise_score(self, rank_model, shard_ref, denoise_ref, private_tmp, holds, tmp_path, fault_record):
        out = tmp_path / "scored"
        args = ["denoise", "score", "--model", rank_model, "--shards", shard_ref, "--out", out, "--keep", KEEP,
                "--workers", 2, "--no-progress"]
        others = {f"scored-{k:06d}": whole_file for k in range(7)}
        killed, log = kill_and_restart(args, out, private_tmp, holds, "scored-000007", tmp_path, others)
        assert "8 shards (1 scored, 7 verified and kept)" in summary_line(log), summary_line(log)
        assert_same_output(out, denoise_ref)
        fault_record(fault="Ray job killed and restarted",
                     how=f"dsdocre denoise score (8 shards, local Ray, 2 actors): SIGKILL the whole job ({killed} "
                         "processes) once 7 scored shards verified, the last half-written; run it again",
                     times=1, outcome="the re-run kept the 7 verified scored shards untouched and scored 1; manifest "
                                      "(per-shard sha256, counts) identical to an undisturbed run's",
                     lost=0)

    def test_fact_join(self, shard_ref, fact_ref, private_tmp, holds, tmp_path, fault_record):
        out = tmp_path / "pairs"
        args = ["fact-join", "--shards", shard_ref, "--out", out, "--workers", 2,
                "--partitions", FACT_JOIN["partitions"], "--max-pairs-per-fact", FACT_JOIN["max_pairs_per_fact"],
                "--pairs-per-shard", FACT_JOIN["pairs_per_shard"]]
        outputs = {**{f"map-shard-{k:06d}": whole_file for k in range(8)},
                   **{f"facts-{p:05d}": reducer_files for p in (0, 2)}}
        killed, log = kill_and_restart(args, out, private_tmp, holds, "facts-00001", tmp_path, outputs)
        line = summary_line(log)
        assert "tasks: 4 run, 10 verified and kept [maps 8/8, reducers 2/3, pair shards 0/3]" in line, line
        assert_same_output(out, fact_ref)
        fault_record(fault="Ray job killed and restarted",
                     how=f"dsdocre fact-join (8 map, 3 reduce, 3 pair tasks; local Ray, 2 CPUs): SIGKILL the whole "
                         f"job ({killed} processes) once the 8 maps and 2 of the 3 reducers had verified outputs, "
                         "reducer 1 mid-write; run it again",
                     times=1, outcome="the re-run kept the 10 verified task outputs untouched and ran 4 tasks; "
                                      "manifest (every file's sha256, counts) identical to an undisturbed run's",
                     lost=0)
