"""The training loop, the only one: Adam, cosine schedule (over steps or a time budget), bf16
autocast, progress, periodic validation, checkpoints and resume. One process calls ``fit``
directly; Ray Train's ``train_func`` calls it on every worker with a ``Runtime`` of its own."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..engines.precision import autocast, resolve_precision
from ..models import config_to_dict
from .batches import batches
from .checkpoint import load_checkpoint, save_checkpoint

LAST = "last.pt"
BUDGET_SYNC_EVERY = 10  # steps between re-planning a time-budgeted run (all ranks agree)


def cosine_factor(progress: float, floor: float = 0.01) -> float:
    """Cosine annealing from 1 at progress 0 to ``floor`` at progress 1."""
    t = min(max(progress, 0.0), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


def _single_gather(obj: Any) -> list[Any]:
    return [obj]


@dataclass
class Runtime:
    """What ``fit`` needs from its surroundings; the defaults are one process. A data-parallel
    caller passes the wrapped model (``forward``), its rank, two collectives and ``report``,
    which every rank calls with (record, checkpoint or None, final) at log and checkpoint steps.
    ``stop`` (one process) is asked after every step whether to end now, as at the last step:
    validate, checkpoint and return (a Ctrl-C handler's or a Cancel button's flag)."""

    rank: int = 0
    world: int = 1
    forward: Callable[..., torch.Tensor] | None = None
    mean: Callable[[float], float] = float  # the mean of a number over ranks
    gather: Callable[[Any], list[Any]] = _single_gather  # every rank's object, in rank order
    report: Callable[[dict[str, Any], dict[str, Any] | None, bool], None] | None = None
    checkpoint: dict[str, Any] | None = None  # the state to resume from
    stop: Callable[[], bool] | None = None
    watch: Callable[[dict[str, Any]], None] | None = None  # every step's record (progress)


class Logger:
    """Lines to the progress bar and, given a folder, to ``train.log`` and ``log.jsonl``."""

    def __init__(self, out_dir: Path | None) -> None:
        self.text = (out_dir / "train.log").open("a") if out_dir else None
        self.records = (out_dir / "log.jsonl").open("a") if out_dir else None

    def __call__(self, record: dict[str, Any]) -> None:
        line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        tqdm.write(line)
        if self.text and self.records:
            self.records.write(json.dumps(record) + "\n")
            self.records.flush()
            self.text.write(line + "\n")
            self.text.flush()


def _to_device(batch: tuple[torch.Tensor, ...], device: torch.device) -> tuple[torch.Tensor, ...]:
    """Images (NCHW) channels-last, as the model: faster convolutions on CUDA and on CPUs."""
    return tuple(t.to(device, non_blocking=True, memory_format=torch.channels_last) if t.ndim == 4
                 else t.to(device, non_blocking=True) for t in batch)


def fit(task, *, steps: int, lr: float, device: torch.device, out_dir: str | Path | None = None,
        seed: int = 0, resume: bool = False, log_every: int = 50, val_every: int = 500,
        ckpt_every: int = 200, val_seconds: float | None = None,
        validate: Callable[[], dict[str, float]] | None = None,
        meta: dict[str, Any] | None = None, until: int | None = None, time_budget: float | None = None,
        precision: str = "fp32", loader_workers: int = 0, compile: bool = False,
        grad_clip: float = 0.0, runtime: Runtime | None = None) -> dict[str, Any]:
    """Train ``task`` (see tasks.py) for ``steps`` steps, or until ``time_budget`` seconds of
    training have passed (the cosine schedule then follows the budget), or stop at step ``until``
    (the schedule still spans ``steps``; ``resume`` continues later). Validation runs every
    ``val_every`` steps, at the first log step ``val_seconds`` after the last one, and at the
    end. ``grad_clip`` > 0 scales
    the gradients down to at most that global L2 norm before each step. Checkpoints go to
    ``out_dir/last.pt`` unless ``runtime.report`` stores them. Returns the last checkpoint."""
    rt = runtime or Runtime()
    out = Path(out_dir) if out_dir else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    chief = rt.rank == 0
    precision = resolve_precision(precision, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model = task.model.to(device, memory_format=torch.channels_last)
    forward = model if rt.forward is None else rt.forward
    if compile:
        forward = torch.compile(forward)
    params = task.parameters()
    optimizer = make_optimizer(params, lr)
    rng = np.random.default_rng([seed, rt.rank])
    torch.manual_seed(seed * 1000 + rt.rank + 1)  # this rank's shuffle-BN permutations
    state: dict[str, Any] = {"step": 0, "wall_seconds": 0.0, "history": [], "meta": dict(meta or {})}
    ckpt = rt.checkpoint
    if ckpt is None and resume and out and (out / LAST).is_file():
        ckpt = load_checkpoint(out / LAST)
    elif ckpt is None and resume and chief:
        tqdm.write(f"no checkpoint in {out}; starting from step 0")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        if ckpt.get("optimizer") is not None:  # a portable checkpoint has none: fresh moments
            optimizer.load_state_dict(ckpt["optimizer"])
        task.load_state_dict(ckpt["task"])
        if len(ckpt["rngs"]) == rt.world:
            rng.bit_generator.state, torch_rng = ckpt["rngs"][rt.rank]
            torch.set_rng_state(torch_rng)
        else:  # another world size: fresh per-rank streams, offset by the step
            rng = np.random.default_rng([seed, rt.rank, ckpt["step"]])
        state = {k: ckpt[k] for k in ("step", "wall_seconds", "history", "meta")}
        state["meta"].update(meta or {})
    start_step, base_seconds = state["step"], state["wall_seconds"]
    planned = steps  # re-planned from the measured speed when there is a time budget
    stop = min(steps, until or steps)
    log = Logger(out) if chief else None
    draw = batches(task.sample, rng, workers=loader_workers, seed=[seed, rt.rank, start_step],
                   pin_memory=device.type == "cuda")

    def snapshot() -> dict[str, Any]:
        rngs = rt.gather((rng.bit_generator.state, torch.get_rng_state()))  # collective
        return {**state, "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "config": config_to_dict(model.cfg), "optimizer": optimizer.state_dict(),
                "task": task.state_dict(), "rngs": rngs, "total_steps": steps, "world_size": rt.world,
                "threads": torch.get_num_threads(), "device": str(device), "precision": precision}

    bar = tqdm(total=stop if time_budget is None else None,  # budget: known after a few steps
               initial=state["step"], desc="train", unit="step", dynamic_ncols=True,
               disable=not chief)
    t_start = t_mark = t_validated = time.perf_counter()
    running: list[float] = []
    norms: list[torch.Tensor] = []
    waited = 0.0
    last = None
    while state["step"] < stop:
        for group in optimizer.param_groups:
            group["lr"] = lr * cosine_factor(state["step"] / planned)
        task.train_mode()
        t_wait = time.perf_counter()
        batch = _to_device(next(draw), device)
        waited += time.perf_counter() - t_wait
        with autocast(precision, device):
            loss = task.loss(batch, forward)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            norms.append(torch.nn.utils.clip_grad_norm_(params, grad_clip))
        optimizer.step()
        state["step"] += 1
        running.append(loss.detach())
        bar.update(1)
        step = state["step"]
        now = time.perf_counter()
        state["wall_seconds"] = base_seconds + now - t_start
        if time_budget is not None and step % BUDGET_SYNC_EVERY == 0:  # collective
            rate = (step - start_step) / (now - t_start)
            left = max(0.0, time_budget - state["wall_seconds"])
            planned = max(step, min(steps, round(rt.mean(step + left * rate))))
            stop = min(planned, until or planned)
            bar.total = stop
        if rt.stop is not None and rt.stop():
            stop = step
        final = step >= stop
        if step % log_every == 0 or final:  # collective
            record = {"step": step, "loss": rt.mean(float(torch.stack(running).float().mean())),
                      "lr": optimizer.param_groups[0]["lr"],
                      "patches_per_s": len(running) * task.batch * rt.world / (now - t_mark),
                      "data_wait": waited / (now - t_mark), "wall_h": state["wall_seconds"] / 3600}
            if norms:  # the norm before clipping: how often and how far the clip acts
                record["grad_norm"] = rt.mean(float(torch.stack(norms).mean()))
            running, norms, waited, t_mark = [], [], 0.0, now
            due = val_seconds is not None and now - t_validated >= val_seconds
            if validate is not None and chief and (step % val_every == 0 or final or due):
                model.eval()
                record.update(validate())  # in fp32, as the shipped model runs by default
                t_validated = time.perf_counter()
            state["history"].append(record)
            if log:
                log(record)
        else:
            record = None
        if rt.watch is not None:
            rt.watch(record or {"step": step, "wall_h": state["wall_seconds"] / 3600})
        last = snapshot() if step % ckpt_every == 0 or final else None
        if last is not None and rt.report is None and chief and out:
            save_checkpoint(out / LAST, last)
        if rt.report is not None and (record is not None or last is not None):
            rt.report(record or {"step": step}, last, final)
    bar.close()
    return last if last is not None else snapshot()
