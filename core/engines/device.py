"""Where networks run: the device (CUDA or the CPU) and the CPU threads every engine uses."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

DEVICES = ("auto", "cpu", "cuda")  # what --device and the plugin offer
_threads: int | None = None  # --threads: both engines' CPU threads (None: one per physical core)


def set_threads(n: int | None) -> None:
    """CPU threads for every engine opened from now on (and PyTorch's, if it is loaded)."""
    global _threads
    _threads = n
    if n and "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)


def cuda_present() -> bool:
    """Whether PyTorch sees a CUDA GPU; answered without importing PyTorch where no GPU driver
    is installed (Linux without /dev/nvidiactl or /dev/kfd, macOS)."""
    if "torch" not in sys.modules:
        if sys.platform == "darwin" or (sys.platform.startswith("linux") and not any(
                os.path.exists(p) for p in ("/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/kfd"))):
            return False
    import torch

    return torch.cuda.is_available()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto``: CUDA when PyTorch sees a GPU, else the CPU; a CUDA request without one raises."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if cuda_present() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("CUDA was requested but no CUDA device is available")
    return device


def thread_count() -> int | None:
    """The threads :func:`set_threads` asked for (None: the engines' own default)."""
    return _threads
