"""Fine-tuning on a user's own images: the plan (split, qualities below the images' own
compression, skipped files), tiny real fine-tunes from the shipped gray model registered by
name (CLI, Ctrl-C, the generator the napari widget runs), the best-weights guarantee, 16-bit."""
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import interrupt_at, synthetic
from napari_jpeg_restore.core import registry
from napari_jpeg_restore.core.cli import main
from napari_jpeg_restore.core.engines.default_model import default_model_name
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.registry import load_model, resolve_weights
from napari_jpeg_restore.core.restoration.image_restore import restore
from napari_jpeg_restore.core.training.finetune import (
    FinetuneOptions,
    finetune,
    finetune_steps,
    plan_finetune,
)

pytestmark = pytest.mark.skipif(not registry.MODELS["crl-lite-gray"].has_weights,
                                reason="fine-tunes start from the shipped crl-lite-gray")
TINY = {"minutes": 0.02, "calibration_crops": 1, "source": "crl-lite-gray"}


@pytest.fixture
def models(tmp_path, monkeypatch) -> Path:
    """An empty user models folder for the test."""
    folder = tmp_path / "models"
    monkeypatch.setenv(registry.USER_MODELS_ENV, str(folder))
    return folder


@pytest.fixture
def images(tmp_path) -> Path:
    """Five 192x208 gray pictures, never compressed."""
    folder = tmp_path / "mine"
    for i in range(5):
        write_image(folder / f"im{i}.png", synthetic(i, (192, 208)))
    return folder


def test_plan_splits_skips_bad_files_and_trains_below_the_images_own_quality(tmp_path, models,
                                                                            images):
    from PIL import Image

    (images / "broken.png").write_bytes(b"not a png")
    Image.fromarray(synthetic(9, (64, 64))).save(images / "small.png")
    lines: list[str] = []
    plan = plan_finetune(FinetuneOptions((str(images),), "mine", **TINY), tmp_path / "run",
                         lines.append)
    assert set(plan.skipped) == {str(images / "broken.png"), str(images / "small.png")}
    assert sum("skipped" in line for line in lines) == 2
    assert len(plan.held_out) == 1 and len(plan.train) == 4
    assert not set(plan.held_out) & set(plan.train)
    assert plan.train_options.qualities[:2] == (10, 90) and plan.own_quality is None
    assert plan == plan_finetune(FinetuneOptions((str(images),), "mine", **TINY), tmp_path / "run",
                                 lines.append)  # the split is repeatable

    jpegs = tmp_path / "jpegs"
    jpegs.mkdir()
    for i in range(3):
        Image.fromarray(synthetic(i, (192, 208))).save(jpegs / f"im{i}.jpg", quality=60)
    plan = plan_finetune(FinetuneOptions((str(jpegs),), "mine", **TINY), tmp_path / "run", lines.append)
    assert plan.own_quality == 60 and plan.train_options.qualities[:2] == (10, 50)
    assert plan.train_options.val_qualities == (10, 20, 30, 40, 50)
    assert "Q60" in lines[-1]
    assert not plan.train_options.recolour  # gray: no hues to turn

    colour = tmp_path / "colour"
    for i in range(3):
        write_image(colour / f"c{i}.png", np.stack([synthetic(i + k, (192, 208)) for k in range(3)], -1))
    opts = {**TINY, "source": "auto"}
    plan = plan_finetune(FinetuneOptions((str(colour),), "mine", **opts), tmp_path / "run", print)
    assert plan.source == default_model_name(3) and plan.train_options.recolour
    plan = plan_finetune(FinetuneOptions((str(colour),), "mine", recolour=False, **opts),
                         tmp_path / "run", print)
    assert not plan.train_options.recolour

    with pytest.raises(ValueError, match="at least 2"):
        plan_finetune(FinetuneOptions((str(images / "im0.png"),), "x", **TINY), tmp_path, print)
    with pytest.raises(ValueError, match="shipped"):
        plan_finetune(FinetuneOptions((str(images),), "crl-lite-gray", **TINY), tmp_path, print)
    with pytest.raises(ValueError, match="use 1-64"):
        plan_finetune(FinetuneOptions((str(images),), "../evil", **TINY), tmp_path, print)


def test_finetune_from_the_cli_registers_a_model_by_name(tmp_path, models, images, capsys):
    assert main(["finetune", str(images), "--name", "mine", "--from", "crl-lite-gray",
                 "--minutes", "0.02", "--threads", "2"]) == 0
    out = capsys.readouterr().out
    assert "held-out gain before" in out and "registered mine" in out
    for name in ("mine.pt", "mine.calibration.json", "mine.md"):
        assert (models / name).is_file()
    assert not list(models.glob(".*"))  # the partial run folder is gone
    assert resolve_weights("mine") == models / "mine.pt"
    model = load_model("mine")
    assert model.calibration is not None
    ft = model.meta["finetune"]
    assert ft["source"] == "crl-lite-gray" and len(ft["held_out"]) == 1 and len(ft["images"]) == 4
    # never worse on the held-out images than the source (its weights are the first candidate)
    gains = ft["held_out_gain"]
    assert np.mean(list(gains["model"].values())) >= np.mean(list(gains["source"].values()))
    assert "Held-out gain" in (models / "mine.md").read_text()
    photo = ft["photograph_gain"]  # the bundled photograph, before and after
    assert set(photo["source"]) == set(photo["model"]) == {10, 20, 30, 40}
    assert photo["source"][10] > 0.5  # the shipped model gains on it

    assert main(["models"]) == 0
    listing = capsys.readouterr().out
    assert "mine" in listing and "your model" in listing and str(models) in listing
    jpeg = tmp_path / "q20.jpg"
    from PIL import Image

    Image.fromarray(synthetic(7, (192, 208))).save(jpeg, quality=20)
    assert main(["restore", str(jpeg), "-o", str(tmp_path / "out"), "--model", "mine"]) == 0
    assert (tmp_path / "out" / "q20.png").is_file()
    # the name is taken now; --replace overwrites
    assert main(["finetune", str(images), "--name", "mine", "--minutes", "0.01"]) == 2
    assert "exists" in capsys.readouterr().err


def test_a_colour_model_on_a_gray_restorer_fine_tunes_as_one(tmp_path, models):
    """A luma-chroma source (as crl-color) fine-tunes into a luma-chroma model that restores."""
    from napari_jpeg_restore.core.models import create_model

    gray = load_model("crl-lite-gray")
    source = create_model("luma-chroma", channels=3, luma=gray.cfg)
    source.luma.load_state_dict(gray.state_dict())
    registry.save_weights(source, tmp_path / "colour.pt", {"options": {"patch": 64}})
    for i in range(3):
        write_image(tmp_path / "rgb" / f"im{i}.png", np.dstack([synthetic(i + c, (192, 208)) for c in range(3)]))
    result = finetune(FinetuneOptions((str(tmp_path / "rgb"),), "colour-mine",
                                      **{**TINY, "source": str(tmp_path / "colour.pt")}), log=lambda _l: None)
    model = load_model("colour-mine")
    assert type(model).__name__ == "LumaChroma" and result.steps > 0
    clean = np.dstack([synthetic(9 + c, (96, 96)) for c in range(3)])
    from napari_jpeg_restore.core.jpeg.codec import compress

    assert restore(compress(clean, 10), "colour-mine").shape == clean.shape


def test_best_weights_are_kept_when_training_only_harms(tmp_path, models, images):
    """At an absurd learning rate every step ruins the model: the source's weights are kept."""
    result = finetune(FinetuneOptions((str(images),), "ruined", lr=1.0, **TINY), log=lambda _l: None)
    assert not result.improved and result.after == result.before
    source, kept = load_model("crl-lite-gray"), load_model("ruined")
    for name, value in source.state_dict().items():
        torch.testing.assert_close(kept.state_dict()[name], value)


def test_ctrl_c_stops_training_early_and_keeps_the_model(tmp_path, models, images):
    env = {**os.environ, registry.USER_MODELS_ENV: str(models)}
    cmd = [sys.executable, "-m", "napari_jpeg_restore.core.cli", "finetune", str(images),
           "--name", "stopped", "--from", "crl-lite-gray", "--minutes", "30"]
    proc = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    interrupt_at(proc, proc.stderr, "held-out gain of")  # after the first held-out check
    out, rest = proc.communicate(timeout=600)
    assert proc.returncode == 0, rest
    assert "stopping after this step" in rest and "registered stopped" in out
    assert load_model("stopped").meta["finetune"]["minutes"] == 30
    assert load_model("stopped").meta["steps"] < 10**6


def test_finetune_steps_reports_progress_and_stops_on_the_event(tmp_path, models, images):
    stop = threading.Event()
    steps = finetune_steps(FinetuneOptions((str(images),), "gen", **{**TINY, "minutes": 30}), stop)
    phases = []
    while True:
        try:
            event = next(steps)
        except StopIteration as end:
            result = end.value
            break
        phases.append(event.phase)
        if event.phase == "train" and event.done >= 2:
            assert event.before  # the source's held-out gain, measured before the first step
            stop.set()
    assert "train" in phases and phases[-1] == "calibrate"
    assert result.path == models / "gen.pt" and result.path.is_file()


def test_sixteen_bit_gray_trains_and_restores_with_the_restore_paths_scaling(tmp_path, models):
    """12-bit data in 16-bit PNGs (a fluorescence camera's): mapped by 4095, as a restore does."""
    folder = tmp_path / "fluo"
    for i in range(3):
        write_image(folder / f"cell{i}.png", (synthetic(i, (192, 208)).astype(np.uint16) * 16))
    raw = read_image(folder / "cell0.png").array
    assert raw.dtype == np.uint16 and raw.max() < 4096
    np.testing.assert_array_equal(to_channels(raw, 1),
                                  np.round(raw / 4095 * 255).astype(np.uint8))
    result = finetune(FinetuneOptions((str(folder),), "fluo", **TINY), log=lambda _l: None)
    out = restore(raw, load_model(result.name), tile=256)
    assert out.dtype == np.uint16 and out.shape == raw.shape and out.max() < 4200


def test_user_models_folder_lists_weights_files_and_skips_others(models, restorer_weights):
    import shutil

    models.mkdir()
    shutil.copyfile(restorer_weights, models / "mine.pt")
    (models / "junk.pt").write_bytes(b"not a weights file")
    (models / ".half.partial").mkdir()  # a fine-tune in progress
    names = [m.name for m in registry.available_models()]
    assert names[: len(registry.MODELS)] == list(registry.MODELS) and names[-1] == "mine"
    mine = registry.available_models()[-1]
    assert not mine.shipped and mine.has_weights and mine.channels == 1 and mine.family == "crl"
    assert resolve_weights("mine") == models / "mine.pt"
    with pytest.raises(registry.ModelNotAvailableError, match="not a registry name"):
        resolve_weights("nobody")
