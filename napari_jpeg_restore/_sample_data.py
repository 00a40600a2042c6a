"""Sample data: the bundled IHC image (core/data/ihc.png) and its JPEG at quality 10."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_QUALITY = 10


def ihc_path() -> Path:
    from napari_jpeg_restore import core

    return Path(core.__file__).parent / "data" / "ihc.png"


def _ihc() -> np.ndarray:
    from napari_jpeg_restore.core.imageio.reading import read_image

    return read_image(ihc_path()).array[..., :3]


def ihc_original() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """The original 512x512 RGB IHC image (lossless PNG)."""
    return [(_ihc(), {"name": "ihc", "rgb": True,
                      "metadata": {"source_path": str(ihc_path())}}, "image")]


def ihc_jpeg_q10() -> list[tuple[np.ndarray, dict[str, Any], str]]:
    """The IHC image after one JPEG round trip at quality 10 (4:2:0), with the JPEG's tables."""
    from napari_jpeg_restore.core.jpeg.codec import decode_jpeg, encode_jpeg, read_quant_tables

    from ._reader import jpeg_metadata

    data = encode_jpeg(_ihc(), SAMPLE_QUALITY)
    meta = jpeg_metadata(read_quant_tables(data), str(ihc_path()))
    meta["jpeg_quality"] = SAMPLE_QUALITY
    return [(decode_jpeg(data), {"name": f"ihc (JPEG Q{SAMPLE_QUALITY})", "rgb": True,
                                 "metadata": meta}, "image")]
