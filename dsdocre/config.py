"""YAML configuration with ``--set key.sub=value`` overrides (values parsed as YAML)."""

from __future__ import annotations

import json
from pathlib import Path

import yaml


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"config file {path} does not exist")
    config = yaml.safe_load(path.read_text()) or {}
    for item in overrides or []:
        apply_override(config, item)
    return config


def apply_override(config: dict, item: str) -> None:
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key.sub=value")
    key, value = item.split("=", 1)
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ValueError(f"override {item!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(value)


def load_deepspeed_config(path: str | Path) -> dict:
    """The DeepSpeed JSON: ZeRO stage, precision, optimizer, batch size, clipping live there."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"DeepSpeed config {path} does not exist")
    return json.loads(path.read_text())
