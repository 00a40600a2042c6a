"""Embedding the tiles of napari layers for the quality inspector, as a generator a thread
worker runs (no Qt)."""
from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

MAX_PLOT_POINTS = 600


def table_quality(metadata: dict[str, Any]) -> tuple[int, bool] | None:
    """(quality, exact) from a layer's JPEG metadata (the reader's), or None."""
    from napari_jpeg_restore.core.jpeg.codec import estimate_quality

    if metadata.get("jpeg_quality") is not None:
        return int(metadata["jpeg_quality"]), bool(metadata.get("jpeg_quality_exact", False))
    tables = metadata.get("quant_tables")
    if tables:
        est = estimate_quality({int(k): np.asarray(v) for k, v in tables.items()})
        return est.quality, est.exact
    return None


@dataclass
class InspectItem:
    """One layer to inspect: its data (planes behind ``lead_shape`` leading axes, each 2-D or
    HxWxC; a dask array is read one plane at a time), the plane shown in the viewer, whose tiles
    go into the plot, and its JPEG tables' quality."""

    name: str
    data: Any
    table_q: tuple[int, bool] | None
    lead_shape: tuple[int, ...] = ()
    current: tuple[int, ...] = ()

    @property
    def plane(self) -> np.ndarray:
        """The plane shown in the viewer."""
        return np.asarray(self.data[self.current] if self.current else self.data)


@dataclass
class InspectResult:
    heatmaps: list[np.ndarray] = field(default_factory=list)  # lead_shape + (rows, cols) each
    tile: int = 0
    xy: np.ndarray | None = None
    colour: np.ndarray | None = None  # quality shown for each point
    owner: np.ndarray | None = None  # index of the item each point belongs to
    estimates: list[float] = field(default_factory=list)  # median tile estimate, shown plane
    traces: list[str] = field(default_factory=list)  # JPEG traces found in each item's pixels
    validated: dict[str, Any] | None = None  # the encoder's measured error (its weights' meta)
    method: str = ""
    error: str | None = None


EMBED_CHUNK = 16  # tiles embedded between progress updates (and chances to cancel)


def inspect_steps(items: Sequence[InspectItem], model_spec: str, tile: int, method: str,
                  device: str) -> Generator[tuple[int, int, int, int], None, InspectResult]:
    """Embed the tiles of every plane of each item (a heatmap per plane, so a stack's heatmap
    follows the plane slider), yielding ``(item, items, tiles_done, tiles_total)`` after every
    few tiles (the worker may stop there); then project the shown planes' tiles to 2-D."""
    from napari_jpeg_restore.core.engines.device import resolve_device
    from napari_jpeg_restore.core.generators import relay
    from napari_jpeg_restore.core.jpeg.traces import find_jpeg_grid
    from napari_jpeg_restore.core.models.cqe import as_encoder
    from napari_jpeg_restore.core.quality.embedding import project_2d, tile_embedding_steps
    from napari_jpeg_restore.core.quality.reading import encoder_uint8
    from napari_jpeg_restore.core.registry import load_model

    try:
        dev = resolve_device(device)
        model = load_model(model_spec, dev)
        encoder = as_encoder(model)
        stride = encoder.cfg.stride
        res = InspectResult(method=method, validated=getattr(model, "meta", {}).get("quality_validation"))
        embs, colour, owner = [], [], []
        for i, item in enumerate(items):
            shown = encoder_uint8(item.plane)
            side = min(tile, min(shown.shape[:2]) // stride * stride)
            side = max(stride, side // stride * stride)
            if res.tile and side != res.tile:
                side = res.tile  # one tile size for the whole plot
            res.tile = side
            indices = list(np.ndindex(*item.lead_shape)) if item.lead_shape else [()]
            heat, e, q = [], None, None
            for p, idx in enumerate(indices):
                plane = shown if idx == item.current else encoder_uint8(np.asarray(item.data[idx]))
                steps = tile_embedding_steps(encoder, plane, side, dev, EMBED_CHUNK)
                tiled = yield from relay(steps, lambda s, i=i, p=p, n=len(indices):
                                         (i, len(items), p * s[1] + s[0], n * s[1]))
                heat.append(tiled.heatmap)
                if idx == item.current:
                    e, q = tiled.embeddings, tiled.qualities
            res.heatmaps.append(np.stack(heat).reshape(*item.lead_shape, *tiled.grid))
            res.estimates.append(float(np.median(q)))
            found = None if item.table_q else find_jpeg_grid(item.plane)
            res.traces.append("" if item.table_q else
                              "no JPEG traces in its pixels" if found is None else
                              f"JPEG traces in its pixels: ~Q{found.quality}, "
                              f"8x8 grid at {found.offset}")
            embs.append(e)
            colour.append(np.full(len(q), item.table_q[0], np.float32) if item.table_q else q)
            owner.append(np.full(len(q), i))
        e, c, o = np.concatenate(embs), np.concatenate(colour), np.concatenate(owner)
        if len(e) > MAX_PLOT_POINTS:
            keep = np.sort(np.random.default_rng(0).choice(len(e), MAX_PLOT_POINTS, replace=False))
            e, c, o = e[keep], c[keep], o[keep]
        if method == "auto":
            method = "tsne" if len(e) >= 30 else "pca"
        res.xy, res.colour, res.owner, res.method = project_2d(e, method), c, o, method
        return res
    except Exception as err:  # noqa: BLE001 - shown to the user as one notification
        return InspectResult(error=f"{type(err).__name__}: {err}")
