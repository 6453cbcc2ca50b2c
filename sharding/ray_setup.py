"""Connecting to Ray the same way in every sharding job."""

from __future__ import annotations

import os

# Every worker runs one task at a time on one core: a tokenizer or BLAS library that starts its
# own thread pool would fight the other workers for the same cores (and slow all of them down).
WORKER_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"),
}
# Fault injection for tests (sharding.shard.fault_point, which every job calls), passed on only when set.
WORKER_ENV.update({k: os.environ[k] for k in ("DSDOCRE_TEST_HOLD_DIR",) if k in os.environ})

# Passed to every task with .options(runtime_env=...), so it holds also when the caller (a test, a
# notebook) started Ray itself.
RUNTIME_ENV = {"env_vars": WORKER_ENV}


def connect(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a local Ray (``num_cpus`` workers) or join the cluster at ``address``.

    Returns True when this call started Ray (the caller shuts it down), False when Ray was
    already initialized in this process (a test's cluster, say): then it is left as it is.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # address="local": always a new Ray of our own. Without an address, ray.init() would join
        # the cluster named by $RAY_ADDRESS or /tmp/ray/ray_current_cluster (anyone's `ray start` or
        # running job on this machine) and then refuse num_cpus ("must not be provided").
        # A small object store: the driver keeps only a few chunks in flight. The job-level
        # runtime_env equals the tasks' own, so the workers Ray starts with the node serve them.
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), include_dashboard=False,
                 log_to_driver=False, object_store_memory=256 << 20, runtime_env=RUNTIME_ENV)
    return True


def cluster_cpus() -> int:
    import ray

    return max(1, int(ray.cluster_resources().get("CPU", 1)))
