"""Shared fixtures. Tests run offline on the packaged encoder and never need a GPU."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


@pytest.fixture(scope="session")
def encoder_dir() -> str:
    from dsdocre.data.encoding import default_encoder_dir

    return default_encoder_dir()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "redocred" / "train.json").exists():
        pytest.skip(f"real data not present at {SHARED_DATA} (only CI and developers have ../shared)")
    return SHARED_DATA
