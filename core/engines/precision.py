"""Numeric precision of a run: ``auto`` means bf16 where the device computes it natively and
faster than fp32 (CUDA GPUs with bf16; CPUs with AMX; AVX512-BF16 CPUs such as AMD Zen 4: see
:func:`fast_bf16`), fp32 elsewhere.
Imports torch only when a function runs: the command line reads :data:`PRECISIONS` at start-up."""
from __future__ import annotations

import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

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


# The environment variables that cap the CPU kernels (PyTorch's ATen; oneDNN, which OpenVINO
# honours too), as when a machine without some instructions is emulated
ATEN_CAP, ONEDNN_CAP = "ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA"
KERNEL_CAPS = (ATEN_CAP, ONEDNN_CAP)

# ONEDNN_MAX_CPU_ISA values below oneDNN's bf16 kernels, and below its AMX kernels
NO_BF16_ISA_CAPS = ("SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                    "AVX512_CORE_VNNI")
NO_AMX_ISA_CAPS = NO_BF16_ISA_CAPS + ("AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX10_1_512")


def fast_bf16(device: str | torch.device) -> bool:
    """Whether ``device`` computes bf16 natively and faster than fp32: CUDA GPUs that say so; CPUs
    with AMX; CPUs with AVX512-BF16 alone unless their cores are of AMX's generation (AVX512-FP16:
    an Intel Xeon whose AMX is hidden or capped ran bf16 at 0.7x fp32, where AMD Zen 4 runs it at
    1.6-2x; bench/results/speed.md). Kernels capped below these instructions (ATEN_CPU_CAPABILITY=avx2,
    ONEDNN_MAX_CPU_ISA, as when such a machine is emulated) count as missing. Imports torch only
    for CUDA."""
    kind = str(device).split(":")[0]
    if kind == "cuda":
        import torch

        return torch.cuda.is_bf16_supported()
    aten = os.environ.get(ATEN_CAP, "").lower()
    if kind != "cpu" or aten in ("default", "avx2", "zvector", "vsx"):
        return False
    flags, cap = cpu_flags(), os.environ.get(ONEDNN_CAP, "").upper()
    if "amx_bf16" in flags and cap not in NO_AMX_ISA_CAPS:
        return True
    return "avx512_bf16" in flags and "avx512_fp16" not in flags and cap not in NO_BF16_ISA_CAPS


def resolve_precision(precision: str, device: str | torch.device) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` in :data:`PRECISIONS` (auto: bf16 where
    :func:`fast_bf16`, else fp32)."""
    if precision == "auto":
        return "bf16" if fast_bf16(device) else "fp32"
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device) -> AbstractContextManager:
    """bf16 or fp16 autocast for ``precision`` bf16 or fp16; a no-op context for fp32."""
    import torch

    dtypes = {"bf16": torch.bfloat16, "fp16": torch.float16}
    return torch.autocast(device.type, dtype=dtypes.get(precision, torch.bfloat16),
                          enabled=precision in dtypes)
