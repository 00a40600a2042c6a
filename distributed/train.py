"""Data-parallel training of either stage with Ray Train (``TorchTrainer``, DDP).

    python -m napari_jpeg_restore.distributed.train encoder --data s3://bucket/clean \\
        --storage s3://bucket/runs --workers 4 --use-gpu --steps 20000
    python -m napari_jpeg_restore.distributed.train restorer --data ... --storage ... \\
        --encoder encoder-model.pt --workers 4

Everything a step computes comes from :mod:`napari_jpeg_restore.core.training`:
``stages.TrainOptions/build_model/build_task`` build the model and the task, the tasks compute
the loss (``RestorationTask``, ``ContrastiveTask``), ``loop.make_optimizer/cosine_factor`` give
the same optimiser and schedule as single-process ``jpeg-restore train``. This module only adds
the Ray parts:

* ``train_func`` runs on every worker: it reads its own shard of the data
  (``expand(data)[rank::world]`` then ``load_images``), wraps the model with
  ``ray.train.torch.prepare_model`` (DDP; gloo on CPU, NCCL on GPU) and drives the task.
* Every ``--ckpt-every`` steps rank 0 reports a checkpoint (``last.pt``: model, optimiser,
  scheduler, task state, each rank's RNG state, step) with ``ray.train.report``; Ray Train
  stores it under ``--storage/<name>``. With ``FailureConfig(max_failures)`` a failed worker
  group restarts from the latest checkpoint (``ray.train.get_checkpoint()``). Running the same
  command again with the same ``--storage``/``--name`` and a larger ``--steps`` resumes the
  finished run (Ray Train restores the run's checkpoint state from storage); the cosine
  schedule stretches to the new total, as in ``loop.fit``.
* The final checkpoint also holds ``model.pt`` written by ``registry.save_weights`` (the same
  self-describing file as single-process training; for the encoder the quality probe is fitted
  on rank 0's shard first), and the driver copies it to ``--storage/<name>/model.pt`` (and
  ``--out`` if given), ready for ``jpeg-restore restore --model`` and ``load_model``.

MoCo under DDP (the encoder stage), the choices made:

* Query encoder: DDP averages gradients, so its parameters stay identical on every rank.
* Momentum (key) encoder: every rank starts from the same seed and applies the same EMA of the
  identical query parameters, so its parameters stay identical without communication. Its
  BatchNorm running statistics (copied from the query encoder by the EMA step) may differ
  between ranks, but the key encoder runs in train mode (batch statistics), so they never
  affect a key; the query encoder's running statistics are rank 0's (DDP broadcasts them at
  every forward), and those are what the exported model keeps.
* Queue: each rank's keys are all-gathered (``ContrastiveTask(gather=...)``), and every rank
  enqueues the same ``world x batch`` keys in rank order, so the queues stay identical and
  the negatives come from the global batch, as in MoCo's multi-GPU implementation.
* BatchNorm: shuffle-BN within each rank's batch. ``ContrastiveTask`` encodes keys in
  ``bn_groups`` shuffled sub-batches on each rank, so a query and its key never share batch
  statistics; this avoids MoCo's cross-GPU shuffle (an all-to-all per step) and keeps the
  single-process code path. With a per-rank batch of at least ~16 the sub-batch statistics
  are as good as MoCo's per-GPU ones.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from napari_jpeg_restore.core.training.stages import TrainOptions

from ._common import credential_env, init_ray, parse_storage_options, redact

STAGES = ("encoder", "restorer")
LAST = "last.pt"
WEIGHTS = "model.pt"


# --------------------------------------------------------------------------- worker side


def _flat(module):
    """All parameters of ``module`` as one vector (BN running statistics are not compared: each
    rank updates them from its own batch; DDP re-broadcasts rank 0's at every forward)."""
    import torch

    tensors = [t.detach().float().flatten().cpu() for t in module.parameters()]
    return torch.cat(tensors) if tensors else torch.zeros(1)


def _spread(t, world: int) -> float:
    """Largest difference of ``t`` between any rank and rank 0 (0.0 when identical)."""
    import torch
    import torch.distributed as dist

    if world < 2:
        return 0.0
    out = [torch.empty_like(t) for _ in range(world)]
    dist.all_gather(out, t)
    return max(float((o - out[0]).abs().max()) for o in out)


def _blob_to_file(blob: bytes | None, name: str) -> str | None:
    if blob is None:
        return None
    fd, path = tempfile.mkstemp(suffix=".pt", prefix=f"jpeg-restore-{name}-")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


def train_func(config: dict[str, Any]) -> None:
    """The per-worker training loop (Ray Train's ``train_loop_per_worker``)."""
    import copy

    import numpy as np
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from napari_jpeg_restore.core.machine import describe
    from napari_jpeg_restore.core.registry import save_weights
    from napari_jpeg_restore.core.sources import expand
    from napari_jpeg_restore.core.training.checkpoint import load_checkpoint, save_checkpoint
    from napari_jpeg_restore.core.training.data import load_images
    from napari_jpeg_restore.core.training.loop import cosine_factor, make_optimizer
    from napari_jpeg_restore.core.training.stages import (
        build_model,
        build_task,
        encoder_validator,
        fit_quality_probe,
        restoration_validator,
    )
    from torch.optim.lr_scheduler import LambdaLR

    secrets = ray.get(config["secrets"]) if config.get("secrets") is not None else {}
    os.environ.update(secrets.get("env", {}))
    opts = TrainOptions(**{**config["options"], "storage_options": secrets.get("storage_options", {})})
    encoder_blob = ray.get(config["encoder_blob"]) if config.get("encoder_blob") is not None else None
    if encoder_blob is not None:
        opts.encoder = _blob_to_file(encoder_blob, "encoder")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(max(1, int(config.get("threads", 1))))
    device = ray.train.torch.get_device()

    urls = expand(opts.data, opts.storage_options)
    shard = urls[rank::world] or urls  # fewer files than workers: every rank sees them all
    images = load_images(shard, opts.channels, opts.storage_options)

    torch.manual_seed(opts.seed)  # identical initial weights, key encoder and queue everywhere
    model = build_model(opts)

    def gather(k: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(k) for _ in range(world)]
        dist.all_gather(out, k.contiguous())
        return torch.cat(out)

    task = build_task(opts, images, model, gather=gather if world > 1 else None)
    ddp = ray.train.torch.prepare_model(model)  # moves to device; DDP when world > 1
    optimizer = make_optimizer(task.parameters(), opts.lr)
    scheduler = LambdaLR(optimizer, cosine_factor(opts.steps))
    rng = np.random.default_rng([opts.seed, rank])
    torch.manual_seed(opts.seed * 1000 + rank + 1)  # per-rank shuffle-BN permutations
    state: dict[str, Any] = {"step": 0, "wall_seconds": 0.0, "history": []}
    start_step = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            ckpt = load_checkpoint(Path(d) / LAST)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        scheduler.lr_lambdas[0] = cosine_factor(opts.steps)  # a longer run stretches the curve
        task.load_state_dict(ckpt["task"])
        rngs = ckpt.get("rngs") or []
        if len(rngs) == world:
            rng.bit_generator.state = rngs[rank]
        else:  # another world size: fresh per-rank streams, offset by the step
            rng = np.random.default_rng([opts.seed, rank, ckpt["step"]])
        state = {k: ckpt[k] for k in ("step", "wall_seconds", "history")}
        start_step = state["step"]

    validator = None
    if opts.val_data and rank == 0:
        val = load_images(expand(opts.val_data, opts.storage_options)[: opts.val_images],
                          opts.channels, opts.storage_options)
        validator = (encoder_validator if opts.stage == "encoder" else restoration_validator)(model, val)

    ckpt_every, log_every = config["ckpt_every"], config["log_every"]
    fail_at = config.get("fail_at_step")  # test hook: one worker dies once at this step
    contrastive = opts.stage == "encoder"
    running: list[float] = []
    samples, busy = 0, 0.0  # busy: seconds in steps (not in reports and checkpoints)
    t0 = time.perf_counter()
    while state["step"] < opts.steps:
        if fail_at is not None and state["step"] == fail_at and rank == world - 1 \
                and checkpoint is None:  # only in the first attempt
            raise RuntimeError(f"injected failure at step {fail_at} on rank {rank}")
        t_step = time.perf_counter()
        task.train_mode()
        loss = (task.loss(rng, device, forward=ddp, query_module=model) if contrastive
                else task.loss(rng, device, forward=ddp))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        state["step"] += 1
        samples += task.batch * world
        busy += time.perf_counter() - t_step
        running.append(float(loss.detach()))
        step = state["step"]
        final = step == opts.steps
        if not (step % log_every == 0 or step % ckpt_every == 0 or final):
            continue
        now = time.perf_counter()
        state["wall_seconds"] += now - t0
        t0 = now
        loss_t = torch.tensor([float(np.mean(running))], device=device)
        if world > 1:
            dist.all_reduce(loss_t)
            loss_t /= world
        record = {"step": step, "loss": float(loss_t), "lr": scheduler.get_last_lr()[0],
                  "samples_per_s": samples / busy if busy else 0.0}
        running = []
        if validator is not None and (step % opts.val_every == 0 or final):
            model.eval()
            record.update(validator())
        state["history"].append(record)
        metrics = {**record, "start_step": start_step, "world_size": world}
        save = step % ckpt_every == 0 or final
        if save:  # collectives: every rank takes part
            metrics["param_spread"] = _spread(_flat(model).to(device), world)
            if contrastive:
                metrics["key_spread"] = _spread(_flat(task.key_encoder).to(device), world)
                metrics["queue_spread"] = _spread(task.queue.to(device), world)
            rngs = [None] * world
            if world > 1:
                dist.all_gather_object(rngs, rng.bit_generator.state)
            else:
                rngs = [rng.bit_generator.state]
        if not save or rank != 0:
            ray.train.report(metrics)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            model_cpu_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
            save_checkpoint(Path(tmp) / LAST, {
                **state, "model": model_cpu_state, "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "task": task.state_dict(), "rngs": rngs,
                "total_steps": opts.steps, "world_size": world,
                "options": {k: v for k, v in asdict(opts).items() if k != "storage_options"}})
            if final:
                model.eval()
                meta = {**config["meta"], "machine": describe(), "steps": step,
                        "cpu_hours": state["wall_seconds"] * torch.get_num_threads() * world / 3600,
                        "history": state["history"], "history_tail": state["history"][-3:],
                        "distributed": {"workers": world, "backend": dist.get_backend()
                                        if dist.is_initialized() else "none",
                                        "device": str(device)}}
                if contrastive:
                    meta["quality_probe_mae"] = fit_quality_probe(model, images)
                save_weights(copy.deepcopy(model).cpu().eval(), Path(tmp) / WEIGHTS, meta)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))


# --------------------------------------------------------------------------- driver side


def _storage(url: str, storage_options: dict) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for ``RunConfig``: local paths as they are; URLs
    through fsspec (so ``--storage-options`` apply) wrapped as a pyarrow filesystem."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    fs, path = fsspec.core.url_to_fs(url, **storage_options)
    if isinstance(fs, LocalFileSystem):
        return os.path.abspath(path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path, PyFileSystem(FSSpecHandler(fs))


def _read_blob(path: str | None, storage_options: dict) -> bytes | None:
    if not path:
        return None
    from napari_jpeg_restore.core.registry import MODELS

    if path in MODELS:
        return MODELS[path].path.read_bytes()
    import fsspec

    with fsspec.open(path, "rb", **storage_options) as f:
        return f.read()


def run_training(opts: TrainOptions, *, storage: str, name: str | None = None, workers: int = 1,
                 use_gpu: bool = False, cpus_per_worker: float = 1.0, ckpt_every: int = 200,
                 log_every: int = 50, max_failures: int = 3, out: str | None = None,
                 address: str | None = None, fail_at_step: int | None = None, log=print):
    """Train on the connected (or a local) Ray cluster. Returns (ray.train.Result, weights URL)."""
    import fsspec
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if opts.stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}")
    where = init_ray(address)
    so = dict(opts.storage_options)
    name = name or f"{opts.stage}-{opts.preset}-{'gray' if opts.channels == 1 else 'color'}"
    storage_path, storage_fs = _storage(storage, so)
    options = {k: v for k, v in asdict(opts).items() if k != "storage_options"}
    secrets = ray.put({"storage_options": so, "env": credential_env()})
    blob = _read_blob(opts.encoder, so) if opts.stage == "restorer" else None
    config = {"options": options, "secrets": secrets, "threads": max(1, int(cpus_per_worker)),
              "encoder_blob": ray.put(blob) if blob is not None else None,
              "ckpt_every": max(1, ckpt_every), "log_every": max(1, log_every),
              "fail_at_step": fail_at_step,
              "meta": {"options": options, "data": opts.data, "ray": True}}
    trainer = TorchTrainer(
        train_func, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=use_gpu,
                                     resources_per_worker={"CPU": cpus_per_worker,
                                                           **({"GPU": 1} if use_gpu else {})}),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    log(f"training {opts.stage} on {where}: {workers} worker(s), "
        f"{'GPU' if use_gpu else 'CPU (gloo)'}, storage {storage.rstrip('/')}/{name}, "
        f"options {redact(options)}")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    fs, root = fsspec.core.url_to_fs(storage, **so)
    dest = f"{root.rstrip('/')}/{name}/{WEIGHTS}"
    with result.checkpoint.as_directory() as d:
        weights = Path(d) / WEIGHTS
        if not weights.is_file():
            raise RuntimeError(f"the last checkpoint has no {WEIGHTS}")
        fs.put_file(str(weights), dest)
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(weights, out)
    url = dest if fs.protocol in ("file", ("file", "local")) or os.path.isabs(dest) \
        else fs.unstrip_protocol(dest)
    m = result.metrics or {}
    log(f"done: step {m.get('step')}, loss {m.get('loss', math.nan):.4g}, "
        f"{m.get('samples_per_s', math.nan):.1f} samples/s; weights {url}"
        + (f" and {out}" if out else ""))
    return result, url


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m napari_jpeg_restore.distributed.train",
                                description="Data-parallel training with Ray Train (DDP).")
    p.add_argument("stage", choices=STAGES)
    p.add_argument("--data", required=True, help="clean training images: folder, glob or URL")
    p.add_argument("--storage", required=True, help="where Ray Train keeps the run (local or s3://)")
    p.add_argument("--name", help="run name under --storage (default: <stage>-<preset>-<gray|color>); "
                   "reuse it with a larger --steps to continue a finished run")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--use-gpu", action="store_true")
    p.add_argument("--cpus-per-worker", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--batch", type=int, default=16, help="batch per worker")
    p.add_argument("--patch", type=int, default=96)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--preset", default="lite")
    p.add_argument("--channels", type=int, choices=[1, 3], default=1)
    p.add_argument("--encoder", help="restorer stage: trained encoder weights (path, URL or name)")
    p.add_argument("--encoder-mode", choices=["frozen", "none", "joint"], default="frozen")
    p.add_argument("--temperature", type=float, default=0.2)
    p.add_argument("--queue", type=int, default=4096)
    p.add_argument("--val-data")
    p.add_argument("--val-images", type=int, default=8)
    p.add_argument("--val-every", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-every", type=int, default=200)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--max-failures", type=int, default=3)
    p.add_argument("--out", help="also copy the final model.pt here")
    p.add_argument("--storage-options", help="JSON object (or file) for fsspec")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")
    a = p.parse_args(argv)
    if a.patch % 8:
        p.error("--patch must be a multiple of 8")
    so = parse_storage_options(a.storage_options)
    opts = TrainOptions(stage=a.stage, data=a.data, out=a.storage,
                        preset=a.preset, channels=a.channels, steps=a.steps, batch=a.batch,
                        patch=a.patch, lr=a.lr, encoder=a.encoder, encoder_mode=a.encoder_mode,
                        temperature=a.temperature, queue=a.queue, val_data=a.val_data,
                        val_images=a.val_images, val_every=a.val_every, seed=a.seed,
                        storage_options=so)
    try:
        run_training(opts, storage=a.storage, name=a.name, workers=a.workers, use_gpu=a.use_gpu,
                     cpus_per_worker=a.cpus_per_worker, ckpt_every=a.ckpt_every,
                     log_every=a.log_every, max_failures=a.max_failures, out=a.out,
                     address=a.address, log=lambda m: print(m, flush=True))
    except (ValueError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
