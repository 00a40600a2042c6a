"""How a restorer's network runs on image tiles, behind one interface (:class:`.net.Net`): a call on an
NCHW float32 array in [0, 1] whose sides are multiples of its ``stride``.

Engines: ``torch`` (PyTorch eager, channels-last, autocast; CPU or CUDA) and ``openvino``
(the CPU; the weights are converted once to OpenVINO's format and cached, see
:mod:`.openvino_convert`). ``auto`` takes OpenVINO for a CPU run where it is installed (1.7x
PyTorch in bf16 on an AVX512-BF16 CPU, 1.5x in fp32, equal PSNR: docs/speed.md) and then never
imports PyTorch; PyTorch everywhere else, and for modules handed over in Python.
"""
from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from ..error_text import one_line
from ..registry import (
    QUALITY_MODELS,
    ModelNotAvailableError,
    default_quality_model,
    load_model,
    resolve_weights,
)
from .default_model import default_model_name
from .device import cuda_present, resolve_device, thread_count
from .net import NOT_A_RESTORER, Net, QualityNet
from .openvino_net import OpenVinoNet, open_openvino, openvino_readout
from .precision import resolve_precision
from .torch_net import TorchNet, TorchQualityNet, on_device

if TYPE_CHECKING:
    from torch import nn

ENGINES = ("auto", "torch", "openvino")


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
    """The quality encoder that reads pictures (:mod:`.quality.reading`). ``model``: None (the
    shipped one for ``channels``), a registry name or weights file of a quality encoder or of a
    restorer (its encoder reads), or a module. The shipped encoders run on ``engine`` as the
    restorers do (auto: OpenVINO on the CPU, fp32, converted once), so reading a file's quality
    imports no PyTorch; any other model runs in PyTorch, whatever ``engine`` says."""
    name = model if model is not None else default_quality_model(channels)
    shipped = isinstance(name, str) and name in QUALITY_MODELS.values()
    if shipped and choose_engine(engine, device) == "openvino":
        from .openvino_convert import converted

        weights = resolve_weights(name)
        net = _openvino_or_none(lambda: openvino_readout(converted(weights), thread_count()), weights, engine)
        if net is not None:
            return net
    from ..models import QualityReadout
    from ..models.cqe import as_encoder

    dev = resolve_device(device)
    module = name if not isinstance(name, (str, Path)) else load_model(name, dev)
    return TorchQualityNet(QualityReadout(as_encoder(module)).to(dev).eval(), dev)
