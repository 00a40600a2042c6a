"""Shared fixtures: the shared datasets, the bundled sample in gray, a module-scoped monkeypatch, and the plugin tests' small
models and notification catcher (a tiny restorer trained once, cached in pytest's cache folder,
so that those tests do not depend on the shipped weights)."""
import hashlib
import os
from pathlib import Path

# Before torch loads (and is inherited by Ray's workers): OpenMP threads that spin while they
# wait stall 10-35x when another process keeps a core busy (tiny training step, 2 threads,
# one core loaded: 3.6 s spinning, 0.21 s passive); the suite must not depend on a quiet host.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Ray starts its workers at niceness 15 so that they yield to its own daemons; beside processes
# that keep the cores busy they then get a few percent of a core, and a Ray test takes minutes
# to hours. The test clusters (ray.init here, `ray start` in a subprocess) run them at 0.
os.environ.setdefault("RAY_worker_niceness", "0")

import numpy as np
import pytest

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """``<repo>/../shared/datasets`` (clean benchmark images); skips the test when it is absent."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"shared datasets not found at {SHARED_DATASETS}")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def sample_gray() -> np.ndarray:
    """The bundled never-compressed sample photograph in gray (ITU-R 601 luma), uint8."""
    from napari_jpeg_restore.core.evaluation.demo import SAMPLE
    from napari_jpeg_restore.core.imageio.reading import read_image
    from napari_jpeg_restore.core.pixels import to_channels

    return to_channels(read_image(SAMPLE).array, 1)


@pytest.fixture(scope="module")
def monkeypatch_module():
    """``monkeypatch`` for module-scoped fixtures (environment of a module's Ray cluster)."""
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def _cache_dir(pytestconfig, tmp_path_factory) -> Path:
    """A cache folder keyed by torch's version and the recipes the fixtures train with."""
    import helpers
    import torch

    core = Path(__file__).resolve().parents[1] / "core"
    digest = hashlib.sha1(torch.__version__.encode())
    recipes = sorted((core / "models").glob("*.py")) + sorted((core / "training").glob("*.py"))
    for f in [*recipes, Path(__file__), Path(helpers.__file__)]:
        digest.update(f.read_bytes())
    try:
        root = Path(pytestconfig.cache.mkdir("napari-jpeg-restore"))
    except (AttributeError, OSError):  # -p no:cacheprovider
        root = tmp_path_factory.mktemp("weights")
    return root / digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def restorer_weights(pytestconfig, tmp_path_factory) -> Path:
    """A gray CRL-lite restorer (no encoder, one top block) briefly trained at Q10: it raises PSNR."""
    from helpers import train_tiny_restorer

    folder = _cache_dir(pytestconfig, tmp_path_factory)
    path = folder / "restorer.pt"
    if not path.is_file():
        folder.mkdir(parents=True, exist_ok=True)
        train_tiny_restorer(path, steps=50)
    return path


@pytest.fixture(scope="session")
def encoder_weights(tmp_path_factory) -> Path:
    """An untrained gray CRL-lite restorer with its quality encoder (for the inspector)."""
    import torch
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import save_weights

    torch.manual_seed(1)
    path = tmp_path_factory.mktemp("enc") / "crl-with-encoder.pt"
    save_weights(create_model("crl", "lite", 1).eval(), path)
    return path


@pytest.fixture
def notes(monkeypatch):
    """Warnings, errors and infos the plugin's widgets show, as (level, message)."""
    from napari_jpeg_restore import (
        _finetune_widget,
        _inspector_widget,
        _model_choice,
        _restore_widget,
    )

    seen: list[tuple[str, str]] = []
    for module in (_restore_widget, _inspector_widget, _model_choice, _finetune_widget):
        for level in ("warning", "error", "info"):
            if hasattr(module, f"show_{level}"):
                monkeypatch.setattr(module, f"show_{level}",
                                    lambda msg, _level=level: seen.append((_level, str(msg))))
    return seen
