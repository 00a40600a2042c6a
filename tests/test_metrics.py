import math

import numpy as np
import pytest
from napari_jpeg_restore.core.evaluation.metrics import (
    blocking_effect_factor,
    evaluate,
    psnr,
    psnr_b,
    ssim,
)
from napari_jpeg_restore.core.pixels import RGB_TO_YCC
from PIL import Image


@pytest.fixture
def gray() -> np.ndarray:
    return np.random.default_rng(0).integers(10, 240, (32, 40), dtype=np.uint8)


def _ssim_direct(x: np.ndarray, y: np.ndarray) -> float:
    """SSIM by the definition: one weighted 11x11 window at a time, no padding."""
    t = np.arange(11) - 5
    w = np.outer(*2 * [np.exp(-t**2 / (2 * 1.5**2))])
    w /= w.sum()
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    x, y = x.astype(float), y.astype(float)
    values = []
    for i in range(x.shape[0] - 10):
        for j in range(x.shape[1] - 10):
            a, b = x[i:i + 11, j:j + 11], y[i:i + 11, j:j + 11]
            ma, mb = (w * a).sum(), (w * b).sum()
            va, vb = (w * (a - ma) ** 2).sum(), (w * (b - mb) ** 2).sum()
            cov = (w * (a - ma) * (b - mb)).sum()
            values.append((2 * ma * mb + c1) * (2 * cov + c2)
                          / ((ma**2 + mb**2 + c1) * (va + vb + c2)))
    return float(np.mean(values))


def test_psnr_of_a_constant_offset(gray):
    assert psnr(gray, gray + 5) == pytest.approx(20 * math.log10(255 / 5))  # MSE = 25
    assert psnr(gray, gray) == math.inf
    assert psnr(gray, gray + 5, data_range=1020) == pytest.approx(20 * math.log10(1020 / 5))


def test_ssim_identical_is_one(gray):
    assert ssim(gray, gray) == pytest.approx(1.0)
    colour = np.stack([gray, gray[::-1], gray[:, ::-1]], axis=2)
    assert ssim(colour, colour) == pytest.approx(1.0)


def test_ssim_matches_the_definition(gray):
    noise = np.random.default_rng(1).normal(0, 20, gray.shape)
    noisy = np.clip(gray + noise, 0, 255).astype(np.uint8)
    assert ssim(gray, noisy) == pytest.approx(_ssim_direct(gray, noisy), rel=1e-10)
    colour, noisy3 = (np.stack([a, np.roll(a, 3, axis=1), 255 - a], axis=2) for a in (gray, noisy))
    expected = np.mean([_ssim_direct(colour[..., c], noisy3[..., c]) for c in range(3)])
    assert ssim(colour, noisy3) == pytest.approx(expected, rel=1e-10)


def test_bef_by_hand():
    step = np.zeros((16, 16))
    step[:, 8:] = 10  # one vertical block edge, 16 pairs differing by 10
    # D_B = 16·100 / (16·1 + 16·1) = 50, D_Bc = 0, eta = log2(8)/log2(16) = 3/4
    assert blocking_effect_factor(step) == pytest.approx(37.5)
    blocky = step.astype(np.uint8)
    assert psnr_b(blocky, blocky) == pytest.approx(10 * math.log10(255**2 / 37.5))  # MSE 0 + BEF
    shifted = np.zeros((16, 16))
    shifted[:, 5:] = 10  # the same edge inside a block: no blocking
    assert blocking_effect_factor(shifted) == 0.0


def test_psnr_b_equals_psnr_without_blockiness():
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 3, (64, 1))  # equal steps on and off the grid
    assert blocking_effect_factor(ramp) == 0.0
    assert psnr_b(ramp, ramp + 3) == pytest.approx(psnr(ramp, ramp + 3))


def test_psnr_b_below_psnr_for_blocky_images():
    y, x = np.mgrid[:64, :64]
    ref = (2 * x + y).astype(np.uint8)  # smooth: averaging 8x8 blocks makes steps on the grid
    blocks = ref.reshape(8, 8, 8, 8).mean(axis=(1, 3)).round().astype(np.uint8)
    blocky = np.kron(blocks, np.ones((8, 8), np.uint8))
    assert psnr_b(ref, blocky) < psnr(ref, blocky) - 0.5
    colour_ref, colour_blocky = np.stack([ref] * 3, 2), np.stack([blocky] * 3, 2)
    assert psnr_b(colour_ref, colour_blocky) == pytest.approx(psnr_b(ref, blocky))


def test_evaluate_and_shape_checks(gray):
    scores = evaluate(gray, gray // 2 * 2)
    assert set(scores) == {"psnr", "ssim", "psnr_b"}
    assert all(isinstance(v, float) for v in scores.values())
    with pytest.raises(ValueError):
        psnr(gray, gray[:-1])
    with pytest.raises(ValueError):
        ssim(gray[:8, :8], gray[:8, :8])


_YCC_TO_RGB = np.linalg.inv(RGB_TO_YCC)
_CHROMA_OFFSET = np.array([0.0, 128.0, 128.0])


def rgb_to_ycbcr(rgb: np.ndarray) -> np.ndarray:
    """(The JFIF conversion as the literature's references use it, built on the product's
    matrix.) Full-range BT.601 YCbCr as JPEG (JFIF) codes it; HxWx3 0..255 in, float64 out (unrounded)."""
    return np.asarray(rgb, np.float64) @ RGB_TO_YCC.T + _CHROMA_OFFSET


def ycbcr_to_rgb(ycc: np.ndarray) -> np.ndarray:
    """Exact inverse of :func:`rgb_to_ycbcr`; float64 out (round and clip for uint8)."""
    return (np.asarray(ycc, np.float64) - _CHROMA_OFFSET) @ _YCC_TO_RGB.T


def rgb_to_y(rgb: np.ndarray) -> np.ndarray:
    """Studio-swing BT.601 luma (16..235) as MATLAB's ``rgb2ycbcr``, the "Y channel" papers
    evaluate on; HxWx3 0..255 in, HxW float64 out (unrounded; MATLAB rounds uint8 output)."""
    return 16.0 + np.asarray(rgb, np.float64) @ np.array([65.481, 128.553, 24.966]) / 255.0


def test_colour_conversions():
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0]]], dtype=np.uint8)
    ycc = rgb_to_ycbcr(rgb)
    np.testing.assert_allclose(ycc[0, 0], [255, 128, 128], atol=1e-9)
    red = [0.299 * 255, 128 - 0.168736 * 255, 128 + 0.5 * 255]
    np.testing.assert_allclose(ycc[0, 2], red, atol=1e-9)
    np.testing.assert_allclose(ycbcr_to_rgb(ycc), rgb, atol=1e-9)
    np.testing.assert_allclose(rgb_to_y(rgb)[0], [235, 16, 16 + 65.481], atol=1e-9)
    rand = np.random.default_rng(3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    pillow = np.asarray(Image.fromarray(rand).convert("YCbCr")).astype(float)  # JFIF, fixed point
    assert np.abs(rgb_to_ycbcr(rand) - pillow).max() < 1.01  # Pillow truncates


def test_bsd68_gray_q10_calibration(shared_datasets):
    """Reference numbers of the JPEG-artifact literature for BSD68 gray, libjpeg Q10."""
    cv2 = pytest.importorskip("cv2")
    folder = shared_datasets / "val-gray-bsd68"
    files = sorted(folder.glob("*.png"))
    if len(files) != 68:
        pytest.skip(f"expected the 68 BSD68 images in {folder}")
    scores = []
    for f in files:
        clean = cv2.imread(str(f), cv2.IMREAD_GRAYSCALE)
        _, data = cv2.imencode(".jpg", clean, [cv2.IMWRITE_JPEG_QUALITY, 10])
        scores.append(evaluate(clean, cv2.imdecode(data, cv2.IMREAD_GRAYSCALE)))
    mean = {k: np.mean([s[k] for s in scores]) for k in scores[0]}
    rounded = round(mean["psnr"], 2), round(mean["ssim"], 3), round(mean["psnr_b"], 2)
    assert rounded == (26.97, 0.759, 24.30)
