"""Restoring a napari layer plane by plane, as a generator a thread worker runs (no Qt)."""
from __future__ import annotations

import copy
from collections.abc import Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.layers import Image

if TYPE_CHECKING:
    from napari_jpeg_restore.core.jpeg.consistency import JpegGrid
    from napari_jpeg_restore.core.restoration.compression import Compression
    from napari_jpeg_restore.core.restoration.options import RestoreOptions

def _restorable(plane: np.ndarray) -> tuple[np.ndarray, Any]:
    """The plane in a dtype ``restore_steps`` accepts and a function back to the plane's dtype."""
    if plane.dtype in (np.uint8, np.uint16) or np.issubdtype(plane.dtype, np.floating):
        return plane, lambda y: y
    info = np.iinfo(plane.dtype)  # other integers: through float32, rounded and clipped back
    return plane.astype(np.float32), lambda y: np.clip(np.round(y), info.min, info.max).astype(plane.dtype)


def _difference(restored: np.ndarray, original: np.ndarray, rgb: bool) -> np.ndarray:
    d = restored.astype(np.float32) - original.astype(np.float32)
    return d[..., :3].mean(axis=-1) if rgb else d


@dataclass
class RestoreResult:
    restored: np.ndarray | None = None
    difference: np.ndarray | None = None
    model: str = ""
    error: str | None = None
    engine: str = ""  # what ran the network (torch, openvino)


def layer_tables(metadata: dict[str, Any]) -> JpegGrid | None:
    """The JPEG grid of the tables in a layer's metadata (this plugin's reader), or None."""
    from napari_jpeg_restore.core.jpeg.consistency import JpegGrid

    tables, grid = metadata.get("quant_tables"), metadata.get("jpeg_grid") or {}
    if not tables:
        return None
    return JpegGrid.from_tables({int(k): np.asarray(v) for k, v in tables.items()},
                                tuple(grid.get("offset", (0, 0))), bool(grid.get("transposed", False)))


INTENSITY = ("auto", "contrast limits", "dtype range")


def intensity_range(layer: Image, mode: str) -> tuple[float, float] | None:
    """The value range the network's 0..1 stands for (see ``core.inference.UnitScale``)."""
    if mode == "contrast limits":
        return tuple(map(float, layer.contrast_limits))
    if mode == "dtype range" and np.issubdtype(layer.dtype, np.integer):
        info = np.iinfo(layer.dtype)
        return float(max(info.min, 0)), float(info.max)
    return None


def restore_layer_steps(data: Any, lead_shape: tuple[int, ...], rgb: bool, model_spec: str,
                        options: RestoreOptions, difference: bool = False,
                        metadata: dict[str, Any] | None = None,
                        value_range: tuple[float, float] | None = None,
                        first: Compression | None = None
                        ) -> Generator[tuple[int, int, int, int], None, RestoreResult]:
    """Restore every 2-D (or RGB) plane of ``data`` one after the other with ``options``, each
    kept consistent with its JPEG compression (:func:`layer_tables` of the layer's
    ``metadata``, else the traces in its pixels), or restored as if compressed at
    ``options.assume_quality`` (the strength control); ``first``: what was decided for the
    first plane already (its pixels are not read again).

    Yields ``(plane, planes, tiles_done, tiles_total)`` after each tile (the worker may stop
    there), returns a :class:`RestoreResult`. Only one plane of ``data`` is in memory at a time
    (``data`` may be a dask array); expected failures come back as ``RestoreResult.error``.
    """
    from napari_jpeg_restore.core.engines.selection import open_net
    from napari_jpeg_restore.core.generators import relay
    from napari_jpeg_restore.core.jpeg.traces import find_jpeg_grid
    from napari_jpeg_restore.core.restoration.image_restore import restore_steps

    try:
        net = open_net(model_spec, device=options.device, precision=options.precision,
                       engine=options.engine)
        n_planes = int(np.prod(lead_shape)) if lead_shape else 1
        out: np.ndarray | None = None
        diff: np.ndarray | None = None
        for p, idx in enumerate(np.ndindex(*lead_shape) if lead_shape else [()]):
            plane = np.asarray(data[idx] if idx else data)
            work, back = _restorable(plane)
            jpeg = layer_tables(metadata or {}) or find_jpeg_grid(work)
            steps = restore_steps(work, net, options, jpeg=jpeg, value_range=value_range,
                                  compression=first if p == 0 else None)
            restored = back((yield from relay(steps, lambda step, p=p: (p, n_planes, *step))))
            if out is None:
                out = np.empty(tuple(lead_shape) + restored.shape, restored.dtype)
                if difference:
                    spatial = restored.shape[:-1] if rgb else restored.shape
                    diff = np.empty(tuple(lead_shape) + spatial, np.float32)
            out[idx] = restored
            if diff is not None:
                diff[idx] = _difference(restored, plane, rgb)
        return RestoreResult(out, diff, model_spec, engine=net.engine)
    except Exception as err:  # noqa: BLE001 - shown to the user as one notification
        return RestoreResult(error=f"{type(err).__name__}: {err}")


@dataclass
class LayerJob:
    """One layer of a restore run: what :func:`restore_layer_steps` needs of it."""

    data: Any
    lead_shape: tuple[int, ...]
    rgb: bool
    model_spec: str
    metadata: dict[str, Any]
    value_range: tuple[float, float] | None = None
    first: Compression | None = None  # what the plan decided for the first plane


def restore_queue_steps(jobs: list[LayerJob], options: RestoreOptions, difference: bool = False
                         ) -> Generator[tuple[int, int, int, int, int, int], None, list[RestoreResult]]:
    """Restore several layers one after the other (a queue in one worker): yields
    ``(layer, layers, plane, planes, tiles_done, tiles_total)``, returns one
    :class:`RestoreResult` per layer (a failed layer's carries its error; the rest go on)."""
    from napari_jpeg_restore.core.generators import relay

    results = []
    for k, job in enumerate(jobs):
        steps = restore_layer_steps(job.data, job.lead_shape, job.rgb, job.model_spec, options,
                                    difference, job.metadata, job.value_range, job.first)
        results.append((yield from relay(steps, lambda step, k=k: (k, len(jobs), *step))))
    return results


JPEG_KEYS = ("jpeg_quality", "jpeg_quality_exact", "quant_tables", "jpeg_grid")


def provenance(source: Image, model_spec: str, tile: int, ensemble: bool, jpeg_by: str,
               precision: str = "fp32", engine: str = "") -> dict[str, Any]:
    """A restored layer's metadata: the source's, less its JPEG tables (the result is not that
    JPEG any more), plus ``restoration``: what made it and from what."""
    import hashlib

    from napari_jpeg_restore import __version__
    from napari_jpeg_restore.core.registry import resolve_weights

    meta = {k: v for k, v in copy.deepcopy(dict(source.metadata)).items() if k not in JPEG_KEYS}
    meta["restoration"] = {
        "source_layer": source.name, "model": model_spec,
        "weights_sha256": hashlib.sha256(resolve_weights(model_spec).read_bytes()).hexdigest(),
        "tile": tile, "ensemble": ensemble, "precision": precision, "engine": engine,
        "jpeg_consistency": jpeg_by,
        "napari_jpeg_restore": __version__}
    return meta
