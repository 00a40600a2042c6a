"""The two training stages (and the ARCNN baseline) as runnable jobs: options → model and task →
``loop.fit`` → exported weights file loadable by the registry and the CLI. ``train`` runs one
process; Ray Train's ``train_func`` uses the same ``prepare``/``fit_kwargs``/``export``."""
from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..engines.machine import describe
from ..imageio.reading import load_images
from ..imageio.sources import expand
from ..models import (
    LumaChroma,
    QualityEncoder,
    Restorer,
    create_model,
    model_from_config,
    takes_tables,
)
from ..models.growth import load_grown
from ..registry import load_model, save_weights
from .data import ContrastiveSampler, ImageShard, PairSampler
from .lineage import encoder_lineage, lineage
from .loop import Runtime, fit
from .options import TrainOptions
from .tasks import ContrastiveTask, RankingTask, RestorationTask, trained_encoder
from .validators import BestWeights, encoder_validator, fit_quality_probe, restoration_validator

WEIGHTS = "model.pt"


def build_model(opts: TrainOptions, fetched: dict[str, str] | None = None) -> nn.Module:
    """The stage's model; a frozen ``--encoder`` is loaded (from its local copy in ``fetched``)."""
    if opts.stage in ("encoder", "ranker"):
        return create_model("cqe", opts.preset, opts.channels, dct_width=opts.dct_width)
    if opts.stage == "arcnn":
        return create_model("arcnn", channels=opts.channels)
    if opts.luma:
        return luma_chroma_model((fetched or {}).get(opts.luma, opts.luma), opts.luma)
    colour = whole_colour_model(opts, fetched)
    if colour is not None:
        return colour
    if opts.encoder_mode == "frozen" and not (opts.encoder or opts.init):
        raise ValueError("the restorer stage needs --encoder (weights of a trained encoder), "
                         "--init (a restorer to fine-tune), --luma (a gray restorer, for colour) "
                         "or --encoder-mode none|joint")
    encoder = None
    if opts.encoder_mode == "frozen" and opts.encoder:
        encoder = trained_encoder((fetched or {}).get(opts.encoder, opts.encoder))
    # the restorer takes the trained encoder's own architecture (a DCT branch, other widths)
    model = create_model("crl", opts.preset, opts.channels, use_encoder=opts.encoder_mode != "none",
                         condition=opts.table_condition, **({"encoder": encoder.cfg} if encoder else {}))
    if encoder is not None:
        model.encoder.load_state_dict(encoder.state_dict())
    return model


def luma_chroma_model(file: str, spec: str) -> LumaChroma:
    """A colour model on the gray restorer in ``file`` (``--luma spec``), its chroma branch new."""
    gray = load_model(file)
    if not isinstance(gray, Restorer) or gray.cfg.in_channels != 1:
        raise ValueError(f"--luma {spec}: not a gray restorer")
    model = create_model("luma-chroma", channels=3, luma=gray.cfg)
    model.luma.load_state_dict(gray.state_dict())
    return model


def whole_colour_model(opts: TrainOptions, fetched: dict[str, str] | None = None) -> LumaChroma | None:
    """For a luma-chroma ``--init`` without ``--luma`` (a fine-tune of a colour model such as
    crl-color): a model of its architecture whose gray restorer trains with the chroma branch (its
    quality encoder stays frozen); None for any other run."""
    if opts.channels != 3 or not opts.init:
        return None
    src = load_model((fetched or {}).get(opts.init, opts.init))
    if not isinstance(src, LumaChroma):
        return None
    if opts.encoder or opts.encoder_mode != "frozen" or opts.table_condition != src.cfg.condition:
        raise ValueError(f"--init {opts.init}: a luma-chroma model is fine-tuned as it was built: "
                         "no --encoder or --encoder-mode, and --table-condition exactly when it has it")
    model = model_from_config(src.cfg)
    model.luma_frozen = False
    return model


def load_init(model: nn.Module, weights: str, file: str | None = None) -> dict[str, Any]:
    """Start from trained weights (``--init``; read from ``file`` when it was fetched): a registry
    name, weights or checkpoint file of the same architecture, or of one with fewer residual
    blocks (they are added as identities, see ``models.growth``). A luma-chroma model under a
    frozen ``--luma`` takes only the chroma branch of a luma-chroma ``--init``: its gray restorer
    is ``--luma``'s (a branch trained under one gray restorer goes on training under another).
    Returns its lineage, with the names of any added blocks."""
    src = load_model(file or weights)
    target, state = model, src.state_dict()
    if isinstance(model, LumaChroma) and isinstance(src, LumaChroma) and model.luma_frozen:
        target, state = model.chroma, src.chroma.state_dict()
    try:
        grown = load_grown(target, state)
    except ValueError as err:
        raise ValueError(f"--init {weights}: its architecture does not match this stage's model "
                         f"({err})") from None
    return {**lineage(weights, src.meta), **({"grown": grown} if grown else {})}


def build_task(opts: TrainOptions, images, model: nn.Module,
               gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
               fetched: dict[str, str] | None = None):
    if opts.stage == "ranker":  # pairs: one crop at two qualities
        sampler = ContrastiveSampler(images, patch=opts.patch, region=opts.region,
                                     qualities=tuple(opts.qualities), positives="image")
        return RankingTask(model, sampler, batch=opts.batch, margin=opts.margin)
    if opts.stage == "encoder":
        sampler = ContrastiveSampler(images, patch=opts.patch, region=opts.region,
                                     qualities=tuple(opts.qualities), positives=opts.positives)
        return ContrastiveTask(model, sampler, batch=opts.batch, queue_size=opts.queue,
                               temperature=opts.temperature, gather=gather,
                               same_tables=opts.positives == "tables",
                               quality_span=opts.quality_span)
    # tables for any conditioned model: a grown one, or a colour model on a conditioned gray restorer
    sampler = PairSampler(images, patch=opts.patch, qualities=tuple(opts.qualities),
                          weighting=opts.weighting, double=opts.double, clean=opts.clean,
                          tables=takes_tables(model.cfg), recolour=opts.recolour)
    ranker = load_model((fetched or {}).get(opts.ranker, opts.ranker)) if opts.ranker else None
    if ranker is not None and not isinstance(ranker, QualityEncoder):
        raise ValueError(f"--ranker {opts.ranker}: not a ranker (train one with the ranker stage)")
    return RestorationTask(model, sampler, batch=opts.batch,
                           train_encoder=opts.encoder_mode == "joint", ranker=ranker,
                           ranker_weight=opts.ranker_loss)


def prepare(opts: TrainOptions, rank: int = 0, world: int = 1,
            gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
            fetched: dict[str, str] | None = None) -> tuple[nn.Module, Any, ImageShard, dict[str, Any]]:
    """The model (seeded: identical on every rank), its task, this rank's share of the training
    images (every ``world``-th file, read as needed) and the run's metadata. ``fetched`` maps
    ``--encoder``/``--init``/``--luma``/``--ranker`` specs to local copies (a Ray worker's)."""
    urls = expand(opts.data, opts.storage_options)
    images = ImageShard(urls[rank::world] or urls, opts.channels, opts.storage_options, opts.cache_mb)
    local = fetched or {}
    torch.manual_seed(opts.seed)
    model = build_model(opts, local)
    init = load_init(model, opts.init, local.get(opts.init)) if opts.init else None
    task = build_task(opts, images, model, gather, local)
    meta = {"options": opts.public(), "train_images": len(urls),
            "machine": describe(), "init": init,
            "encoder": encoder_lineage(opts.encoder, local.get(opts.encoder)) if opts.encoder else None,
            "luma": lineage(opts.luma, load_model(local.get(opts.luma, opts.luma)).meta) if opts.luma else None,
            "ranker": lineage(opts.ranker, task.ranker.meta) if opts.ranker else None}
    return model, task, images, meta


def validator(opts: TrainOptions, model: nn.Module) -> Callable[[], dict[str, float]] | None:
    """The run's validation on ``--val-data``; with ``--keep-best`` a :class:`BestWeights` that
    has already checked the starting weights."""
    if not opts.val_data:
        return None
    val = load_images(expand(opts.val_data, opts.storage_options)[: opts.val_images], opts.channels,
                      opts.storage_options)
    if opts.stage in ("encoder", "ranker"):
        return encoder_validator(model, val)
    check = restoration_validator(model, val, opts.val_qualities)
    if not opts.keep_best:
        return check
    best = BestWeights(model.eval(), check)
    best()
    return best


def kept(check: Callable[[], dict[str, float]] | None, model: nn.Module) -> dict[str, Any]:
    """With ``--keep-best``: the best weights back into ``model``, and their metadata."""
    return check.keep(model) if isinstance(check, BestWeights) else {}


def fit_kwargs(opts: TrainOptions) -> dict[str, Any]:
    """The options ``loop.fit`` takes."""
    keys = ("steps", "lr", "seed", "resume", "log_every", "val_every", "val_seconds", "ckpt_every", "until",
            "time_budget", "precision", "loader_workers", "compile", "grad_clip")
    return {k: getattr(opts, k) for k in keys}


def export(model: nn.Module, state: dict[str, Any], images, dest: str | Path,
           extra: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write the trained model as a self-describing weights file (metadata from the last
    checkpoint ``state``; an encoder first gets its quality read-out fitted on ``images``)."""
    workers = state["world_size"]
    meta = {**state["meta"], **(extra or {}), "steps": state["step"],
            "cpu_hours": state["wall_seconds"] * state["threads"] * workers / 3600,
            "device": state["device"], "precision": state["precision"],
            "history": state["history"], "history_tail": state["history"][-3:]}
    model = copy.deepcopy(model).cpu().eval()
    if isinstance(model, QualityEncoder):
        meta["quality_probe_mae"] = fit_quality_probe(model, images)
    dest = Path(dest)
    save_weights(model, dest, meta, half=half)
    return dest


def train(opts: TrainOptions, *, stop: Callable[[], bool] | None = None,
          watch: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Run one stage in this process and export ``<out>/model.pt``; returns its path. ``stop``
    and ``watch``: see ``loop.Runtime`` (end early, cleanly; see every logged record)."""
    device = torch.device(opts.device)
    model, task, images, meta = prepare(opts)
    check = validator(opts, model)
    if isinstance(check, BestWeights) and watch is not None:  # the starting weights' check
        watch({"step": 0, **check.first_record})
    state = fit(task, out_dir=opts.out, device=device, validate=check, meta=meta,
                runtime=Runtime(stop=stop, watch=watch), **fit_kwargs(opts))
    return export(model, state, images, Path(opts.out) / WEIGHTS, kept(check, model),
                  half=opts.half_weights)

