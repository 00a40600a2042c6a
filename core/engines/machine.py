"""One line describing the machine, for training metadata and benchmark tables."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch

from .precision import KERNEL_CAPS, cpu_flags

# the vector and matrix extensions that decide which kernels run, in the order benchmarks list them
ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8",
             "amx_fp16")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe() -> str:
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    isa = torch.backends.cpu.get_cpu_capability()  # AVX2 / AVX512: what CPU kernels torch runs
    return (f"{cpu_model()} ({isa}), {os.cpu_count()} cores, {torch.get_num_threads()} torch threads{gpu}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def isa() -> str:
    """The CPU's :data:`ISA_FLAGS`, and any caps this process puts on its kernels (an emulated
    machine without some of them), e.g. ``avx2, avx512f, avx512_bf16``."""
    flags = cpu_flags()
    line = ", ".join(f for f in ISA_FLAGS if f in flags) or "none of AVX2/AVX-512/AMX"
    caps = {k: os.environ[k] for k in KERNEL_CAPS if k in os.environ}
    if caps:
        line += "; kernels capped: " + ", ".join(f"{k}={v}" for k, v in caps.items())
    return line
