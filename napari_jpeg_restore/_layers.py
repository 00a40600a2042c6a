"""Which napari layers the widgets take and which model they run: no Qt here, so the
widgets' logic is testable and reusable without a window."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from napari.layers import Image

AUTO = "auto"
WEIGHTS_FILE = "weights file…"
MAX_LAYER_NDIM = 4  # 2-D planes, stacks and time series of stacks
MIN_SIDE = 8  # one JPEG block



class UnsupportedLayerError(ValueError):
    """A layer the restorer cannot work on; the message says why and what would work."""



def model_names(require_encoder: bool = False) -> list[str]:
    """Registry names that have weights in this installation: restorers, or (``require_encoder``)
    the models with a quality encoder (quality encoders, CRL restorers)."""
    from napari_jpeg_restore.core.registry import available_models

    families = ("cqe", "crl") if require_encoder else ("crl", "luma-chroma", "arcnn")
    return [m.name for m in available_models() if m.has_weights and m.family in families]


def model_choices(require_encoder: bool = False) -> list[str]:
    return [AUTO, *model_names(require_encoder), WEIGHTS_FILE]


def resolve_model_spec(choice: str, weights: str | os.PathLike | None, channels: int,
                       quality: bool = False) -> str:
    """A registry name or a weights path for ``load_model``; raises ModelNotAvailableError.

    ``choice`` is "auto" (the default restorer for ``channels``, or with ``quality`` the default
    quality encoder), a registry name, the "weights file…" entry (then ``weights`` is used) or
    directly a path to a weights file.
    """
    from napari_jpeg_restore.core.engines.default_model import default_model_name
    from napari_jpeg_restore.core.registry import (
        ModelNotAvailableError,
        default_quality_model,
        resolve_weights,
    )

    if choice == AUTO:
        return default_quality_model(channels) if quality else default_model_name(channels)
    if choice == WEIGHTS_FILE:
        path = os.fspath(weights) if weights else ""
        if not path or path == "." or not Path(path).is_file():
            raise ModelNotAvailableError(
                f"choose an existing weights file (.pt) for the model; got {path or 'nothing'!r}")
        return path
    resolve_weights(choice)  # the registry's one resolution: ModelNotAvailableError if none
    return choice


def layer_channels(layer: Image) -> int:
    return 3 if getattr(layer, "rgb", False) else 1


def plane_layout(layer: Any) -> tuple[tuple[int, ...], tuple[int, int]]:
    """(shape of the leading plane axes, (height, width)) for a layer the restorer accepts.

    Raises :class:`UnsupportedLayerError` with a message meant for the user otherwise.
    """
    name = getattr(layer, "name", "?")
    if not isinstance(layer, Image):
        kind = type(layer).__name__
        raise UnsupportedLayerError(
            f"'{name}' is a {kind} layer; JPEG restoration works on Image layers "
            "(2-D gray or RGB, or stacks / time series of them)")
    if layer.multiscale:
        raise UnsupportedLayerError(
            f"'{name}' is a multiscale (pyramid) image, which is not supported; "
            "add its full-resolution level as a plain Image layer")
    data = layer.data
    dtype = np.dtype(data.dtype)
    if dtype == np.bool_ or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
        raise UnsupportedLayerError(f"'{name}' has {dtype} pixels; expected integer or float values")
    if layer.rgb:
        if data.shape[-1] not in (3, 4):
            raise UnsupportedLayerError(f"'{name}' has {data.shape[-1]} colour channels; expected RGB or RGBA")
        spatial = data.shape[:-1]
    else:
        spatial = data.shape
    if len(spatial) < 2:
        raise UnsupportedLayerError(f"'{name}' is {len(spatial)}-D; expected at least one 2-D plane")
    if len(spatial) > MAX_LAYER_NDIM:
        raise UnsupportedLayerError(
            f"'{name}' is {len(spatial)}-D {tuple(data.shape)}; up to {MAX_LAYER_NDIM}-D "
            "(e.g. time x z x y x x) is supported")
    h, w = int(spatial[-2]), int(spatial[-1])
    if min(h, w) < MIN_SIDE:
        hint = (" — it looks like a multichannel image with the channels last that napari does "
                "not show as RGB; split its channels or move them first"
                if not layer.rgb and w <= 4 else "")
        raise UnsupportedLayerError(
            f"'{name}' has {h}x{w} planes, smaller than one {MIN_SIDE}x{MIN_SIDE} JPEG block{hint}")
    return tuple(int(s) for s in spatial[:-2]), (h, w)


def shown_plane(layer: Image, point: Any, lead_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Index, in the leading axes, of the plane the viewer shows at world ``point``."""
    pos = layer.world_to_data(point)
    return tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(pos, lead_shape))
