"""Which shipped restorer runs when none is named: it depends on where it runs (a GPU; a CPU that
computes bf16 natively runs the larger multi-scale network at lite's speed elsewhere), so the
choice lives beside the engines, over the registry's names."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..registry import CUDA_MODELS, DEFAULT_MODELS, FAST_CPU_MODELS, MODELS, ModelNotAvailableError
from .precision import fast_bf16

if TYPE_CHECKING:
    import torch


def default_model_name(channels: int, device: str | torch.device = "cpu") -> str:
    """The default for gray (1) or colour (3) input, the first of these that is shipped:
    ``crl-base-*`` on CUDA, ``crl-*`` (multi-scale) on CUDA and on a CPU that computes bf16
    natively, ``crl-lite-*``; falls back to the other colour type's lite model."""
    kind = 3 if channels >= 3 else 1
    on_cuda = str(device).startswith("cuda")
    preferred = [CUDA_MODELS[kind]] if on_cuda else []
    if on_cuda or fast_bf16("cpu"):
        preferred.append(FAST_CPU_MODELS[kind])
    candidates = [*preferred, DEFAULT_MODELS[kind], DEFAULT_MODELS[4 - kind]]
    for name in candidates:
        if MODELS[name].has_weights:
            return name
    raise ModelNotAvailableError(
        f"no shipped weights for {candidates[-2]} or {candidates[-1]} yet; train one with "
        "`jpeg-restore train` and pass --model PATH")
