"""Shared test set-up: offline hub, the shared datasets folder, and a tiny grid writer."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Read at import time by huggingface_hub; without them a hub lookup waits about a minute to fail.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.exists():
        pytest.skip("../shared/data is not present")
    return SHARED_DATA
