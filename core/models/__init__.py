"""Networks built from configs: ``create_model(family, preset, channels)`` or from a saved dict.

Families: ``crl`` (restorer with the compression quality encoder), ``cqe`` (the encoder
alone, for contrastive training), ``luma-chroma`` (a gray ``crl`` restorer on the luma of RGB
input and a light chroma branch) and ``arcnn``. Presets: ``paper`` (the paper's widths),
``base`` (the GPU-trained shipped preset: the paper's encoder, a narrower decoder), ``lite``
(CPU: works at half resolution after pixel-unshuffle) and the multi-scale CPU presets ``unet``,
``unet-deep`` and ``unet-narrow`` (lite's encoder; most compute at 1/4 and 1/8 resolution).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from torch import nn

from .arcnn import ARCNN, ARCNNConfig
from .cqe import EncoderConfig, EncoderOutput, QualityEncoder, QualityReadout
from .luma_chroma import ChromaConfig, LumaChroma, LumaChromaConfig
from .restorer import Restorer, RestorerConfig

_LITE_ENCODER = dict(widths=(16, 24, 32, 64), blocks_per_scale=1, unshuffle=2)
ENCODER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(widths=(64, 64, 128, 256), blocks_per_scale=2, unshuffle=1),
    "base": dict(widths=(64, 64, 128, 256), blocks_per_scale=2, unshuffle=1),
    "lite": _LITE_ENCODER,
    # the multi-scale CPU presets keep lite's encoder (and can take the shipped one, frozen)
    "unet": _LITE_ENCODER, "unet-deep": _LITE_ENCODER, "unet-narrow": _LITE_ENCODER,
}
RESTORER_PRESETS: dict[str, dict[str, Any]] = {
    "paper": dict(widths=(64, 96, 128), unshuffle=1, top_blocks=2, mid_attention=2, bottom_attention=4),
    # base: the paper's encoder and depth at 3/4 of its decoder widths, 7.6 M parameters, so
    # that its weights ship packed in fp16 under 16 MiB (the paper preset has 12 M).
    "base": dict(widths=(48, 64, 96), unshuffle=1, top_blocks=2, mid_attention=2, bottom_attention=3),
    "lite": dict(widths=(32, 48, 64), unshuffle=2, top_blocks=5, mid_attention=1, bottom_attention=2),
    # multi-scale CPU presets (screened in bench/results/shapes.md): most compute at 1/4 and 1/8 of the
    # input's resolution, on the U-Net's contracting and expanding paths
    "unet": dict(widths=(32, 64, 96), unshuffle=2, top_blocks=3, mid_attention=1, bottom_attention=2,
                 enc_blocks=(1, 4, 4), dec_blocks=(4, 4)),
    # lite's widths, so that it grows from the shipped lite weights (models.growth)
    "unet-narrow": dict(widths=(32, 48, 64), unshuffle=2, top_blocks=5, mid_attention=1, bottom_attention=2,
                        enc_blocks=(0, 4, 6), dec_blocks=(6, 4)),
    "unet-deep": dict(widths=(32, 64, 64), unshuffle=2, top_blocks=3, mid_attention=1, bottom_attention=2,
                      enc_blocks=(0, 4, 8), dec_blocks=(8, 4)),
}


def encoder_config(preset: str, channels: int) -> EncoderConfig:
    if preset not in ENCODER_PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(ENCODER_PRESETS)}")
    return EncoderConfig(in_channels=channels, **ENCODER_PRESETS[preset])


def _tuples(d: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}


@dataclasses.dataclass(frozen=True)
class Family:
    """One model family: its config and module classes, how a preset becomes a config, and how a
    saved config dict becomes one again."""

    config: type
    module: type
    from_preset: Callable[[str, int, dict[str, Any]], Any]
    from_dict: Callable[[dict[str, Any]], Any]


def _restorer_config(preset: str, channels: int, overrides: dict[str, Any]) -> RestorerConfig:
    return RestorerConfig(**{"in_channels": channels, "encoder": encoder_config(preset, channels),
                             **RESTORER_PRESETS[preset], **overrides})


def _restorer_from_dict(d: dict[str, Any]) -> RestorerConfig:
    return RestorerConfig(encoder=EncoderConfig(**_tuples(d.pop("encoder"))), **_tuples(d))


def _luma_chroma_config(preset: str, channels: int, overrides: dict[str, Any]) -> LumaChromaConfig:
    """RGB only; ``preset`` names the luma restorer's shape (``luma=`` a trained one's config)."""
    if channels != 3:
        raise ValueError("a luma-chroma model restores RGB: channels must be 3")
    return LumaChromaConfig(**{"luma": _restorer_config(preset, 1, {}), **overrides})


FAMILIES: dict[str, Family] = {
    "crl": Family(RestorerConfig, Restorer, _restorer_config, _restorer_from_dict),
    "cqe": Family(EncoderConfig, QualityEncoder,
                  lambda preset, ch, o: dataclasses.replace(encoder_config(preset, ch), **o),
                  lambda d: EncoderConfig(**_tuples(d))),
    "luma-chroma": Family(LumaChromaConfig, LumaChroma, _luma_chroma_config,
                          lambda d: LumaChromaConfig(luma=_restorer_from_dict(dict(d["luma"])),
                                                     chroma=ChromaConfig(**_tuples(d["chroma"])),
                                                     in_channels=d["in_channels"])),
    "arcnn": Family(ARCNNConfig, ARCNN, lambda preset, ch, o: ARCNNConfig(in_channels=ch, **o),
                    lambda d: ARCNNConfig(**d)),
}


def build_config(family: str, preset: str = "lite", channels: int = 1, **overrides: Any):
    """The config dataclass for a family/preset; ``overrides`` replace single fields."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if family not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}; choose from {tuple(FAMILIES)}")
    return FAMILIES[family].from_preset(preset, channels, overrides)


def family_of(cfg) -> str:
    for name, fam in FAMILIES.items():
        if isinstance(cfg, fam.config):
            return name
    raise TypeError(f"not a model config: {cfg!r}")


def config_to_dict(cfg) -> dict[str, Any]:
    return {"family": family_of(cfg), **dataclasses.asdict(cfg)}


def config_from_dict(d: dict[str, Any]):
    d = dict(d)
    return FAMILIES[d.pop("family")].from_dict(d)


def model_from_config(cfg) -> nn.Module:
    return FAMILIES[family_of(cfg)].module(cfg)


def create_model(family: str, preset: str = "lite", channels: int = 1, **overrides: Any) -> nn.Module:
    return model_from_config(build_config(family, preset, channels, **overrides))


def takes_tables(cfg) -> bool:
    """Whether a model of this config needs the JPEG's luma table: a table-conditioned CRL
    restorer, or a luma-chroma model on one (ARCNN and encoder configs have no such field)."""
    return bool(getattr(cfg, "condition", False))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


__all__ = [
    "ARCNN",
    "FAMILIES",
    "ARCNNConfig",
    "ChromaConfig",
    "EncoderConfig",
    "EncoderOutput",
    "Family",
    "LumaChroma",
    "LumaChromaConfig",
    "QualityEncoder",
    "QualityReadout",
    "Restorer",
    "RestorerConfig",
    "build_config",
    "config_from_dict",
    "config_to_dict",
    "count_parameters",
    "create_model",
    "model_from_config",
    "takes_tables",
]
