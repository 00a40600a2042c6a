"""Restore a whole JPEG archive (local folder, ``s3://`` or ``gs://`` prefix) on a Ray cluster.

    python -m napari_jpeg_restore.distributed.restore_archive \\
        --src s3://archive/jpeg --dst s3://archive/restored --model crl-lite-gray --workers 8

How it works
* The driver lists ``--src`` as a stream (S3: one page of 1000 keys at a time; other
  filesystems: one folder at a time) and cuts it into batches of ``--batch-size`` files, so a
  prefix with millions of objects is never held in memory.
* A pool of ``Restorer`` actors (one model load each, through ``core.registry.load_model``;
  ``num_gpus=--gpus-per-worker`` when the cluster has GPUs, CPU actors otherwise) restores each
  file into ``<dst>/<same relative key>.png`` (or ``.tif``), written atomically (temp key, then
  a move): an output that exists is complete.
* Outputs are proven to stay under ``--dst`` (``core.output_paths``): keys with ``..`` or
  absolute keys are refused (status ``failed``, with the reason); a ``--dst`` that is ``--src``
  or a folder above it is refused before any actor starts; a ``--dst`` inside ``--src`` is fine
  (its keys are never taken as inputs).
* The file step is ``core.file_restore.restore_file``, as in the CLI: images above
  ``--skip-above-quality`` (default 90) or without JPEG traces are left alone (status
  ``skipped``, with the reason), the rest are restored one row of tiles at a time, kept
  consistent with their JPEG, and streamed to the output.
* At most two batches per actor are in flight (back-pressure on the listing).
* Resumable: a rerun skips every input whose output exists (status ``exists``). A killed job
  loses no work that reached the destination; a rerun completes the rest, so every input ends
  with exactly one output.
* Actors are started with ``max_restarts=-1, max_task_retries=2``: a crashed actor is replaced
  and its batch retried by Ray; if a batch keeps killing its actor, it is split into single
  files and a file that still crashes it is recorded as failed.
* Per-file problems (corrupt JPEG, not an image, access denied, ...) are rows in the manifest,
  never a stopped job. The manifest is JSON Lines under ``<dst>/_manifest/``: locally one file
  ``<run-id>.jsonl`` appended after every batch; on object stores ``<run-id>/part-NNNNNN.jsonl``
  objects written every ``--manifest-every`` seconds. Each row: key, status
  (restored/skipped/failed/exists), quality (IJG factor from the quantization tables), seconds,
  megapixels, error. ``<run-id>.run.json`` records the (redacted) options and the summary.
* Credentials: ``--storage-options`` (JSON or a JSON file) goes to fsspec; the standard AWS/GCS
  environment variables of the driver are handed to the actors as constructor arguments.
  Secret-looking keys are redacted from everything printed or written.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import re
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
from napari_jpeg_restore.core.consistency import calibration_path
from napari_jpeg_restore.core.file_restore import restore_file
from napari_jpeg_restore.core.filesystem import (
    is_local,
    parse_storage_options,
    resolve,
    secret_values,
    write_atomically,
)
from napari_jpeg_restore.core.inference import resolve_device
from napari_jpeg_restore.core.jpeg import DEFAULT_SKIP_ABOVE_QUALITY
from napari_jpeg_restore.core.output_paths import (
    UnsafeOutputError,
    canonical,
    extension,
    output_folder_folds_case,
    output_path,
    under,
)
from napari_jpeg_restore.core.registry import (
    MODELS,
    default_model_name,
    load_model,
    resolve_weights,
)
from napari_jpeg_restore.core.sources import IMAGE_SUFFIXES

from ._common import credential_env, init_ray, redact, scrub

MANIFEST_DIR = "_manifest"
STATUSES = ("restored", "exists", "skipped", "failed")
INTERRUPT_GRACE = 2.0  # seconds an interrupted run waits for the batches in flight


# --------------------------------------------------------------------------- listing


@dataclass(frozen=True)
class Item:
    src: str  # full URL (or local path) of the input
    key: str  # path relative to --src
    dst: str  # full URL (or local path) of the output


def _full(fs: fsspec.AbstractFileSystem, path: str) -> str:
    return path if is_local(fs) else fs.unstrip_protocol(path)


def _iter_s3(fs, root: str) -> Iterator[str]:
    """Keys under ``root`` page by page (s3fs' paginated ListObjectsV2, no delimiter)."""
    from fsspec.asyn import sync

    bucket, _, prefix = root.partition("/")
    agen = fs._iterdir(bucket, prefix=f"{prefix}/" if prefix else "", delimiter="")
    while True:
        try:
            info = sync(fs.loop, agen.__anext__)
        except StopAsyncIteration:
            return
        if info.get("type", "file") != "directory" and not info["name"].endswith("/"):
            yield info["name"]


def iter_files(src: str, storage_options: dict | None = None) -> Iterator[tuple[str, str]]:
    """(full path, key relative to ``src``) of every file under ``src``, streamed."""
    fs, root = resolve(src, storage_options)
    root = root.rstrip("/")
    if fs.isfile(root):
        yield _full(fs, root), PurePosixPath(root).name
        return
    if hasattr(fs, "_iterdir") and "s3" in (fs.protocol if isinstance(fs.protocol, tuple)
                                            else (fs.protocol,)):
        paths: Iterator[str] = _iter_s3(fs, root)
    else:
        paths = (f"{folder.rstrip('/')}/{name}" for folder, _, files in fs.walk(root)
                 for name in sorted(files))
    for path in paths:
        yield _full(fs, path), path[len(root) + 1:]


def _failed(key: str, error: str) -> dict:
    return {"key": key, "status": "failed", "quality": None, "seconds": 0.0, "error": error}


def check_roots(src: str, dst: str, storage_options: dict | None = None) -> None:
    """Refuse a ``dst`` that is ``src`` or a folder above it: outputs would land among the
    inputs. (A ``dst`` inside ``src`` is fine: its keys are not taken as inputs.)"""
    fold = output_folder_folds_case(dst, storage_options)
    s, d = canonical(src, storage_options, fold), canonical(dst, storage_options, fold)
    if under(s, d):
        raise ValueError(f"--dst {dst} is --src or a folder above it: outputs would land among "
                         "the inputs; choose a destination outside --src or inside it")


def iter_items(src: str, dst: str, fmt: str = "png", storage_options: dict | None = None,
               window: int = 100_000) -> Iterator[Item | dict]:
    """Images under ``src`` with their outputs. Keys under ``dst`` (when it lies inside ``src``)
    are left out. Keys that would escape ``dst`` come back as ``failed`` manifest rows, and so
    does the later of two inputs that would write the same output (``a.jpg``, ``a.jpeg``),
    caught within a sliding window of recent outputs (same-stem keys sort next to each other).
    Outputs are compared case-folded when ``dst`` is a local folder that ignores case."""
    check_roots(src, dst, storage_options)
    fold = output_folder_folds_case(dst, storage_options)
    dst_root = canonical(dst, storage_options, fold)
    recent: collections.OrderedDict[str, str] = collections.OrderedDict()
    for url, key in iter_files(src, storage_options):
        if not key.lower().endswith(IMAGE_SUFFIXES) or under(canonical(url, storage_options, fold),
                                                              dst_root):
            continue
        try:
            out = output_path(key, dst, fmt, keep_tree=True)
        except UnsafeOutputError as err:
            yield _failed(key, str(err))
            continue
        out_key = canonical(out, storage_options, fold)
        if not under(out_key, dst_root):
            yield _failed(key, f"{key}: its output {out} would leave the destination; refused")
            continue
        if out_key in recent:
            yield _failed(key, f"{key}: {recent[out_key]} already writes {out} (same name, "
                               "other suffix); refused, rename one of them")
            continue
        recent[out_key] = key
        if len(recent) > window:
            recent.popitem(last=False)
        yield Item(url, key, out)


# --------------------------------------------------------------------------- actor


class Restorer:
    """One model, many files. Wrapped with ``ray.remote`` by :func:`restorer_actor`."""

    def __init__(self, model: str | None, model_blob: tuple[bytes, bytes | None] | None, *, device: str = "cpu",
                 threads: int = 1, tile: int = 512, ensemble: bool = False, precision: str = "fp32",
                 fmt: str = "png",
                 skip_above_quality: int | None = DEFAULT_SKIP_ABOVE_QUALITY, storage_options: dict | None = None,
                 env: dict[str, str] | None = None) -> None:
        os.environ.update(env or {})
        import ray
        import torch

        torch.set_num_threads(max(1, int(threads)))
        self.device = resolve_device(device)
        self.gpus = [str(g) for g in ray.get_gpu_ids()]  # the GPU(s) Ray assigned to this actor
        self.so = storage_options or {}
        self.secrets = secret_values(self.so, env)
        self.tile, self.ensemble, self.precision, self.fmt = tile, ensemble, precision, fmt
        self.skip_above = skip_above_quality
        if model_blob is not None:  # a weights file (and calibration) through the object store
            weights, calibration = model_blob
            folder = Path(tempfile.mkdtemp(prefix="jpeg-restore-model-"))
            model = str(folder / "model.pt")
            Path(model).write_bytes(weights)
            if calibration is not None:
                calibration_path(model).write_bytes(calibration)
        self.model = load_model(model, self.device) if model else None  # None: per image default

    def placement(self) -> str:
        """Where this actor runs: its device and the GPU ids Ray assigned to it."""
        return f"{self.device}" + (f", GPU {','.join(self.gpus)}" if self.gpus else "")

    def process(self, batch: list[Item]) -> list[dict[str, Any]]:
        return [self._one(item) for item in batch]

    def _one(self, item: Item) -> dict[str, Any]:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"key": item.key, "status": "failed", "quality": None,
                               "seconds": 0.0, "error": None}
        try:
            res = restore_file(item.src, item.dst, self.model, tile=self.tile, device=self.device,
                               ensemble=self.ensemble, precision=self.precision, fmt=self.fmt,
                               skip_existing=True,
                               skip_above_quality=self.skip_above, storage_options=self.so)
            row["status"] = res.status
            if res.reason:
                row["reason"] = res.reason
            if res.quality is not None:
                row["quality"] = res.quality.quality
                row["quality_exact"] = res.quality.exact
            if res.status == "restored":
                row["megapixels"] = res.megapixels
                row["output"] = item.dst
                if self.gpus:
                    row["gpus"] = self.gpus
        except Exception as err:  # noqa: BLE001 - every per-file problem is a manifest row
            row["error"] = scrub(" ".join(str(err).split()) or type(err).__name__, self.secrets)
        row["seconds"] = round(time.perf_counter() - t0, 4)
        return row


def restorer_actor(num_cpus: float, num_gpus: float):
    """``Restorer`` as a Ray actor class with restart/retry options."""
    import ray

    return ray.remote(Restorer).options(num_cpus=num_cpus, num_gpus=num_gpus, max_restarts=-1,
                                        max_task_retries=2)


# --------------------------------------------------------------------------- manifest


class Manifest:
    """JSON Lines under ``<dst>/_manifest/``; append-per-batch locally, part objects remotely."""

    def __init__(self, dst: str, run_id: str, storage_options: dict | None = None,
                 flush_seconds: float = 10.0) -> None:
        self.fs, root = resolve(dst, storage_options)
        self.so = storage_options
        self.root = f"{root.rstrip('/')}/{MANIFEST_DIR}"
        self.run_id = run_id
        self.local = is_local(self.fs)
        self.fs.makedirs(self.root, exist_ok=True)
        self.rows: list[dict] = []
        self.part = 0
        self.flush_seconds = flush_seconds
        self.last = time.monotonic()
        self.path = f"{self.root}/{run_id}.jsonl" if self.local else f"{self.root}/{run_id}/"
        self.url = _full(self.fs, self.path)

    def add(self, rows: list[dict]) -> None:
        self.rows += [{**r, "run": self.run_id} for r in rows]
        if self.local or time.monotonic() - self.last >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        self.last = time.monotonic()
        if not self.rows:
            return
        text = "".join(json.dumps(r, sort_keys=True) + "\n" for r in self.rows)
        if self.local:
            with open(self.path, "a") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
        else:
            self.fs.pipe_file(f"{self.path}part-{self.part:06d}.jsonl", text.encode())
            self.part += 1
        self.rows = []

    def write_info(self, info: dict) -> None:
        text = json.dumps(redact(info), indent=2, sort_keys=True, default=str).encode()
        write_atomically(_full(self.fs, f"{self.root}/{self.run_id}.run.json"),
                         lambda f: f.write(text), self.so)


def read_manifest(dst: str, storage_options: dict | None = None) -> list[dict]:
    """Every manifest row under ``dst`` in the order written (runs sort by their time-stamped id)."""
    fs, root = resolve(dst, storage_options)
    base = f"{root.rstrip('/')}/{MANIFEST_DIR}"
    if not fs.exists(base):
        return []
    rows = []
    for path in sorted(p for p in fs.find(base) if p.endswith(".jsonl")):
        rows += [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line]
    return rows


def final_state(rows: list[dict]) -> dict[str, dict]:
    """The last row of every key: what the archive looks like after all runs."""
    return {r["key"]: r for r in rows}


# --------------------------------------------------------------------------- driver


@dataclass
class ArchiveConfig:
    src: str
    dst: str
    model: str | None = None
    workers: int | None = None
    gpus_per_worker: float = 1.0
    cpus_per_worker: float = 1.0
    batch_size: int = 8
    skip_above_quality: int | None = DEFAULT_SKIP_ABOVE_QUALITY
    format: str = "png"
    tile: int = 512
    ensemble: bool = False
    precision: str = "auto"
    storage_options: dict[str, Any] = field(default_factory=dict)
    address: str | None = None
    progress_every: float = 10.0
    manifest_every: float = 10.0
    strict: bool = False
    startup_timeout: float = 600.0
    device: str = "auto"


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
    """(registry name or None, object-store ref of a weights file's bytes and its calibration's,
    or None). A path or URL is fetched and loaded once on the driver, so a bad one fails
    before any actor starts."""
    import ray

    if model is None:
        default_model_name(1)  # fail early, on the driver, when nothing is shipped
        return None, None
    load_model(model, storage_options=storage_options)  # ModelNotAvailableError, bad files
    if model in MODELS:
        return model, None
    path = resolve_weights(model, storage_options)
    cal = calibration_path(path)
    return None, ray.put((path.read_bytes(), cal.read_bytes() if cal.is_file() else None))


def _batches(items: Iterator[Item | dict], size: int) -> Iterator[list[Item] | dict]:
    batch: list[Item] = []
    for it in items:
        if isinstance(it, dict):
            yield it
            continue
        batch.append(it)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def actors_that_fit(resources: dict[str, float], workers: int | None, cpus: float, gpus: float,
                    log=print) -> int:
    """How many actors to start: ``workers`` (default: as many as the cluster holds), but never
    more than the cluster's total CPUs and GPUs can ever hold at once: those would wait
    forever. Raises RuntimeError when not even one fits."""
    room = [resources.get("CPU", 0.0) / cpus] if cpus > 0 else []
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


class StartingPool:
    """Actors as they come up: work goes only to the ones whose constructor has finished.
    One that fails to start is reported with its cause; when none starts (or none within
    ``timeout`` seconds) the job stops with RuntimeError instead of waiting forever."""

    def __init__(self, actors: list, timeout: float, log=print) -> None:
        self.starting = {a.placement.remote(): i for i, a in enumerate(actors)}
        self.actors, self.up, self.causes, self.log = actors, [], [], log
        self.deadline = time.monotonic() + timeout
        self.timeout = timeout

    @property
    def settled(self) -> bool:
        return not self.starting

    def running(self, block: bool) -> list[int]:
        """Indices of started actors; with ``block``, waits until there is one."""
        import ray

        while True:
            if self.starting:
                left = max(0.0, self.deadline - time.monotonic())
                wait = left if block and not self.up else 0
                done, _ = ray.wait(list(self.starting), num_returns=1 if wait else len(self.starting),
                                   timeout=wait)
                for ref in done:
                    i = self.starting.pop(ref)
                    try:
                        self.log(f"actor {i} started on {ray.get(ref)}")
                        self.up.append(i)
                    except ray.exceptions.RayError as err:
                        self.causes.append(_cause(err))
                        self.log(f"actor {i} could not start: {self.causes[-1]}")
                if self.starting and time.monotonic() >= self.deadline:
                    for ref, i in self.starting.items():
                        ray.kill(self.actors[i])
                        self.log(f"actor {i} was not scheduled within {self.timeout:g} s "
                                 "(the cluster's resources are taken); going on without it")
                    self.starting.clear()
            if self.up:
                return self.up
            if not self.starting:
                why = self.causes[-1] if self.causes else \
                    f"none was scheduled within {self.timeout:g} s"
                raise RuntimeError(f"no restoration actor could start: {why}")
            if not block:
                return []


def run(cfg: ArchiveConfig, log=print, where: str | None = None) -> Summary:
    """Restore ``cfg.src`` into ``cfg.dst`` on the connected (or a local) Ray cluster
    (``where``: its label when the caller has connected already)."""
    import ray
    from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

    where = where or init_ray(cfg.address)
    so = dict(cfg.storage_options)
    fmt = cfg.format.lower()
    extension(fmt)  # ValueError for an unknown format
    check_roots(cfg.src, cfg.dst, so)  # before any actor starts
    resources = ray.cluster_resources()
    gpus = float(resources.get("GPU", 0))
    if cfg.device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"--device must be auto, cpu or cuda, got {cfg.device!r}")
    if gpus > 0 and cfg.gpus_per_worker > 0:  # each actor holds its share of a GPU
        device, num_gpus = ("cuda" if cfg.device == "auto" else cfg.device), cfg.gpus_per_worker
    elif cfg.device == "cuda":
        raise ValueError("--device cuda: the cluster has no GPUs" if gpus == 0 else
                         "--device cuda needs --gpus-per-worker above 0")
    else:
        device, num_gpus = "cpu", 0.0
        log("--gpus-per-worker 0: restoring on CPUs" if cfg.gpus_per_worker <= 0 and gpus > 0
            else "no GPUs in the cluster: restoring on CPUs")
    n = actors_that_fit(resources, cfg.workers, cfg.cpus_per_worker, num_gpus, log)
    model_name, model_blob = _model_args(cfg.model, so)
    actor_cls = restorer_actor(cfg.cpus_per_worker, num_gpus)
    env = credential_env()
    actors = [actor_cls.remote(model_name, model_blob, device=device,
                               threads=max(1, int(cfg.cpus_per_worker)), tile=cfg.tile,
                               ensemble=cfg.ensemble, precision=cfg.precision, fmt=fmt,
                               skip_above_quality=cfg.skip_above_quality, storage_options=so,
                               env=env) for _ in range(n)]
    run_id = f"{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{uuid.uuid4().hex[:6]}"
    manifest = Manifest(cfg.dst, run_id, so, cfg.manifest_every)
    info: dict[str, Any] = {"run_id": run_id, "status": "running", "config": asdict(cfg), "ray": where, "device": device, "workers": n,
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    manifest.write_info(info)
    log(f"run {run_id}: {redact(cfg.src)} -> {cfg.dst} on {where}, {n} {device} actor(s), "
        f"manifest {manifest.url}")

    counts: collections.Counter[str] = collections.Counter()
    megapixels = 0.0
    start = last_print = time.perf_counter()

    def record(rows: list[dict]) -> None:
        nonlocal megapixels, last_print
        manifest.add(rows)
        for r in rows:
            counts[r["status"]] += 1
            megapixels += r.get("megapixels", 0.0)
            if r["status"] == "failed":
                log(f"failed: {r['key']}: {r['error']}")
        now = time.perf_counter()
        if now - last_print >= cfg.progress_every:
            last_print = now
            done = sum(counts.values())
            log(f"progress: {done} files ({', '.join(f'{s} {counts[s]}' for s in STATUSES)}), "
                f"{counts['restored'] / (now - start):.2f} restored/s")

    pool = StartingPool(actors, cfg.startup_timeout, log)
    work = _batches(iter_items(cfg.src, cfg.dst, fmt, so), cfg.batch_size)
    retry: collections.deque[tuple[list[Item], int]] = collections.deque()
    inflight: dict[Any, tuple[int, list[Item], int]] = {}
    load = [0] * n
    exhausted = False

    def next_batch() -> tuple[list[Item], int] | None:
        nonlocal exhausted
        if retry:
            return retry.popleft()
        while not exhausted:
            b = next(work, None)
            if b is None:
                exhausted = True
            elif isinstance(b, dict):
                record([b])
            else:
                return b, 0
        return None

    try:
        while True:
            running = pool.running(block=not inflight)  # work goes only to started actors
            while running and min(load[i] for i in running) < 2:
                nb = next_batch()
                if nb is None:
                    break
                i = min(running, key=lambda j: load[j])
                inflight[actors[i].process.remote(nb[0])] = (i, nb[0], nb[1])
                load[i] += 1
            if not inflight:
                break
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=None if pool.settled else 1.0)
            for ref in ready:
                i, batch, tries = inflight.pop(ref)
                load[i] -= 1
                try:
                    record(ray.get(ref))
                except ActorUnavailableError as err:  # transient: same batch again
                    retry.append((batch, tries))
                    log(f"actor {i} unavailable ({type(err).__name__}); batch requeued")
                except (ActorDiedError, RayActorError) as err:
                    log(f"actor {i} died on a batch of {len(batch)} after Ray's retries "
                        f"({type(err).__name__})")
                    if len(batch) > 1:
                        retry.extend(([it], tries + 1) for it in batch)
                    else:
                        record([_failed(batch[0].key, "the worker process died on this file "
                                        "(killed, out of memory or crashed) in every retry")])
    except RuntimeError as err:  # no actor could start: the run failed, and says why
        info.update(status="failed", error=str(err))
        raise
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM from `ray job stop` (see main)
        info["status"] = "interrupted"
        # Batches in flight may have written outputs: give them a moment to report, so that
        # every output has its row (`ray job stop` allows the driver about 3 s).
        done, _ = ray.wait(list(inflight), num_returns=len(inflight), timeout=INTERRUPT_GRACE)
        for ref in done:
            with contextlib.suppress(RayActorError):
                record(ray.get(ref))
        raise
    finally:
        manifest.flush()
        seconds = time.perf_counter() - start
        summary = Summary(run_id, manifest.url, dict(counts), seconds, megapixels, len(pool.up),
                          device)
        if info["status"] == "running":  # still "running" in run.json: the driver was killed
            info["status"] = "finished"
        info.update(summary=asdict(summary), finished=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                     time.gmtime()))
        manifest.write_info(info)
        for a in actors:
            ray.kill(a)
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
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where actors run the model: auto = cuda when they hold a GPU")
    p.add_argument("--cpus-per-worker", type=float, default=1.0,
                   help="CPUs reserved per actor, also its torch thread count")
    p.add_argument("--batch-size", type=int, default=8, help="files per actor task")
    p.add_argument("--skip-above-quality", type=int, metavar="Q", default=DEFAULT_SKIP_ABOVE_QUALITY,
                   help="leave images whose JPEG quality is above Q, or that show no JPEG "
                        "compression, untouched (status skipped; default: "
                        f"{DEFAULT_SKIP_ABOVE_QUALITY}; 100 restores everything)")
    p.add_argument("--format", choices=["png", "tiff"], default="png")
    p.add_argument("--tile", type=int, default=512)
    p.add_argument("--ensemble", action="store_true",
                   help="x8 self-ensemble (rotations/flips): 8x the compute, a little better")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto (default): bf16 autocast where each actor's device computes it "
                        "natively, else fp32")
    p.add_argument("--storage-options", help="JSON object (or a JSON file) passed to fsspec, "
                   'e.g. \'{"endpoint_url": "http://127.0.0.1:5555"}\'')
    p.add_argument("--address", help="Ray cluster address (default: RAY_ADDRESS, else a local "
                   "Ray instance)")
    p.add_argument("--progress-every", type=float, default=10.0, help="seconds between lines")
    p.add_argument("--manifest-every", type=float, default=10.0,
                   help="seconds between manifest part objects on object stores")
    p.add_argument("--startup-timeout", type=float, default=600.0, metavar="S",
                   help="seconds to wait for actors to be scheduled and started; actors still "
                        "waiting then are dropped, and with none started the job fails (default 600)")
    p.add_argument("--strict", action="store_true",
                   help="exit with status 1 when any file failed (default: 0, see the manifest)")
    a = p.parse_args(argv)
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    return ArchiveConfig(src=a.src, dst=a.dst, model=a.model, workers=a.workers,
                         gpus_per_worker=a.gpus_per_worker, cpus_per_worker=a.cpus_per_worker,
                         batch_size=a.batch_size, skip_above_quality=a.skip_above_quality,
                         format=a.format, tile=a.tile, ensemble=a.ensemble, precision=a.precision,
                         storage_options=parse_storage_options(a.storage_options),
                         address=a.address, progress_every=a.progress_every,
                         manifest_every=a.manifest_every,
                         strict=a.strict, startup_timeout=a.startup_timeout, device=a.device)


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
        print(f"error: {scrub(str(err), secret_values(cfg.storage_options, credential_env()))}",
              file=sys.stderr)
        return 2
    # Per-file failures are in the manifest; they fail the process only with --strict.
    return 1 if cfg.strict and summary.counts.get("failed", 0) else 0


if __name__ == "__main__":
    sys.exit(main())
