"""Networks run by PyTorch: a restorer (:class:`TorchNet`, under autocast) and a quality read-out."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from .device import thread_count
from .net import NOT_A_RESTORER
from .precision import autocast

if TYPE_CHECKING:
    import torch
    from torch import nn

@dataclass
class TorchNet:
    """A PyTorch module on ``device``, run as it is (see :func:`on_device`) under ``precision``'s
    autocast."""

    module: nn.Module
    device: torch.device
    precision: str
    engine: str = "torch"

    def __post_init__(self) -> None:
        import torch

        from ..models import QualityEncoder, takes_tables

        if isinstance(self.module, QualityEncoder):
            raise TypeError(NOT_A_RESTORER)
        if thread_count():
            torch.set_num_threads(thread_count())
        cfg = self.module.cfg
        self.in_channels = cfg.in_channels
        self.stride = max(8, getattr(cfg, "stride", 1))
        self.conditioned = takes_tables(cfg)
        self.calibration = getattr(self.module, "calibration", None)

    def __call__(self, x: np.ndarray, tables: np.ndarray | None = None) -> np.ndarray:
        import torch

        t = torch.from_numpy(np.ascontiguousarray(x)).to(self.device)
        with torch.inference_mode(), autocast(self.precision, self.device):
            if tables is not None and self.conditioned:
                y = self.module(t, torch.from_numpy(np.ascontiguousarray(tables)).to(self.device))
            else:
                y = self.module(t)
        return y.float().cpu().numpy()


@dataclass
class TorchQualityNet:
    """A quality encoder's read-out (:class:`.models.QualityReadout`) run by PyTorch in fp32."""

    module: nn.Module
    device: torch.device
    engine: str = "torch"
    readout: bool = True  # not a restorer (:func:`open_net` refuses it)

    def __post_init__(self) -> None:
        self.in_channels = self.module.cfg.in_channels
        self.stride = self.module.cfg.stride

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            y = self.module(torch.from_numpy(np.ascontiguousarray(x)).to(self.device))
        return y.float().cpu().numpy()


def on_device(module: nn.Module, device: torch.device) -> nn.Module:
    """``module`` on ``device`` in eval mode; on the CPU its weights take the channels-last
    layout, oneDNN's fast path for convolutions (same numbers; 1.1-1.8x faster on AVX2 EPYC)."""
    import torch

    layout = torch.channels_last if device.type == "cpu" else torch.preserve_format
    return module.to(device, memory_format=layout).eval()
