"""Ray Train DDP (2 CPU workers, gloo) over the one training loop: identical ranks, recovery from a
killed worker, continuing a finished run, MoCo queue/key encoder kept identical, and the same
weights as `jpeg-restore train` on one worker."""
import contextlib
import json
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import psutil
import pytest
from PIL import Image

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'napari-jpeg-restore[ray]'")
pytest.importorskip("ray.train.torch", reason="needs ray[train]")

import torch
from helpers import synthetic
from napari_jpeg_restore.core.models import QualityEncoder, Restorer
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.training.options import TrainOptions
from napari_jpeg_restore.core.training.stages import train
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


def _kill_a_worker_after_first_checkpoint(run_dir: Path, killed: list[int]) -> None:
    """SIGKILL one Ray Train worker of this test's cluster (a descendant of this process) as
    soon as Ray Train has registered a checkpoint of the run."""
    snapshot = run_dir / "checkpoint_manager_snapshot.json"
    for _ in range(6000):  # bounded: 10 minutes at most
        with contextlib.suppress(OSError, ValueError):
            if json.loads(snapshot.read_text())["checkpoint_results"]:
                break
        time.sleep(0.1)
    workers = [p for p in psutil.Process().children(recursive=True)
               if "RayTrainWorker" in " ".join(p.cmdline())]
    victim = max(workers, key=lambda p: p.pid)
    victim.send_signal(signal.SIGKILL)
    killed.append(victim.pid)


def test_ddp_restorer_survives_a_killed_worker_and_continues(cluster, data, tmp_path):
    opts = TrainOptions(stage="restorer", data=data, out=str(tmp_path), encoder_mode="none",
                        steps=60, batch=6, patch=48, lr=3e-3, ckpt_every=10, log_every=5)
    killed: list[int] = []
    killer = threading.Thread(target=_kill_a_worker_after_first_checkpoint,
                              args=(tmp_path / "store" / "r", killed), daemon=True)
    killer.start()
    result, url = run_training(opts, storage=str(tmp_path / "store"), name="r", workers=2,
                               max_failures=2, log=lambda m: None)
    killer.join(timeout=60)
    m = result.metrics
    assert killed, "no worker was killed"
    assert m["step"] == 60 and m["world_size"] == 2
    assert 0 < m["start_step"] < 60 and m["start_step"] % 10 == 0  # restarted from a checkpoint
    assert m["param_spread"] == 0.0  # DDP kept every rank's parameters identical
    model = load_model(url)
    assert isinstance(model, Restorer) and model.meta["steps"] == 60
    assert model.meta["distributed"]["workers"] == 2 and model.meta["distributed"]["backend"] == "gloo"
    losses = [h["loss"] for h in model.meta["history"]]
    assert sum(losses[-5:]) / 5 < sum(losses[:5]) / 5  # the loss goes down
    with result.checkpoint.as_directory() as d:  # one checkpoint schema: load_model reads last.pt
        assert isinstance(load_model(Path(d) / "last.pt"), Restorer)

    opts.steps = 64  # continue the finished run: same storage and name, more steps
    result2, url2 = run_training(opts, storage=str(tmp_path / "store"), name="r", workers=2,
                                 log=lambda m: None)
    assert result2.metrics["start_step"] == 60 and result2.metrics["step"] == 64
    assert load_model(url2).meta["steps"] == 64 and Path(url2).is_file()


def test_one_loop_ray_and_cli_train_identical_weights(cluster, data, tmp_path):
    """A shipped-model recipe (fine-tune with --init, a quality range, inverse weighting, double
    compression) runs on Ray; 20 steps on one worker give the CLI's weights exactly."""
    base = train(TrainOptions(stage="arcnn", data=data, out=str(tmp_path / "base"), steps=2, batch=2,
                              patch=32))
    recipe = {"stage": "arcnn", "data": data, "steps": 20, "batch": 4, "patch": 40, "lr": 1e-3, "init": str(base),
                  "qualities": (20, 60, 20), "weighting": "inverse", "double": 0.3, "seed": 3}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray worker (--cpus-per-worker 1): same float sums
    try:
        local = load_model(train(TrainOptions(**recipe, out=str(tmp_path / "cli"))))
    finally:
        torch.set_num_threads(threads)
    _, url = run_training(TrainOptions(**recipe, out=str(tmp_path / "store")), storage=str(tmp_path / "store"),
                          name="same", workers=1, log=lambda m: None)
    remote = load_model(url)
    assert remote.meta["init"]["weights"] == str(base) and remote.meta["options"]["weighting"] == "inverse"
    for k, v in local.state_dict().items():
        assert torch.equal(remote.state_dict()[k], v), k


def test_ddp_moco_encoder_keeps_ranks_identical(cluster, data, tmp_path):
    opts = TrainOptions(stage="encoder", data=data, out=str(tmp_path), steps=2, batch=4,
                        patch=32, queue=64, lr=1e-3, ckpt_every=2, log_every=1)
    result, _ = run_training(opts, storage=str(tmp_path / "store"), name="e", workers=2,
                             out=str(tmp_path / "enc.pt"), log=lambda m: None)
    m = result.metrics
    assert m["param_spread"] == 0.0 and m["key_spread"] == 0.0 and m["queue_spread"] == 0.0
    with result.checkpoint.as_directory() as d:
        ckpt = torch.load(Path(d) / "last.pt", weights_only=False)
    assert ckpt["task"]["ptr"] == 2 * 4 * 2  # steps x batch x world keys entered the queue
    enc = load_model(tmp_path / "enc.pt")
    assert isinstance(enc, QualityEncoder) and "quality_probe_mae" in enc.meta


def test_ray_finetune_registers_the_best_held_out_weights(cluster, tmp_path, monkeypatch):
    """`jpeg-restore finetune` through Ray Train: two DDP workers train, rank 0 keeps the best
    held-out weights, the driver calibrates and registers the model by name."""
    from napari_jpeg_restore.core import registry
    from napari_jpeg_restore.core.training.options import FinetuneOptions
    from napari_jpeg_restore.distributed.finetune import run_finetune

    if not registry.MODELS["crl-lite-gray"].has_weights:
        pytest.skip("fine-tunes start from the shipped crl-lite-gray")
    monkeypatch.setenv(registry.USER_MODELS_ENV, str(tmp_path / "models"))
    mine = tmp_path / "mine"
    mine.mkdir()
    for i in range(5):
        Image.fromarray(synthetic(i, (192, 208))).save(mine / f"{i}.png")
    options = FinetuneOptions((str(mine),), "on-ray", source="crl-lite-gray", minutes=0.02,
                              calibration_crops=1)
    result = run_finetune(options, storage=str(tmp_path / "store"), workers=2, log=lambda m: None)
    model = load_model("on-ray")
    assert result.path == tmp_path / "models" / "on-ray.pt" and model.calibration is not None
    assert model.meta["distributed"]["workers"] == 2
    gains = model.meta["finetune"]["held_out_gain"]
    assert sum(gains["model"].values()) >= sum(gains["source"].values())
