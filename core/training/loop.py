"""The single-process training loop: Adam, cosine schedule, progress bar, periodic validation,
atomic checkpoints every N steps and ``resume`` from the last one."""
from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.optim.lr_scheduler import LambdaLR
from tqdm import tqdm

from ..models import config_to_dict
from .checkpoint import load_checkpoint, save_checkpoint

LAST = "last.pt"


def cosine_factor(total_steps: int, floor: float = 0.01) -> Callable[[int], float]:
    """Cosine annealing from 1 to ``floor`` over ``total_steps`` (closed form, so a resumed run
    with more steps just stretches the curve)."""
    def factor(step: int) -> float:
        t = min(step, total_steps) / max(1, total_steps)
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
    return factor


def make_optimizer(params, lr: float) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=(0.9, 0.999))


class Logger:
    """Lines to ``train.log`` and the progress bar; records to ``log.jsonl``."""

    def __init__(self, out_dir: Path) -> None:
        self.text = (out_dir / "train.log").open("a")
        self.records = (out_dir / "log.jsonl").open("a")

    def __call__(self, record: dict[str, Any]) -> None:
        self.records.write(json.dumps(record) + "\n")
        self.records.flush()
        line = "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items())
        self.text.write(line + "\n")
        self.text.flush()
        tqdm.write(line)


def fit(task, *, steps: int, out_dir: str | Path, lr: float, device: torch.device, seed: int = 0,
        resume: bool = False, log_every: int = 50, val_every: int = 500, ckpt_every: int = 200,
        validate: Callable[[], dict[str, float]] | None = None,
        meta: dict[str, Any] | None = None, until: int | None = None) -> dict[str, Any]:
    """Train ``task`` (see tasks.py) for ``steps`` steps in total, or stop at step ``until`` (the
    schedule still spans ``steps``; ``resume`` continues later). Returns the last checkpoint."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = task.model.to(device)
    optimizer = make_optimizer(task.parameters(), lr)
    scheduler = LambdaLR(optimizer, cosine_factor(steps))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    state: dict[str, Any] = {"step": 0, "wall_seconds": 0.0, "history": [], "meta": dict(meta or {})}
    if resume and (out / LAST).is_file():
        ckpt = load_checkpoint(out / LAST)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.lr_lambdas[0] = cosine_factor(steps)  # lambdas are not in the state dict
        task.load_state_dict(ckpt["task"])
        rng.bit_generator.state = ckpt["rng"]
        torch.set_rng_state(ckpt["torch_rng"])
        state = {k: ckpt[k] for k in ("step", "wall_seconds", "history", "meta")}
        state["meta"].update(meta or {})
    elif resume:
        tqdm.write(f"no checkpoint in {out}; starting from step 0")
    log = Logger(out)

    def snapshot() -> dict[str, Any]:
        return {**state, "model": model.state_dict(), "config": config_to_dict(model.cfg),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "task": task.state_dict(), "rng": rng.bit_generator.state,
                "torch_rng": torch.get_rng_state(), "total_steps": steps,
                "threads": torch.get_num_threads()}

    running, t0 = [], time.perf_counter()
    bar = tqdm(total=steps, initial=state["step"], desc="train", unit="step", dynamic_ncols=True)
    stop = min(steps, until or steps)
    while state["step"] < stop:
        task.train_mode()
        loss = task.loss(rng, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        running.append(loss.item())
        bar.update(1)
        step = state["step"]
        if step % log_every == 0 or step == stop:
            now = time.perf_counter()
            state["wall_seconds"] += now - t0
            t0 = now
            record = {"step": step, "loss": float(np.mean(running)), "lr": scheduler.get_last_lr()[0],
                      "wall_h": state["wall_seconds"] / 3600}
            running = []
            if validate is not None and (step % val_every == 0 or step == stop):
                model.eval()
                record.update(validate())
            state["history"].append(record)
            log(record)
        if step % ckpt_every == 0 or step == stop:
            save_checkpoint(out / LAST, snapshot())
    bar.close()
    return snapshot()
