"""How to restore: one frozen set of options that the CLI, the napari widget and the Ray job each
build once and pass down to the core's restore functions."""
from __future__ import annotations

from dataclasses import dataclass

from ..jpeg.codec import DEFAULT_SKIP_ABOVE_QUALITY

# Tiles overlap by this much: 16 and 32 px give the same PSNR on val-gray-bsd68 at Q10/Q40 with
# 128-px tiles (±0.002 dB) and agree with the untiled result to 49-55 dB; 16 computes about 10%
# fewer pixels with 512-px tiles (docs/speed.md).
TILE_OVERLAP = 16


@dataclass(frozen=True)
class RestoreOptions:
    """How every picture of a run is restored.

    The network's run: ``tile`` and ``overlap`` (pixels), ``device`` (auto, cpu, cuda),
    ``engine`` (auto: OpenVINO on the CPU where installed, else PyTorch; torch; openvino),
    ``precision`` (fp32, bf16, fp16 or auto: bf16 where the device computes it natively; within
    0.02 dB of fp32 for the shipped models), ``ensemble`` (the mean over the eight rotations and
    flips: 8x the work, a little better).

    What a picture's compression is taken to be: ``assume_quality`` restores as if compressed at
    this quality, whatever the tables say (the strength control: lower is stronger);
    ``skip_above_quality`` leaves files above it (or without JPEG traces) untouched;
    ``calibrated`` lets a picture pass unchanged where the model's calibration shows no gain.

    Files: ``fmt`` (png, tiff), ``skip_existing``, ``allow_large`` (above the decompression-bomb
    limit) and fsspec ``storage_options``."""

    tile: int = 512
    overlap: int = TILE_OVERLAP
    device: str = "auto"
    engine: str = "auto"
    precision: str = "fp32"
    ensemble: bool = False
    assume_quality: int | None = None
    skip_above_quality: int | None = DEFAULT_SKIP_ABOVE_QUALITY
    calibrated: bool = True
    fmt: str = "png"
    skip_existing: bool = False
    allow_large: bool = False
    storage_options: dict | None = None
