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
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert apply_precision(base, "auto")["bf16"]["enabled"] and not apply_precision(base, "auto")["fp16"]["enabled"]
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert apply_precision(base, "auto")["fp16"]["enabled"]
    assert apply_precision(base, "json") == base and base["bf16"]["enabled"]  # the JSON as written, unchanged
    # bf16 has no loss scaler: DeepSpeed checks its gradients for non-finite values only when told to
    assert apply_precision(base, "fp32")["bf16"] == {"enabled": False, "check_grad_overflow": True}
