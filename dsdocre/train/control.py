"""What every rank decides together after each optimizer step (:class:`StepControl`)."""

from __future__ import annotations

import time

from dsdocre.train import distributed
from dsdocre.train.config import TrainingConfig


class StepControl:
    """What every rank decides together after each optimizer step, in one all-reduce: stop (time
    budget or ``max_steps`` reached, SIGTERM received by any rank, too many non-finite steps in a
    row) and checkpoint (every ``checkpoint_every`` steps, every ``checkpoint_every_minutes``, or
    before stopping on SIGTERM or a numerical fault).

    SIGTERM (what a preempting scheduler sends; the deepspeed launcher forwards it to each rank in
    turn) only sets a flag here: the ranks finish the step in flight, agree, save and stop, so the
    job exits within one step and one checkpoint, and a rank that has not yet received the signal
    stops with the others. A step DeepSpeed did not apply (its gradient norm was not finite: ZeRO
    checks it, and :func:`optimizer_step` does under stage 0) is counted and logged.
    """

    def __init__(self, training: TrainingConfig):
        import signal
        import threading

        self.training = training
        self.terminated = False
        self.skipped_in_a_row = self.skipped_total = 0
        self.last_save = time.monotonic()
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True

    def close(self) -> None:
        """Give SIGTERM back to the handler it had before (also on an exception: use ``with``)."""
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def __enter__(self) -> "StepControl":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def saved(self) -> None:
        self.last_save = time.monotonic()

    def decide(self, step: int, finished: bool, applied: bool = True) -> tuple[bool, bool, str]:
        """``(stop, save, reason)`` after optimizer step ``step``: ``finished`` is this rank's own
        view (budget or step limit), ``applied`` whether the step changed the weights."""
        every_s = self.training.checkpoint_every_minutes * 60
        time_due = bool(every_s) and time.monotonic() - self.last_save >= every_s
        finished, terminated, time_due, skipped = (bool(x) for x in distributed.agree_flags(
            [int(finished), int(self.terminated), int(time_due), int(not applied)]))
        reason = ""
        if skipped:
            self.skipped_in_a_row += 1
            self.skipped_total += 1
            distributed.log(f"step {step}: loss or gradient not finite, step skipped ({self.skipped_in_a_row} in a row, "
                f"{self.skipped_total} in all)")
        else:
            self.skipped_in_a_row = 0
        numerical = bool(self.training.max_skipped_steps) and self.skipped_in_a_row >= self.training.max_skipped_steps
        if terminated:
            reason = "sigterm"
        elif numerical:
            reason = "nonfinite"
        elif finished:
            reason = "finished"
        every = self.training.checkpoint_every
        save = terminated or numerical or time_due or bool(every and step % every == 0)
        return bool(reason), save, reason

    def interrupted(self, step: int, reason: str, checkpointed: bool):
        """The exception that ends a run stopped on SIGTERM or by numerical faults."""
        from dsdocre.errors import Interrupted

        where = "a checkpoint was saved: run the same command again to resume" if checkpointed else \
            "checkpoints are off (training.checkpoints=false): nothing to resume from"
        if reason == "sigterm":
            return Interrupted(f"stopped on SIGTERM after step {step}; {where}", 143)
        return Interrupted(f"stopped after {self.skipped_in_a_row} steps in a row with a non-finite loss or "
                           f"gradient (step {step}; {self.skipped_total} skipped in all); the weights are those "
                           f"before the fault and {where}. Lower the learning rate or check the data of these "
                           "steps", 3)
