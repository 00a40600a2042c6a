"""Training options, defined once: the dataclasses every training path takes and the command-line
flags that fill them (``jpeg-restore train``/``finetune`` and the Ray jobs add only their own
flags)."""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from ..imageio.filesystem import parse_storage_options
from ..jpeg.codec import WEIGHTINGS, quality_factor

STAGES = ("encoder", "ranker", "restorer", "arcnn")
TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # no fp16: the loop has no loss scaling
POSITIVES = ("tables", "image")
# models.RESTORER_PRESETS, named here without importing torch
PRESETS = ("lite", "unet", "unet-narrow", "unet-deep", "base", "paper")
VAL_QUALITIES = (10, 40)


@dataclass
class TrainOptions:
    stage: str
    data: str | list[str]  # folders, globs, files or URLs
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
    luma: str | None = None  # restorer, RGB: this gray restorer on the luma (frozen), a chroma branch
    qualities: tuple[int, int, int] = (10, 90, 10)  # low, high, step
    weighting: str = "uniform"  # uniform | inverse | inverse-sqrt (restorer/arcnn quality sampling)
    double: float = 0.0  # share of double-compressed training pairs (restorer/arcnn)
    clean: float = 0.0  # share of identity (clean -> clean) training pairs (restorer/arcnn)
    recolour: bool = False  # restorer/arcnn: turn each colour crop's hues by a random angle
    temperature: float = 0.2
    region: int | None = None  # encoder: side of the region both positive crops come from
    positives: str = "tables"
    quality_span: float = 0.0  # encoder, tables: keys this close in quality are partly positives
    dct_width: int = 0  # encoder: width of the block-DCT branch (0: none, the paper's encoder)
    table_condition: bool = False  # restorer: takes the JPEG's luma table as side information
    margin: float = 0.5  # ranker: margin of the ranking loss
    ranker: str | None = None  # restorer: a trained ranker whose terms join the loss
    ranker_loss: float = 0.0  # restorer: the weight of those terms
    queue: int = 4096
    val_data: str | list[str] | None = None
    val_images: int = 8
    val_every: int = 500
    val_seconds: float | None = None  # also validate this long after the last validation
    val_qualities: tuple[int, ...] = VAL_QUALITIES  # restorer/arcnn: qualities of the validation
    keep_best: bool = False  # restorer/arcnn: export the weights that validated best
    log_every: int = 50
    ckpt_every: int = 200
    seed: int = 0
    resume: bool = False
    until: int | None = None
    time_budget: float | None = None  # seconds of training; the schedule ends with the budget
    precision: str = "auto"  # auto (bf16 where the device runs it natively) | fp32 | bf16
    loader_workers: int = 0  # processes that crop and JPEG-compress batches (0: in the loop)
    cache_mb: int = 4096  # decoded training images kept in memory per process (LRU)
    compile: bool = False  # torch.compile the model
    grad_clip: float = 0.0  # largest global gradient norm (0: no clipping)
    half_weights: bool = False  # store the exported weights in fp16
    device: str = "cpu"
    storage_options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {TRAIN_PRECISIONS}, got {self.precision!r}")
        if self.positives not in POSITIVES:
            raise ValueError(f"positives must be one of {POSITIVES}, got {self.positives!r}")
        if self.table_condition and self.stage != "restorer":
            raise ValueError("--table-condition is a restorer option")
        if (self.ranker_loss > 0) != bool(self.ranker) or (self.ranker and self.stage != "restorer"):
            raise ValueError("--ranker-loss W and --ranker WEIGHTS go together, for the restorer stage")
        if self.luma and (self.stage != "restorer" or self.channels != 3 or self.encoder
                          or self.encoder_mode != "frozen" or self.table_condition):
            raise ValueError("--luma is a colour restorer's option (--channels 3): the gray "
                             "restorer brings its own frozen encoder, so no --encoder, "
                             "--encoder-mode or --table-condition")
        if self.patch % 8:
            raise ValueError(f"--patch must be a multiple of 8, got {self.patch}")
        if self.keep_best and not (self.val_data and self.stage in ("restorer", "arcnn")):
            raise ValueError("--keep-best needs --val-data, for the restorer or arcnn stage")
        self.qualities = tuple(self.qualities)
        self.val_qualities = tuple(self.val_qualities)

    def public(self) -> dict[str, Any]:
        """The options without ``storage_options`` (which may hold secrets): for metadata and logs."""
        return {k: v for k, v in asdict(self).items() if k != "storage_options"}

    @classmethod
    def from_args(cls, a: argparse.Namespace, **overrides: Any) -> TrainOptions:
        """From flags added by ``add_train_args``; batch and patch default per stage."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in vars(a).items() if k in names and v is not None}
        enc = a.stage in ("encoder", "ranker")
        values.setdefault("batch", 32 if enc else 16)
        values.setdefault("patch", 64 if enc else 96)
        values["storage_options"] = parse_storage_options(a.storage_options)
        return cls(**{**values, **overrides})


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The flags of a training run, shared by ``jpeg-restore train`` and the Ray job."""
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--data", required=True,
                   help="clean training images: folder, glob or fsspec URL (never validation images)")
    p.add_argument("--preset", default="lite", choices=PRESETS,
                   help="lite (CPU speed), unet / unet-deep / unet-narrow (multi-scale CPU presets, "
                        "bench/results/shapes.md), base (GPU-trained shipped size) or paper (default: lite)")
    p.add_argument("--channels", type=int, default=1, choices=[1, 3])
    p.add_argument("--steps", type=int, default=20000, help="total steps (default: 20000)")
    p.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="train for at most this many seconds (steps still cap it), then save, "
                        "validate and export; the lr schedule ends with the budget")
    p.add_argument("--batch", type=int, default=None,
                   help="batch per process (default: 32 encoder and ranker, 16 others)")
    p.add_argument("--patch", type=int, default=None,
                   help="patch side (default: 64 encoder and ranker, 96 others)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    p.add_argument("--encoder", help="restorer stage: trained encoder weights (name, path or URL)")
    p.add_argument("--encoder-mode", default="frozen", choices=["frozen", "none", "joint"],
                   help="frozen pre-trained encoder (default), none (ablation model-1), joint: the "
                        "encoder trains with the restorer (from scratch: model-2; with --init: fine-tuned)")
    p.add_argument("--init", help="start from these weights (name, path or URL) with a fresh "
                                  "optimizer and schedule: fine-tuning")
    p.add_argument("--luma", metavar="GRAY_MODEL",
                   help="restorer, --channels 3: restore colour as this trained gray restorer "
                        "(name, path or URL; frozen) on the JPEG's luma and a light chroma branch "
                        "that trains under it; with --init of such a model, its chroma branch goes on "
                        "training under this gray restorer (bench/results/chroma_branch.md)")
    p.add_argument("--qualities", type=int, nargs=3, default=[10, 90, 10], metavar=("LOW", "HIGH", "STEP"),
                   help="training qualities low..high in steps (default: 10 90 10)")
    p.add_argument("--weighting", default="uniform", choices=list(WEIGHTINGS),
                   help="restorer/arcnn: draw quality q uniformly, with probability ~ 1/q or ~ 1/sqrt(q)")
    p.add_argument("--double", type=float, default=0.0,
                   help="restorer/arcnn: share of pairs compressed twice on shifted grids (default: 0)")
    p.add_argument("--clean", type=float, default=0.0,
                   help="restorer/arcnn: share of identity pairs, clean image in and out, so that "
                        "uncompressed and near-lossless inputs are left alone (default: 0)")
    p.add_argument("--recolour", action="store_true",
                   help="restorer/arcnn: turn each colour crop's hues by a random angle, so that "
                        "the model does not learn the colours of its training images")
    p.add_argument("--temperature", type=float, default=0.2, help="encoder: InfoNCE temperature (default: 0.2)")
    p.add_argument("--queue", type=int, default=4096, help="encoder: MoCo queue of negatives (default: 4096)")
    p.add_argument("--region", type=int, default=None,
                   help="encoder: side of the region the two positive crops come from (default: 2.5 x "
                        "patch; larger means less shared content between positives)")
    p.add_argument("--positives", default="tables", choices=POSITIVES,
                   help="encoder: what a query's positives are. tables (default): crops of other "
                        "pictures written with the same quantization tables (every such key in the "
                        "batch and the queue), so content cannot match pairs (a departure from the "
                        "paper, docs/embeddings.md); image: the paper's second crop of the same "
                        "compressed picture")
    p.add_argument("--quality-span", type=float, default=0.0, metavar="D",
                   help="encoder, --positives tables: keys whose tables' quality is within D of the "
                        "query's count as positives with weight 1 - distance/D, so that the "
                        "embedding orders qualities (default 0: the same tables only)")
    p.add_argument("--dct-width", type=int, default=0,
                   help="encoder and ranker: add a branch that sees the 8x8 block DCT of the luma and its "
                        "quantization lattice, this many channels wide (0, default: the paper's "
                        "pixel-only encoder); a quality encoder, docs/embeddings.md")
    p.add_argument("--table-condition", action="store_true",
                   help="restorer: condition the decoder on the JPEG's luma table (QGAC-style side "
                        "information; without a file's tables it runs on the table of the quality "
                        "estimated from the pixels). With --init of a blind restorer it starts as "
                        "that restorer and learns the conditioning")
    p.add_argument("--margin", type=float, default=0.5,
                   help="ranker: margin of the ranking loss between two qualities (default: 0.5)")
    p.add_argument("--ranker", help="restorer: a trained ranker (the ranker stage's model.pt) whose "
                                    "quality and feature-matching terms join the loss")
    p.add_argument("--ranker-loss", type=float, default=0.0, metavar="W",
                   help="restorer: weight of the --ranker terms (default: 0, none)")
    p.add_argument("--val-data", help="clean validation images (folder, glob or URL)")
    p.add_argument("--val-images", type=int, default=8, help="validation images used (default: 8)")
    p.add_argument("--val-every", type=int, default=500, help="steps between validations (default: 500)")
    p.add_argument("--val-seconds", type=float, default=None, metavar="S",
                   help="also validate at the first log step S seconds after the last "
                        "validation (with --time-budget, where steps are not known ahead)")
    p.add_argument("--val-qualities", type=int, nargs="+", default=list(VAL_QUALITIES), metavar="Q",
                   help="restorer/arcnn: qualities the validation compresses at (default: "
                        f"{' '.join(map(str, VAL_QUALITIES))})")
    p.add_argument("--keep-best", action="store_true",
                   help="restorer/arcnn: export the weights with the best mean validation gain, "
                        "the starting weights included (validated before the first step), not "
                        "the last ones: never worse on --val-data than where training started")
    p.add_argument("--log-every", type=int, default=50, help="steps between log lines (default: 50)")
    p.add_argument("--ckpt-every", type=int, default=200, help="steps between checkpoints (default: 200)")
    p.add_argument("--precision", default="auto", choices=TRAIN_PRECISIONS,
                   help="auto (default): bf16 autocast where the device runs it natively (CUDA with "
                        "bf16, CPUs with AVX512-BF16/AMX), else fp32; bench/results/train_precision.md")
    p.add_argument("--loader-workers", type=int, default=0,
                   help="processes that crop and JPEG-compress batches beside the model "
                        "(default: 0, in the loop; use the spare CPU cores when training on a GPU)")
    p.add_argument("--cache-mb", type=int, default=4096,
                   help="decoded training images kept in memory per process, least recently used "
                        "dropped first (default: 4096)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grad-clip", type=float, default=0.0, metavar="NORM",
                   help="scale gradients down to at most this global L2 norm before each step "
                        "(default: 0, off; long runs at a high lr, bench/results/campaign.md)")
    p.add_argument("--half-weights", action="store_true",
                   help="store the exported model.pt in fp16 (half the size; loads as fp32)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--storage-options", help="fsspec options: a JSON file (recommended for secrets) "
                                             "or an inline JSON object")


@dataclass(frozen=True)
class FinetuneOptions:
    """What a user chooses: images (files, folders, globs, URLs), the model to start from,
    minutes of training, the new model's name."""

    images: tuple[str, ...]
    name: str
    source: str = "auto"  # registry name, weights file or URL; auto: the default for the images
    minutes: float = 20.0
    qualities: tuple[int, int] | None = None  # low, high; default: the source's, below the images'
    held_out: float = 0.2  # share of the images kept for the held-out check (at least one)
    recolour: bool = True  # turn the crops' hues: the model does not learn the images' colours
    lr: float = 1e-4
    device: str = "cpu"
    replace: bool = False  # replace a user model of the same name
    calibration_crops: int = 24  # 128-px crops of each kind (on and off the 8x8 grid)
    seed: int = 0
    storage_options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_args(cls, a: argparse.Namespace) -> FinetuneOptions:
        """From flags added by ``add_finetune_args``."""
        return cls(images=tuple(a.images), name=a.name, source=a.source, minutes=a.minutes,
                   qualities=tuple(a.qualities) if a.qualities else None, held_out=a.held_out,
                   recolour=a.recolour, lr=a.lr, device=a.device, replace=a.replace, seed=a.seed,
                   storage_options=parse_storage_options(a.storage_options))


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    """The flags of a fine-tune, shared by ``jpeg-restore finetune`` and the Ray job."""
    p.add_argument("images", nargs="+", metavar="IMAGE",
                   help="your images (at least 2, 160 px or more): files, folders, globs or URLs; "
                        "8/16-bit, gray or RGB")
    p.add_argument("--name", required=True, help="the new model's name (letters, digits, . _ -)")
    p.add_argument("--from", dest="source", default="auto", metavar="MODEL",
                   help="model to start from: registry name, weights file or URL (default: auto, "
                        "the shipped model for gray or colour images)")
    p.add_argument("--minutes", type=float, default=20.0,
                   help="training time (default: 20; calibration adds about a minute)")
    p.add_argument("--qualities", type=quality_factor, nargs=2, default=None, metavar=("LOW", "HIGH"),
                   help="JPEG qualities to train at (default: the source model's, up to 10 below "
                        "the images' own earlier compression)")
    p.add_argument("--held-out", type=float, default=0.2, metavar="SHARE",
                   help="share of the images held out to measure the gain (default: 0.2, at least one)")
    p.add_argument("--recolour", action=argparse.BooleanOptionalAction, default=True,
                   help="colour images: train on crops with randomly turned hues, so that the "
                        "model keeps working on pictures of other colours (default: on; "
                        "--no-recolour learns your images' colours too)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    p.add_argument("--replace", action="store_true", help="replace your model of the same name")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and of training")
    p.add_argument("--storage-options", help="fsspec options for image URLs: a JSON file "
                                             "(recommended for secrets) or an inline JSON object")
