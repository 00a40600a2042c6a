"""Shared fixtures."""
import os
from pathlib import Path

# Before torch loads (and is inherited by Ray's workers): OpenMP threads that spin while they
# wait stall 10-35x when another process keeps a core busy (tiny training step, 2 threads,
# one core loaded: 3.6 s spinning, 0.21 s passive); the suite must not depend on a quiet host.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``<repo>/../shared/datasets`` (clean benchmark images); skips the test when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures (environment of a module's Ray cluster)."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp
