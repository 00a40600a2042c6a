"""Fine-tuning a restorer on a user's own images (``jpeg-restore finetune``, the napari widget,
the Ray job): the images are surveyed and split into training and held-out ones, the training
loop starts from the source model under a time budget and keeps the weights that gain most on
the held-out images (the source's own included, so the result is never worse there), then the
model is calibrated on the training images and registered by name in the user models folder
with a card.

The images need not be pristine: crops are compressed harder than the images' own earlier JPEG
compression (found in their tables or, for other formats, their pixels), and the images as they
are serve as the targets.
"""
from __future__ import annotations

import os
import queue
import shutil
import threading
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..error_text import one_line
from ..imageio.reading import ImageReadError, read_image
from ..imageio.sources import expand
from ..jpeg.traces import find_jpeg_grid
from ..pixels import to_channels
from ..engines.default_model import default_model_name
from ..registry import load_model, resolve_weights, user_model_path
from .options import FinetuneOptions, TrainOptions

HELD_OUT_QUALITIES = (10, 20, 30, 40, 50)
MIN_SIDE = 160  # a 96-px training crop, and the 144-px calibration crops, with room to move
BELOW_OWN = 10  # train at qualities this far below the images' own earlier compression
PHOTO_QUALITIES = ("10", "20", "30", "40")  # the photograph check of a fine-tuned model
FORGET_DB = 0.1  # less gain than the source's on the photograph, in dB: said in the card


@dataclass
class FinetunePlan:
    """The survey's outcome and the training run it makes."""

    options: FinetuneOptions
    train: list[str]
    held_out: list[str]
    skipped: dict[str, str]  # image -> why it is not used
    channels: int
    own_quality: int | None  # the strongest earlier JPEG compression found in the images
    source: str  # the resolved source spec
    train_options: TrainOptions
    dest: Path


@dataclass(frozen=True)
class FinetuneResult:
    path: Path
    name: str
    before: dict[int, float]  # held-out gain over JPEG per quality, source model (dB)
    after: dict[int, float]  # the same, the registered model
    steps: int
    minutes: float
    improved: bool  # False: no check beat the source, the model holds the source's weights
    photograph: dict[str, dict[int, float]]  # "source"/"model" gain on the bundled photograph

    @property
    def forgets(self) -> bool:
        """Whether it gains clearly less than its source on a photograph (it learned the
        user's kind of picture: use it for those)."""
        mean = {k: float(np.mean(list(v.values()))) for k, v in self.photograph.items()}
        return mean["model"] < mean["source"] - FORGET_DB


def _own_quality(array: np.ndarray, table_quality: int | None) -> int | None:
    """The quality of an image's earlier JPEG compression: its tables', else its pixels'."""
    if table_quality is not None:
        return table_quality
    grid = find_jpeg_grid(to_channels(array, 3 if array.ndim == 3 else 1))
    return None if grid is None else grid.quality


def _split(urls: list[str], share: float, seed: int) -> tuple[list[str], list[str]]:
    """(training, held-out): a seeded, repeatable draw of ``share`` of the images (at least one)."""
    if len(urls) < 2:
        raise ValueError(f"fine-tuning needs at least 2 usable images (one is held out to check "
                         f"the gain), got {len(urls)}")
    count = min(max(1, round(share * len(urls))), len(urls) - 1)
    held = set(np.random.default_rng(seed).permutation(len(urls))[:count])
    return ([u for i, u in enumerate(urls) if i not in held],
            [u for i, u in enumerate(urls) if i in held])


def plan_finetune(options: FinetuneOptions, run_dir: str | Path,
                  log: Callable[[str], None] = print) -> FinetunePlan:
    """Survey the images (unreadable or small ones are skipped with a line each), split them,
    read the source's training recipe and make the run's :class:`TrainOptions`."""
    from ..models import takes_tables

    dest = user_model_path(options.name)
    if dest.exists() and not options.replace:
        raise ValueError(f"a model named {options.name!r} exists ({dest}); choose another name "
                         "or replace it")
    so = options.storage_options
    usable, skipped, colour, own = [], {}, False, []
    for url in expand(list(options.images), so):
        try:
            loaded = read_image(url, storage_options=so)
        except ImageReadError as err:
            skipped[url] = one_line(err)
            log(f"skipped {url}: {skipped[url]}")
            continue
        h, w = loaded.array.shape[:2]
        if min(h, w) < MIN_SIDE:
            skipped[url] = f"{w}x{h} is smaller than {MIN_SIDE} px"
            log(f"skipped {url}: {skipped[url]}")
            continue
        usable.append(url)
        colour |= loaded.array.ndim == 3
        q = _own_quality(loaded.array, loaded.quality.quality if loaded.quality else None)
        own += [q] if q is not None else []
    train, held = _split(usable, options.held_out, options.seed)
    source = options.source if options.source != "auto" else default_model_name(3 if colour else 1)
    src = load_model(resolve_weights(source, so))
    recipe = dict(src.meta.get("options", {}))
    channels = src.cfg.in_channels
    low, high = options.qualities or tuple(recipe.get("qualities", (10, 90, 1)))[:2]
    own_quality = min(own) if own else None
    if options.qualities is None and own_quality is not None:
        high = min(high, own_quality - BELOW_OWN)
        log(f"the images carry earlier JPEG compression (down to Q{own_quality}); training "
            f"compresses them at Q{low}-{high}, harder than that, with the images as targets")
    if high < low:
        raise ValueError(f"the images were compressed at Q{own_quality} already: no training "
                         f"quality from Q{low} lies {BELOW_OWN} below it; give the qualities")
    val_q = tuple(q for q in HELD_OUT_QUALITIES if low <= q <= high) or (low,)
    run = TrainOptions(
        stage="restorer", data=train, out=str(run_dir), preset=recipe.get("preset", "lite"),
        channels=channels, steps=10**7, batch=recipe.get("batch", 16), patch=recipe.get("patch", 96),
        lr=options.lr, init=str(resolve_weights(source, so)), qualities=(low, high, 1),
        weighting=recipe.get("weighting", "uniform"), double=recipe.get("double", 0.0),
        clean=recipe.get("clean", 0.0), recolour=options.recolour and channels == 3,
        table_condition=takes_tables(src.cfg),
        val_data=held, val_images=len(held), val_qualities=val_q, keep_best=True,
        val_every=10**9, val_seconds=max(30.0, options.minutes * 60 / 8), log_every=100,
        ckpt_every=10**9, time_budget=options.minutes * 60, device=options.device,
        seed=options.seed, storage_options=so)
    return FinetunePlan(options, train, held, skipped, channels, own_quality, source, run, dest)


def gain_line(gains: dict[int, float]) -> str:
    """``Q10 +1.40 dB, Q20 +0.80 dB``."""
    return ", ".join(f"Q{q} {g:+.2f} dB" for q, g in sorted(gains.items()))


def _gains(kept: dict[str, Any], key: str) -> dict[int, float]:
    return {int(q): float(g) for q, g in (kept.get(key) or {}).items()}


def photograph_gains(model: str | Path, channels: int) -> dict[int, float]:
    """Gain over JPEG (dB) on the bundled photograph at Q10-40, as a restore runs ``model``
    (calibrated, consistent with the JPEG): what a fine-tune gave up on natural pictures."""
    from ..evaluation.demo import SAMPLE
    from ..evaluation.protocol import evaluate_model

    photo = to_channels(read_image(SAMPLE).array, channels)
    rows = evaluate_model([photo], PHOTO_QUALITIES, load_model(model), device="cpu", progress=False)
    return {int(r.quality): round(r.restored["psnr"] - r.jpeg["psnr"], 3) for r in rows}


def describe(plan: FinetunePlan, result: FinetuneResult) -> str:
    """The registry's one line on the model."""
    before, after = result.before, result.after
    q = max(after, key=lambda k: after[k] - before.get(k, 0.0)) if after else None
    gain = (f": held-out Q{q} {after[q]:+.2f} dB (source {before.get(q, 0.0):+.2f})"
            if q is not None else "")
    photo = (f"; for pictures like its own (a photograph: Q20 {result.photograph['model'][20]:+.2f}"
             f" dB, source {result.photograph['source'][20]:+.2f})" if result.forgets else "")
    return (f"fine-tuned from {plan.source} on {len(plan.train)} images "
            f"({plan.options.minutes:g} min){gain}{photo}")


def card_text(plan: FinetunePlan, result: FinetuneResult, meta: dict[str, Any]) -> str:
    """The model card, Markdown: what it was made from, and what it gains where."""
    qs = sorted(result.after)
    rows = "\n".join(f"| Q{q} | {result.before.get(q, float('nan')):+.2f} | {result.after[q]:+.2f} |"
                     for q in qs)
    photo = "\n".join(f"| Q{q} | {result.photograph['source'][q]:+.2f} | {g:+.2f} |"
                      for q, g in sorted(result.photograph["model"].items()))
    lo, hi = plan.train_options.qualities[:2]
    return (f"# {result.name}\n\n{meta.get('description', '')}.\n\n"
            f"- source model: {plan.source}\n"
            f"- training images ({len(plan.train)}): {', '.join(Path(u).name for u in plan.train)}\n"
            f"- held-out images ({len(plan.held_out)}): {', '.join(Path(u).name for u in plan.held_out)}\n"
            f"- their own earlier JPEG compression: "
            f"{'none found' if plan.own_quality is None else f'down to Q{plan.own_quality}'}\n"
            f"- training: {result.steps} steps in {result.minutes:.1f} minutes, compressed at "
            f"Q{lo}-{hi}, lr {plan.train_options.lr:g}, {meta.get('machine', '')}\n"
            f"- colours: {'hues turned at random (--recolour), not learned' if plan.train_options.recolour else 'learned from the images (--no-recolour)' if plan.channels == 3 else 'gray'}\n"
            f"- weights kept: {'the best held-out check' if result.improved else 'the source (no check beat it)'}\n"
            f"- calibration: {result.name}.calibration.json (qualities without a gain pass through)\n\n"
            f"Held-out gain over JPEG (dB, whole images, libjpeg via Pillow):\n\n"
            f"| quality | source | fine-tuned |\n|---|---|---|\n{rows}\n\n"
            f"On a photograph (the bundled sample, as a restore runs the model"
            f"{'; it learned your kind of picture: keep the shipped model for others' if result.forgets else ''}):\n\n"
            f"| quality | source | fine-tuned |\n|---|---|---|\n{photo}\n")


def finish(plan: FinetunePlan, weights: Path,
           progress: Callable[[int, int], None] | None = None) -> FinetuneResult:
    """Calibrate the trained ``weights`` on the training images, write the card, and register
    the three files under the plan's name (the weights last, each atomically: a half-finished
    fine-tune is never listed)."""
    import torch

    from ..jpeg.consistency import calibration_path
    from ..registry import save_torch
    from ..restoration.calibration import calibrate_weights

    blob = torch.load(weights, map_location="cpu", weights_only=True)
    meta = blob["meta"]
    kept = meta.get("kept", {})
    before, after = _gains(kept, "first_gain"), _gains(kept, "gain")
    calibrate_weights(weights, plan.train, plan.options.calibration_crops, progress=progress,
                      storage_options=plan.options.storage_options)
    photograph = {"source": photograph_gains(resolve_weights(plan.source, plan.options.storage_options),
                                             plan.channels),
                  "model": photograph_gains(weights, plan.channels)}
    result = FinetuneResult(plan.dest, plan.options.name, before, after, int(meta["steps"]),
                            float(meta["history"][-1]["wall_h"]) * 60 if meta.get("history") else 0.0,
                            improved=bool(kept.get("check")), photograph=photograph)
    meta["description"] = describe(plan, result)
    meta["finetune"] = {"source": plan.source, "images": plan.train, "held_out": plan.held_out,
                        "skipped": plan.skipped, "minutes": plan.options.minutes,
                        "own_quality": plan.own_quality,
                        "recolour": plan.train_options.recolour,
                        "held_out_gain": {"source": before, "model": after},
                        "photograph_gain": photograph}
    save_torch(weights, blob)  # the calibration beside it stays valid: the weights are the same
    card = weights.with_suffix(".md")
    card.write_text(card_text(plan, result, meta))
    plan.dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(calibration_path(weights), calibration_path(plan.dest))
    os.replace(card, plan.dest.with_suffix(".md"))
    os.replace(weights, plan.dest)
    return result


@dataclass(frozen=True)
class FinetuneProgress:
    """One report of a running fine-tune: ``phase`` "train" (``done`` of about ``total`` steps)
    or "calibrate" (crops); held-out gains per quality, of the source and the latest check."""

    phase: str
    done: int
    total: int
    seconds: float
    before: dict[int, float]
    latest: dict[int, float]


def finetune(options: FinetuneOptions, *, stop: Callable[[], bool] | None = None,
             progress: Callable[[FinetuneProgress], None] | None = None,
             log: Callable[[str], None] = print) -> FinetuneResult:
    """Plan, train (one process, the training loop), calibrate and register the model. ``stop``
    ends training early and cleanly (the best weights so far are kept)."""
    from .stages import train

    work = user_model_path(options.name).parent / f".{options.name}.partial"
    shutil.rmtree(work, ignore_errors=True)
    plan = plan_finetune(options, work, log)
    log(f"fine-tuning {plan.source} on {len(plan.train)} images for {options.minutes:g} minutes; "
        f"checking the gain on {len(plan.held_out)} held-out images at "
        f"Q{', Q'.join(map(str, plan.train_options.val_qualities))}")
    t0 = time.perf_counter()
    seen: dict[str, dict[int, float]] = {}

    def watch(record: dict[str, Any]) -> None:
        latest = {int(k[len("val_gain_q"):]): v for k, v in record.items() if k.startswith("val_gain_q")}
        if latest:
            if "before" not in seen:
                log(f"held-out gain of {plan.source}: {gain_line(latest)}")
            seen.setdefault("before", latest)
            seen["latest"] = latest
        if progress is not None:
            budget = plan.train_options.time_budget or 1.0
            elapsed = record.get("wall_h", 0.0) * 3600
            total = round(record["step"] * budget / elapsed) if elapsed else 0
            progress(FinetuneProgress("train", record["step"], max(total, record["step"]),
                                      time.perf_counter() - t0, seen.get("before", {}),
                                      seen.get("latest", {})))

    try:
        weights = train(plan.train_options, stop=stop, watch=watch)

        def calibrating(done: int, total: int) -> None:
            if progress is not None:
                progress(FinetuneProgress("calibrate", done, total, time.perf_counter() - t0,
                                          seen.get("before", {}), seen.get("latest", {})))
        return finish(plan, weights, calibrating)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def finetune_steps(options: FinetuneOptions, stop: threading.Event
                   ) -> Generator[FinetuneProgress, None, FinetuneResult]:
    """:func:`finetune` as a generator (for a napari thread worker): it runs in a thread of its
    own and its reports are yielded; setting ``stop`` ends training early and cleanly (the
    generator then still yields calibration's progress and returns the result)."""
    events: queue.Queue[FinetuneProgress | None] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = finetune(options, stop=stop.is_set, progress=events.put,
                                         log=lambda _line: None)
        except BaseException as err:  # raised again in the generator's thread
            outcome["error"] = err
        finally:
            events.put(None)

    thread = threading.Thread(target=work, name=f"finetune-{options.name}", daemon=True)
    thread.start()
    try:
        while (event := events.get()) is not None:
            yield event
    finally:
        stop.set()  # closed early (the worker quit): end the training, do not leave it running
        thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]

