"""Networks run by OpenVINO on the CPU, compiled once per tile shape (the weights are converted on
first use, :mod:`.openvino_convert`)."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..jpeg.consistency import Calibration, calibration_path
from .device import thread_count
from .openvino_import import import_openvino

OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
SHAPES_KEPT = 4  # OpenVINO: tile shapes kept compiled (each holds its buffers: 90 MB at 432 px)


@dataclass
class OpenVinoNet:
    """A converted restorer or quality read-out (the folder :func:`.openvino_convert.converted`
    made) run by OpenVINO on the CPU, compiled for each tile shape it meets (a fixed shape runs
    a 432-px tile 1.2x faster than the shape-agnostic model). Its calibration is read from beside
    the weights file, so a later ``jpeg-restore calibrate`` applies without converting again."""

    folder: Path
    precision: str
    calibration: Calibration | None
    engine: str = "openvino"

    def __post_init__(self) -> None:
        info = json.loads((self.folder / "net.json").read_text())
        self.in_channels = int(info["in_channels"])
        self.stride = int(info["stride"])
        self.conditioned = bool(info["conditioned"])
        self.readout = bool(info.get("readout", False))  # a quality encoder's read-out
        self.requests: dict[tuple[int, ...], Any] = {}  # tile shape -> infer request
        self.lock = threading.Lock()

    def __call__(self, x: np.ndarray, tables: np.ndarray | None = None) -> np.ndarray:
        inputs = {0: np.ascontiguousarray(x, np.float32)}
        if self.conditioned:
            inputs[1] = np.ascontiguousarray(tables if tables is not None else np.ones((len(x), 64)),
                                             np.float32)
        with self.lock:  # one request per shape: threads sharing the net take turns
            request = self.requests.get(x.shape)
            if request is None:
                if len(self.requests) >= SHAPES_KEPT:
                    self.requests.pop(next(iter(self.requests)))
                compiled = _compiled(str(self.folder), self.precision, thread_count(), x.shape)
                request = compiled.create_infer_request()
                self.requests[x.shape] = request
            return request.infer(inputs)[0].copy()  # the request reuses its output buffer



@lru_cache(maxsize=1)
def _openvino_core() -> Any:
    return import_openvino().Core()


@lru_cache(maxsize=SHAPES_KEPT)
def _compiled(folder: str, precision: str, threads: int | None, shape: tuple[int, ...]) -> Any:
    core = _openvino_core()
    model = core.read_model(str(Path(folder) / "model.xml"))
    model.reshape({0: list(shape)} if len(model.inputs) == 1 else {0: list(shape), 1: [shape[0], 64]})
    config = {"INFERENCE_PRECISION_HINT": OPENVINO_PRECISION[precision], "PERFORMANCE_HINT": "LATENCY",
              "CACHE_DIR": str(Path(folder) / "compiled")}  # compiled blobs kept: 0.35 -> 0.08 s
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return core.compile_model(model, "CPU", config)


def open_openvino(weights: Path, precision: str) -> OpenVinoNet:
    """The network in ``weights`` (a restorer, or a quality encoder's read-out) compiled by
    OpenVINO (converted on first use)."""
    from .openvino_convert import converted

    cal = calibration_path(weights)
    return OpenVinoNet(converted(weights), precision, Calibration.load(cal) if cal.is_file() else None)


@lru_cache(maxsize=4)
def openvino_readout(folder: Path, threads: int | None) -> OpenVinoNet:
    """A converted quality read-out, opened once per process and thread count (``threads``: the
    cache key): its compiled shapes stay, whatever tile shapes the restorers compile between."""
    return OpenVinoNet(folder, "fp32", None)
