"""Numeric precision of a run: ``auto`` means bf16 where the device computes it natively (CUDA
GPUs with bf16; CPUs with AVX512-BF16 or AMX), fp32 elsewhere (emulated bf16 is slower).
Imports torch only when a function runs: the command line reads :data:`PRECISIONS` at start-up."""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

NATIVE_BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
# What inference takes: fp16 for CUDA GPUs without bf16 (on most CPUs it is emulated: about 6x
# slower than fp32 on an AVX-512 Zen 4). Training takes auto, fp32 and bf16 (no loss scaling).
PRECISIONS = ("auto", "fp32", "bf16", "fp16")


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA) below its native bf16 kernels
NO_BF16_ISA_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI")


def native_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively: CUDA GPUs that say so; CPUs with AVX512-BF16 or
    AMX whose kernels are not capped below them (ATEN_CPU_CAPABILITY=avx2 or ONEDNN_MAX_CPU_ISA,
    as when a machine without them is emulated). Imports torch only for CUDA."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    aten = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
    if (kind != "cpu" or os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper() in NO_BF16_ISA_CAPS
            or aten in ("default", "avx2", "zvector", "vsx")):
        return False
    return any(f in cpu_flags() for f in NATIVE_BF16_CPU_FLAGS)


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` in :data:`PRECISIONS` (auto: bf16 where
    the device computes it natively, else fp32)."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 or fp16 autocast for ``precision`` bf16 or fp16; a no-op context for fp32."""
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(device.type, dtype=dtypes.get(precision, torch.bfloat16),
                          enabled=precision in dtypes)
