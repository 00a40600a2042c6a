"""Full-reference metrics on uint8 images (PSNR, SSIM, PSNR-B).

The conventions are those of the JPEG-artifact literature (ARCNN, QGAC, FBCNN): SSIM uses an
11x11 Gaussian window (sigma 1.5) over the valid region only; colour SSIM and PSNR-B are means
over channels, colour PSNR uses the MSE over all channels. Everything is computed in float64.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

BLOCK = 8  # JPEG block size for PSNR-B
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def _pair(ref: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both images as float64 HxWxC."""
    ref, test = np.asarray(ref, np.float64), np.asarray(test, np.float64)
    if ref.shape != test.shape or ref.ndim not in (2, 3):
        raise ValueError("need two HxW or HxWxC images of one shape, "
                         f"got {ref.shape} and {test.shape}")
    return (ref[..., None], test[..., None]) if ref.ndim == 2 else (ref, test)


def _psnr(mse: float, data_range: float) -> float:
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def psnr(ref: np.ndarray, test: np.ndarray, data_range: float = 255) -> float:
    """10·log10(R² / MSE), the MSE taken over all pixels and channels."""
    x, y = _pair(ref, test)
    return _psnr(float(np.mean((x - y) ** 2)), data_range)


def _gaussian_window() -> np.ndarray:
    x = np.arange(_WINDOW) - _WINDOW // 2
    g = np.exp(-(x**2) / (2 * _SIGMA**2))
    return g / g.sum()


def _filter_valid(a: np.ndarray, g: np.ndarray) -> np.ndarray:
    """Separable correlation with ``g`` along both axes, 'valid' region (no padding)."""
    a = sliding_window_view(a, len(g), axis=0) @ g
    return sliding_window_view(a, len(g), axis=1) @ g


def ssim(ref: np.ndarray, test: np.ndarray) -> float:
    """Mean SSIM (Wang et al. 2004) for 0..255 images: Gaussian 11x11 window, sigma 1.5,
    K1 = 0.01, K2 = 0.03, valid borders, population (co)variances; colour: mean over channels."""
    x, y = _pair(ref, test)
    if min(x.shape[:2]) < _WINDOW:
        raise ValueError(f"SSIM needs at least {_WINDOW}x{_WINDOW} pixels, got {x.shape[:2]}")
    g = _gaussian_window()
    c1, c2 = (_K1 * 255) ** 2, (_K2 * 255) ** 2
    scores = []
    for a, b in zip(np.moveaxis(x, 2, 0), np.moveaxis(y, 2, 0), strict=True):
        mu_a, mu_b = _filter_valid(a, g), _filter_valid(b, g)
        var_a = _filter_valid(a * a, g) - mu_a**2
        var_b = _filter_valid(b * b, g) - mu_b**2
        cov = _filter_valid(a * b, g) - mu_a * mu_b
        s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)
             / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)))
        scores.append(s.mean())
    return float(np.mean(scores))


def blocking_effect_factor(plane: np.ndarray, block: int = BLOCK) -> float:
    """BEF (Yim & Bovik 2011) of one channel: eta·(D_B − D_Bc), or 0 when D_B <= D_Bc.

    D_B is the mean squared difference of horizontally and vertically neighbouring pixels that
    straddle a block boundary (columns/rows ``k·block − 1 | k·block``), D_Bc that of all other
    neighbouring pairs, eta = log2(block) / log2(min(H, W)). As in the reference code behind the
    published tables (QGAC's ``psnrb``, FBCNN's ``calculate_psnrb``), the boundary pairs are
    counted as H·(W//B − 1) + W·(H//B − 1) even when a side is not a multiple of B; this
    reproduces their numbers (e.g. BSD68 gray at Q10: 24.30 dB).
    """
    im = np.asarray(plane, np.float64)
    h, w = im.shape
    dh = (im[:, 1:] - im[:, :-1]) ** 2
    dv = (im[1:] - im[:-1]) ** 2
    across_h = np.arange(w - 1) % block == block - 1
    across_v = np.arange(h - 1) % block == block - 1
    n_b = h * (w // block - 1) + w * (h // block - 1)
    n_bc = h * (w - 1) + w * (h - 1) - n_b
    if n_b <= 0 or n_bc <= 0:
        return 0.0
    d_b = (dh[:, across_h].sum() + dv[across_v].sum()) / n_b
    d_bc = (dh[:, ~across_h].sum() + dv[~across_v].sum()) / n_bc
    return float(np.log2(block) / np.log2(min(h, w)) * (d_b - d_bc)) if d_b > d_bc else 0.0


def psnr_b(ref: np.ndarray, test: np.ndarray) -> float:
    """PSNR-B: 10·log10(255² / (MSE + BEF(test))) per channel, averaged over channels."""
    x, y = _pair(ref, test)
    return float(np.mean([_psnr(float(np.mean((x[..., c] - y[..., c]) ** 2))
                                + blocking_effect_factor(y[..., c]), 255)
                          for c in range(x.shape[2])]))


def evaluate(ref: np.ndarray, test: np.ndarray) -> dict[str, float]:
    """{"psnr", "ssim", "psnr_b"} of ``test`` against ``ref``."""
    return {"psnr": psnr(ref, test), "ssim": ssim(ref, test), "psnr_b": psnr_b(ref, test)}
