"""The process world shared by the training commands, and the decisions its ranks agree on.

Under the ``deepspeed`` launcher (or torchrun) the rank variables are set; a plain single process
gets a one-member gloo world on a free local port, so ``dsdocre finetune`` works without a
launcher. On a machine without CUDA, DeepSpeed's CPU accelerator is selected
(``DS_ACCELERATOR=cpu``) unless the user chose one.

DeepSpeed compiles its CPU ops (shared-memory all-reduce, CPU Adam) on first use with the ``ninja``
found on PATH and caches them under ``~/.cache/torch_extensions``. The ``ninja`` installed beside
this interpreter (a DeepSpeed dependency) is put first on PATH: a run that does not activate the
venv would otherwise pick up a system ``ninja`` of another version, whose build log the other one
does not accept, and every switch between the two recompiles the ops (30-60 s each).
"""

from __future__ import annotations

import os
import random
import socket
import sys
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prefer_own_ninja() -> None:
    own_bin = Path(sys.executable).parent
    path = os.environ.get("PATH", "")
    if (own_bin / "ninja").is_file() and path.split(os.pathsep)[0] != str(own_bin):
        os.environ["PATH"] = f"{own_bin}{os.pathsep}{path}"


def prepare_environment() -> None:
    """Join the process world: call first in every training command, before importing deepspeed.

    Sets the rank variables when no launcher did (a world of one), selects this process's GPU
    from ``LOCAL_RANK`` before anything touches CUDA (every later CUDA call, collective and
    capability query then runs on it, not on GPU 0 of every rank), and picks DeepSpeed's CPU
    accelerator on a machine without CUDA."""
    import torch

    _prefer_own_ninja()
    if "RANK" not in os.environ:  # no launcher: a world of one
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1",
                          MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if local_rank == 0:  # one check per node: two checkers would race on one lock
        from dsdocre.train.extension_locks import check_extension_locks

        check_extension_locks()  # a lock left by a killed build would make this run wait without a word
    if torch.cuda.is_available():
        count = torch.cuda.device_count()
        if local_rank >= count:
            from dsdocre.errors import UserError

            raise UserError(f"local rank {local_rank} has no GPU: this node has {count}; start at most {count} "
                            "processes per node (NUM_PROCS)")
        torch.cuda.set_device(local_rank)
    else:
        _warn_if_gpus_unused(torch)
        os.environ.setdefault("DS_ACCELERATOR", "cpu")


def _warn_if_gpus_unused(torch) -> None:
    """Say so, loudly, when the machine has NVIDIA GPUs this torch cannot use (a CPU-only build in
    the venv would otherwise train on the CPU without a word)."""
    gpus = sorted(Path("/dev").glob("nvidia[0-9]*"))
    if gpus and rank() == 0:
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no usable device"
        print(f"WARNING: this machine has {len(gpus)} NVIDIA GPU(s) but torch {torch.__version__} is {build}: "
              "training runs on the CPU. Install a CUDA build of torch into this venv first "
              "(launch/install.sh keeps a torch that is already there)", file=sys.stderr, flush=True)


def collective_device():
    """Where a collective's tensors live: this process's GPU under NCCL (selected from LOCAL_RANK by
    :func:`prepare_environment`), the CPU under gloo."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def log(message: str) -> None:
    """Print on the main process only."""
    if is_main_process():
        print(message, flush=True)


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators from one seed."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


# Stop codes every rank agrees on (the largest wins): continue, stop cleanly, a rank failed.
CONTINUE, STOP, FAILED = 0, 1, 2


def _all_reduce(values: list, dtype, op: str) -> "object":
    """``values`` reduced over all ranks (``op``: "max" or "sum"), as a tensor on the backend's device."""
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=dtype, device=collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX if op == "max" else dist.ReduceOp.SUM)
    return t


def agree(code: int) -> int:
    """The largest ``code`` over all ranks, on every rank (a collective: every rank must call it).

    A decision one rank makes alone (its clock passed the time budget, its evaluation raised)
    would leave the others waiting in the next all-reduce; agreeing first keeps the ranks in step.
    """
    if world_size() == 1:
        return code
    import torch

    return int(_all_reduce([code], torch.int64, "max").item())


def barrier() -> None:
    if world_size() > 1:
        import torch.distributed as dist

        dist.barrier()


def agree_flags(flags: list[int]) -> list[int]:
    """Each flag's largest value over all ranks (one all-reduce for several decisions)."""
    if world_size() == 1:
        return list(flags)
    import torch

    return [int(x) for x in _all_reduce(flags, torch.int64, "max").tolist()]


def sum_over_ranks(values: list[float]) -> list[float]:
    """Each value summed over all ranks, on every rank (one float64 all-reduce): for metrics that
    every rank holds a part of, such as its micro-batches' losses."""
    if world_size() == 1:
        return [float(x) for x in values]
    import torch

    return _all_reduce(values, torch.float64, "sum").tolist()


def init_process_group() -> None:
    """Join the process group now (DeepSpeed's own set-up, which ``deepspeed.initialize`` would
    otherwise do): for collectives that come before the engine exists, and to release DeepSpeed's
    shared memory names (below)."""
    if world_size() == 1:
        return
    import deepspeed
    import torch.distributed as dist

    if not dist.is_initialized():
        deepspeed.init_distributed()
        unlink_cpu_allreduce_buffer()


def unlink_cpu_allreduce_buffer() -> None:
    """Removes the name of this rank's DeepSpeed CPU all-reduce buffer, once every rank has mapped it.

    With every rank on one machine, DeepSpeed's CPU accelerator gives each rank a 69 MB buffer in
    /dev/shm (``deepspeed_allreduce_buffer_<uid>_<addr>_<port>_<rank>``) and never unlinks it: each
    run would leave world-size of them in memory until a reboot, and a later run on the same port
    would map the stale ones. DeepSpeed's set-up returns only after a rank has mapped every peer's
    buffer, so after a barrier the names can go; the memory itself lives until the last process
    unmaps it, however the processes end. No such buffer (a GPU, ranks on several machines, a
    single process without the launcher): nothing to do. A collective; calling it again is harmless."""
    barrier()
    name = (f"deepspeed_allreduce_buffer_{os.getuid()}_{os.environ.get('MASTER_ADDR', '')}_"
            f"{os.environ.get('MASTER_PORT', '')}_{rank()}")
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass


def zero_stage(engine) -> int:
    return int(engine.zero_optimization_stage())


@contextmanager
def full_parameters(engine):
    """Inside the block every parameter of ``engine.module`` is whole on every rank: ZeRO-3 keeps
    only a partition of each outside a forward pass; below stage 3 this does nothing. A collective:
    every rank enters."""
    if zero_stage(engine) >= 3:
        import deepspeed

        with deepspeed.zero.GatheredParameters(list(engine.module.parameters()), modifier_rank=None):
            yield
    else:
        yield


def full_state_dict(engine) -> dict | None:
    """The module's whole state dict (CPU copies) on rank 0, None on the other ranks. A collective."""
    with full_parameters(engine):
        if not is_main_process():
            return None
        return {k: v.detach().cpu().clone() for k, v in engine.module.state_dict().items()}


def shutdown() -> bool:
    """Leave the process group, if one was joined; returns whether one was.

    The group is destroyed while the interpreter is fully alive; the caller should then end the
    process without interpreter teardown (see ``dsdocre.cli.entry``)."""
    if "torch.distributed" not in sys.modules:
        return False
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        return True
    return False
