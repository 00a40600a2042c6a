"""A restorer's weights (or a quality encoder's, as its read-out: pixels -> quality) converted to
OpenVINO's format (model.xml/.bin, any tile size), once per weights file: kept under
``$XDG_CACHE_HOME/napari-jpeg-restore/openvino/<content hash>/`` with ``net.json`` (channels,
stride, conditioning) and OpenVINO's compiled blobs. Converting imports PyTorch (about 6 s, said
on stderr); every later run loads the cached files without it."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import warnings
from contextlib import suppress
from functools import lru_cache
from pathlib import Path

from ..registry import cache_folder, load_model
from .openvino_import import import_openvino


def openvino_cache(weights: Path) -> Path:
    """The folder of ``weights``' converted model, keyed by its bytes and OpenVINO's version."""
    stat = Path(weights).stat()
    return cache_folder().parent / "openvino" / _cache_key(str(Path(weights).resolve()), stat.st_mtime_ns,
                                                           stat.st_size)


@lru_cache(maxsize=16)
def _cache_key(path: str, mtime_ns: int, size: int) -> str:
    """The weights' content hash, read once per file version (not once per restored image)."""
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    return f"{digest}-{import_openvino().get_version().split('-')[0]}"


def converted(weights: Path) -> Path:
    """The cached conversion of the restorer (or quality encoder) in ``weights`` (made now if
    missing; written to a temporary folder and renamed into place, so concurrent workers never
    see half a model)."""
    folder = openvino_cache(weights)
    if (folder / "net.json").is_file():
        return folder
    import torch

    from ..models import QualityEncoder, QualityReadout
    from .torch_net import TorchNet

    print(f"converting {Path(weights).name} for OpenVINO (once; cached in {folder})", file=sys.stderr)
    model = load_model(weights)
    readout = isinstance(model, QualityEncoder)  # converted as its read-out: pixels -> quality
    if readout:
        module, c, s = QualityReadout(model).eval(), model.cfg.in_channels, model.cfg.stride
        conditioned = False
    else:
        net = TorchNet(model, torch.device("cpu"), "fp32")
        module, c, s, conditioned = net.module, net.in_channels, net.stride, net.conditioned
    example = (torch.rand(1, c, 4 * s, 4 * s),)
    shapes = [(-1, c, -1, -1)]
    if conditioned:
        example += (torch.ones(1, 64),)
        shapes.append((-1, 64))
    ov = import_openvino()
    with warnings.catch_warnings():
        if readout:  # its DCT branch tests the channel count, fixed in the converted model
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
        converted_model = ov.convert_model(module, example_input=example, input=shapes)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        ov.save_model(converted_model, str(tmp / "model.xml"), compress_to_fp16=False)
        info = {"in_channels": c, "stride": s, "conditioned": conditioned, "readout": readout,
                "weights": str(weights)}
        (tmp / "net.json").write_text(json.dumps(info, indent=1))
        with suppress(OSError):  # another process finished first: keep its copy
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
