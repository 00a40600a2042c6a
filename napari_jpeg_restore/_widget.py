"""The two napari dock widgets: "Restore JPEG artifacts" and "Compression quality inspector".

Both are thin shells over :mod:`napari_jpeg_restore.core`: the heavy work runs in a napari
thread worker (a generator, so a Cancel click stops it between two tiles) and the results come
back to the Qt thread as new layers. Every expected failure (an unsupported layer, a model
without weights, no CUDA) becomes a napari notification, never a traceback.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    Select,
    SpinBox,
)
from napari.layers import Image
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info, show_warning
from qtpy.QtWidgets import QVBoxLayout, QWidget

if TYPE_CHECKING:
    from napari_jpeg_restore.core.consistency import JpegGrid
    import napari

from napari_jpeg_restore.core.jpeg import DEFAULT_SKIP_ABOVE_QUALITY

AUTO = "auto"
WEIGHTS_FILE = "weights file…"
DEVICES = ("auto", "cpu", "cuda")
MAX_LAYER_NDIM = 4  # 2-D planes, stacks and time series of stacks
MIN_SIDE = 8  # one JPEG block
MAX_PLOT_POINTS = 600
T = TypeVar("T")


class UnsupportedLayerError(ValueError):
    """A layer the restorer cannot work on; the message says why and what would work."""


# ----------------------------------------------------------------------------- shared helpers
def model_names(require_encoder: bool = False) -> list[str]:
    """Registry names that have weights in this installation."""
    from napari_jpeg_restore.core.registry import available_models

    return [m.name for m in available_models()
            if m.has_weights and (m.family == "crl" or not require_encoder)]


def _model_choices(require_encoder: bool = False) -> list[str]:
    return [AUTO, *model_names(require_encoder), WEIGHTS_FILE]


def resolve_model_spec(choice: str, weights: str | os.PathLike | None, channels: int) -> str:
    """A registry name or a weights path for ``load_model``; raises ModelNotAvailableError.

    ``choice`` is "auto" (the default model for ``channels``), a registry name, the
    "weights file…" entry (then ``weights`` is used) or directly a path to a weights file.
    """
    from napari_jpeg_restore.core.registry import MODELS, ModelNotAvailableError, default_model_name

    if choice == AUTO:
        return default_model_name(channels)
    if choice == WEIGHTS_FILE:
        path = os.fspath(weights) if weights else ""
        if not path or path == "." or not Path(path).is_file():
            raise ModelNotAvailableError(
                f"choose an existing weights file (.pt) for the model; got {path or 'nothing'!r}")
        return path
    if choice in MODELS or Path(choice).is_file():
        return choice
    raise ModelNotAvailableError(f"unknown model {choice!r}")


def _layer_channels(layer: Image) -> int:
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


def layer_jpeg(metadata: dict[str, Any], plane: np.ndarray) -> tuple[JpegGrid | None, str]:
    """How a plane was compressed, and how that is known: from the JPEG tables in the
    layer's metadata (this plugin's reader), else found in the pixels (``"pixels"``)."""
    from napari_jpeg_restore.core.consistency import JpegGrid
    from napari_jpeg_restore.core.jpeg_traces import find_jpeg_grid

    tables, grid = metadata.get("quant_tables"), metadata.get("jpeg_grid") or {}
    if tables:
        return JpegGrid.from_tables({int(k): np.asarray(v) for k, v in tables.items()},
                                    tuple(grid.get("offset", (0, 0))),
                                    bool(grid.get("transposed", False))), "tables"
    return find_jpeg_grid(np.asarray(plane)), "pixels"


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
                        tile: int, device: str, difference: bool, ensemble: bool = False,
                        metadata: dict[str, Any] | None = None,
                        value_range: tuple[float, float] | None = None
                        ) -> Generator[tuple[int, int, int, int], None, RestoreResult]:
    """Restore every 2-D (or RGB) plane of ``data`` one after the other, each kept consistent
    with its JPEG compression (:func:`layer_jpeg` of the layer's ``metadata``).

    Yields ``(plane, planes, tiles_done, tiles_total)`` after each tile (the worker may stop
    there), returns a :class:`RestoreResult`. Only one plane of ``data`` is in memory at a time
    (``data`` may be a dask array); expected failures come back as ``RestoreResult.error``.
    """
    from napari_jpeg_restore.core.inference import resolve_device, restore_steps
    from napari_jpeg_restore.core.registry import load_model

    try:
        dev = resolve_device(device)
        model = load_model(model_spec, dev)
        n_planes = int(np.prod(lead_shape)) if lead_shape else 1
        out: np.ndarray | None = None
        diff: np.ndarray | None = None
        for p, idx in enumerate(np.ndindex(*lead_shape) if lead_shape else [()]):
            plane = np.asarray(data[idx] if idx else data)
            work, back = _restorable(plane)
            jpeg, _ = layer_jpeg(metadata or {}, work)
            steps = restore_steps(work, model, tile=tile, device=dev, ensemble=ensemble, jpeg=jpeg,
                                  value_range=value_range)
            while True:
                try:
                    done, total = next(steps)
                except StopIteration as stop:
                    restored = back(stop.value)
                    break
                yield p, n_planes, done, total
            if out is None:
                out = np.empty(tuple(lead_shape) + restored.shape, restored.dtype)
                if difference:
                    spatial = restored.shape[:-1] if rgb else restored.shape
                    diff = np.empty(tuple(lead_shape) + spatial, np.float32)
            out[idx] = restored
            if diff is not None:
                diff[idx] = _difference(restored, plane, rgb)
        return RestoreResult(out, diff, model_spec)
    except Exception as err:  # noqa: BLE001 - shown to the user as one notification
        return RestoreResult(error=f"{type(err).__name__}: {err}")


JPEG_KEYS = ("jpeg_quality", "jpeg_quality_exact", "quant_tables", "jpeg_grid")


def provenance(source: Image, model_spec: str, tile: int, ensemble: bool, jpeg_by: str
               ) -> dict[str, Any]:
    """A restored layer's metadata: the source's, less its JPEG tables (the result is not that
    JPEG any more), plus ``restoration``: what made it and from what."""
    import hashlib

    from napari_jpeg_restore import __version__
    from napari_jpeg_restore.core.registry import resolve_weights

    meta = {k: v for k, v in copy.deepcopy(dict(source.metadata)).items() if k not in JPEG_KEYS}
    meta["restoration"] = {
        "source_layer": source.name, "model": model_spec,
        "weights_sha256": hashlib.sha256(resolve_weights(model_spec).read_bytes()).hexdigest(),
        "tile": tile, "ensemble": ensemble, "jpeg_consistency": jpeg_by,
        "napari_jpeg_restore": __version__}
    return meta


def _copy_layer_kwargs(layer: Image, metadata: dict[str, Any]) -> dict[str, Any]:
    return {"scale": layer.scale, "translate": layer.translate, "rotate": layer.rotate,
            "shear": layer.shear, "metadata": metadata}


# ------------------------------------------------------------------------------ restore widget
class _ModelChoice:
    """The model combo ("auto", registry names, "weights file…") and its weights-file field."""

    model: ComboBox
    weights: FileEdit

    def _on_model_changed(self, value: str) -> None:
        self.weights.visible = value == WEIGHTS_FILE

    def set_model(self, value: str | os.PathLike) -> None:
        """Choose "auto", a registry name, or a weights file path."""
        value = os.fspath(value)
        if value in self.model.choices:
            self.model.value = value
        else:
            self.weights.value = value
            self.model.value = WEIGHTS_FILE

    def _prepare(self, action: str, prepare: Callable[[], T]) -> T | None:
        """``prepare()`` (layer, model and device checks) or None after a notification: a
        warning for an unsupported layer, an error for a missing model or an unusable device."""
        from napari_jpeg_restore.core.registry import ModelNotAvailableError

        try:
            return prepare()
        except UnsupportedLayerError as err:
            show_warning(f"Cannot {action}: {err}")
        except (ModelNotAvailableError, RuntimeError) as err:
            show_error(f"Cannot {action}: {err}")
        return None


class RestoreWidget(_ModelChoice, QWidget):
    """Dock widget "Restore JPEG artifacts"."""

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.worker = None
        self._job: dict[str, Any] = {}
        self.image = ComboBox(label="image", choices=self._layer_choices, nullable=True)
        self.model = ComboBox(label="model", choices=lambda _w: _model_choices(), value=AUTO,
                              tooltip="The restoration network: 'auto' takes the shipped model "
                                      "for gray or colour layers; 'weights file…' takes a .pt "
                                      "file trained with `jpeg-restore train`.")
        self.weights = FileEdit(label="weights file", mode="r", filter="*.pt", visible=False,
                                tooltip="A weights file (.pt) written by `jpeg-restore train`.")
        self.tile = SpinBox(label="tile size", min=64, max=4096, step=64, value=512,
                            tooltip="Pixels per side of the tiles the image is restored in: "
                                    "smaller tiles use less memory and update the bar more "
                                    "often; the result is the same.")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto",
                               tooltip="Where the network runs: 'auto' uses a CUDA GPU when "
                                       "there is one, else the CPU.")
        self.intensity = ComboBox(
            label="intensity", choices=list(INTENSITY), value="auto",
            tooltip="Which values the network sees as black and white. auto: 8-bit data as is, "
                    "16-bit data by the bits it uses (12-bit camera data by 4095), float data "
                    "by its range. contrast limits: the layer's display range (values beyond it "
                    "are kept). dtype range: 0 to the type's maximum (65535 for uint16).")
        self.difference = CheckBox(text="add difference layer", value=False,
                                   tooltip="Also add 'restored minus original' as a hidden layer "
                                           "with a diverging colormap centred at 0.")
        self.ensemble = CheckBox(text="x8 self-ensemble (8x slower, a little better)", value=False,
                                 tooltip="Average the network's output over the 8 rotations and "
                                         "flips of each tile: 8x the time, a little better.")
        self.skip_above = SpinBox(
            label="skip above JPEG Q", min=1, max=100, value=DEFAULT_SKIP_ABOVE_QUALITY,
            tooltip="Leave an image alone when its JPEG quality is above this, read from its "
                    "quantization tables (this plugin's reader) or found in its pixels, or when "
                    "it shows no JPEG compression at all: there is nothing to gain. "
                    "100 restores everything.")
        self.run_button = PushButton(text="Restore")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.status = Label(value="")
        self.status.native.setWordWrap(True)  # long lines wrap, never clip
        self.form = Container(widgets=[
            self.image, self.model, self.weights, self.tile, self.device, self.intensity,
            self.difference, self.ensemble,
            self.skip_above, Container(widgets=[self.run_button, self.cancel_button], layout="horizontal", labels=False),
            self.progress, self.status])
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addStretch(1)
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        # The list follows the viewer: a layer opened or clicked on becomes the choice.
        self.viewer.layers.selection.events.active.connect(self._select_active_layer)
        self.reset_choices()
        self._select_active_layer()
        if not model_names():
            self.status.value = ("No shipped model weights are installed:\n"
                                 "choose 'weights file…' and a .pt file.")

    # choices and model selection
    def _layer_choices(self, _widget=None) -> list[tuple[str, Any]]:
        """Image layers, less the ones this plugin derives (differences, quality heatmaps)."""
        return [(layer.name, layer) for layer in self.viewer.layers if isinstance(layer, Image)
                and not layer.name.endswith(("(difference)", "(quality heatmap)"))]

    def reset_choices(self, *_args) -> None:
        self.form.reset_choices()

    def _select_active_layer(self, *_args) -> None:
        active = self.viewer.layers.selection.active
        if isinstance(active, Image) and active in self.image.choices:
            self.image.value = active
        elif self.image.value is None:
            images = [layer for layer in self.viewer.layers if isinstance(layer, Image)]
            if images:
                self.image.value = images[-1]

    # running
    @property
    def running(self) -> bool:
        return self.worker is not None

    def run(self, *_args):
        """Start restoring the chosen layer; returns the worker, or None after a notification."""
        from napari_jpeg_restore.core.batch import skip_reason
        from napari_jpeg_restore.core.inference import resolve_device

        if self.running:
            show_warning("A restoration is already running; cancel it first.")
            return None
        layer = self.image.value
        self.status.value = ""  # a rejected run leaves no stale status of an earlier one
        if layer is None:
            show_warning("Add or choose an Image layer to restore.")
            return None

        def prepare() -> tuple[tuple[int, ...], Any]:
            lead_shape = plane_layout(layer)[0]
            spec = resolve_model_spec(self.model.value, self.weights.value, _layer_channels(layer))
            resolve_device(self.device.value)
            return lead_shape, spec

        prepared = self._prepare(f"restore '{layer.name}'", prepare)
        if prepared is None:
            return None
        lead_shape = prepared[0]
        first = layer.data[(0,) * len(lead_shape)] if lead_shape else layer.data
        jpeg, known_by = layer_jpeg(layer.metadata, first)
        why = skip_reason(jpeg, int(self.skip_above.value))
        if why:
            how = f" (Q{jpeg.quality} by its {known_by})" if jpeg else ""
            self.status.value = (f"'{layer.name}' left as is: {why}{how}; "
                                 "raise 'skip above JPEG Q' to 100 to restore it anyway.")
            show_info(self.status.value)
            return None
        lead_shape, spec = prepared
        self._job = {"layer": layer, "difference": bool(self.difference.value),
                     "tile": int(self.tile.value), "ensemble": bool(self.ensemble.value),
                     "jpeg_by": f"{known_by} (Q{jpeg.quality})" if jpeg else "none found"}
        worker = thread_worker(restore_layer_steps, start_thread=False)(
            layer.data, lead_shape, bool(layer.rgb), spec, int(self.tile.value),
            self.device.value, bool(self.difference.value), bool(self.ensemble.value),
            dict(layer.metadata), intensity_range(layer, self.intensity.value))
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.max = 0  # busy indicator until the first tile is counted (model loading)
        self.status.value = f"Loading {Path(spec).name} to restore '{layer.name}'…"
        worker.start()
        return worker

    def cancel(self, *_args) -> None:
        if self.worker is not None:
            self.status.value = "Cancelling…"
            self.cancel_button.enabled = False  # once is enough
            self.worker.quit()

    def _on_progress(self, step: tuple[int, int, int, int]) -> None:
        plane, planes, done, total = step
        self.progress.max = 1000
        self.progress.value = int(1000 * (plane * total + done) / max(1, planes * total))
        where = f"plane {plane + 1}/{planes}, " if planes > 1 else ""
        self.status.value = f"{where}tile {done}/{total}"

    def _on_returned(self, result: RestoreResult) -> None:
        layer = self._job.get("layer")
        if result.error is not None or layer is None:
            show_error(f"Restoration failed: {result.error}")
            self.status.value = "Failed."
            return
        meta = provenance(layer, result.model, self._job["tile"], self._job["ensemble"],
                          self._job["jpeg_by"])
        kwargs = _copy_layer_kwargs(layer, meta)
        extra: dict[str, Any] = {"rgb": True} if layer.rgb else {
            "rgb": False, "colormap": layer.colormap, "contrast_limits": layer.contrast_limits,
            "gamma": layer.gamma}
        name = f"{layer.name} (restored)"
        done = self._replace_or_add(name, result.restored, meta, kwargs, extra)
        note = ""
        if result.difference is not None:
            d = result.difference
            lim = float(np.percentile(np.abs(d), 99.9)) if d.size else 1.0
            self._replace_or_add(f"{layer.name} (difference)", d, meta, kwargs, {
                "colormap": "twilight_shifted", "contrast_limits": (-(lim or 1.0), lim or 1.0),
                "visible": False})
            note = " The difference layer is hidden: tick its eye to see it."
        self.image.value = layer  # the new layers became active; the source stays the choice
        self.progress.value = 1000
        self.status.value = f"{done} '{name}'.{note}"

    def _replace_or_add(self, name: str, data: np.ndarray, meta: dict[str, Any],
                        kwargs: dict[str, Any], extra: dict[str, Any]) -> str:
        """Replace the data of an earlier result of the same name (a second run updates it,
        with its settings in the metadata) or add a new layer. Returns what was done."""
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            old.data, old.metadata = data, meta
            return "Replaced"
        self.viewer.add_image(data, name=name, **kwargs, **extra)
        return "Added"

    def _on_aborted(self) -> None:
        self.status.value = "Cancelled; no layer added."
        show_info("JPEG restoration cancelled")

    def _on_finished(self) -> None:
        self.progress.max = 1000
        self.worker = None
        self._job = {}
        self.run_button.enabled = True
        self.cancel_button.enabled = False


# ---------------------------------------------------------------------------- quality inspector
def _as_uint(plane: np.ndarray) -> np.ndarray:
    """uint8/uint16 for the encoder (which scales by 255 or 65535)."""
    if plane.dtype in (np.uint8, np.uint16):
        return plane
    p = plane.astype(np.float32)
    lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
    if np.issubdtype(plane.dtype, np.floating) and lo >= 0 and hi <= 1:
        lo, hi = 0.0, 1.0
    elif np.issubdtype(plane.dtype, np.integer) and lo >= 0 and hi <= 255:
        lo, hi = 0.0, 255.0
    return np.round(np.nan_to_num((p - lo) / (hi - lo or 1.0)).clip(0, 1) * 255).astype(np.uint8)


def table_quality(metadata: dict[str, Any]) -> tuple[int, bool] | None:
    """(quality, exact) from a layer's JPEG metadata (the reader's), or None."""
    from napari_jpeg_restore.core.jpeg import estimate_quality

    if metadata.get("jpeg_quality") is not None:
        return int(metadata["jpeg_quality"]), bool(metadata.get("jpeg_quality_exact", False))
    tables = metadata.get("quant_tables")
    if tables:
        est = estimate_quality({int(k): np.asarray(v) for k, v in tables.items()})
        return est.quality, est.exact
    return None


@dataclass
class InspectItem:
    name: str
    plane: Any  # 2-D / HxWxC array of the plane to inspect
    table_q: tuple[int, bool] | None


@dataclass
class InspectResult:
    heatmaps: list[np.ndarray] = field(default_factory=list)
    tile: int = 0
    xy: np.ndarray | None = None
    colour: np.ndarray | None = None  # quality shown for each point
    owner: np.ndarray | None = None  # index of the item each point belongs to
    estimates: list[float] = field(default_factory=list)  # mean CQE estimate per item
    traces: list[str] = field(default_factory=list)  # JPEG traces found in each item's pixels
    method: str = ""
    error: str | None = None


EMBED_CHUNK = 16  # tiles embedded between progress updates (and chances to cancel)


def inspect_steps(items: Sequence[InspectItem], model_spec: str, tile: int, method: str,
                  device: str) -> Generator[tuple[int, int, int, int], None, InspectResult]:
    """Embed the tiles of each item, yielding ``(item, items, tiles_done, tiles_total)`` after
    every few tiles (the worker may stop there), then project them all to 2-D."""
    from napari_jpeg_restore.core.embedding import as_encoder, embed, project_2d, tiles
    from napari_jpeg_restore.core.inference import resolve_device
    from napari_jpeg_restore.core.jpeg_traces import find_jpeg_grid
    from napari_jpeg_restore.core.registry import load_model

    try:
        dev = resolve_device(device)
        encoder = as_encoder(load_model(model_spec, dev))
        stride = encoder.cfg.stride
        res = InspectResult(method=method)
        embs, colour, owner = [], [], []
        for i, item in enumerate(items):
            plane = _as_uint(np.asarray(item.plane))
            side = min(tile, min(plane.shape[:2]) // stride * stride)
            side = max(stride, side // stride * stride)
            if res.tile and side != res.tile:
                side = res.tile  # one tile size for the whole plot
            res.tile = side
            parts, (rows, cols) = tiles(plane, side, cover=True)
            chunks = []
            for start in range(0, len(parts), EMBED_CHUNK):
                chunks.append(embed(encoder, parts[start:start + EMBED_CHUNK], dev))
                yield i, len(items), min(start + EMBED_CHUNK, len(parts)), len(parts)
            e, q = (np.concatenate(a) for a in zip(*chunks))
            res.heatmaps.append(q.reshape(rows, cols).astype(np.float32))
            res.estimates.append(float(q.mean()))
            found = None if item.table_q else find_jpeg_grid(np.asarray(item.plane))
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


class QualityInspectorWidget(_ModelChoice, QWidget):
    """Dock widget "Compression quality inspector"."""

    MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")

    def __init__(self, napari_viewer: napari.viewer.Viewer) -> None:
        super().__init__()
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        self.viewer = napari_viewer
        self.worker = None
        self._items: list[tuple[Image, InspectItem]] = []
        self.layers = Select(label="images", choices=self._image_choices)
        self.layers.native.setMaximumHeight(100)
        self.model = ComboBox(label="model", choices=lambda _w: _model_choices(True), value=AUTO)
        self.weights = FileEdit(label="weights file", mode="r", filter="*.pt", visible=False)
        self.tile = SpinBox(label="tile size", min=16, max=1024, step=16, value=64)
        self.method = ComboBox(label="projection", choices=["auto", "pca", "tsne"], value="auto")
        self.device = ComboBox(label="device", choices=list(DEVICES), value="auto")
        self.run_button = PushButton(text="Inspect")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(min=0, max=1000, value=0, label="progress")
        self.quality_label = Label(value="")
        self.status = Label(value="")
        for label in (self.quality_label, self.status):  # long lines wrap, never clip
            label.native.setWordWrap(True)
        self.form = Container(widgets=[
            self.layers, self.model, self.weights, self.tile, self.method, self.device,
            Container(widgets=[self.run_button, self.cancel_button], layout="horizontal",
                      labels=False),
            self.progress, self.quality_label, self.status])
        self.figure = Figure(figsize=(4, 3.4), tight_layout=True)
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(280)
        self.axes = self.figure.add_subplot(111)
        self._draw_empty()
        layout = QVBoxLayout(self)
        layout.addWidget(self.form.native)
        layout.addWidget(self.canvas, 1)
        self.model.changed.connect(self._on_model_changed)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        for event in (self.viewer.layers.events.inserted, self.viewer.layers.events.removed):
            event.connect(self.reset_choices)
        self.reset_choices()
        selected = [layer for layer in self.viewer.layers.selection if isinstance(layer, Image)]
        if selected:
            self.layers.value = selected
        if not model_names(True):
            self.status.value = ("No shipped model weights are installed:\n"
                                 "choose 'weights file…' and a .pt file.")

    def _image_choices(self, _widget=None) -> list[tuple[str, Any]]:
        return [(layer.name, layer) for layer in self.viewer.layers
                if isinstance(layer, Image) and not layer.name.endswith("(quality heatmap)")]

    def reset_choices(self, *_args) -> None:
        self.form.reset_choices()

    def _draw_empty(self) -> None:
        self.axes.clear()
        self.axes.set_title("compression-quality embeddings", fontsize=9)
        self.axes.text(0.5, 0.5, "choose images and press Inspect", ha="center", va="center",
                       transform=self.axes.transAxes, color="0.5")
        self.axes.set_xticks([])
        self.axes.set_yticks([])
        self._follow_theme(self.axes)
        self.canvas.draw_idle()

    def _current_plane(self, layer: Image) -> Any:
        data = layer.data
        lead = data.ndim - 2 - (1 if layer.rgb else 0)
        if lead <= 0:
            return data
        pos = layer.world_to_data(self.viewer.dims.point)
        idx = tuple(int(np.clip(round(float(v)), 0, n - 1)) for v, n in zip(pos[:lead], data.shape[:lead]))
        return data[idx]

    def run(self, *_args):
        from napari_jpeg_restore.core.inference import resolve_device

        if self.worker is not None:
            show_warning("The inspector is already running.")
            return None
        layers = list(self.layers.value) or [
            layer for layer in self.viewer.layers.selection if isinstance(layer, Image)]
        if not layers:
            show_warning("Choose one or more Image layers to inspect.")
            return None
        def prepare() -> tuple[list[tuple[Image, InspectItem]], Any]:
            for layer in layers:
                plane_layout(layer)  # raises for an unsupported layer
            items = [(layer, InspectItem(layer.name, self._current_plane(layer), table_quality(layer.metadata)))
                     for layer in layers]
            spec = resolve_model_spec(self.model.value, self.weights.value,
                                      max(_layer_channels(layer) for layer in layers))
            resolve_device(self.device.value)
            return items, spec

        prepared = self._prepare("inspect", prepare)
        if prepared is None:
            return None
        items, spec = prepared
        self._items = items
        worker = thread_worker(inspect_steps, start_thread=False)(
            [it for _, it in items], spec, int(self.tile.value), self.method.value, self.device.value)
        worker.yielded.connect(self._on_progress)
        worker.returned.connect(self._on_returned)
        worker.aborted.connect(self._on_aborted)
        worker.finished.connect(self._on_finished)
        self.worker = worker
        self.run_button.enabled = False
        self.cancel_button.enabled = True
        self.progress.value = 0
        self.progress.max = 0  # busy until the first tiles are counted (model loading)
        self.status.value = "Loading the encoder…"
        worker.start()
        return worker

    def cancel(self, *_args) -> None:
        if self.worker is not None:
            self.status.value = "Cancelling…"
            self.cancel_button.enabled = False
            self.worker.quit()

    def _on_progress(self, step: tuple[int, int, int, int]) -> None:
        item, items, done, total = step
        self.progress.max = 1000
        self.progress.value = int(1000 * (item * total + done) / max(1, items * total))
        self.status.value = f"image {item + 1}/{items}: embedded {done}/{total} tiles"

    def _on_aborted(self) -> None:
        self.status.value = "Cancelled; nothing added."

    def _on_finished(self) -> None:
        self.progress.max = 1000
        self.worker = None
        self.run_button.enabled = True
        self.cancel_button.enabled = False

    def _on_returned(self, res: InspectResult) -> None:
        if res.error is not None:
            show_error(f"Quality inspection failed: {res.error}")
            self.status.value = "Failed."
            return
        lines = []
        for (layer, item), heat, est, traces in zip(self._items, res.heatmaps, res.estimates,
                                                   res.traces):
            self._add_heatmap(layer, heat, res.tile, item, est)
            if item.table_q:
                q, exact = item.table_q
                lines.append(f"{item.name}: JPEG tables Q{q}{'' if exact else ' (approx.)'}")
            else:
                lines.append(f"{item.name}: no JPEG tables; {traces}")
        # Said plainly: across pictures the encoder's embedding still follows content more than
        # quality (docs/embeddings.md), so its number is not given as if it were a quality.
        lines.append("Encoder quality estimates (heatmap) are not yet reliable across images; "
                     "the tables, or the traces in the pixels, are.")
        self.quality_label.value = "\n".join(lines)
        self._plot(res)
        self.progress.value = 1000
        self.status.value = f"{len(res.xy)} tiles of {res.tile} px, {res.method.upper()}"

    def _add_heatmap(self, layer: Image, heat: np.ndarray, tile: int, item: InspectItem,
                     estimate: float) -> None:
        scale = np.asarray(layer.scale[-2:], float)
        translate = np.asarray(layer.translate[-2:], float) + (tile - 1) / 2 * scale
        name = f"{layer.name} (quality heatmap)"
        meta = {"tile": tile, "source_layer": layer.name, "cqe_quality_mean": estimate}
        if name in self.viewer.layers:
            old = self.viewer.layers[name]
            old.data, old.scale, old.translate, old.metadata = heat, scale * tile, translate, meta
            return
        added = self.viewer.add_image(heat, name=name, colormap="inferno", opacity=0.45,
                                      blending="translucent", contrast_limits=(0, 100),
                                      scale=scale * tile, translate=translate, metadata=meta)
        added.colorbar.visible = True

    def _plot(self, res: InspectResult) -> None:
        ax = self.axes
        self.figure.clear()
        ax = self.axes = self.figure.add_subplot(111)
        sc = None
        for i, (_, item) in enumerate(self._items):
            m = res.owner == i
            if not m.any():
                continue
            sc = ax.scatter(res.xy[m, 0], res.xy[m, 1], c=res.colour[m], cmap="inferno",
                            vmin=0, vmax=100, s=22, marker=self.MARKERS[i % len(self.MARKERS)],
                            edgecolors="0.75", linewidths=0.4, label=item.name)
        bar = self.figure.colorbar(sc, ax=ax, label="JPEG quality") if sc is not None else None
        if len(self._items) > 1:
            ax.legend(fontsize=7, loc="best")
        ax.set_title(f"{res.method.upper()} of compression-quality embeddings", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        self._follow_theme(ax, bar)
        self.canvas.draw_idle()

    def _follow_theme(self, ax, bar=None) -> None:
        """The plot in the viewer's theme colours (dark by default), text readable on them."""
        from napari.utils.theme import get_theme

        theme = get_theme(self.viewer.theme)
        back, text = theme.background.as_hex(), theme.text.as_hex()
        self.figure.set_facecolor(back)
        ax.set_facecolor(back)
        ax.title.set_color(text)
        for spine in ax.spines.values():
            spine.set_color(text)
        if bar is not None:
            bar.ax.yaxis.label.set_color(text)
            bar.ax.tick_params(colors=text)
            bar.outline.set_edgecolor(text)
        legend = ax.get_legend()
        if legend is not None:
            legend.get_frame().set_facecolor(back)
            for t in legend.get_texts():
                t.set_color(text)

    @property
    def plotted_points(self) -> int:
        """Number of points in the embedding plot (for tests and scripts)."""
        return sum(len(c.get_offsets()) for c in self.axes.collections)
