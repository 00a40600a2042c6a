"""How a restorer's network runs on image tiles, behind one interface (:class:`Net`): a call on an
NCHW float32 array in [0, 1] whose sides are multiples of its ``stride``.

Engines: ``torch`` (PyTorch eager, channels-last, autocast; CPU or CUDA) and ``openvino``
(the CPU; the weights are converted once to OpenVINO's format and cached, see
:mod:`.openvino_convert`). ``auto`` takes OpenVINO for a CPU run where it is installed (1.7x
PyTorch in bf16 on an AVX512-BF16 CPU, 1.5x in fp32, equal PSNR: docs/speed.md) and then never
imports PyTorch; PyTorch everywhere else, and for modules handed over in Python.
"""
from __future__ import annotations

import importlib.util
import json
import os
import sys
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from .consistency import Calibration, calibration_path
from .error_text import one_line
from .openvino_import import import_openvino
from .precision import autocast, resolve_precision
from .registry import (
    QUALITY_MODELS,
    ModelNotAvailableError,
    default_model_name,
    default_quality_model,
    load_model,
    resolve_weights,
)

if TYPE_CHECKING:
    import torch
    from torch import nn

ENGINES = ("auto", "torch", "openvino")
OPENVINO_PRECISION = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_threads: int | None = None  # --threads: both engines' CPU threads (None: one per physical core)
NOT_A_RESTORER = ("that model is a quality encoder: it estimates quality (jpeg-restore quality, the "
                  "napari inspector) but restores nothing; choose a restorer")
SHAPES_KEPT = 4  # OpenVINO: tile shapes kept compiled (each holds its buffers: 90 MB at 432 px)


class Net(Protocol):
    """A restoration network ready to run: ``net(x, tables)`` -> the restored NCHW float32 array.
    ``tables``: (N, 64) luma steps for a table-conditioned network (others ignore them)."""

    engine: str
    precision: str
    in_channels: int
    stride: int
    conditioned: bool
    calibration: Calibration | None

    def __call__(self, x: np.ndarray, tables: np.ndarray | None = None) -> np.ndarray: ...


class QualityNet(Protocol):
    """A quality encoder's read-out ready to run: ``net(x)`` -> (N,) JPEG quality 1..100 for an
    NCHW float32 batch in [0, 1] whose sides are multiples of its ``stride``."""

    engine: str
    in_channels: int
    stride: int

    def __call__(self, x: np.ndarray) -> np.ndarray: ...


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


def have_openvino() -> bool:
    return importlib.util.find_spec("openvino") is not None


def choose_engine(engine: str, device: str = "auto") -> str:
    """``torch`` or ``openvino`` for ``engine`` in :data:`ENGINES` on ``device``."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    on_cpu = str(device) == "cpu" or (str(device) == "auto" and not cuda_present())
    if engine == "openvino":
        if not on_cpu:
            raise ValueError(f"the openvino engine runs on the CPU, not {device}; use --engine torch")
        if not have_openvino():
            raise ModelNotAvailableError("OpenVINO is not installed: pip install openvino, "
                                         "or choose --engine torch")
        return engine
    if engine == "auto":
        return "openvino" if on_cpu and have_openvino() else "torch"
    return engine


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

        from .models import QualityEncoder

        if isinstance(self.module, QualityEncoder):
            raise TypeError(NOT_A_RESTORER)
        if _threads:
            torch.set_num_threads(_threads)
        cfg = self.module.cfg
        self.in_channels = cfg.in_channels
        self.stride = max(8, getattr(cfg, "stride", 1))
        self.conditioned = bool(getattr(cfg, "condition", False))
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
                compiled = _compiled(str(self.folder), self.precision, _threads, x.shape)
                request = compiled.create_infer_request()
                self.requests[x.shape] = request
            return request.infer(inputs)[0].copy()  # the request reuses its output buffer


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


def _openvino_or_none(open_it: Callable[[], OpenVinoNet], weights: Path, engine: str) -> OpenVinoNet | None:
    """``open_it()``; None, with a warning, where it fails and ``engine`` is ``auto`` (e.g. no
    writable cache folder: PyTorch runs the model instead)."""
    try:
        return open_it()
    except (OSError, RuntimeError) as err:
        if engine != "auto":
            raise
        warnings.warn(f"OpenVINO cannot run {weights.name} ({type(err).__name__}: "
                      f"{one_line(err, 200)}); running it in PyTorch", RuntimeWarning, stacklevel=3)
        return None


def open_net(model: str | Path | nn.Module | Net | None, channels: int = 1, *, device: str = "auto",
             precision: str = "fp32", engine: str = "auto") -> Net:
    """The network to restore with. ``model``: a registry name, a weights file, a module (run by
    PyTorch) or an opened :class:`Net` (returned as it is); None: the shipped default for
    ``channels`` (1 gray, 3 colour) on that device. ``precision`` as in :mod:`.precision`."""
    if hasattr(model, "engine"):
        if getattr(model, "readout", False):
            raise TypeError(NOT_A_RESTORER)
        return model
    if model is not None and not isinstance(model, (str, Path)):  # a torch module
        if engine == "openvino":
            raise ValueError("the openvino engine takes a model name or weights file, not a module")
        dev = resolve_device(device)
        return TorchNet(on_device(model, dev), dev, resolve_precision(precision, dev))
    if choose_engine(engine, device) == "openvino":
        weights = resolve_weights(model or default_model_name(channels, "cpu"))
        net = _openvino_or_none(lambda: open_openvino(weights, resolve_precision(precision, "cpu")),
                                weights, engine)
        if net is not None:
            if net.readout:
                raise TypeError(NOT_A_RESTORER)
            return net
    dev = resolve_device(device)
    return TorchNet(on_device(load_model(model or default_model_name(channels, dev)), dev), dev,
                    resolve_precision(precision, dev))


def open_quality_net(model: str | Path | nn.Module | None = None, channels: int = 1, *,
                     device: str = "auto", engine: str = "auto") -> QualityNet:
    """The quality encoder that reads pictures (:mod:`.quality_reading`). ``model``: None (the
    shipped one for ``channels``), a registry name or weights file of a quality encoder or of a
    restorer (its encoder reads), or a module. The shipped encoders run on ``engine`` as the
    restorers do (auto: OpenVINO on the CPU, fp32, converted once), so reading a file's quality
    imports no PyTorch; any other model runs in PyTorch, whatever ``engine`` says."""
    name = model if model is not None else default_quality_model(channels)
    shipped = isinstance(name, str) and name in QUALITY_MODELS.values()
    if shipped and choose_engine(engine, device) == "openvino":
        from .openvino_convert import converted

        weights = resolve_weights(name)
        net = _openvino_or_none(lambda: _openvino_readout(converted(weights), _threads), weights, engine)
        if net is not None:
            return net
    from .embedding import as_encoder
    from .models import QualityReadout

    dev = resolve_device(device)
    module = name if not isinstance(name, (str, Path)) else load_model(name, dev)
    return TorchQualityNet(QualityReadout(as_encoder(module)).to(dev).eval(), dev)


@lru_cache(maxsize=4)
def _openvino_readout(folder: Path, threads: int | None) -> OpenVinoNet:
    """A converted quality read-out, opened once per process and thread count (``threads``: the
    cache key): its compiled shapes stay, whatever tile shapes the restorers compile between."""
    return OpenVinoNet(folder, "fp32", None)


def run_net(net: Net, x: np.ndarray, ensemble: bool = False, tables: np.ndarray | None = None
            ) -> np.ndarray:
    """Run ``net`` on an NCHW float32 array of any size: padded (reflect) to its stride and
    cropped back. ``ensemble``: the mean over the eight rotations and flips of the input (x8
    self-ensemble, eight times the work); the padded sides are multiples of 8, so every
    transform keeps the 8x8 JPEG grid where it was (a quarter turn transposes the table)."""
    s = net.stride
    h, w = x.shape[-2:]
    ph, pw = (-h) % s, (-w) % s
    if ph or pw:
        x = np.pad(x, ((0, 0), (0, 0), (0, ph), (0, pw)), mode="reflect" if ph < h and pw < w else "edge")
    if not ensemble:
        return net(x, tables)[..., :h, :w]
    turned = None if tables is None else tables.reshape(-1, 8, 8).transpose(0, 2, 1).reshape(-1, 64)
    out = np.zeros(x.shape, np.float32)
    for flip in (False, True):
        xf = x[..., ::-1] if flip else x
        for k in range(4):
            y = np.rot90(net(np.rot90(xf, k, (-2, -1)), turned if k % 2 else tables), -k, (-2, -1))
            out += y[..., ::-1] if flip else y
    return (out / 8)[..., :h, :w]
