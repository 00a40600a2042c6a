"""Data-parallel training of any stage with Ray Train (``TorchTrainer``, DDP).

    python -m napari_jpeg_restore.distributed.train encoder --data s3://bucket/clean \\
        --storage s3://bucket/runs --workers 4 --use-gpu 1 --steps 20000
    python -m napari_jpeg_restore.distributed.train restorer --data ... --storage ... \\
        --encoder encoder-model.pt --workers 4

The flags are ``jpeg-restore train``'s (``training.options.add_train_args``) plus the Ray ones,
and every worker runs the same loop as ``jpeg-restore train`` (``training.loop.fit``), in the
style of Ray Train's examples: ``train_func`` builds the model and task
(``training.stages.prepare``) from its shard of the data (every ``world``-th file, read as
needed), wraps the model with ``ray.train.torch.prepare_model`` (DDP; gloo on CPU, NCCL on GPU)
and hands ``fit`` a ``Runtime``: rank, the DDP module, two collectives and a ``report`` that
sends ``ray.train.report`` with a ``Checkpoint`` holding ``last.pt`` (the same schema as a
single-process run, so ``--init``, ``load_model`` and ``jpeg-restore train --resume`` read it).
With ``FailureConfig(max_failures)`` a failed worker group restarts from the latest checkpoint
(``ray.train.get_checkpoint()``). Running the same command again with the same
``--storage``/``--name`` and a larger ``--steps`` continues the finished run; the cosine schedule
stretches to the new total. The final checkpoint also holds ``model.pt``
(``training.stages.export``), which the driver copies to ``--storage/<name>/model.pt`` (and
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
* BatchNorm: shuffle-BN within each rank's batch (``ContrastiveTask`` encodes keys in
  ``bn_groups`` shuffled sub-batches), so a query and its key never share batch statistics;
  this avoids MoCo's cross-GPU shuffle (an all-to-all per step).
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from napari_jpeg_restore.core.imageio.filesystem import is_local, resolve
from napari_jpeg_restore.core.training.options import TrainOptions, add_train_args

from ._common import credential_env, init_ray, redact

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


def _blob_to_file(blob: bytes) -> str:
    fd, path = tempfile.mkstemp(suffix=".pt", prefix="jpeg-restore-weights-")
    with os.fdopen(fd, "wb") as f:
        f.write(blob)
    return path


def _collectives(world: int, device):
    """(mean of a number, every rank's object, every rank's tensor concatenated) over the group."""
    import torch
    import torch.distributed as dist

    def mean(x: float) -> float:
        t = torch.tensor([x], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t) / world

    def gather(obj: Any) -> list[Any]:
        out = [None] * world
        dist.all_gather_object(out, obj)
        return out

    def cat(k: torch.Tensor) -> torch.Tensor:
        out = [torch.empty_like(k) for _ in range(world)]
        dist.all_gather(out, k.contiguous())
        return torch.cat(out)
    return mean, gather, cat


def train_func(config: dict[str, Any]) -> None:
    """Ray Train's ``train_loop_per_worker``: ``loop.fit`` on this worker's shard."""
    import ray
    import ray.train
    import ray.train.torch
    import torch
    import torch.distributed as dist
    from napari_jpeg_restore.core.training.checkpoint import load_checkpoint, save_checkpoint
    from napari_jpeg_restore.core.training.loop import LAST, Runtime, fit
    from napari_jpeg_restore.core.training.stages import (
        WEIGHTS,
        export,
        fit_kwargs,
        kept,
        prepare,
        validator,
    )

    secrets = ray.get(config["secrets"])
    os.environ.update(secrets["env"])
    opts = TrainOptions(**{**config["options"], "storage_options": secrets["storage_options"]})
    # --encoder/--init weights as the driver read them: workers may not see the driver's files
    fetched = {spec: _blob_to_file(ray.get(blob)) for spec, blob in config["blobs"].items()}
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(config["threads"])
    device = ray.train.torch.get_device()
    mean, gather, cat = _collectives(world, device) if world > 1 else (Runtime.mean, Runtime.gather, None)

    model, task, images, meta = prepare(opts, rank, world, gather=cat, fetched=fetched)
    for path in fetched.values():
        os.unlink(path)
    forward = ray.train.torch.prepare_model(model)  # moves to the device; DDP when world > 1
    resume_from = None
    if (checkpoint := ray.train.get_checkpoint()) is not None:
        with checkpoint.as_directory() as d:
            resume_from = load_checkpoint(Path(d) / LAST)
    start_step = resume_from["step"] if resume_from else 0
    backend = dist.get_backend() if dist.is_initialized() else "none"
    distributed = {"workers": world, "backend": backend, "device": str(device)}

    def report(record: dict[str, Any], snapshot: dict[str, Any] | None, final: bool) -> None:
        metrics = {**record, "start_step": start_step, "world_size": world}
        if snapshot is not None:  # collectives: every rank takes part
            metrics["param_spread"] = _spread(_flat(model).to(device), world)
            if opts.stage == "encoder":
                metrics["key_spread"] = _spread(_flat(task.key_encoder).to(device), world)
                metrics["queue_spread"] = _spread(task.queue.to(device), world)
        if snapshot is None or rank != 0:
            ray.train.report(metrics)
            return
        with tempfile.TemporaryDirectory() as tmp:
            save_checkpoint(Path(tmp) / LAST, snapshot)
            if final:
                export(model, snapshot, images, Path(tmp) / WEIGHTS,
                       {"distributed": distributed, **kept(check, model)}, half=opts.half_weights)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp))

    check = validator(opts, model) if rank == 0 else None
    fit(task, device=device, validate=check,
        meta={**meta, "ray": True},
        runtime=Runtime(rank=rank, world=world, forward=forward, mean=mean, gather=gather,
                        report=report, checkpoint=resume_from),
        **{**fit_kwargs(opts), "resume": False})


# --------------------------------------------------------------------------- driver side


def _storage(url: str, storage_options: dict) -> tuple[str, Any]:
    """(storage_path, storage_filesystem) for ``RunConfig``: local paths as they are; URLs
    through fsspec (so ``--storage-options`` apply) wrapped as a pyarrow filesystem."""
    fs, path = resolve(url, storage_options)
    if is_local(fs):
        return os.path.abspath(path), None
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    return path, PyFileSystem(FSSpecHandler(fs))


def _weights_blob(spec: str, storage_options: dict):
    """The bytes of a weights file (registry name, path or URL), read here on the driver."""
    import ray
    from napari_jpeg_restore.core.registry import resolve_weights

    return ray.put(resolve_weights(spec, storage_options).read_bytes())


def run_training(opts: TrainOptions, *, storage: str, name: str | None = None, workers: int = 1,
                 gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_failures: int = 3,
                 out: str | None = None, address: str | None = None, log=print):
    """Train on the connected (or a local) Ray cluster. Returns (ray.train.Result, weights URL)."""
    import ray
    from napari_jpeg_restore.core.training.stages import WEIGHTS
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    where = init_ray(address)
    so = dict(opts.storage_options)
    name = name or f"{opts.stage}-{opts.preset}-{'gray' if opts.channels == 1 else 'color'}"
    storage_path, storage_fs = _storage(storage, so)
    options = opts.public()
    blobs = {spec: _weights_blob(spec, so) for spec in (opts.encoder, opts.init, opts.luma, opts.ranker) if spec}
    config = {"options": options, "blobs": blobs, "threads": max(1, int(cpus_per_worker)),
              "secrets": ray.put({"storage_options": so, "env": credential_env()})}
    resources = {"CPU": cpus_per_worker, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
    trainer = TorchTrainer(
        train_func, train_loop_config=config,
        scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                     resources_per_worker=resources),
        run_config=RunConfig(name=name, storage_path=storage_path, storage_filesystem=storage_fs,
                             failure_config=FailureConfig(max_failures=max_failures),
                             checkpoint_config=CheckpointConfig(num_to_keep=2)))
    log(f"training {opts.stage} on {where}: {workers} worker(s), "
        f"{f'{gpus_per_worker:g} GPU each' if gpus_per_worker else 'CPU (gloo)'}, "
        f"storage {storage.rstrip('/')}/{name}, options {redact(options)}")
    result = trainer.fit()
    if result.checkpoint is None:
        raise RuntimeError("training finished without a checkpoint")
    fs, root = resolve(storage, so)
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
        f"{m.get('patches_per_s', math.nan):.1f} patches/s; weights {url}"
        + (f" and {out}" if out else ""))
    return result, url


def add_ray_args(p: argparse.ArgumentParser) -> None:
    """Where and on what a Ray training job runs (this job's and the fine-tune job's flags)."""
    p.add_argument("--storage", required=True, help="where Ray Train keeps the run (local or s3://)")
    p.add_argument("--workers", type=int, default=2, help="training workers (default: 2)")
    p.add_argument("--use-gpu", type=float, default=0.0, metavar="GPUS",
                   help="GPUs per worker (default: 0, CPU workers with gloo)")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs per worker; its torch threads (default: 1)")
    p.add_argument("--max-failures", type=int, default=3,
                   help="restarts of the worker group from the last checkpoint (default: 3)")
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS or local)")


def ray_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    """``run_training``'s keywords from the flags of ``add_ray_args`` (less ``storage``)."""
    return {"workers": a.workers, "gpus_per_worker": a.use_gpu, "cpus_per_worker": a.cpus_per_worker,
            "max_failures": a.max_failures, "address": a.address}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m napari_jpeg_restore.distributed.train",
        description="Data-parallel training with Ray Train (DDP): the options of `jpeg-restore train` "
                    "and the same loop, on every worker of a Ray cluster.")
    add_train_args(p)
    p.add_argument("--name", help="run name under --storage (default: <stage>-<preset>-<gray|color>); "
                   "reuse it with a larger --steps to continue a finished run")
    add_ray_args(p)
    p.add_argument("--out", help="also copy the final model.pt here")
    a = p.parse_args(argv)
    try:
        opts = TrainOptions.from_args(a, out=a.storage)
        run_training(opts, storage=a.storage, name=a.name, out=a.out, log=lambda m: print(m, flush=True),
                     **ray_kwargs(a))
    except (ValueError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
