"""The ``jpeg-restore`` command line: restore, quality, eval, demo, embed, train, finetune, models."""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

# Before torch loads: OpenMP threads that spin while they wait stall when another process keeps
# a core busy (a 2.7-MP restore on 2 cores beside two busy processes: 30-42 s spinning, 6.5-8.4 s
# passive; bench/results/omp_wait_policy.md). A user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .engines.device import DEVICES, set_threads
from .engines.precision import PRECISIONS
from .engines.selection import ENGINES
from .imageio.filesystem import parse_storage_options
from .jpeg.codec import DEFAULT_SKIP_ABOVE_QUALITY, quality_factor
from .restoration.options import TILE_OVERLAP
from .training.options import FinetuneOptions, TrainOptions, add_finetune_args, add_train_args

if TYPE_CHECKING:
    from .imageio.reading import LoadedImage


def _threads(text: str) -> int:
    """An argparse type: a thread count, 1 or more."""
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"a thread count must be 1 or more, got {text!r}")
    return int(text)


def _add_model_args(p: argparse.ArgumentParser, tile: bool = True) -> None:
    p.add_argument("--model", default=None,
                   help="registry name (see `jpeg-restore models`), a weights file or its URL "
                        "(s3://..., with --storage-options where the command has it); "
                        "default: the shipped model for gray or colour input")
    p.add_argument("--device", default="auto", choices=DEVICES,
                   help="auto uses CUDA when present (default: auto)")
    if tile:
        p.add_argument("--tile", type=int, default=512, help="tile side in pixels (default: 512)")
        p.add_argument("--overlap", type=int, default=TILE_OVERLAP,
                       help=f"tile overlap in pixels (default: {TILE_OVERLAP})")
        p.add_argument("--ensemble", action="store_true",
                       help="average over the 8 rotations/flips of each tile: 8x slower, a little better")
        p.add_argument("--precision", default="auto", choices=PRECISIONS,
                       help="auto (default): bf16 autocast where the device computes it natively "
                            "(CPUs with AVX512-BF16/AMX, CUDA GPUs with bf16), within 0.02 dB of fp32 "
                            "and up to 2x faster; else fp32. fp16: for CUDA GPUs without bf16 "
                            "(emulated, slow, on most CPUs)")
        p.add_argument("--engine", default="auto", choices=ENGINES,
                       help="what runs the network: auto (default) is OpenVINO on the CPU where it is "
                            "installed (1.7x PyTorch, equal PSNR; converted once per model and "
                            "cached), else PyTorch")
        p.add_argument("--threads", type=_threads, default=None, metavar="N",
                       help="CPU threads for the network (default: one per physical core)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jpeg-restore",
        description="Blind JPEG artifact removal with a contrastively trained compression-quality "
                    "encoder (Wang et al.). One model per colour type serves every quality.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("restore", help="restore images into a folder",
                       description="Restore JPEG-degraded images. Inputs are files, folders, globs or "
                                   "fsspec URLs; outputs are lossless <stem>.png (16-bit kept) in --output.")
    p.add_argument("inputs", nargs="+", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, help="output folder or URL (created if missing)")
    _add_model_args(p)
    p.add_argument("--format", default="png", choices=["png", "tiff"], help="output format (default: png)")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output already exists")
    p.add_argument("--skip-above-quality", type=int, default=DEFAULT_SKIP_ABOVE_QUALITY, metavar="Q",
                   help="leave images alone whose JPEG quality is above Q (read from a JPEG's "
                        "tables, or found in the pixels of other formats; a file whose tables say "
                        "Q75+ but whose pixels read Q50 or less, 20 lower, was re-saved and counts "
                        "at the lower quality) or that show no JPEG compression at all: there is "
                        "nothing to gain "
                        f"(default: {DEFAULT_SKIP_ABOVE_QUALITY}; 100 restores everything)")
    p.add_argument("--assume-quality", type=quality_factor, default=None, metavar="Q",
                   help="restore every input as if it had been compressed at quality Q, whatever "
                        "its tables say: the strength control (lower Q, stronger; for screenshots "
                        "and re-shared pictures compressed more than their last save shows)")
    p.add_argument("--allow-large", action="store_true",
                   help="allow images above the decompression-bomb limit")
    p.add_argument("--storage-options", help="JSON dict of fsspec options, e.g. '{\"anon\": true}'")

    p = sub.add_parser("quality", help="estimate the JPEG quality factor of files",
                       description="Quality factor from each file's quantization tables (exact for "
                                   "libjpeg files), else from the JPEG traces in its pixels, and "
                                   "the quality encoder's estimate from the pixels (its measured "
                                   "error on the validation sets: docs/embeddings.md).")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--model", default=None,
                   help="model whose encoder estimates quality (default: the shipped cqe-lite-*)")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")

    p = sub.add_parser("calibrate", help="measure where a model gains, so it does no harm elsewhere",
                       description="Compress crops of clean training images at Q10...Q100, restore "
                                   "them and record the PSNR gain per quality; qualities where the "
                                   "model does not gain are then passed through unchanged. Writes "
                                   "<weights>.calibration.json beside the weights file.")
    p.add_argument("model", help="weights file (e.g. runs/x/model.pt) or registry name")
    p.add_argument("--data", required=True, nargs="+",
                   help="clean training images: folders, files, globs or URLs (not validation images)")
    p.add_argument("--crops", type=int, default=48, help="128-px crops of each kind (default 48)")
    p.add_argument("--device", default="cpu", choices=DEVICES[1:],
                   help="where the model runs (default: cpu; the shipped files were fitted there)")

    p = sub.add_parser("eval", help="benchmark on a folder of clean images",
                       description="Compress each clean image with libjpeg at each quality, restore it, "
                                   "and print mean PSNR / SSIM / PSNR-B of JPEG and restored images.")
    p.add_argument("--data", required=True, help="folder/URL of clean (ground-truth) images")
    p.add_argument("--quality", nargs="+", default=["10", "20", "30", "40"],
                   help="qualities; 'A+B' means double compression (default: 10 20 30 40)")
    p.add_argument("--channels", type=int, choices=[1, 3], default=None,
                   help="evaluate as gray (1) or RGB (3); default: the model's")
    p.add_argument("--limit", type=int, default=None, help="use only the first N images")
    p.add_argument("--jpeg-only", action="store_true", help="score the JPEG row only")
    p.add_argument("--json", metavar="FILE", help="also write the rows as JSON")
    _add_model_args(p)

    p = sub.add_parser("demo", help="restore the bundled sample (the README's main job)")
    p.add_argument("-o", "--output", default="demo-output", help="folder for the PNGs (default: demo-output)")
    p.add_argument("--quality", type=int, default=10, help="JPEG quality of the sample (default: 10)")
    p.add_argument("--model", default=None)
    p.add_argument("--device", default="auto", choices=DEVICES)

    p = sub.add_parser("models", help="list the shipped models and your fine-tuned ones")

    p = sub.add_parser(
        "finetune", help="adapt a model to your own kind of images",
        description="Fine-tune a restorer on your own images (microscopy, scans, screenshots...) "
                    "and register it by name: `restore --model NAME`, the napari widget and the "
                    "Ray archive job then use it. A share of the images is held out to measure "
                    "the gain before and after; the weights that gain most there are kept (the "
                    "source's own if training never beats it), and the model is calibrated on "
                    "the training images so it passes through qualities where it does not gain. "
                    "The images need not be pristine: if they carry an earlier JPEG compression "
                    "(found in their tables or pixels), training compresses them harder than "
                    "that, with the images as they are as targets. Ctrl-C stops training early "
                    "and keeps the best weights; a second Ctrl-C aborts.",
        epilog="example: jpeg-restore finetune slides/ --minutes 20 --name histology")
    add_finetune_args(p)
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")

    p = sub.add_parser("embed", help="plot quality embeddings of a folder of clean images",
                       description="Embed crops of each image compressed at each quality and plot a 2-D "
                                   "projection coloured by quality; prints how well the embedding orders Q.")
    p.add_argument("data", help="folder/URL of clean images")
    p.add_argument("--quality", nargs="+", type=int, default=list(range(10, 91, 10)))
    p.add_argument("--unseen", nargs="*", type=int, default=[5, 95],
                   help="extra qualities not seen in training (default: 5 95)")
    p.add_argument("--limit", type=int, default=20, help="images to use (default: 20)")
    p.add_argument("--crop", type=int, default=128, help="centre crop side (default: 128)")
    p.add_argument("--projection", default="tsne", choices=["tsne", "pca"])
    p.add_argument("--plot", default="embeddings.png", help="output PNG (default: embeddings.png)")
    p.add_argument("--model", default=None)

    p = sub.add_parser("train", help="train the encoder, the restorer or ARCNN",
                       description="Stage 1 'encoder' (MoCo contrastive CQE), stage 2 'restorer' (frozen "
                                   "encoder, L1 + 0.1 L1-FFT) or the 'arcnn' baseline. Checkpoints go "
                                   "to OUT/last.pt atomically; --resume continues; OUT/model.pt at the end "
                                   "(Ctrl-C: after the current step, with a checkpoint). "
                                   "The Ray job (python -m napari_jpeg_restore.distributed.train) takes "
                                   "the same options and runs the same loop on several workers.")
    add_train_args(p)
    p.add_argument("--out", required=True, help="run folder (checkpoints, logs, model.pt)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    p.add_argument("--until", type=int, default=None,
                   help="stop at this step (the lr schedule still spans --steps); --resume later")
    p.add_argument("--threads", type=_threads, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    return parser


def cmd_restore(a: argparse.Namespace) -> int:
    from .engines.selection import open_net
    from .imageio.sources import expand
    from .registry import ModelNotAvailableError, resolve_weights
    from .restoration.file_restore import restore_files
    from .restoration.options import RestoreOptions

    opts = parse_storage_options(a.storage_options)
    try:  # once, before any file: a model that cannot load is one line, not one per file
        model = (open_net(resolve_weights(a.model, opts), device=a.device, precision=a.precision,
                          engine=a.engine) if a.model else None)
    except (ModelNotAvailableError, OSError, RuntimeError, TypeError, ValueError) as err:
        print(f"error: model {a.model}: {err}", file=sys.stderr)
        return 2
    inputs, missing = [], {}
    for item in a.inputs:
        try:
            inputs += expand(item, opts)
        except FileNotFoundError as err:
            print(f"error: {err}", file=sys.stderr)
            missing[item] = str(err)
    options = RestoreOptions(tile=a.tile, overlap=a.overlap, device=a.device, engine=a.engine,
                             precision=a.precision, ensemble=a.ensemble,
                             assume_quality=a.assume_quality,
                             skip_above_quality=a.skip_above_quality, fmt=a.format,
                             skip_existing=a.skip_existing, allow_large=a.allow_large,
                             storage_options=opts)
    report = restore_files(inputs, a.output, model, options)
    report.failed.update(missing)
    print(report.summary(), file=sys.stderr)
    return 1 if report.failed else 0


def _quality_row(path: str, loaded: LoadedImage, model: str | None) -> dict[str, Any]:
    """What ``jpeg-restore quality`` reports of one picture: the quality its tables say, else
    the JPEG traces in its pixels; the quality encoder's reading; what a restore would assume."""
    import numpy as np

    from .engines.selection import open_quality_net
    from .error_text import one_line
    from .jpeg.traces import find_jpeg_grid
    from .pixels import split_alpha
    from .quality.reading import pixel_quality
    from .registry import ModelNotAvailableError
    from .restoration.plan import plan_image

    row: dict[str, Any] = {"path": path, "format": loaded.format, "table_quality": None,
                           "exact": None, "encoder_quality": None}
    found = loaded.jpeg_grid
    if loaded.quality is not None:
        row.update(table_quality=loaded.quality.quality, exact=loaded.quality.exact,
                   table_distance=round(loaded.quality.distance, 3))
    else:  # no tables: look for a JPEG's traces in the pixels
        found = find_jpeg_grid(loaded.array)
        row["pixel_quality"] = None if found is None else found.quality
        row["pixel_grid"] = None if found is None else list(found.offset)
    try:
        planes = loaded.array.shape[2] if loaded.array.ndim == 3 else 1
        net = open_quality_net(model, min(planes, 3))
        on_grid = found.offset if found is not None else None  # read where the blocks are
        planes8 = split_alpha(loaded.array)[0]  # alpha is no part of the compression
        reading = pixel_quality(net, planes8, offset=on_grid)
        row["encoder_quality"] = round(reading, 1)
        if planes8.dtype == np.uint8:  # what `restore` assumes (a re-saved file: the pixels)
            shipped = None if model else int(round(np.clip(reading, 1, 100)))  # read once
            plan = plan_image(loaded.array, found, seen=shipped)
            row["restore_as"] = plan.compression.describe()
    except (ModelNotAvailableError, ValueError) as err:
        row["encoder_note"] = one_line(err)
    return row


def _quality_line(row: dict[str, Any]) -> str:
    """One tab-separated line of :func:`_quality_row`'s report."""
    table = ("-" if row["table_quality"] is None else
             f"Q{row['table_quality']}" + (" (exact)" if row["exact"] else
                                           f" (nearest IJG table, distance {row['table_distance']})"))
    enc = ("-" if row["encoder_quality"] is None else
           f"~Q{row['encoder_quality']:.0f} (estimated from pixels)")
    traces = ""
    if "pixel_quality" in row:
        traces = ("\tpixels: no JPEG traces" if row["pixel_quality"] is None else
                  f"\tpixels: JPEG ~Q{row['pixel_quality']}, 8x8 grid at {tuple(row['pixel_grid'])}")
    also = f"\trestored as: {row['restore_as']}" if "restore_as" in row else ""
    return f"{row['path']}\ttables: {table}{traces}\tencoder: {enc}{also}"


def cmd_quality(a: argparse.Namespace) -> int:
    from .imageio.reading import ImageReadError, read_image

    failed = 0
    for path in a.paths:
        try:
            loaded = read_image(path)
        except ImageReadError as err:
            print(f"error: {err}", file=sys.stderr)
            failed += 1
            continue
        row = _quality_row(path, loaded, a.model)
        print(json.dumps(row) if a.json else _quality_line(row))
    return 1 if failed else 0


def cmd_eval(a: argparse.Namespace) -> int:
    from .engines.selection import open_net
    from .evaluation.protocol import evaluate_model, format_table
    from .imageio.reading import load_images
    from .imageio.sources import expand
    from .engines.default_model import default_model_name

    model = None if a.jpeg_only else open_net(a.model or default_model_name(a.channels or 1),
                                              device=a.device, precision=a.precision, engine=a.engine)
    channels = a.channels or (model.in_channels if model is not None else 1)
    urls = expand(a.data)[: a.limit]
    images = load_images(urls, channels)
    rows = evaluate_model(images, a.quality, model, device=a.device, tile=a.tile, ensemble=a.ensemble,
                          precision=a.precision)
    print(format_table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps([r.__dict__ for r in rows], indent=2))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from .evaluation.demo import run_demo

    s = run_demo(a.output, a.quality, a.model, a.device)
    print(f"sample: astronaut.png compressed at Q{a.quality}, restored with {s['model']}")
    print(f"{'':10s} {'PSNR':>8s} {'SSIM':>8s} {'PSNR-B':>8s}")
    for k in ("jpeg", "restored"):
        m = s[k]
        print(f"{k:10s} {m['psnr']:8.2f} {m['ssim']:8.4f} {m['psnr_b']:8.2f}")
    print(f"gain: {s['restored']['psnr'] - s['jpeg']['psnr']:+.2f} dB PSNR")
    print(f"wrote {Path(a.output) / 'side_by_side.png'}")
    return 0


def cmd_calibrate(a: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .imageio.sources import expand
    from .jpeg.consistency import calibration_path
    from .registry import resolve_weights
    from .restoration.calibration import QUALITIES, calibrate_weights

    with tqdm(desc="calibrating", unit="crop", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        cal = calibrate_weights(a.model, [u for d in a.data for u in expand(d)], a.crops,
                                device=a.device, progress=progress)
    kept = [q for q in QUALITIES if cal.restores(q)]
    print(f"restores Q{kept[0]}-{kept[-1]}" if kept else "restores no quality (passes through)")
    print(f"wrote {calibration_path(resolve_weights(a.model))}")
    return 0


def cmd_models(a: argparse.Namespace) -> int:
    from .registry import available_models, user_models_folder

    for m in available_models():
        state = ("your model" if not m.shipped else
                 "weights shipped" if m.has_weights else "no weights yet")
        print(f"{m.name:16s} {state:16s} {m.description}")
    print(f"your models (jpeg-restore finetune) are kept in {user_models_folder()}")
    return 0


@contextmanager
def _first_interrupt_stops(keeping: str) -> Iterator[threading.Event]:
    """An event the first Ctrl-C sets (work ends cleanly, ``keeping`` says what is kept); the
    second raises KeyboardInterrupt."""
    stop = threading.Event()

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        print(f"\nstopping after this step, {keeping} (Ctrl-C again to abort)", file=sys.stderr)
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


def cmd_finetune(a: argparse.Namespace) -> int:
    from .training.finetune import finetune, gain_line

    options = FinetuneOptions.from_args(a)
    log = lambda line: print(line, file=sys.stderr)  # noqa: E731
    try:
        with _first_interrupt_stops("keeping the best weights") as stop:
            result = finetune(options, stop=stop.is_set, log=log)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"held-out gain before: {gain_line(result.before)}")
    print(f"held-out gain after:  {gain_line(result.after)}"
          + ("" if result.improved else " (no check beat the source: its weights are kept)"))
    if result.forgets:
        print(f"on a photograph it gains {gain_line(result.photograph['model'])} (the source "
              f"{gain_line(result.photograph['source'])}): use it for pictures like yours")
    print(f"registered {result.name} ({result.path}); use it with "
          f"`jpeg-restore restore IMAGES -o OUT --model {result.name}`")
    return 0


def cmd_embed(a: argparse.Namespace) -> int:
    from .quality.embedding_plot import embed_command

    return embed_command(a)


def cmd_train(a: argparse.Namespace) -> int:
    import torch

    from .training.stages import train

    if a.threads:
        torch.set_num_threads(a.threads)
    with _first_interrupt_stops("with a checkpoint to --resume from") as stop:
        print(f"wrote {train(TrainOptions.from_args(a), stop=stop.is_set)}")
    return 0


COMMANDS = {"restore": cmd_restore, "quality": cmd_quality, "eval": cmd_eval, "demo": cmd_demo,
            "models": cmd_models, "calibrate": cmd_calibrate, "embed": cmd_embed, "train": cmd_train,
            "finetune": cmd_finetune}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .imageio.writing import ImageWriteError
    from .registry import ModelNotAvailableError

    set_threads(getattr(args, "threads", None))  # both engines; PyTorch's when it loads
    try:
        return COMMANDS[args.command](args)
    except (ModelNotAvailableError, ImageWriteError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
