"""dsdocre: document-level relation extraction pre-trained on denoised distant supervision.

Stages (one way through the data): shard -> denoise -> pretrain -> finetune -> evaluate.
"""

__version__ = "0.1.0"
