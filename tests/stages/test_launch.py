"""The launch scripts (launch/): a bad stage is refused with the allowed ones named, and two
"nodes" started without ssh on this machine (NODE_RANK 0 and 1, one process each) join one world of
two and fine-tune a tiny model together."""

from __future__ import annotations

import glob
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[2]
STAGES = ("finetune", "pretrain", "denoise-train")
# set around a launch by clusters and by users; none of them may leak into these runs
_LAUNCH_VARIABLES = ("HOSTFILE", "NODE_RANK", "NUM_NODES", "NUM_PROCS", "MASTER_ADDR", "MASTER_PORT",
                     "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "CUDA_VISIBLE_DEVICES")


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _LAUNCH_VARIABLES}
    env.update(HF_HUB_OFFLINE="1", DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false",
               PYTHON=sys.executable, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_two_nodes(stage: str, args: list[str], tmp_path, env_extra: dict, *, timeout: float = 180,
                     procs_per_node: int = 1) -> list[subprocess.CompletedProcess]:
    """Start ``launch/deepspeed_stage.sh STAGE ARGS`` twice at once, as node 0 and node 1 of a
    two-node world without ssh (NODE_RANK, NUM_NODES=2, MASTER_ADDR=127.0.0.1, a free port); wait
    for both (each node's whole process group is killed past ``timeout`` seconds, and the test
    fails). ``env_extra`` is added to both nodes' environment (it may override NUM_PROCS,
    MASTER_PORT, ...). Returns both results, node 0's first; stdout/stderr are also kept in
    tmp_path/node{K}.{out,err}."""
    port = _free_port()
    command = ["bash", str(ROOT / "launch" / "deepspeed_stage.sh"), stage, *map(str, args)]
    nodes = []
    for rank in range(2):
        env = _env(**{"NUM_NODES": 2, "NUM_PROCS": procs_per_node, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port,
                      **env_extra, "NODE_RANK": rank})
        out, err = open(tmp_path / f"node{rank}.out", "w"), open(tmp_path / f"node{rank}.err", "w")
        # a session of its own: on a timeout the node's launcher and workers go together
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=err, start_new_session=True)
        nodes.append((proc, out, err))
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        for proc, _, _ in nodes:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                timed_out = True
    finally:
        for proc, out, err in nodes:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            out.close()
            err.close()
    results = [subprocess.CompletedProcess(command, proc.returncode, (tmp_path / f"node{rank}.out").read_text(),
                                           (tmp_path / f"node{rank}.err").read_text())
               for rank, (proc, _, _) in enumerate(nodes)]
    if timed_out:
        pytest.fail(f"two-node {stage} did not finish in {timeout:.0f} s{_stale_build_locks()}; node 0 said:\n"
                    + results[0].stdout[-2000:] + results[0].stderr[-2000:])
    return results


def _stale_build_locks() -> str:
    """DeepSpeed's CPU backend JIT-loads its shared-memory op under torch's file lock; a process
    killed while holding it leaves the lock file, and every later DeepSpeed run on the machine waits
    on it for ever. Named in a timeout's message, because the hang says nothing itself."""
    root = Path(os.environ.get("TORCH_EXTENSIONS_DIR") or Path.home() / ".cache" / "torch_extensions")
    locks = sorted(str(p) for p in root.glob("**/lock"))
    return f" (torch extension build locks present, stale if no build is running: {locks})" if locks else ""


@pytest.mark.parametrize("stage", ["no-such-stage", "", None])
def test_a_bad_stage_is_refused_naming_the_allowed_ones(stage):
    proc = subprocess.run(["bash", str(ROOT / "launch" / "deepspeed_stage.sh"), *([] if stage is None else [stage])],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0
    assert all(name in proc.stderr for name in STAGES), proc.stderr
    assert proc.stdout == ""  # refused before anything was started


@pytest.mark.parametrize("variables,message", [
    ({"NODE_RANK": 2, "NUM_NODES": 2, "MASTER_ADDR": "127.0.0.1"}, "NODE_RANK must be a whole number in 0..1"),
    ({"NODE_RANK": 1, "NUM_NODES": 2}, "MASTER_ADDR"),
])
def test_a_bad_multi_node_setting_is_refused_before_launching(variables, message):
    proc = subprocess.run(["bash", str(ROOT / "launch" / "deepspeed_stage.sh"), "finetune"], cwd=ROOT,
                          env=_env(**variables), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


_FAKE_SRUN = """#!/usr/bin/env bash
# srun on one machine: options dropped, the command started once per node with SLURM_NODEID set
while [[ "${1:-}" == --* ]]; do shift; done
pids=()
for ((i = 0; i < SLURM_JOB_NUM_NODES; i++)); do SLURM_NODEID=$i "$@" & pids+=($!); done
rc=0; for p in "${pids[@]}"; do wait "$p" || rc=$?; done; exit $rc
"""
_FAKE_SCONTROL = """#!/usr/bin/env bash
[[ "$1 $2" == "show hostnames" ]] && printf '127.0.0.1\\nnode-b\\n'
"""


@pytest.mark.slow
def test_slurm_without_ssh_starts_one_launcher_per_node_in_one_world(tmp_path):
    """launch/slurm_finetune.sbatch with NO_SSH=1 under a stand-in srun/scontrol: every node's
    launcher gets its NODE_RANK from SLURM_NODEID and computes the same world of two. The stage
    only prints its help, so this checks the wiring, not training (the test above does that)."""
    for name, text in (("srun", _FAKE_SRUN), ("scontrol", _FAKE_SCONTROL)):
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    env = _env(NO_SSH=1, SLURM_JOB_NUM_NODES=2, SLURM_JOB_NODELIST="fake[0-1]", SLURM_GPUS_ON_NODE=1,
               SLURM_SUBMIT_DIR=ROOT, MASTER_PORT=_free_port())
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(ROOT / "launch" / "slurm_finetune.sbatch"), "--help"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    logs = proc.stdout + proc.stderr
    assert proc.returncode == 0, logs[-3000:]
    assert logs.count("dist_world_size=2") == 2 and "node_rank=0" in logs and "node_rank=1" in logs, logs[-3000:]
    assert "--master_addr=127.0.0.1" in logs
    assert proc.stdout.count("usage: dsdocre finetune") == 2


# A stand-in interpreter for the launch script: says whether it "has" CUDA and how many GPUs, and
# instead of the deepspeed launcher prints what it would have been started with.
_FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
  *find_spec*) exit 0 ;;
  *cuda.is_available*) [[ "$FAKE_GPUS" != 0 ]] ;;
  *device_count*) echo "$FAKE_GPUS" ;;
  *deepspeed.launcher.runner*) echo "OMP_NUM_THREADS=$OMP_NUM_THREADS DS_ACCELERATOR=${DS_ACCELERATOR:-} ARGS=$*" ;;
  *) exit 1 ;;
esac
"""


def _fake_launch(tmp_path, gpus: int, **variables) -> subprocess.CompletedProcess:
    """The launch script with a python whose torch sees ``gpus`` CUDA devices (and, with gpus, an
    nvidia-smi that lists them: the script asks torch only on a node with a GPU device)."""
    (tmp_path / "python").write_text(_FAKE_PYTHON)
    (tmp_path / "python").chmod(0o755)
    if gpus:
        (tmp_path / "nvidia-smi").write_text("#!/usr/bin/env bash\n" + "".join(
            f"echo 'GPU {i}: NVIDIA H100 (UUID: GPU-{i})'\n" for i in range(gpus)))
        (tmp_path / "nvidia-smi").chmod(0o755)
    env = _env(PYTHON=tmp_path / "python", FAKE_GPUS=gpus, **variables)
    for name in ("OMP_NUM_THREADS", "DS_ACCELERATOR"):
        env.pop(name, None)
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    return subprocess.run(["bash", str(ROOT / "launch" / "deepspeed_stage.sh"), "pretrain"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def test_threads_per_process_on_cpu_and_on_a_gpu_node(tmp_path):
    """One thread per process on CPU; on a GPU node each process gets its share of the cores (the
    variable was left unset there, and every process took every core)."""
    cpu = _fake_launch(tmp_path, gpus=0)
    assert "OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu" in cpu.stdout, cpu.stderr
    gpu = _fake_launch(tmp_path, gpus=2)
    share = max(1, os.cpu_count() // 2)
    assert f"OMP_NUM_THREADS={share} DS_ACCELERATOR= " in gpu.stdout and "--num_gpus 2" in gpu.stdout, gpu.stderr


@pytest.mark.skipif(bool(glob.glob("/dev/nvidia[0-9]*") or glob.glob("/proc/driver/nvidia/gpus/*")
                         or os.path.exists("/dev/kfd")), reason="this machine has a GPU device")
def test_a_node_without_gpu_devices_runs_on_cpu_without_asking_torch(tmp_path):
    """No GPU device on the node (no nvidia-smi, /dev/nvidia*, /dev/kfd): CPU mode at once, torch
    not imported to ask (it costs seconds per launch), even by a python whose torch would say yes."""
    (tmp_path / "python").write_text(_FAKE_PYTHON)
    (tmp_path / "python").chmod(0o755)
    env = _env(PYTHON=tmp_path / "python", FAKE_GPUS=2)
    env.pop("DS_ACCELERATOR", None)
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(ROOT / "launch" / "deepspeed_stage.sh"), "pretrain"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    # asked, this torch says CUDA is there (FAKE_GPUS=2), and the script would pick the GPU path
    assert "OMP_NUM_THREADS=1 DS_ACCELERATOR=cpu" in proc.stdout, proc.stdout + proc.stderr


def test_a_cpu_only_torch_on_a_gpu_node_is_said_loudly(tmp_path):
    (tmp_path / "nvidia-smi").write_text("#!/usr/bin/env bash\necho 'GPU 0: NVIDIA H100 (UUID: GPU-x)'\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    proc = _fake_launch(tmp_path, gpus=0)
    assert "WARNING: this node has NVIDIA GPUs but" in proc.stderr and "training runs on the CPU" in proc.stderr


def test_ssh_mode_without_master_addr_uses_the_hostfiles_first_host(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("# nodes\nnode-a slots=8\nnode-b slots=8\n")
    proc = _fake_launch(tmp_path, gpus=8, HOSTFILE=hostfile)
    assert "--master_addr node-a" in proc.stdout and "using the hostfile's first host, node-a" in proc.stderr


def test_slurm_without_ssh_gives_srun_the_cpus_per_task(tmp_path):
    (tmp_path / "srun").write_text('#!/usr/bin/env bash\necho "srun $*"\n')
    (tmp_path / "scontrol").write_text(_FAKE_SCONTROL)
    for name in ("srun", "scontrol"):
        (tmp_path / name).chmod(0o755)
    env = _env(NO_SSH=1, SLURM_JOB_NUM_NODES=2, SLURM_JOB_NODELIST="fake[0-1]", SLURM_GPUS_ON_NODE=8,
               SLURM_CPUS_PER_TASK=32, SLURM_SUBMIT_DIR=ROOT)
    env["PATH"] = f"{tmp_path}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(["bash", str(ROOT / "launch" / "slurm_stage.sbatch"), "pretrain"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and "--cpus-per-task=32" in proc.stdout, proc.stdout + proc.stderr
