"""Named models: those whose weights ship inside the package (``core/weights/<name>.pt``) and
the user's own, fine-tuned ones (``<user models folder>/<name>.pt``, see ``user_models_folder``).

A weights file is a ``torch.save`` dict: ``config`` (see ``models.config_to_dict``),
``state_dict`` and ``meta`` (training data, steps, validation figures).
"""
from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from .error_text import one_line
from .imageio.filesystem import resolve, write_atomically
from .jpeg.consistency import Calibration, calibration_path

if TYPE_CHECKING:  # torch is imported only to load or save weights (the OpenVINO engine needs none)
    import torch
    from torch import nn

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
USER_MODELS_ENV = "JPEG_RESTORE_MODELS"  # overrides the user models folder (tests, clusters)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


class ModelNotAvailableError(LookupError):
    """The model name is unknown or its weights are not shipped."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    family: str
    channels: int
    description: str
    folder: Path | None = None  # a user model's folder; None: shipped with the package

    @property
    def shipped(self) -> bool:
        return self.folder is None

    @property
    def path(self) -> Path:
        return (self.folder or WEIGHTS_DIR) / f"{self.name}.pt"

    @property
    def has_weights(self) -> bool:
        return self.path.is_file()


MODELS: dict[str, ModelInfo] = {m.name: m for m in [
    ModelInfo("crl-lite-gray", "crl", 1, "contrastive-encoder restorer, CPU preset, grayscale"),
    ModelInfo("crl-lite-color", "crl", 3, "contrastive-encoder restorer, CPU preset, RGB"),
    ModelInfo("crl-gray", "crl", 1, "contrastive-encoder restorer, multi-scale CPU preset "
              "(unet-narrow) conditioned on the JPEG's luma table, grayscale"),
    ModelInfo("crl-color", "luma-chroma", 3, "a gray contrastive-encoder restorer on the luma "
              "and a light chroma branch, RGB"),
    ModelInfo("crl-base-gray", "crl", 1, "contrastive-encoder restorer, GPU-trained base preset, grayscale"),
    ModelInfo("crl-base-color", "crl", 3, "contrastive-encoder restorer, GPU-trained base preset, RGB"),
    ModelInfo("arcnn-gray", "arcnn", 1, "ARCNN baseline, grayscale"),
    ModelInfo("arcnn-color", "arcnn", 3, "ARCNN baseline, RGB"),
    ModelInfo("cqe-lite-gray", "cqe", 1, "quality encoder (table positives, block-DCT branch): "
              "quality estimates from pixels, grayscale"),
    ModelInfo("cqe-lite-color", "cqe", 3, "quality encoder (table positives, block-DCT branch): "
              "quality estimates from pixels, RGB"),
]}
DEFAULT_MODELS = {1: "crl-lite-gray", 3: "crl-lite-color"}
CUDA_MODELS = {1: "crl-base-gray", 3: "crl-base-color"}  # preferred on a GPU, when shipped
# preferred, when shipped, on a CPU that computes bf16 natively and on CUDA after crl-base-*;
# lite elsewhere (engines.default_model; speeds: bench/results/whole_command.md)
FAST_CPU_MODELS = {1: "crl-gray", 3: "crl-color"}
QUALITY_MODELS = {1: "cqe-lite-gray", 3: "cqe-lite-color"}


def user_models_folder() -> Path:
    """Where fine-tuned models are registered by name: ``$JPEG_RESTORE_MODELS``, else the
    platform's user data folder (platformdirs; ``~/.local/share/napari-jpeg-restore/models``
    on Linux)."""
    if os.environ.get(USER_MODELS_ENV):
        return Path(os.environ[USER_MODELS_ENV]).expanduser()
    from platformdirs import user_data_path

    return user_data_path("napari-jpeg-restore", appauthor=False) / "models"


def user_model_path(name: str) -> Path:
    """The weights file a new user model called ``name`` is written to; ValueError for a name
    that is not a plain file name or that a shipped model has."""
    if not _NAME.fullmatch(name) or name.endswith(".pt"):
        raise ValueError(f"model name {name!r}: use 1-64 letters, digits, '.', '_' or '-', "
                         "starting with a letter or digit, without .pt")
    if name in MODELS:
        raise ValueError(f"model name {name!r} is a shipped model's; choose another")
    return user_models_folder() / f"{name}.pt"


@lru_cache(maxsize=64)
def _user_model_info(path: str, mtime: float) -> ModelInfo | None:
    """A user weights file's entry, read once per version of the file (the napari model lists
    ask at every layer change); None for a file that is not weights."""
    import torch

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        cfg = blob["config"]
    except Exception:  # not a weights file (or half of one from another tool): not a model
        return None
    description = blob.get("meta", {}).get("description") or f"user model ({cfg['family']})"
    p = Path(path)
    return ModelInfo(p.stem, cfg["family"], int(cfg["in_channels"]), description, p.parent)


def user_models() -> list[ModelInfo]:
    """The models in the user models folder (files that do not load as weights are skipped)."""
    paths = sorted(user_models_folder().glob("*.pt"))
    infos = (_user_model_info(str(p), p.stat().st_mtime) for p in paths)
    return [info for info in infos if info is not None]


def available_models() -> list[ModelInfo]:
    """The shipped models, then the user's (``user_models``)."""
    return [*MODELS.values(), *user_models()]


def default_quality_model(channels: int) -> str:
    """The encoder that estimates quality from pixels: ``cqe-lite-*`` where shipped (the other
    colour type's if only that one is), else a lite restorer's encoder."""
    kind = 3 if channels >= 3 else 1
    candidates = (QUALITY_MODELS[kind], QUALITY_MODELS[4 - kind], DEFAULT_MODELS[kind], DEFAULT_MODELS[4 - kind])
    for name in candidates:
        if MODELS[name].has_weights:
            return name
    raise ModelNotAvailableError(f"no shipped weights for {', '.join(candidates)} yet: nothing reads "
                                 "quality from pixels")


def save_weights(model: nn.Module, path: str | Path, meta: dict[str, Any] | None = None,
                 half: bool = False) -> None:
    """Write a self-describing weights file (atomically). ``half`` stores floating-point tensors
    in fp16 (half the size; loading casts them back to the model's fp32)."""
    from .models import config_to_dict

    state = half_tensors(model.state_dict()) if half else model.state_dict()
    save_torch(path, {"config": config_to_dict(model.cfg), "state_dict": state,
                      "meta": {**(meta or {}), **({"stored": "fp16"} if half else {})}})


def save_torch(path: str | Path, obj: Any) -> None:
    """torch.save, atomically: readers never see half a file (weights files, checkpoints)."""
    import torch

    write_atomically(path, lambda f: torch.save(obj, f))


def half_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict with its floating-point tensors in fp16 (loading casts them back)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def int8_tensors(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """A state dict with its kernels and matrices (2-D and more) as int8, one fp32 scale per
    output channel (each weight within 1/254 of its channel's largest), the rest as in
    ``half_tensors``: a quarter of fp32. ``float_tensors`` reads it back."""
    import torch

    packed: dict[str, Any] = half_tensors(state)
    for k, v in state.items():
        if v.is_floating_point() and v.ndim >= 2:
            rows = v.detach().float().reshape(len(v), -1)
            scale = rows.abs().amax(1).clamp_min(1e-12) / 127
            packed[k] = {"int8": torch.round(rows / scale[:, None]).to(torch.int8).reshape(v.shape),
                         "scale": scale}
    return packed


def float_tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """A state dict as ``int8_tensors`` (or ``half_tensors``, or nothing) stored it, with the
    int8 entries back in fp32."""
    return {k: v["int8"].float() * v["scale"].view(-1, *[1] * (v["int8"].ndim - 1))
            if isinstance(v, dict) else v for k, v in state.items()}


def cache_folder() -> Path:
    """Where weights fetched from URLs are kept (``$XDG_CACHE_HOME/napari-jpeg-restore``)."""
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "napari-jpeg-restore" / "weights"


def fetch_weights(url: str, storage_options: dict | None = None) -> Path:
    """A local copy of a weights file at an fsspec URL (``s3://``, ``gs://``, ``memory://``...),
    with its calibration when there is one beside it; fetched again on every call (the copy
    is replaced atomically), so a retrained model is never served stale."""
    fs, remote = resolve(url, storage_options)
    local = cache_folder() / hashlib.sha1(url.encode()).hexdigest()[:16] / PurePosixPath(remote).name
    try:
        for src, dst in ((remote, local), (str(calibration_path(PurePosixPath(remote))),
                                           calibration_path(local))):
            if src != remote and not fs.exists(src):
                dst.unlink(missing_ok=True)
                continue
            data = fs.cat_file(src)
            write_atomically(dst, lambda f, data=data: f.write(data))
    except FileNotFoundError:
        raise ModelNotAvailableError(f"no weights file at {url}") from None
    return local


def resolve_weights(name_or_path: str | Path, storage_options: dict | None = None) -> Path:
    """The weights file of a registry name (shipped, then the user's), a path or an fsspec URL
    (fetched to a local cache); ModelNotAvailableError if there is none."""
    spec = str(name_or_path)
    if "://" in spec and not spec.startswith("file://"):
        return fetch_weights(spec, storage_options)
    name_or_path = spec.removeprefix("file://")
    if str(name_or_path) in MODELS:
        info = MODELS[str(name_or_path)]
        if not info.has_weights:
            raise ModelNotAvailableError(
                f"model {info.name} has no shipped weights in this release; "
                f"models with weights: {', '.join(m.name for m in MODELS.values() if m.has_weights) or 'none'}")
        return info.path
    own = user_models_folder() / f"{name_or_path}.pt"
    if _NAME.fullmatch(str(name_or_path)) and own.is_file():
        return own
    path = Path(name_or_path)
    if path.is_file():
        return path
    raise ModelNotAvailableError(
        f"unknown model {name_or_path!r}: not a registry name ({', '.join(MODELS)}), a model in "
        f"{user_models_folder()} nor a weights file")


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> tuple[nn.Module, dict[str, Any]]:
    import torch

    from .models import config_from_dict, model_from_config

    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        state = float_tensors(blob.get("state_dict", blob.get("model")))
        model = model_from_config(config_from_dict(blob["config"]))
        model.load_state_dict(state)
    except Exception as err:  # not a weights file, or one of another model: one clear line
        raise ModelNotAvailableError(f"{path} is not a usable weights file "
                                     f"({type(err).__name__}: {one_line(err, 200)})") from err
    return model.eval(), dict(blob.get("meta", {}))


def load_model(name_or_path: str | Path, device: str | torch.device = "cpu",
               storage_options: dict | None = None) -> nn.Module:
    """A ready-to-run model (eval mode) from a registry name or a weights/checkpoint file.

    The returned module carries ``.cfg``, ``.meta`` and ``.calibration`` (the
    :class:`.consistency.Calibration` in ``<weights>.calibration.json`` beside the weights
    file, or None); loads are cached per file.
    """
    path = resolve_weights(name_or_path, storage_options)
    model, meta = _load_cached(str(path.resolve()), path.stat().st_mtime)
    model.meta = meta
    cal = calibration_path(path)
    model.calibration = Calibration.load(cal) if cal.is_file() else None
    return model.to(device)
