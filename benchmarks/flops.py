"""Model FLOPs of pre-training, written out, and model FLOPs utilization (MFU).

Training costs three times the forward pass (forward, and a backward with two matrix products per
forward one). Per real token of a BERT-family encoder of L layers, width d, feed-forward width f,
over windows of s tokens::

    forward matrix products   2 N,  N = L (4 d^2 + 2 d f)     (Q, K, V, output projections; the MLP)
    forward attention         4 L s d                          (Q K^T and the weighted sum of V)
    training                  3 x forward = 6 N + 12 L s d

Embedding lookups are no matrix product and are not counted (the usual convention). The pair heads
add, per scored pair, a bilinear form ``e_h W_k e_t`` for each of the o outputs: 2 d^2 o FLOPs
forward in the gathered arithmetic, 6 d^2 o in training. MFU = model FLOPs per second / the GPU's
peak dense bf16 FLOPs per second (the vendor's figure, :data:`PEAK_BF16_FLOPS`).
"""

from __future__ import annotations

# Dense bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name() (vendor figures,
# without sparsity; SXM parts).
PEAK_BF16_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10G": 70e12}


def encoder_training_flops_per_token(layers: int, hidden: int, intermediate: int, window: int) -> float:
    """6 N + 12 L s d (see the module docstring)."""
    non_embedding = layers * (4 * hidden * hidden + 2 * hidden * intermediate)
    return 6 * non_embedding + 12 * layers * window * hidden


def pair_head_training_flops(pairs: int, hidden: int, outputs: int) -> float:
    """Training FLOPs of ``pairs`` bilinear pair scores of ``outputs`` outputs each."""
    return 6 * pairs * hidden * hidden * outputs


def peak_flops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_FLOPS.items():
        if key in device_name:
            return value
    return None


def mfu(tokens_per_s: float, config: dict, window: int, device_name: str) -> dict:
    """Model FLOPs per second of the encoder at ``tokens_per_s`` and its fraction of the device's
    peak (None when the device is not in :data:`PEAK_BF16_FLOPS`). ``config``: the encoder's
    transformers config (num_hidden_layers, hidden_size, intermediate_size)."""
    per_token = encoder_training_flops_per_token(config["num_hidden_layers"], config["hidden_size"],
                                                 config["intermediate_size"], window)
    achieved = per_token * tokens_per_s
    peak = peak_flops(device_name)
    return {"flops_per_token": per_token, "model_flops_per_s": achieved, "peak_flops_per_s": peak,
            "mfu": achieved / peak if peak else None,
            "counted": "encoder only (6N + 12 L s d per token); the pair heads are not counted, so this is a lower "
                       "bound"}
