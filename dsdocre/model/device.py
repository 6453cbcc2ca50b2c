"""Where and in which precision a model runs for inference (prediction, evaluation, scoring)."""

from __future__ import annotations

import torch

# Documents per encoder batch when the caller does not choose: a GPU in bf16 takes many more than
# the CPU, where batches are kept small (padding is the main cost there).
INFERENCE_BATCH = {"cpu": 4, "cuda": 32}


def default_batch_size(device: str | torch.device) -> int:
    return INFERENCE_BATCH.get(torch.device(device).type, INFERENCE_BATCH["cpu"])


def inference_precision(device: str | torch.device):
    """The context a forward pass for inference runs in: bf16 autocast on a GPU that computes bf16
    natively (compute capability 8.0 on), float32 elsewhere (the CPU: unchanged, exact)."""
    import contextlib

    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available() and torch.cuda.get_device_capability(device) >= (8, 0):
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
