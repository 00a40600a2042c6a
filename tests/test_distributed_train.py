"""Ray Train DDP (2 CPU workers, gloo) over core.training: identical ranks, failure recovery from
the last checkpoint, continuing a finished run, MoCo queue/key encoder kept identical."""
import shutil
import tempfile
from pathlib import Path

import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'napari-jpeg-restore[ray]'")
pytest.importorskip("ray.train.torch", reason="needs ray[train]")

import torch
from napari_jpeg_restore.core.models import QualityEncoder, Restorer
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.training.stages import TrainOptions
from napari_jpeg_restore.distributed._testing import synthetic
from napari_jpeg_restore.distributed.train import run_training

# The timeout only guards against hangs: with two busy processes on two cores the DDP
# restart test took over 400 s (about 90 s on a quiet machine).
pytestmark = [pytest.mark.ray, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def cluster(monkeypatch_module):
    # Our own temp dir (no sharing /tmp/ray with other clusters on the host), and room for a
    # busy machine to start workers slowly (Ray Train's default gives a worker group 60 s).
    monkeypatch_module.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    temp = tempfile.mkdtemp(prefix="jr-ray-")  # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    yield
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clean")
    for i in range(4):
        Image.fromarray(synthetic(i, (128, 160))).save(folder / f"{i}.png")
    return str(folder)


def test_ddp_restorer_failure_resume_and_continue(cluster, data, tmp_path):
    opts = TrainOptions(stage="restorer", data=data, out=str(tmp_path), encoder_mode="none",
                        steps=8, batch=6, patch=48, lr=3e-3)
    result, url = run_training(opts, storage=str(tmp_path / "store"), name="r", workers=2,
                               ckpt_every=2, log_every=1, max_failures=2, fail_at_step=5,
                               log=lambda m: None)
    m = result.metrics
    assert m["step"] == 8 and m["world_size"] == 2
    assert m["start_step"] == 4  # rank 1 died at step 5: the group restarted from step 4
    assert m["param_spread"] == 0.0  # DDP kept every rank's parameters identical
    model = load_model(url)
    assert isinstance(model, Restorer) and model.meta["steps"] == 8
    assert model.meta["distributed"]["workers"] == 2 and model.meta["distributed"]["backend"] == "gloo"
    losses = [h["loss"] for h in model.meta["history"]]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3  # the loss goes down

    opts.steps = 10  # continue the finished run: same storage and name, more steps
    result2, url2 = run_training(opts, storage=str(tmp_path / "store"), name="r", workers=2,
                                 ckpt_every=2, log_every=2, log=lambda m: None)
    assert result2.metrics["start_step"] == 8 and result2.metrics["step"] == 10
    assert load_model(url2).meta["steps"] == 10 and Path(url2).is_file()


def test_ddp_moco_encoder_keeps_ranks_identical(cluster, data, tmp_path):
    opts = TrainOptions(stage="encoder", data=data, out=str(tmp_path), steps=2, batch=4,
                        patch=32, queue=64, lr=1e-3)
    result, _ = run_training(opts, storage=str(tmp_path / "store"), name="e", workers=2,
                               ckpt_every=2, log_every=1, out=str(tmp_path / "enc.pt"),
                               log=lambda m: None)
    m = result.metrics
    assert m["param_spread"] == 0.0 and m["key_spread"] == 0.0 and m["queue_spread"] == 0.0
    with result.checkpoint.as_directory() as d:
        ckpt = torch.load(Path(d) / "last.pt", weights_only=False)
    assert ckpt["task"]["ptr"] == 2 * 4 * 2  # steps x batch x world keys entered the queue
    enc = load_model(tmp_path / "enc.pt")
    assert isinstance(enc, QualityEncoder) and "quality_probe_mae" in enc.meta
