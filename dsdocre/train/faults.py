"""Faults injected on purpose, for the fault-tolerance tests and ``benchmarks/kill_resume.py``.

``DSDOCRE_FAULT`` names one fault as ``<point>@<steps>`` (steps: ``7`` or ``7-9``), optionally
``@rank<r>`` to hit one rank only, e.g. ``kill-after-checkpoint-files@4`` or ``nan-loss@5-7``:

- ``kill-after-checkpoint-files``: SIGKILL this process once DeepSpeed has written every file of
  the checkpoint at that step, before its checksums and the ``latest`` pointer (the torn save);
- ``nan-loss``: the loss of every micro-batch in those optimizer steps becomes NaN.

Unset (every real run), :func:`armed` is a dictionary lookup and nothing else.
"""

from __future__ import annotations

import os
import signal

ENV = "DSDOCRE_FAULT"


def armed(point: str, step: int) -> bool:
    """Whether the fault ``point`` is set for optimizer step ``step`` on this rank."""
    spec = os.environ.get(ENV)
    if not spec:
        return False
    name, _, rest = spec.partition("@")
    steps, _, rank = rest.partition("@")
    if name != point or (rank and rank != f"rank{os.environ.get('RANK', '0')}"):
        return False
    first, _, last = steps.partition("-")
    return int(first) <= step <= int(last or first)


def kill_if_armed(point: str, step: int) -> None:
    if armed(point, step):
        os.kill(os.getpid(), signal.SIGKILL)
