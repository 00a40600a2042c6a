"""Networks built from configs: ``create_model(family, preset, channels)`` or from a saved dict.

Families: ``crl`` (restorer with the compression quality encoder), ``cqe`` (the encoder
alone, for contrastive training) and ``arcnn``. Presets: ``paper`` (the paper's widths),
``base`` (the GPU-trained shipped preset: the paper's encoder, a narrower decoder) and ``lite``
(CPU: works at half resolution after pixel-unshuffle).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from .arcnn import ARCNN, ARCNNConfig
from .cqe import EncoderConfig, EncoderOutput, QualityEncoder
from .restorer import Restorer, RestorerConfig

ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(widths=(64, 64, 128, 256), blocks_per_scale=2, unshuffle=1),
    "base": dict(widths=(64, 64, 128, 256), blocks_per_scale=2, unshuffle=1),
    "lite": dict(widths=(16, 24, 32, 64), blocks_per_scale=1, unshuffle=2),
}
RESTORER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(widths=(64, 96, 128), unshuffle=1, top_blocks=2, mid_attention=2, bottom_attention=4),
    # base: the paper's encoder and depth at 3/4 of its decoder widths, 7.6 M parameters, so
    # that its weights ship packed in fp16 under 16 MiB (the paper preset has 12 M).
    "base": dict(widths=(48, 64, 96), unshuffle=1, top_blocks=2, mid_attention=2, bottom_attention=3),
    "lite": dict(widths=(32, 48, 64), unshuffle=2, top_blocks=5, mid_attention=1, bottom_attention=2),
}
FAMILIES = ("crl", "cqe", "arcnn")


def encoder_config(preset: str, channels: int) -> EncoderConfig:
    return EncoderConfig(in_channels=channels, **ENCODER_PRESETS[preset])


def build_config(family: str, preset: str = "lite", channels: int = 1, **overrides: Any):
    """The config dataclass for a family/preset; ``overrides`` replace single fields."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if family == "arcnn":
        return ARCNNConfig(in_channels=channels, **overrides)
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(ENCODER_PRESETS)}")
    if family == "cqe":
        return dataclasses.replace(encoder_config(preset, channels), **overrides)
    if family == "crl":
        return RestorerConfig(in_channels=channels, encoder=encoder_config(preset, channels),
                              **{**RESTORER_PRESETS[preset], **overrides})
    raise ValueError(f"unknown model family {family!r}; choose from {FAMILIES}")


def config_to_dict(cfg) -> dict[str, Any]:
    kind = {ARCNNConfig: "arcnn", EncoderConfig: "cqe", RestorerConfig: "crl"}[type(cfg)]
    return {"family": kind, **dataclasses.asdict(cfg)}


def config_from_dict(d: dict[str, Any]):
    d = dict(d)
    family = d.pop("family")
    if family == "arcnn":
        return ARCNNConfig(**d)
    if family == "cqe":
        return EncoderConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})
    enc = config_from_dict({"family": "cqe", **d.pop("encoder")})
    return RestorerConfig(encoder=enc, **{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def model_from_config(cfg) -> nn.Module:
    if isinstance(cfg, ARCNNConfig):
        return ARCNN(cfg)
    if isinstance(cfg, EncoderConfig):
        return QualityEncoder(cfg)
    if isinstance(cfg, RestorerConfig):
        return Restorer(cfg)
    raise TypeError(f"not a model config: {cfg!r}")


def create_model(family: str, preset: str = "lite", channels: int = 1, **overrides: Any) -> nn.Module:
    return model_from_config(build_config(family, preset, channels, **overrides))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ARCNN", "ARCNNConfig", "EncoderConfig", "EncoderOutput", "QualityEncoder", "Restorer",
    "RestorerConfig", "build_config", "config_from_dict", "config_to_dict", "count_parameters",
    "create_model", "model_from_config",
]
