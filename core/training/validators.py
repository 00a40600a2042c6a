"""Validation during training (PSNR of restored JPEGs; how well encoder embeddings order
qualities) and the encoder's linear quality read-out fitted after training."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ..engines.net import run_net
from ..engines.torch_net import TorchNet
from ..evaluation.metrics import psnr
from ..jpeg.codec import compress, ijg_table
from ..quality.embedding import embed, quality_crops, quality_ordering
from ..quality.reading import PROBE_CROP
from .data import to_tensor
from .options import VAL_QUALITIES


def restoration_validator(model: nn.Module, images: list[np.ndarray],
                          qualities: tuple[int, ...] = VAL_QUALITIES) -> Callable[[], dict[str, float]]:
    """Mean PSNR of JPEG and restored images per quality (whole images, libjpeg via Pillow; a
    table-conditioned model sees each JPEG's table)."""
    pairs = [(q, im, compress(im, q)) for q in qualities for im in images]

    def validate() -> dict[str, float]:
        net = TorchNet(model, next(model.parameters()).device, "fp32")
        out: dict[str, list[float]] = {}
        for q, clean, jpeg in pairs:
            tables = ijg_table(q).reshape(1, 64).astype(np.float32)
            y = run_net(net, to_tensor([jpeg]).numpy(), tables=tables)[0]
            y = np.round(y.clip(0, 1) * 255).astype(np.uint8)
            y = y[0] if y.shape[0] == 1 else y.transpose(1, 2, 0)
            out.setdefault(f"val_jpeg_q{q}", []).append(psnr(clean, jpeg))
            out.setdefault(f"val_psnr_q{q}", []).append(psnr(clean, y))
        return {k: float(np.mean(v)) for k, v in out.items()}
    return validate


class BestWeights:
    """A restoration validator that keeps the weights with the best mean gain over JPEG (across
    its qualities), those of its first check included: :meth:`keep` puts them back, so a run's
    result is never worse on the validation images than where it started."""

    def __init__(self, model: nn.Module, check: Callable[[], dict[str, float]]) -> None:
        self.model, self.check = model, check
        self.best: dict[int, float] | None = None
        self.best_check = self.checks = 0
        self.first_record: dict[str, float] = {}
        self._state: dict[str, torch.Tensor] | None = None

    @staticmethod
    def gains(record: dict[str, float]) -> dict[int, float]:
        """Gain over JPEG per quality (dB) from a validation record."""
        return {int(k[len("val_psnr_q"):]): v - record["val_jpeg_q" + k[len("val_psnr_q"):]]
                for k, v in record.items() if k.startswith("val_psnr_q")}

    def __call__(self) -> dict[str, float]:
        record = self.check()
        gains = self.gains(record)
        if self.best is None or np.mean(list(gains.values())) > np.mean(list(self.best.values())):
            self.best, self.best_check = gains, self.checks
            self._state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        out = {**record, **{f"val_gain_q{q}": g for q, g in gains.items()}}
        self.first_record = self.first_record or out
        self.checks += 1
        return out

    def keep(self, model: nn.Module) -> dict[str, object]:
        """Load the best weights into ``model``; returns what its metadata records of them."""
        if self._state is not None:
            model.load_state_dict(self._state)
        return {"kept": {"rule": "best mean validation gain",
                         "first_gain": self.gains(self.first_record),
                         "gain": self.best, "check": self.best_check, "checks": self.checks}}


def encoder_validator(model: nn.Module, images: list[np.ndarray]) -> Callable[[], dict[str, float]]:
    qualities = range(10, 91, 10)
    crops, labels = quality_crops(images, qualities)
    groups = np.arange(len(labels)) // len(qualities)

    def validate() -> dict[str, float]:
        e, _ = embed(model, crops, device=str(next(model.parameters()).device))
        scores = quality_ordering(e, labels, groups=groups)
        return {"val_spearman": scores["spearman_pc1"], "val_knn_acc": scores["knn_accuracy"],
                "val_spearman_within": scores["spearman_within_image"]}
    return validate


def fit_quality_probe(model: nn.Module, images: list[np.ndarray], ridge: float = 1e-3) -> float:
    """Fit the encoder's linear quality read-out (ridge regression on embeddings of training
    crops at Q5..Q95). Returns the mean absolute error in quality units."""
    crops, labels = quality_crops(images, range(5, 96, 5), crop=PROBE_CROP)
    e, _ = embed(model, crops, device=str(next(model.parameters()).device))
    x = np.hstack([e, np.ones((len(e), 1))])
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ labels.astype(np.float64))
    head = model.quality_head
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[:-1]).float()[None])
        head.bias.fill_(float(w[-1]))
    return float(np.abs(x @ w - labels).mean())
