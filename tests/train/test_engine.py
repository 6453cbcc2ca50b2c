"""dsdocre.train.engine: the precision a run trains in (bf16 on a GPU that has it, fp16 on one
that does not, fp32 on CPU, or the DeepSpeed JSON as written)."""

from __future__ import annotations


def test_precision_is_bf16_on_a_gpu_that_has_it_and_fp32_on_cpu(monkeypatch):
    import torch

    from dsdocre.train.engine import apply_precision

    base = {"bf16": {"enabled": True}, "fp16": {"enabled": True, "loss_scale": 0}}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cpu = apply_precision(base, "auto")
    assert not cpu["bf16"]["enabled"] and not cpu["fp16"]["enabled"] and cpu["fp16"]["loss_scale"] == 0
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
    assert apply_precision(base, "auto")["bf16"]["enabled"] and not apply_precision(base, "auto")["fp16"]["enabled"]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (7, 5))
    assert apply_precision(base, "auto")["fp16"]["enabled"]
    assert apply_precision(base, "json") == base and base["bf16"]["enabled"]  # the JSON as written, unchanged
    # bf16 has no loss scaler: DeepSpeed checks its gradients for non-finite values only when told to
    assert apply_precision(base, "fp32")["bf16"] == {"enabled": False, "check_grad_overflow": True}


class StandInEngine:
    """What optimizer_step reads of a DeepSpeed engine: stage 0, fp16 or not, gradients that overflowed."""

    def __init__(self, fp16: bool):
        import torch

        self.fp16, self.stepped = fp16, 0
        self.module = torch.nn.Linear(2, 1)
        for p in self.module.parameters():
            p.grad = torch.full_like(p, float("inf"))
        self.optimizer = self.lr_scheduler = None

    def zero_optimization_stage(self) -> int:
        return 0

    def fp16_enabled(self) -> bool:
        return self.fp16

    def step(self) -> None:
        self.stepped += 1

    def was_step_applied(self) -> bool:
        return False  # DeepSpeed's loss scaler skipped it (and lowered its scale)


def test_fp16_overflow_belongs_to_deepspeeds_loss_scaler():
    """Under fp16 at stage 0 the gradients are left to DeepSpeed's scaler (zeroing them here kept the
    scale from ever dropping: the run stopped as non-finite after 5 steps); its skipped steps are not
    numerical faults unless the loss itself is not finite."""
    import torch

    from dsdocre.train.engine import is_numerical_fault, optimizer_step

    engine = StandInEngine(fp16=True)
    assert optimizer_step(engine, boundary=True) is False and engine.stepped == 1
    assert all(torch.isinf(p.grad).all() for p in engine.module.parameters())  # untouched: the scaler's
    assert not is_numerical_fault(applied=False, fp16=True, losses_finite=torch.tensor(True))  # scaler overflow
    assert is_numerical_fault(applied=False, fp16=True, losses_finite=torch.tensor(False))  # a real NaN loss
    assert is_numerical_fault(applied=False, fp16=False, losses_finite=True)  # bf16 / fp32: any skipped step
    assert not is_numerical_fault(applied=True, fp16=False, losses_finite=False)


def test_a_non_finite_gradient_in_fp32_is_held_still_with_one_host_read():
    from dsdocre.train.engine import optimizer_step

    engine = StandInEngine(fp16=False)

    class Optimizer:
        def step(self):
            raise AssertionError("the optimizer must not step")

    engine.optimizer = Optimizer()
    assert optimizer_step(engine, boundary=True) is False and engine.stepped == 1
    assert all((p.grad == 0).all() for p in engine.module.parameters())
    assert "step" not in vars(engine.optimizer)  # the stand-in step is removed again
