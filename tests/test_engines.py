"""The engines that run a restorer (core.engines): OpenVINO gives PyTorch's output, converts a
weights file once, carries a table-conditioned model, refuses what it cannot run with one line,
and the command line restores without importing PyTorch at all."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import conditioned_restorer
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.engines.selection import (
    choose_engine,
    have_openvino,
    open_net,
    open_quality_net,
)
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.codec import compress, encode_jpeg
from napari_jpeg_restore.core.quality.reading import pixel_quality
from napari_jpeg_restore.core.registry import save_weights
from napari_jpeg_restore.core.restoration.file_restore import restore_file
from napari_jpeg_restore.core.restoration.options import RestoreOptions

pytestmark = pytest.mark.skipif(not have_openvino(), reason="OpenVINO is not installed here")


@pytest.fixture(scope="module")
def gray(sample_gray):
    return sample_gray[:200, :264]


def test_openvino_fp32_gives_pytorchs_output_and_bf16_its_psnr(gray):
    jpeg = compress(gray, 20)
    torch_out = restore(jpeg, "crl-lite-gray", engine="torch", device="cpu")
    ov32 = restore(jpeg, "crl-lite-gray", engine="openvino", device="cpu", precision="fp32")
    assert np.abs(ov32.astype(int) - torch_out).max() <= 1
    ov16 = restore(jpeg, "crl-lite-gray", engine="openvino", precision="bf16", ensemble=True)
    ref = restore(jpeg, "crl-lite-gray", engine="torch", ensemble=True)
    assert abs(psnr(gray, ov16) - psnr(gray, ref)) < 0.02
    assert psnr(gray, ov16) > psnr(gray, jpeg) + 0.5


def test_a_weights_file_is_converted_once_and_a_conditioned_model_sees_its_table(
        gray, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    weights = tmp_path / "conditioned.pt"
    save_weights(conditioned_restorer(), weights)
    jpeg = compress(gray, 20)
    ref = restore(jpeg, str(weights), engine="torch", assume_quality=20, calibrated=False)
    out = restore(jpeg, str(weights), engine="openvino", assume_quality=20, calibrated=False)
    assert np.abs(out.astype(int) - ref).max() <= 1
    other = restore(jpeg, str(weights), engine="openvino", assume_quality=60, calibrated=False)
    assert not np.array_equal(out, other)  # the table reaches the converted model
    folders = list((tmp_path / "cache" / "napari-jpeg-restore" / "openvino").iterdir())
    assert len(folders) == 1 and json.loads((folders[0] / "net.json").read_text())["conditioned"]
    stamp = (folders[0] / "model.xml").stat().st_mtime_ns
    net = open_net(str(weights), engine="openvino")
    assert net.engine == "openvino" and (folders[0] / "model.xml").stat().st_mtime_ns == stamp


def test_what_an_engine_cannot_run_is_refused_with_one_line(tmp_path, monkeypatch):
    from napari_jpeg_restore.core.models import create_model

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    encoder = tmp_path / "encoder.pt"
    save_weights(create_model("cqe", "lite", 1), encoder)
    with pytest.raises(TypeError, match="quality encoder"):
        open_net(str(encoder), engine="openvino")
    for engine in ("openvino", "torch"):  # an opened quality encoder is no restorer either
        with pytest.raises(TypeError, match="quality encoder"):
            open_net(open_quality_net(None, 1, engine=engine, device="cpu"))
    with pytest.raises(ValueError, match="runs on the CPU"):
        choose_engine("openvino", "cuda")
    with pytest.raises(ValueError, match="engine must be one of"):
        choose_engine("tensorrt")
    with pytest.raises(ValueError, match="not a module"):
        open_net(create_model("crl", "lite", 1), engine="openvino")
    assert open_net(create_model("crl", "lite", 1)).engine == "torch"  # a module runs in PyTorch


def test_the_command_line_restores_on_openvino_without_pytorch_or_openvinos_telemetry(gray, tmp_path):
    """OpenVINO's usage telemetry is on by default: a plain ``import openvino`` (outside CI)
    forks a sender and writes ~/intel; the command imports it with the telemetry left out."""
    src = tmp_path / "in.jpg"
    src.write_bytes(encode_jpeg(gray, 30))
    fine = tmp_path / "fine.jpg"  # Q75 and up: the quality encoder checks it was not re-saved
    fine.write_bytes(encode_jpeg(gray, 85))
    restore(compress(gray, 30), "crl-lite-gray", engine="openvino")  # converted (cached) already
    open_quality_net("cqe-lite-gray")
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "TF_BUILD", "JENKINS_URL")}
    env.update(HOME=str(home), XDG_CACHE_HOME=os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache"))
    code = ("import sys; from napari_jpeg_restore.core.cli import main; "
            f"rc = main(['restore', {str(src)!r}, {str(fine)!r}, '-o', {str(tmp_path / 'out')!r}, "
            "'--threads', '1']); "
            "import openvino; print('torch' in sys.modules, 'openvino_telemetry' in sys.modules, "
            "callable(openvino.convert_model)); sys.exit(rc)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False", "True"]  # OpenVINO's converter is still there
    assert not (home / "intel").exists()
    out = read_image(str(tmp_path / "out" / "in.png")).array
    assert psnr(gray, out) > psnr(gray, compress(gray, 30)) + 0.3
    assert (tmp_path / "out" / "fine.png").is_file()


def test_engine_torch_reads_a_files_quality_in_pytorch_too(gray, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # nothing converted here
    src = tmp_path / "fine.jpg"  # Q75 and up: the quality encoder checks it was not re-saved
    src.write_bytes(encode_jpeg(gray, 85))
    res = restore_file(str(src), str(tmp_path / "fine.png"), None, RestoreOptions(engine="torch", device="cpu"))
    assert res.status == "restored" and res.compression.source == "tables"
    assert not (tmp_path / "cache" / "napari-jpeg-restore" / "openvino").exists()


def test_the_shipped_quality_encoder_reads_on_openvino_what_it_reads_in_pytorch(gray):
    from napari_jpeg_restore.core.evaluation.demo import SAMPLE

    rgb = read_image(SAMPLE).array[..., :3]
    for image, channels in ((gray, 1), (rgb, 3)):
        nets = [open_quality_net(None, channels, engine=e, device="cpu") for e in ("openvino", "torch")]
        assert [n.engine for n in nets] == ["openvino", "torch"]
        for q in (20, 60, 90):
            seen = [pixel_quality(n, compress(image, q)) for n in nets]
            assert abs(seen[0] - seen[1]) < 0.1, (channels, q, seen)


def test_auto_falls_back_to_pytorch_where_openvino_cannot_keep_its_conversion(tmp_path, monkeypatch):
    from napari_jpeg_restore.core.models import create_model

    blocker = tmp_path / "a-file"  # the cache folder cannot be made (a read-only home, say)
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    weights = tmp_path / "restorer.pt"
    save_weights(create_model("arcnn", "lite", 1), weights)
    with pytest.warns(RuntimeWarning, match="running it in PyTorch"):
        assert open_net(str(weights)).engine == "torch"
    with pytest.raises(OSError):
        open_net(str(weights), engine="openvino")  # asked for by name: the error, not a fallback
