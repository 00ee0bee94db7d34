"""Shared fixtures: where the benchmark images live.

``DATA_DIR`` is ``<repo>/../shared/data`` unless the environment variable ``BINSR_DATA`` points elsewhere.
Tests that need the images use the ``data_dir`` fixture and are skipped when the folder is missing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA_DIR = Path(os.environ.get("BINSR_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The benchmark data folder (Set5, Set14, BSD100, ...); skips the test if it is absent."""
    if not (DATA_DIR / "Set5").is_dir():
        pytest.skip(f"benchmark data not found at {DATA_DIR} (set BINSR_DATA)")
    return DATA_DIR
