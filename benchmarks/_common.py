"""Shared helpers for the benchmark scripts: thread pinning and a machine/run description.

Benchmarks run as modules from the checkout (``python -m benchmarks.bilinear``,
``python -m benchmarks.studies.paper_table``). Usage (before the heavy imports, so OpenMP/MKL read
the environment)::

    from benchmarks._common import pin_threads, machine_info
    threads = pin_threads()          # all the cores this process may run on
    import torch
    ...
    result = {"machine": machine_info(), ...}
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import subprocess
import sys
from pathlib import Path

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "RAYON_RS_NUM_CPUS",  # HF tokenizers' thread pool
)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity), falling back to ``os.cpu_count()``."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def pin_threads(n: int | None = None) -> dict:
    """Use exactly ``n`` threads (default: :func:`available_cores`) in torch, OpenMP, MKL, tokenizers.

    Sets the environment variables (effective for libraries initialised afterwards, so call this
    before importing torch when you can) and, if torch is importable, ``torch.set_num_threads``.
    Returns what was set, for the result file.
    """
    n = int(n or available_cores())
    for var in THREAD_ENV_VARS:
        os.environ[var] = str(n)
    info = {"threads": n, "env": {var: os.environ[var] for var in THREAD_ENV_VARS}}
    try:
        import torch

        torch.set_num_threads(n)
        try:
            torch.set_num_interop_threads(max(1, min(n, 2)))
        except RuntimeError:  # already set, or parallel work already started
            pass
        info["torch_num_threads"] = torch.get_num_threads()
        info["torch_num_interop_threads"] = torch.get_num_interop_threads()
    except ImportError:  # pragma: no cover
        pass
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:  # pragma: no cover
        pass
    return None


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        return None


# Recorded in every result: the CPU and these versions decide the last bits of a float result, and
# so where training goes (the same commit gave another pipeline F1 on another CPU, README).
RECORDED_PACKAGES = ("numpy", "triton", "transformers", "tokenizers", "deepspeed", "ray", "webdataset",
                     "safetensors")


def installed_version(name: str) -> str | None:
    """The installed distribution's version, read from its metadata (importing ray or deepspeed
    costs seconds and logs), or None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def command_line() -> str:
    """How this process was started, as a result file records it: ``python -m benchmarks.NAME ARGS``
    for a module run with ``-m`` (the way every benchmark runs), else ``python SCRIPT ARGS``."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    start = ["-m", spec.name] if spec is not None and spec.name else sys.argv[:1]
    return " ".join(shlex.quote(a) for a in ["python", *start, *sys.argv[1:]])


def machine_info(command: str | None = None, packages: tuple[str, ...] = ()) -> dict:
    """Machine, CPU, Python/torch (and CUDA, GPU) versions, the versions of ``RECORDED_PACKAGES`` and
    of ``packages``, UTC date and the command line (default: :func:`command_line`)."""
    info = {
        "machine": platform.node(),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "cores_available": available_cores(),
        "memory_gib": _memory_gib(),
        "load_average_1_5_15": _loadavg(),  # other work on the machine skews absolute times
        "python": platform.python_version(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command if command is not None else command_line(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["torch_num_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
            info["gpu_count"] = torch.cuda.device_count()
    except ImportError:  # pragma: no cover
        info["torch"] = None
    for name in dict.fromkeys(RECORDED_PACKAGES + tuple(packages)):
        info[name] = installed_version(name)
    return info


def real_data_dir():
    """``../shared/data/redocred`` beside the checkout, or None (with a line saying why) when absent:
    a fresh clone has no real data, and the real-data benchmarks then skip."""
    data = Path(__file__).resolve().parents[2] / "shared" / "data" / "redocred"
    if not (data / "train.json").exists():
        print(f"skipped: {data} is absent (the real data lives beside the checkout, see ../shared/data/README.md)")
        return None
    return data


def synthetic_pairs(root, docs: int, seed: int = 0, docs_per_shard: int = 100) -> int:
    """Pre-training input under ``root``: ``docs`` synthetic distant documents (``corpus/``), their
    shards (``shards/``, packaged encoder) and fact-join pairs over every label (``pairs/``).
    Returns the number of document pairs."""
    from dsdocre.synth import generate_corpus
    from sharding.fact_join import fact_join
    from sharding.shard import shard_corpus

    root = Path(root)
    generate_corpus(root / "corpus", 0, seed, dev_docs=0, test_docs=0, distant_docs=docs, progress=False)
    shard_corpus([root / "corpus" / "train_distant.json"], root / "shards", docs_per_shard=docs_per_shard,
                 workers=0, progress=False, log=None)
    return fact_join(root / "shards", root / "pairs", workers=0, log=None)["counts"]["pairs"]


CHECKOUT = Path(__file__).resolve().parents[1]
ROOT = CHECKOUT  # the checkout's root, for the scripts under benchmarks/ and benchmarks/studies/


def random_bert_base(folder) -> str:
    """Random BERT-base-sized weights (12 layers, d 768, feed-forward 3072, 512 positions) with the
    packaged encoder's tokenizer, saved under ``folder`` (once): for speed on a GPU, not quality."""
    from pathlib import Path

    from transformers import AutoTokenizer, BertConfig, BertModel

    from dsdocre.data.encoding import resolve_encoder_dir

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        tokenizer = AutoTokenizer.from_pretrained(resolve_encoder_dir("default"))
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                            intermediate_size=3072, max_position_embeddings=512)
        BertModel(config).save_pretrained(folder)
        tokenizer.save_pretrained(folder)
    return str(folder)


def shown(path) -> str:
    """A path as a result file records it: relative to the checkout when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(CHECKOUT)) if path.is_relative_to(CHECKOUT) else str(path)


STEP_STAMP = "dsdocre_step.json"


def dsdocre_step(work, name: str, args: list, output: str):
    """Runs ``dsdocre ARGS`` writing ``work/name`` unless it is there, written by the same command.

    The command is recorded in ``work/name/dsdocre_step.json`` once it has finished, so a stopped
    benchmark continues where it was; an output written by another command stops the run rather
    than be reused."""
    folder = Path(work) / name
    command = ["dsdocre", *map(str, args)]
    stamp = folder / STEP_STAMP
    if (folder / output).exists():
        recorded = json.loads(stamp.read_text())["command"] if stamp.exists() else None
        if recorded != command:
            raise SystemExit(f"{folder}: written by {recorded or 'an unrecorded command'}, not by "
                             f"{shlex.join(command)}; move it away or pass another --work")
        print(f"[{name}] done earlier: {shlex.join(command)}", flush=True)
        return folder
    print(f"[{name}] {shlex.join(command)}", flush=True)
    subprocess.run([sys.executable, "-m", "dsdocre.cli", *command[1:]], check=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})
    stamp.write_text(json.dumps({"command": command}, indent=2) + "\n")
    return folder


def read_metrics(run) -> list[dict]:
    """The records of a training run's ``metrics.jsonl``, one per line."""
    return [json.loads(x) for x in (Path(run) / "metrics.jsonl").read_text().splitlines()]


def recall_per_epoch(records: list[dict]) -> list[dict]:
    """Each evaluated epoch's valid recall at 2 and 3 N_ent from a ``dsdocre denoise train`` run's
    metrics records (``read_metrics``): is it still rising?"""
    return [{"epoch": r["epoch"], "2n": r["valid"]["fact_recall_at_2n"], "3n": r["valid"]["fact_recall_at_3n"]}
            for r in records]
