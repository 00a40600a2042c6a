"""Shipped weights: each registry model with weights loads offline and restores for real."""
import numpy as np
import pytest
import torch
from napari_jpeg_restore.core import registry, restore
from napari_jpeg_restore.core.engines.selection import have_openvino
from napari_jpeg_restore.core.evaluation.demo import SAMPLE
from napari_jpeg_restore.core.evaluation.metrics import psnr, psnr_b
from napari_jpeg_restore.core.imageio.reading import load_images, read_image
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.jpeg.codec import compress
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.engines.default_model import default_model_name
from napari_jpeg_restore.core.registry import (
    MODELS,
    ModelNotAvailableError,
    load_model,
)

SHIPPED = [m for m in MODELS.values() if m.has_weights and m.family != "cqe"]  # restorers
QUALITY_ENCODERS = [m for m in MODELS.values() if m.has_weights and m.family == "cqe"]


def _sample(channels):
    return to_channels(read_image(SAMPLE).array, channels)


def test_registry_is_honest_about_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)  # a release without weights files
    for info in MODELS.values():
        with pytest.raises(ModelNotAvailableError, match="no shipped weights"):
            load_model(info.name)
    with pytest.raises(ModelNotAvailableError, match="no shipped weights"):
        default_model_name(1)


def test_gpu_default_is_base_where_shipped_and_half_weights_load_as_fp32(monkeypatch, tmp_path):
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import save_weights

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    lite = create_model("crl", "lite", 1).eval()
    save_weights(lite, tmp_path / "crl-lite-gray.pt")
    assert default_model_name(1, "cuda") == "crl-lite-gray"  # no base shipped: lite everywhere
    save_weights(lite, tmp_path / "crl-base-gray.pt", half=True)
    assert default_model_name(1, "cuda") == "crl-base-gray" and default_model_name(1, "cpu") == "crl-lite-gray"
    packed = load_model("crl-base-gray")
    assert (tmp_path / "crl-base-gray.pt").stat().st_size < 0.6 * (tmp_path / "crl-lite-gray.pt").stat().st_size
    assert all(p.dtype == torch.float32 for p in packed.parameters()) and packed.meta["stored"] == "fp16"
    x = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        assert (packed(x) - lite(x)).abs().max() < 1e-2


def test_multi_scale_models_are_the_default_where_bf16_is_native_and_shipped(monkeypatch, tmp_path):
    from napari_jpeg_restore.core.engines.precision import ONEDNN_CAP, fast_bf16
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import save_weights

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)
    monkeypatch.delenv(ONEDNN_CAP, raising=False)
    save_weights(create_model("crl", "lite", 1), tmp_path / "crl-lite-gray.pt")
    save_weights(create_model("crl", "lite", 3), tmp_path / "crl-lite-color.pt")
    assert [default_model_name(c) for c in (1, 3)] == ["crl-lite-gray", "crl-lite-color"]  # none shipped
    save_weights(create_model("crl", "unet-narrow", 1), tmp_path / "crl-gray.pt")
    save_weights(create_model("luma-chroma", "unet-narrow", 3), tmp_path / "crl-color.pt")
    native = fast_bf16("cpu")
    assert [default_model_name(c) for c in (1, 3)] == (["crl-gray", "crl-color"] if native
                                                      else ["crl-lite-gray", "crl-lite-color"])
    assert default_model_name(3, "cuda") == "crl-color"  # no crl-base-color shipped
    monkeypatch.setenv(ONEDNN_CAP, "AVX2")  # bf16 kernels capped: a CPU without them
    assert [default_model_name(c) for c in (1, 3)] == ["crl-lite-gray", "crl-lite-color"]
    assert load_model(default_model_name(3, "cuda")).cfg.luma.enc_blocks == (0, 4, 6)


@pytest.mark.skipif(not SHIPPED, reason="no model weights are shipped in this checkout")
@pytest.mark.parametrize("info", SHIPPED, ids=lambda m: m.name)
def test_shipped_model_restores_the_sample(info):
    model = load_model(info.name)
    assert model.cfg.in_channels == info.channels
    assert info.path.stat().st_size <= 16 * 2**20  # ships in the wheel (fp16 packing allowed)
    clean = _sample(info.channels)
    jpeg = compress(clean, 10)
    out = restore(jpeg, info.name)
    assert psnr(clean, out) > psnr(clean, jpeg) + 0.3
    assert psnr_b(clean, out) > psnr_b(clean, jpeg)
    # 4 tiles on the 512 px sample: close to the whole picture's result, and never worse (the
    # multi-scale crl-gray sees past a 64 px overlap: 0.4 grey levels apart, 0.1 dB better tiled)
    tiled = restore(jpeg, info.name, tile=256, overlap=64)
    assert np.abs(tiled.astype(int) - out).mean() < 0.5
    assert psnr(clean, tiled) > psnr(clean, out) - 0.05


@pytest.mark.skipif(not SHIPPED, reason="no model weights are shipped in this checkout")
@pytest.mark.parametrize("info", SHIPPED, ids=lambda m: m.name)
def test_shipped_model_gains_on_validation_images(info, shared_datasets):
    folder = "val-gray-bsd68" if info.channels == 1 else "val-cbsd68"
    images = load_images(expand(str(shared_datasets / folder))[:6], info.channels)
    for q in (10, 40):
        gains = [psnr(im, restore(compress(im, q), info.name)) - psnr(im, compress(im, q)) for im in images]
        assert np.mean(gains) > 0.2, (q, gains)


@pytest.mark.skipif(not SHIPPED, reason="no model weights are shipped in this checkout")
@pytest.mark.parametrize("info", [m for m in SHIPPED if m.family == "crl"], ids=lambda m: m.name)
def test_self_ensemble_adds_psnr(info):
    clean = _sample(info.channels)[128:384, 128:384]
    jpeg = compress(clean, 10)
    plain = psnr(clean, restore(jpeg, info.name))
    assert psnr(clean, restore(jpeg, info.name, ensemble=True)) > plain + 0.01


@pytest.mark.skipif(not SHIPPED, reason="no model weights are shipped in this checkout")
@pytest.mark.parametrize("engine", ["torch", "openvino"])
@pytest.mark.parametrize("info", SHIPPED, ids=lambda m: m.name)
def test_every_engine_and_precision_stays_within_002_db_of_pytorch_fp32(info, engine, shared_datasets):
    """The guard of ``--precision auto`` and ``--engine auto``: against PyTorch in fp32, bf16
    (native here or emulated) and OpenVINO (fp32 and bf16) change the mean PSNR by less than
    0.02 dB on validation images at low and high quality; so does fp16 (for GPUs without bf16;
    emulated here, so on two images)."""
    if engine == "openvino" and not have_openvino():
        pytest.skip("OpenVINO is not installed here")
    folder = "val-gray-bsd68" if info.channels == 1 else "val-cbsd68"
    images = load_images(expand(str(shared_datasets / folder))[:3], info.channels)

    def scores(engine: str, precision: str, n: int = 3) -> list[float]:
        return [psnr(im, restore(j, info.name, device="cpu", precision=precision, engine=engine))
                for im, j in zip(images[:n], jpegs)]

    for q in (10, 90):
        jpegs = [compress(im, q) for im in images]
        reference = scores("torch", "fp32")
        for precision in ("fp32", "bf16") if engine == "openvino" else ("bf16",):
            assert abs(np.mean(scores(engine, precision)) - np.mean(reference)) < 0.02, (q, precision)
        fp16 = scores(engine, "fp16", 2)
        assert abs(np.mean(fp16) - np.mean(reference[:2])) < 0.02, (q, reference, fp16)


@pytest.mark.skipif(not QUALITY_ENCODERS, reason="no quality encoder is shipped in this checkout")
@pytest.mark.parametrize("info", QUALITY_ENCODERS, ids=lambda m: m.name)
def test_shipped_quality_encoder_estimates_quality_from_pixels(info):
    """On the bundled sample (not a training image), 64-px tiles at Q10...Q90: the estimate
    follows the quality and lands within 15 of it on average."""
    from napari_jpeg_restore.core.quality.embedding import embed
    from napari_jpeg_restore.core.quality.reading import tiles
    from scipy.stats import spearmanr

    clean = _sample(info.channels)[:256, :256]
    qualities, estimates = [], []
    for q in range(10, 91, 10):
        parts, _ = tiles(compress(clean, q), 64)
        estimates += list(embed(load_model(info.name), parts, device="cpu")[1])
        qualities += [q] * len(parts)
    q, est = np.array(qualities), np.array(estimates)
    assert spearmanr(q, est).statistic > 0.9 and np.abs(est - q).mean() < 15, np.abs(est - q).mean()


@pytest.mark.skipif(not QUALITY_ENCODERS, reason="no quality encoder is shipped in this checkout")
def test_a_picture_of_two_qualities_gives_a_heatmap_of_two_levels():
    """Left half written at Q10, right half at Q60: the per-tile heatmap (the inspector's)
    shows both."""
    from napari_jpeg_restore.core.generators import finish
    from napari_jpeg_restore.core.quality.embedding import tile_embedding_steps

    clean = _sample(1)[:256, :256]
    image = np.concatenate([compress(clean[:, :128], 10), compress(clean[:, 128:], 60)], axis=1)
    heat = finish(tile_embedding_steps(load_model("cqe-lite-gray"), image, 64, "cpu")).heatmap
    left, right = heat[:, :2], heat[:, 2:]
    assert heat.shape == (4, 4) and abs(np.median(left) - 10) <= 10 and abs(np.median(right) - 60) <= 12
    assert left.max() < right.min()  # two clearly separate levels
