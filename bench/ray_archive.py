"""Ray overhead benchmark: archive restoration on a local S3 (moto) with 1 and 2 Ray CPU actors
against the plain single-process loop (``core.file_restore.restore_files``) over the same files, with the
shipped model on photo-sized images and the same thread budget (1 torch thread per process); then
DDP training patches/s with 1 and 2 Ray Train workers. Writes bench/results/ray_archive.md with the
machine and its load average as measured before and after.

    python bench/ray_archive.py [--images 24] [--size 1024 768] [--model crl-lite-gray]
"""
from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import fsspec
import numpy as np
import ray
import torch
from napari_jpeg_restore.core.engines.machine import describe
from napari_jpeg_restore.core.evaluation.demo import SAMPLE
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.codec import encode_jpeg
from napari_jpeg_restore.core.pixels import to_channels
from napari_jpeg_restore.core.registry import load_model
from napari_jpeg_restore.core.restoration.file_restore import restore_files
from napari_jpeg_restore.core.restoration.options import RestoreOptions
from napari_jpeg_restore.core.training.options import TrainOptions
from napari_jpeg_restore.distributed.restore_archive import ArchiveConfig, run
from napari_jpeg_restore.distributed.train import run_training
from sections import RESULTS

OUT = RESULTS / "ray_archive.md"


@contextmanager
def local_s3() -> Iterator[str]:
    """moto's standalone S3 server (the ``moto_server`` command) on a free port of 127.0.0.1, as
    a user would run it beside the job; yields its endpoint once it answers (dummy credentials in
    this process, which the job hands on to its actors)."""
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1",
                               "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):  # up to a minute on a loaded machine
            try:
                urllib.request.urlopen(endpoint, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        yield endpoint
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=72)
    p.add_argument("--size", type=int, nargs=2, default=[1024, 768], metavar=("W", "H"))
    p.add_argument("--model", default="crl-lite-gray", help="shipped model name or weights file")
    p.add_argument("--train-steps", type=int, default=20)
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="the same for the plain loop and the Ray job (auto: bf16 on AVX512-BF16)")
    a = p.parse_args()
    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    model = a.model
    w, h = a.size
    channels = load_model(model).cfg.in_channels
    photo = to_channels(read_image(SAMPLE).array, channels)
    mosaic = np.tile(photo, [-(-(h + 256) // photo.shape[0]), -(-(w + 256) // photo.shape[1])]
                     + [1] * (photo.ndim - 2))
    rows, notes = [], []
    with local_s3() as endpoint:
        so = {"endpoint_url": endpoint}
        fs = fsspec.filesystem("s3", **so)
        fs.mkdir("bench")
        for i in range(a.images):
            y, x = (37 * i) % 256, (61 * i) % 256  # a different view of the mosaic per file
            fs.pipe_file(f"bench/in/{i:05d}.jpg", encode_jpeg(mosaic[y:y + h, x:x + w].copy(), 20))
        urls = [f"s3://bench/in/{i:05d}.jpg" for i in range(a.images)]
        mp = a.images * w * h / 1e6

        torch.set_num_threads(1)
        restore_files(urls[:1], "s3://bench/warm", str(model),
                      RestoreOptions(device="cpu", storage_options=so),
                      log=lambda m: None)  # imports, model cache
        t = time.perf_counter()
        rep = restore_files(urls, "s3://bench/plain", str(model),
                            RestoreOptions(device="cpu", storage_options=so, precision=a.precision),
                            log=lambda m: None)
        plain = time.perf_counter() - t
        assert len(rep.restored) == a.images, rep.summary()
        rows.append(("plain loop (core.file_restore.restore_files), 1 thread", a.images / plain,
                     mp / plain, 1.0, plain))

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        notes.append(f"ray.init (local, 2 CPUs): {time.perf_counter() - t0:.1f} s, not counted")
        for workers in (1, 2):
            t = time.perf_counter()
            s = run(ArchiveConfig(src="s3://bench/in", dst=f"s3://bench/ray{workers}",
                                  model=str(model), workers=workers, batch_size=8,
                                  restore=RestoreOptions(precision=a.precision, storage_options=so),
                                  progress_every=1e9), log=lambda m: None)
            wall = time.perf_counter() - t
            assert s.counts.get("restored") == a.images, s.counts
            rows.append((f"Ray, {workers} CPU actor(s) x 1 thread, batch 8", a.images / wall,
                         mp / wall, (a.images / wall) / (a.images / plain), wall))
        train_rows = []
        data = tmp / "clean"
        data.mkdir()
        from PIL import Image

        for i in range(4):  # four views of the sample, as the archive's
            Image.fromarray(mosaic[37 * i:37 * i + 128, 61 * i:61 * i + 160]).save(data / f"{i}.png")
        for workers in (1, 2):
            opts = TrainOptions(stage="restorer", data=str(data), out=str(tmp), encoder_mode="none",
                                steps=a.train_steps, batch=8, patch=64, lr=1e-3,
                                ckpt_every=a.train_steps, log_every=a.train_steps)
            result, _ = run_training(opts, storage=str(tmp / "store"), name=f"t{workers}",
                                     workers=workers, log=lambda m: None)
            train_rows.append((workers, result.metrics["patches_per_s"]))
        ray.shutdown()
    load_after = os.getloadavg()
    lines = [
        "# Ray jobs benchmark (`bench/ray_archive.py`)", "",
        f"Machine: {describe()}; {os.cpu_count()} CPUs.",
        f"Load average (1 min) before / after the run: {load_before[0]:.2f} / {load_after[0]:.2f}.", "",
        f"## Archive restoration: {a.images} {'gray' if channels == 1 else 'colour'} {w}x{h} JPEGs "
        f"(Q20, views of the bundled sample) on moto S3, {model}, tile 512, precision {a.precision}, output PNG to S3", "",
        "| runner | images/s | MP/s | vs plain loop | seconds |", "|---|---|---|---|---|",
        *[f"| {n} | {ips:.2f} | {mps:.3f} | {ratio:.2f}x | {sec:.1f} |"
          for n, ips, mps, ratio, sec in rows], "",
        "Ray timings include creating the actors and loading the model in them, listing and the "
        "manifest; not `ray.init`. Overhead with 1 worker = 1 - ratio "
        f"= {100 * (1 - rows[1][3]):.0f}% (target <= 15%).", "",
        *[f"- {n}" for n in notes], "",
        f"## DDP training (restorer, CRL-lite gray without encoder, batch 8 per worker, patch 64, "
        f"{a.train_steps} steps, gloo, precision auto)", "",
        "| workers | patches/s (whole group, wall time of the last log interval) |", "|---|---|",
        *[f"| {w} | {sps:.1f} |" for w, sps in train_rows], "",
    ]
    OUT.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
