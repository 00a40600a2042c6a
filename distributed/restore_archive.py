"""Restore a whole JPEG archive (local folder, ``s3://`` or ``gs://`` prefix) on a Ray cluster
with Ray Data's batch inference (``map_batches`` with a pool of model actors).

    python -m napari_jpeg_restore.distributed.restore_archive \\
        --src s3://archive/jpeg --dst s3://archive/restored --model crl-lite-gray --workers 8

How it works
* The driver lists ``--src`` (S3: one page of 1000 keys at a time) and keeps the images to do
  as a Ray dataset of (key, input, output) rows, in blocks of ``--batch-size``; about 200 bytes
  per key (1 million keys: about 200 MB). Keys that would write outside ``--dst`` (``..``,
  absolute keys) or onto another input's output are refused (status ``failed``, with the
  reason); a ``--dst`` that is ``--src`` or a folder above it is refused before anything starts.
* A pool of ``RestoreActor`` actors (``ActorPoolStrategy``, one model load each, through
  ``core.registry.load_model``) restores each file into ``<dst>/<same relative key>.png`` (or
  ``.tif``), written atomically: an output that exists is complete. On CPUs each actor runs
  the CLI's whole file step (``core.file_restore.restore_file``, streamed band by band). With
  GPUs (``num_gpus=--gpus-per-worker``) actors only run the model; reading and decoding, then
  encoding and writing, are CPU tasks before and after them.
* Images above ``--skip-above-quality`` (default 90) or without JPEG traces are left alone
  (status ``skipped``, with the reason); results are kept consistent with their JPEG.
* Resumable: a rerun skips every input whose output exists (status ``exists``), so every
  input ends with exactly one output.
* Failures: a crashed actor is restarted by Ray and its batch retried (twice); a batch that
  keeps killing its actor gets a ``failed`` row per file and the job goes on. An actor that
  cannot start (CUDA asked but absent, a model that will not load) stops the job with its
  cause and exit status 2; so does a pool that cannot be scheduled within ``--startup-timeout``.
* Per-file problems (corrupt JPEG, not an image, access denied, ...) are manifest rows, never
  a stopped job. The manifest is JSON Lines under ``<dst>/_manifest/<run-id>/``, one part per
  batch, each row written by the process that wrote the output right after it. Each row:
  key, status (restored/skipped/failed/exists), quality (IJG factor from the quantization
  tables), seconds, megapixels, error, actor (and its GPU ids). ``<run-id>.run.json`` records
  the (redacted) options, the status (finished, interrupted, failed) and the summary.
* Credentials: ``--storage-options`` (a JSON file, or inline JSON, warned about when it holds
  secrets) goes to fsspec; the standard AWS/GCS environment variables of the driver are handed
  to the stages as arguments. Secret-looking values are redacted from everything written.
"""
from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import signal
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from napari_jpeg_restore.core.engines.device import DEVICES
from napari_jpeg_restore.core.engines.precision import PRECISIONS
from napari_jpeg_restore.core.engines.selection import ENGINES
from napari_jpeg_restore.core.error_text import one_line
from napari_jpeg_restore.core.imageio.filesystem import parse_storage_options, secret_values
from napari_jpeg_restore.core.imageio.output_paths import extension
from napari_jpeg_restore.core.jpeg.codec import DEFAULT_SKIP_ABOVE_QUALITY, quality_factor
from napari_jpeg_restore.core.jpeg.consistency import calibration_path
from napari_jpeg_restore.core.engines.default_model import default_model_name
from napari_jpeg_restore.core.registry import MODELS, load_model, resolve_weights
from napari_jpeg_restore.core.restoration.options import RestoreOptions

from ._common import credential_env, init_ray, redact, scrub
from .archive_listing import Item, check_roots, failed_row, iter_items
from .archive_manifest import ManifestPart, final_state, read_manifest, run_folder, write_info
from .archive_stages import ALL, RestoreActor, Settings, read_stage, write_stage

STATUSES = ("restored", "exists", "skipped", "failed")
TASK_RETRIES = 2  # a batch whose actor dies is retried this often on a restarted actor
DIED = ("its batch killed the worker process in every retry (killed, out of memory or "
        "crashed); rerun with --batch-size 1 to single out the file")


# --------------------------------------------------------------------------- driver


@dataclass
class ArchiveConfig:
    """The archive job: where from and to, with which model, on how many actors, and how each
    file is restored (``restore``: its device is where actors run the model, auto = cuda when
    they hold a GPU; its storage options reach the source, the destination and the model)."""

    src: str
    dst: str
    model: str | None = None
    restore: RestoreOptions = field(default_factory=lambda: RestoreOptions(precision="auto"))
    workers: int | None = None
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    address: str | None = None
    progress_every: float = 10.0
    strict: bool = False
    startup_timeout: float = 600.0


@dataclass
class Summary:
    run_id: str
    manifest: str
    counts: dict[str, int]
    seconds: float
    megapixels: float
    workers: int
    device: str

    @property
    def images_per_second(self) -> float:
        return self.counts.get("restored", 0) / self.seconds if self.seconds else 0.0

    def line(self) -> str:
        c = ", ".join(f"{s} {self.counts.get(s, 0)}" for s in STATUSES)
        return (f"{c} in {self.seconds:.1f} s on {self.workers} {self.device} worker(s): "
                f"{self.images_per_second:.2f} images/s, "
                f"{self.megapixels / self.seconds if self.seconds else 0:.2f} MP/s")


def _model_args(model: str | None, storage_options: dict) -> tuple[str | None, Any]:
    """(registry name or None, a weights file's bytes and its calibration's, or None; Ray Data
    ships them to the actors through the object store). A path or URL is fetched and loaded
    once on the driver, so a bad one fails before any actor starts."""
    if model is None:
        default_model_name(1)  # fail early, on the driver, when nothing is shipped
        return None, None
    load_model(model, storage_options=storage_options)  # ModelNotAvailableError, bad files
    if model in MODELS:
        return model, None
    path = resolve_weights(model, storage_options)
    cal = calibration_path(path)
    return None, (path.read_bytes(), cal.read_bytes() if cal.is_file() else None)


def actors_that_fit(resources: dict[str, float], workers: int | None, cpus: float, gpus: float,
                    log=print) -> int:
    """How many actors to start: ``workers`` (default: as many as the cluster holds), but never
    more than the cluster's total CPUs and GPUs can ever hold at once: those would wait
    forever. GPU actors leave one CPU for the reading and writing tasks around them.
    Raises RuntimeError when not even one fits."""
    free = resources.get("CPU", 0.0) - (1 if gpus > 0 else 0)
    room = [free / cpus] if cpus > 0 else []
    room += [resources.get("GPU", 0.0) / gpus] if gpus > 0 else []
    fit = int(min(room) + 1e-9) if room else workers or 1
    ask = f"{cpus:g} CPU{f' and {gpus:g} GPU' if gpus else ''} each"
    have = f"{resources.get('CPU', 0):g} CPU and {resources.get('GPU', 0):g} GPU in all"
    if fit < 1:
        raise RuntimeError(f"an actor asks {ask}; the cluster has {have}: none can start")
    if workers and workers > fit:
        log(f"asked for {workers} actors ({ask}); the cluster has {have}, room for {fit}: "
            f"starting {fit}")
    return min(workers or fit, fit)


def _cause(err: BaseException) -> str:
    """The one line that says why an actor failed (the exception raised in it)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    raised = [ln for ln in lines if re.match(r"^[\w.]+(Error|Exception): ", ln)]
    return (raised or lines or [type(err).__name__])[-1]


def _pipeline(items: list[dict], cfg: ArchiveConfig, settings: Settings, model: tuple,
              device: str, num_gpus: float, actors: int):
    """The Ray dataset of manifest rows: (read →) model actors (→ write)."""
    import ray

    ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // cfg.batch_size)))
    threads = max(1, int(cfg.cpus_per_worker))
    actor = {"fn_constructor_args": (settings, *model),
             "fn_constructor_kwargs": {"device": device, "threads": threads,
                                       "whole_files": num_gpus == 0},
             "compute": ray.data.ActorPoolStrategy(size=actors),
             "batch_size": cfg.batch_size, "num_cpus": cfg.cpus_per_worker,
             # Ray Data retries a dead actor's batch forever by default: a file that kills
             # its actor every time would stop the job.
             "max_restarts": -1, "max_task_retries": TASK_RETRIES}
    if num_gpus == 0:
        return ds.map_batches(RestoreActor, **actor)
    ds = ds.map_batches(read_stage, fn_kwargs={"settings": settings}, batch_size=cfg.batch_size)
    ds = ds.map_batches(RestoreActor, num_gpus=num_gpus, **actor)
    return ds.map_batches(write_stage, fn_kwargs={"settings": settings}, batch_size=cfg.batch_size)


def actor_device(wanted: str, gpus: float, gpus_per_worker: float, log: Callable[[str], None]
                 ) -> tuple[str, float]:
    """(device, GPUs per actor) for ``--device wanted`` on a cluster with ``gpus``: cuda where
    each actor holds a share of a GPU, else the CPU (a cuda request that cannot be met raises)."""
    if wanted not in DEVICES:
        raise ValueError(f"--device must be one of {', '.join(DEVICES)}, got {wanted!r}")
    if gpus > 0 and gpus_per_worker > 0:  # each actor holds its share of a GPU
        return ("cuda" if wanted == "auto" else wanted), gpus_per_worker
    if wanted == "cuda":
        raise ValueError("--device cuda: the cluster has no GPUs" if gpus == 0 else
                         "--device cuda needs --gpus-per-worker above 0")
    log("--gpus-per-worker 0: restoring on CPUs" if gpus_per_worker <= 0 and gpus > 0
        else "no GPUs in the cluster: restoring on CPUs")
    return "cpu", 0.0


def configure_ray_data(startup_timeout: float) -> None:
    """Ray Data's settings for the job: failed batches become rows, actors get
    ``startup_timeout`` seconds to start, no progress bars (the job prints its own lines)."""
    import ray

    context = ray.data.DataContext.get_current()
    context.max_errored_blocks = -1  # a batch that keeps killing its actor: rows, not a stop
    context.wait_for_min_actors_s = startup_timeout
    context.enable_progress_bars = False
    # Ray 2.60 logs its DataContext at DEBUG with a format that fails ("--- Logging error ---"
    # on stderr, an exception under pytest's log capture): keep that one logger at INFO.
    logging.getLogger("ray.data._internal.execution.streaming_executor").setLevel(logging.INFO)


class Tally:
    """The job's running counts: every manifest row counted, failures logged as they come,
    a progress line every ``progress_every`` seconds."""

    def __init__(self, log: Callable[[str], None], progress_every: float) -> None:
        self.log, self.progress_every = log, progress_every
        self.counts: collections.Counter[str] = collections.Counter()
        self.megapixels = 0.0
        self.start = self.last_print = time.perf_counter()

    def add(self, rows: list[dict]) -> None:
        for r in rows:
            self.counts[r["status"]] += 1
            self.megapixels += r.get("megapixels", 0.0)
            if r["status"] == "failed":
                self.log(f"failed: {r['key']}: {r['error']}")
        now = time.perf_counter()
        if now - self.last_print >= self.progress_every:
            self.last_print = now
            self.log(f"progress: {sum(self.counts.values())} files "
                     f"({', '.join(f'{s} {self.counts[s]}' for s in STATUSES)}), "
                     f"{self.counts['restored'] / (now - self.start):.2f} restored/s")


def run(cfg: ArchiveConfig, log=print, where: str | None = None) -> Summary:
    """Restore ``cfg.src`` into ``cfg.dst`` on the connected (or a local) Ray cluster
    (``where``: its label when the caller has connected already)."""
    import ray

    where = where or init_ray(cfg.address)
    so = dict(cfg.restore.storage_options or {})
    fmt = cfg.restore.fmt.lower()
    extension(fmt)  # ValueError for an unknown format
    check_roots(cfg.src, cfg.dst, so)  # before any actor starts
    resources = ray.cluster_resources()
    device, num_gpus = actor_device(cfg.restore.device, float(resources.get("GPU", 0)),
                                    cfg.gpus_per_worker, log)
    n = actors_that_fit(resources, cfg.workers, cfg.cpus_per_worker, num_gpus, log)
    model = _model_args(cfg.model, so)
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    options = replace(cfg.restore, fmt=fmt, storage_options=so, skip_existing=True)
    settings = Settings(cfg.dst, run_id, options, credential_env())
    info: dict[str, Any] = {"run_id": run_id, "status": "running", "config": asdict(cfg),
                            "ray": where, "device": device, "workers": n,
                            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_info(cfg.dst, run_id, info, so)
    manifest = run_folder(cfg.dst, run_id, so)
    log(f"run {run_id}: {redact(cfg.src)} -> {cfg.dst} on {where}, {n} {device} actor(s), "
        f"manifest {manifest}")

    tally = Tally(log, cfg.progress_every)
    driver_rows = ManifestPart(cfg.dst, run_id, so)  # refusals and batches lost with their actor
    items = []
    for it in iter_items(cfg.src, cfg.dst, fmt, so):
        if isinstance(it, Item):
            items.append(dict(zip(ALL, (it.key, it.src, it.dst, "", b"", 0.0))))
        else:
            driver_rows.add([it])
            tally.add([it])
    configure_ray_data(cfg.startup_timeout)
    done: set[str] = set()
    try:
        if items:
            for batch in _pipeline(items, cfg, settings, model, device, num_gpus, n).iter_batches(
                    batch_size=None, batch_format="numpy"):
                rows = [json.loads(r) for r in batch["row"]]
                done.update(r["key"] for r in rows)
                tally.add(rows)
        lost = [failed_row(it["key"], DIED) for it in items if it["key"] not in done]
        driver_rows.add(lost)
        tally.add(lost)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from `ray job stop` (see main)
        info["status"] = "interrupted"
        # Rows are written where the outputs are: the run's manifest has every output so far.
        tally.counts = collections.Counter(r["status"] for r in
                                           final_state(read_manifest(cfg.dst, so, run_id)).values())
        raise
    except ray.exceptions.GetTimeoutError:  # Ray Data's wait_for_min_actors_s ran out
        info.update(status="failed", error="actors not scheduled")
        raise RuntimeError(f"the restoration actors were not scheduled within "
                           f"{cfg.startup_timeout:g} s (the cluster's resources are taken)") from None
    except ray.exceptions.RayError as err:  # an actor could not start: the job fails, says why
        info.update(status="failed", error=_cause(err))
        raise RuntimeError(f"the restoration actors could not start: {_cause(err)}") from None
    finally:
        summary = Summary(run_id, manifest, dict(tally.counts), time.perf_counter() - tally.start,
                          tally.megapixels, n, device)
        if info["status"] == "running":
            info["status"] = "finished"
        info.update(summary=asdict(summary),
                    finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        write_info(cfg.dst, run_id, info, so)
    log(f"done: {summary.line()}")
    return summary


def parse_args(argv: list[str] | None = None) -> ArchiveConfig:
    p = argparse.ArgumentParser(
        prog="python -m napari_jpeg_restore.distributed.restore_archive",
        description="Restore every JPEG under a local, s3:// or gs:// prefix with Ray actors.")
    p.add_argument("--src", required=True, help="input folder or prefix URL")
    p.add_argument("--dst", required=True, help="output folder or prefix URL (gets _manifest/)")
    p.add_argument("--model", help="registry name, weights file or weights URL "
                   "(default: the shipped default for each image's channels)")
    p.add_argument("--workers", type=int, help="actors (default: GPUs / --gpus-per-worker, "
                   "or CPUs / --cpus-per-worker without GPUs)")
    p.add_argument("--gpus-per-worker", type=float, default=1.0,
                   help="GPUs each actor holds when the cluster has GPUs (0.5: two per GPU; "
                        "0: CPU actors)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="where actors run the model: auto = cuda when they hold a GPU")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs reserved per actor, also its torch thread count")
    p.add_argument("--batch-size", type=int, default=8, help="files per actor task")
    p.add_argument("--skip-above-quality", type=int, metavar="Q", default=DEFAULT_SKIP_ABOVE_QUALITY,
                   help="leave images whose JPEG quality is above Q, or that show no JPEG "
                        "compression, untouched (status skipped; default: "
                        f"{DEFAULT_SKIP_ABOVE_QUALITY}; 100 restores everything)")
    p.add_argument("--assume-quality", type=quality_factor, metavar="Q",
                   help="restore every file as if compressed at quality Q, whatever its tables say "
                        "(the strength control: lower is stronger; each manifest row records what "
                        "its restoration assumed in restored_as)")
    p.add_argument("--format", choices=["png", "tiff"], default="png")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--ensemble", action="store_true",
                   help="x8 self-ensemble (rotations/flips): 8x the compute, a little better")
    p.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto (default): bf16 autocast where each actor's device computes it "
                        "natively, else fp32")
    p.add_argument("--engine", default="auto", choices=ENGINES,
                   help="auto (default): OpenVINO for CPU actors where it is installed, else PyTorch")
    p.add_argument("--storage-options", help="JSON object (or a JSON file) passed to fsspec, "
                   'e.g. \'{"endpoint_url": "http://127.0.0.1:5555"}\'')
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local "
                   "Ray instance)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between lines")
    p.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                   help="seconds to wait for the first actor to be scheduled and started; without "
                        "one by then the job fails with status 2 (default 600)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any file failed (default: 0, see the manifest)")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    restore = RestoreOptions(tile=a.tile, device=a.device, engine=a.engine, precision=a.precision,
                             ensemble=a.ensemble, assume_quality=a.assume_quality,
                             skip_above_quality=a.skip_above_quality, fmt=a.format,
                             storage_options=parse_storage_options(a.storage_options))
    return ArchiveConfig(src=a.src, dst=a.dst, model=a.model, restore=restore, workers=a.workers,
                         gpus_per_worker=a.gpus_per_worker, cpus_per_worker=a.cpus_per_worker,
                         batch_size=a.batch_size, address=a.address,
                         progress_every=a.progress_every, strict=a.strict,
                         startup_timeout=a.startup_timeout)


def main(argv: list[str] | None = None) -> int:
    cfg = parse_args(argv)
    try:
        where = init_ray(cfg.address)
        # After Ray's own handlers: SIGTERM (what `ray job stop` sends) ends the run as Ctrl-C.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        summary = run(cfg, log=lambda m: print(m, flush=True), where=where)
    except KeyboardInterrupt:
        print("interrupted: the manifest has a row for every output written so far (run.json "
              "status 'interrupted'); rerun the same command to finish", file=sys.stderr)
        return 130
    except (ValueError, LookupError, OSError, RuntimeError) as err:
        print(f"error: {scrub(one_line(err), secret_values(cfg.restore.storage_options or {}, credential_env()))}",
              file=sys.stderr)
        return 2
    # Per-file failures are in the manifest; they fail the process only with --strict.
    return 1 if cfg.strict and summary.counts.get("failed", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
