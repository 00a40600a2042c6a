"""The two training stages (and the ARCNN baseline) as runnable jobs: options → task → fit →
exported weights file (``<out>/model.pt``) loadable by the registry and the CLI."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..embedding import embed, quality_ordering
from ..inference import run_model
from ..jpeg import compress
from ..machine import describe
from ..metrics import psnr
from ..models import QualityEncoder, create_model
from ..models.growth import load_grown
from ..registry import load_model, save_weights
from ..sources import expand
from .data import ContrastiveSampler, PairSampler, load_images, to_tensor
from .loop import fit
from .tasks import ContrastiveTask, RestorationTask, load_frozen_encoder

STAGES = ("encoder", "restorer", "arcnn")
VAL_QUALITIES = (10, 40)


@dataclass
class TrainOptions:
    stage: str
    data: str
    out: str
    preset: str = "lite"
    channels: int = 1
    steps: int = 20000
    batch: int = 16
    patch: int = 96
    lr: float = 1e-4
    encoder: str | None = None
    encoder_mode: str = "frozen"  # frozen | none (ablation model-1) | joint (trained too; model-2)
    init: str | None = None  # fine-tune: start from these weights (fresh optimizer and schedule)
    qualities: tuple[int, int, int] = (10, 90, 10)  # low, high, step
    weighting: str = "uniform"  # uniform | inverse (restorer/arcnn quality sampling)
    double: float = 0.0  # share of double-compressed training pairs (restorer/arcnn)
    clean: float = 0.0  # share of identity (clean -> clean) training pairs (restorer/arcnn)
    temperature: float = 0.2
    region: int | None = None  # encoder: side of the region both positive crops come from
    queue: int = 4096
    val_data: str | None = None
    val_images: int = 8
    val_every: int = 500
    seed: int = 0
    resume: bool = False
    until: int | None = None
    device: str = "cpu"
    storage_options: dict[str, Any] = field(default_factory=dict)


def build_model(opts: TrainOptions) -> nn.Module:
    if opts.stage == "encoder":
        return create_model("cqe", opts.preset, opts.channels)
    if opts.stage == "arcnn":
        return create_model("arcnn", channels=opts.channels)
    model = create_model("crl", opts.preset, opts.channels, use_encoder=opts.encoder_mode != "none")
    if opts.encoder_mode == "frozen":
        if not (opts.encoder or opts.init):
            raise ValueError("the restorer stage needs --encoder (weights of a trained encoder), "
                             "--init (a restorer to fine-tune) or --encoder-mode none|joint")
        if opts.encoder:
            load_frozen_encoder(model, opts.encoder)
    return model


def lineage(weights: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What to record about a run this one builds on: source, steps, CPU-hours, options."""
    keep = ("steps", "cpu_hours", "init", "encoder", "options")
    return {"weights": str(weights), **{k: meta[k] for k in keep if meta.get(k) is not None}}


def encoder_lineage(weights: str) -> dict[str, Any]:
    """Lineage of the encoder a restorer stage freezes (``--encoder``). When the weights are a
    restorer's, only the encoder run its chain stands on counts, not that restorer's own training;
    an encoder trained jointly inside a restorer is not separable, so that restorer counts whole."""
    src = load_model(weights)
    if isinstance(src, QualityEncoder):
        return lineage(weights, src.meta)
    meta = src.meta
    while meta and not meta.get("encoder"):
        meta = meta.get("init")
    return {**meta["encoder"], "via": str(weights)} if meta else lineage(weights, src.meta)


def load_init(model: nn.Module, weights: str) -> dict[str, Any]:
    """Start from trained weights (``--init``): a registry name, weights or checkpoint file of the
    same architecture, or of one with fewer residual blocks (they are added as identities, see
    ``models.growth``). Returns its lineage, with the names of any added blocks."""
    src = load_model(weights)
    try:
        grown = load_grown(model, src.state_dict())
    except ValueError as err:
        raise ValueError(f"--init {weights}: its architecture does not match this stage's model "
                         f"({err})") from None
    return {**lineage(weights, src.meta), **({"grown": grown} if grown else {})}


def total_cpu_hours(meta: dict[str, Any]) -> float:
    """CPU-hours of a run plus those of the runs it stands on (``--init``, ``--encoder``)."""
    return (meta.get("cpu_hours", 0.0) + sum(total_cpu_hours(meta[k]) for k in ("init", "encoder")
                                             if meta.get(k)))


def build_task(opts: TrainOptions, images: list[np.ndarray], model: nn.Module,
               gather: Callable[[torch.Tensor], torch.Tensor] | None = None):
    if opts.stage == "encoder":
        return ContrastiveTask(model, ContrastiveSampler(images, patch=opts.patch, region=opts.region,
                                                          qualities=tuple(opts.qualities)), batch=opts.batch,
                               queue_size=opts.queue, temperature=opts.temperature, gather=gather)
    sampler = PairSampler(images, patch=opts.patch, qualities=tuple(opts.qualities),
                          weighting=opts.weighting, double=opts.double, clean=opts.clean)
    return RestorationTask(model, sampler, batch=opts.batch,
                           train_encoder=opts.encoder_mode == "joint")


def restoration_validator(model: nn.Module, images: list[np.ndarray],
                          qualities: tuple[int, ...] = VAL_QUALITIES) -> Callable[[], dict[str, float]]:
    """Mean PSNR of JPEG and restored images per quality (whole images, libjpeg via Pillow)."""
    pairs = [(q, im, compress(im, q)) for q in qualities for im in images]

    def validate() -> dict[str, float]:
        dev = next(model.parameters()).device
        out: dict[str, list[float]] = {}
        for q, clean, jpeg in pairs:
            y = run_model(model, to_tensor([jpeg]).to(dev))[0].cpu().numpy()
            y = np.round(y.clip(0, 1) * 255).astype(np.uint8)
            y = y[0] if y.shape[0] == 1 else y.transpose(1, 2, 0)
            out.setdefault(f"val_jpeg_q{q}", []).append(psnr(clean, jpeg))
            out.setdefault(f"val_psnr_q{q}", []).append(psnr(clean, y))
        return {k: float(np.mean(v)) for k, v in out.items()}
    return validate


def quality_crops(images: list[np.ndarray], qualities, crop: int = 128) -> tuple[list[np.ndarray], np.ndarray]:
    """Centre crops of every image compressed at every quality, with the quality labels."""
    crops, labels = [], []
    for im in images:
        h, w = im.shape[:2]
        y, x = (h - crop) // 2 // 8 * 8, (w - crop) // 2 // 8 * 8
        for q in qualities:
            crops.append(compress(im, q)[y:y + crop, x:x + crop])
            labels.append(q)
    return crops, np.array(labels)


def encoder_validator(model: nn.Module, images: list[np.ndarray]) -> Callable[[], dict[str, float]]:
    qualities = range(10, 91, 10)
    crops, labels = quality_crops(images, qualities)
    groups = np.arange(len(labels)) // len(qualities)

    def validate() -> dict[str, float]:
        e, _ = embed(model, crops, device=str(next(model.parameters()).device))
        scores = quality_ordering(e, labels, groups=groups)
        return {"val_spearman": scores["spearman_pc1"], "val_knn_acc": scores["knn_accuracy"],
                "val_spearman_within": scores["spearman_within_image"]}
    return validate


def fit_quality_probe(model: nn.Module, images: list[np.ndarray], ridge: float = 1e-3) -> float:
    """Fit the encoder's linear quality read-out (ridge regression on embeddings of training
    crops at Q5..Q95). Returns the mean absolute error in quality units."""
    crops, labels = quality_crops(images, range(5, 96, 5), crop=96)
    e, _ = embed(model, crops, device=str(next(model.parameters()).device))
    x = np.hstack([e, np.ones((len(e), 1))])
    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ labels.astype(np.float64))
    head = model.quality_head
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(w[:-1]).float()[None])
        head.bias.fill_(float(w[-1]))
    return float(np.abs(x @ w - labels).mean())


def train(opts: TrainOptions) -> Path:
    """Run one stage and export ``<out>/model.pt``; returns its path."""
    if opts.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    device = torch.device(opts.device)
    urls = expand(opts.data, opts.storage_options)
    images = load_images(urls, opts.channels, opts.storage_options)
    val = load_images(expand(opts.val_data, opts.storage_options)[: opts.val_images], opts.channels,
                      opts.storage_options) if opts.val_data else []
    model = build_model(opts)
    init = load_init(model, opts.init) if opts.init else None
    model = model.to(device)
    task = build_task(opts, images, model)
    validator = None
    if val:
        validator = encoder_validator(model, val) if opts.stage == "encoder" else restoration_validator(model, val)
    meta = {"options": {k: v for k, v in asdict(opts).items() if k != "storage_options"},
            "train_images": len(urls), "machine": describe(), "init": init,
            "encoder": encoder_lineage(opts.encoder) if opts.encoder else None}
    state = fit(task, steps=opts.steps, out_dir=opts.out, lr=opts.lr, device=device, seed=opts.seed,
                resume=opts.resume, val_every=opts.val_every, validate=validator, meta=meta,
                until=opts.until)
    meta = {**state["meta"], "steps": state["step"], "cpu_hours": state["wall_seconds"] * state["threads"] / 3600,
            "history_tail": state["history"][-3:]}
    model.eval()
    if opts.stage == "encoder":
        meta["quality_probe_mae"] = fit_quality_probe(model, images)
    dest = Path(opts.out) / "model.pt"
    save_weights(model.cpu(), dest, meta)
    return dest
