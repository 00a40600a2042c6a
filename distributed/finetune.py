"""Fine-tuning on a user's own images with Ray Train (DDP): ``jpeg-restore finetune``'s plan
and finish (``core.training.finetune``) on the driver, the training between them on the
cluster's workers (``distributed.train.run_training``, the one training loop).

    python -m napari_jpeg_restore.distributed.finetune s3://bucket/slides --name histology \\
        --minutes 20 --storage s3://bucket/runs --workers 4 --use-gpu 1

The images are split into training and held-out ones on the driver; the workers read their
share of the training images from the user's storage and rank 0 checks the held-out gain
(keeping the best weights); the driver then calibrates the model on the training images and
registers it by name in its user models folder (``jpeg-restore models``), where ``restore``,
napari and the Ray archive job find it.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from napari_jpeg_restore.core.training.finetune import FinetuneResult, finish, gain_line, plan_finetune
from napari_jpeg_restore.core.training.options import FinetuneOptions, add_finetune_args
from napari_jpeg_restore.core.training.stages import WEIGHTS

from .train import add_ray_args, ray_kwargs, run_training


def run_finetune(options: FinetuneOptions, *, storage: str, log=print, **ray: object) -> FinetuneResult:
    """Plan, train on the cluster (``ray``: ``run_training``'s keywords), calibrate, register."""
    plan = plan_finetune(options, storage, log)
    with tempfile.TemporaryDirectory(prefix="jpeg-restore-finetune-") as tmp:
        weights = Path(tmp) / WEIGHTS
        run = f"finetune-{options.name}-{time.strftime('%Y%m%d-%H%M%S')}"  # never resumes another
        run_training(plan.train_options, storage=storage, name=run,
                     out=str(weights), log=log, **ray)
        return finish(plan, weights)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m napari_jpeg_restore.distributed.finetune",
        description="`jpeg-restore finetune` with its training on the workers of a Ray cluster "
                    "(DDP); the model is registered on the machine that runs this command.")
    add_finetune_args(p)
    add_ray_args(p)
    a = p.parse_args(argv)
    say = lambda line: print(line, flush=True)  # noqa: E731
    try:
        result = run_finetune(FinetuneOptions.from_args(a), storage=a.storage, log=say, **ray_kwargs(a))
    except (ValueError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    say(f"held-out gain before: {gain_line(result.before)}; after: {gain_line(result.after)}")
    if result.forgets:
        say(f"on a photograph it gains {gain_line(result.photograph['model'])} (the source "
            f"{gain_line(result.photograph['source'])}): use it for pictures like yours")
    say(f"registered {result.name} ({result.path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
