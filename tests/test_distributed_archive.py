"""Ray bulk restoration against a real local Ray cluster and moto's S3 server (through s3fs)."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

ray = pytest.importorskip("ray", reason="needs the ray extra: pip install 'napari-jpeg-restore[ray]'")
pytest.importorskip("s3fs", reason="needs s3fs (the s3 extra)")
pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")

import fsspec
from helpers import moto_s3, synthetic, train_tiny_restorer
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.codec import compress, encode_jpeg
from napari_jpeg_restore.core.restoration.options import RestoreOptions
from napari_jpeg_restore.distributed.archive_manifest import final_state, read_manifest
from napari_jpeg_restore.distributed.restore_archive import (
    ArchiveConfig,
    actor_device,
    actors_that_fit,
    parse_args,
    run,
)

# The timeout only guards against hangs: with two busy processes on two cores the DDP
# restart test took over 400 s (about 90 s on a quiet machine).
pytestmark = [pytest.mark.ray, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[1]
GOOD = {"a.jpg": 1, "b.jpg": 2, "sub/c.jpg": 3, "sub/deeper/d.jpeg": 4}  # key -> image seed


@pytest.fixture(scope="module")
def cluster(monkeypatch_module):
    # Our own temp dir (no sharing /tmp/ray with other clusters on the host), and room for a
    # busy machine to start workers slowly (Ray Train's default gives a worker group 60 s).
    monkeypatch_module.setenv("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "600")
    temp = tempfile.mkdtemp(prefix="jr-ray-")  # short: Ray's socket paths must stay < 108 chars
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _temp_dir=temp)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
    shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return str(train_tiny_restorer(tmp_path_factory.mktemp("model") / "tiny.pt", steps=100))


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as endpoint:
        so = {"endpoint_url": endpoint}
        fs = fsspec.filesystem("s3", **so)
        fs.mkdir("archive")
        for key, seed in GOOD.items():
            fs.pipe_file(f"archive/in/{key}", encode_jpeg(synthetic(seed), 10))
        fs.pipe_file("archive/in/high.jpg", encode_jpeg(synthetic(5), 95))
        fs.pipe_file("archive/in/corrupt.jpg", encode_jpeg(synthetic(6), 10)[:300] + b"\0" * 64)
        fs.pipe_file("archive/in/notes.jpg", b"this is a text file, not a JPEG\n")
        fs.pipe_file("archive/in/readme.txt", b"ignored: not an image name")
        yield so


def _cfg(src, dst, model, so=None, **kw):
    """The job's config; keywords that are restore options (ensemble, assume_quality...) go
    into its RestoreOptions, as the command line puts them."""
    kw.setdefault("workers", 2)
    kw.setdefault("batch_size", 2)
    restore = {k: kw.pop(k) for k in list(kw) if k in RestoreOptions.__dataclass_fields__}
    return ArchiveConfig(src=src, dst=dst, model=model, progress_every=0.5,
                         restore=RestoreOptions(precision="auto", storage_options=so or {}, **restore),
                         **kw)


def test_s3_archive_restore_manifest_and_rerun(cluster, tiny_model, s3, tmp_path, monkeypatch):
    fs = fsspec.filesystem("s3", **s3)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fs.put_file(tiny_model, "archive/models/tiny.pt")  # the model is read from S3 too
    summary = run(_cfg("s3://archive/in", "s3://archive/out", "s3://archive/models/tiny.pt", s3,
                       skip_above_quality=50), log=lambda m: None)
    assert summary.counts == {"restored": 4, "skipped": 1, "failed": 2}
    assert summary.images_per_second > 0 and summary.megapixels > 0
    for key, seed in GOOD.items():
        out = f"s3://archive/out/{Path(key).with_suffix('.png')}"
        restored = read_image(out, storage_options=s3).array
        clean = synthetic(seed)
        assert restored.shape == clean.shape and restored.dtype == np.uint8
        assert psnr(clean, restored) > psnr(clean, compress(clean, 10)) + 0.5
    assert not fs.exists("archive/out/high.png")
    assert not fs.exists("archive/out/corrupt.png") and not fs.exists("archive/out/notes.png")
    assert not [p for p in fs.find("archive/out") if ".tmp-" in p]  # atomic writes left nothing

    rows = final_state(read_manifest("s3://archive/out", s3))
    assert set(rows) == {*GOOD, "high.jpg", "corrupt.jpg", "notes.jpg"}
    for key in GOOD:
        assert rows[key]["status"] == "restored" and rows[key]["quality"] == 10
        assert rows[key]["quality_exact"] is True and rows[key]["seconds"] > 0
    assert rows["high.jpg"]["status"] == "skipped" and rows["high.jpg"]["quality"] == 95
    assert rows["corrupt.jpg"]["status"] == "failed" and "corrupt" in rows["corrupt.jpg"]["error"]
    assert rows["notes.jpg"]["status"] == "failed" and "not an image" in rows["notes.jpg"]["error"]
    info = fs.cat_file(f"archive/out/_manifest/{summary.run_id}.run.json").decode()
    assert "testing-secret-value" not in info and s3["endpoint_url"] in info

    mtimes = {p: fs.info(p)["LastModified"] for p in fs.find("archive/out") if p.endswith(".png")}
    again = run(_cfg("s3://archive/in", "s3://archive/out", tiny_model, s3,
                     skip_above_quality=50), log=lambda m: None)
    assert again.counts == {"exists": 4, "skipped": 1, "failed": 2}
    assert {p: fs.info(p)["LastModified"] for p in mtimes} == mtimes  # nothing rewritten
    latest = final_state(read_manifest("s3://archive/out", s3))
    assert all(latest[k]["status"] == "exists" and latest[k]["run"] == again.run_id for k in GOOD)


def test_ensemble_option_reaches_the_actors(cluster, tiny_model, tmp_path):
    from napari_jpeg_restore.core import restore

    (tmp_path / "in").mkdir()
    jpegs = {f"e{i}.jpg": encode_jpeg(synthetic(i, (64, 80)), 10) for i in range(2)}
    for key, blob in jpegs.items():
        (tmp_path / "in" / key).write_bytes(blob)
    summary = run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), tiny_model, ensemble=True, workers=1),
                  log=lambda m: None)
    assert summary.counts == {"restored": 2}
    for key in jpegs:
        loaded = read_image(str(tmp_path / "in" / key))
        written = read_image(str(tmp_path / "out" / key.replace(".jpg", ".png"))).array
        np.testing.assert_array_equal(written, restore(loaded.array, tiny_model, ensemble=True,
                                                       jpeg=loaded.jpeg_grid, precision="auto"))


def test_assume_quality_reaches_the_actors_and_the_manifest(cluster, tiny_model, tmp_path):
    """--assume-quality: a Q95 file the default limit would skip is restored as a Q20 picture,
    exactly as restore(..., assume_quality=20) does, and its row says so."""
    from napari_jpeg_restore.core import restore

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "high.jpg").write_bytes(encode_jpeg(synthetic(3, (64, 80)), 95))
    summary = run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), tiny_model, assume_quality=20,
                       workers=1), log=lambda m: None)
    assert summary.counts == {"restored": 1}
    loaded = read_image(str(tmp_path / "in" / "high.jpg"))
    written = read_image(str(tmp_path / "out" / "high.png")).array
    np.testing.assert_array_equal(written, restore(loaded.array, tiny_model, jpeg=loaded.jpeg_grid,
                                                   assume_quality=20, precision="auto"))
    row = final_state(read_manifest(str(tmp_path / "out")))["high.jpg"]
    assert (row["quality"], row["restored_as"], row["restored_as_source"]) == (95, 20, "assumed")
    # The job's command line takes it, checked as the CLI checks it.
    assert parse_args(["--src", "a", "--dst", "b", "--assume-quality", "20"]).restore.assume_quality == 20
    with pytest.raises(SystemExit):
        parse_args(["--src", "a", "--dst", "b", "--assume-quality", "101"])


def _slow_archive(src: Path, keys: list[str]) -> None:
    """JPEGs that take a while each: 384 px, restored with the x8 self-ensemble (--ensemble)."""
    for i, key in enumerate(keys):
        (src / key).parent.mkdir(parents=True, exist_ok=True)
        (src / key).write_bytes(encode_jpeg(synthetic(i, (384, 384)), 10 + 5 * (i % 5)))


def _job_with_a_first_output(src: Path, dst: Path, model: str, cluster: str) -> subprocess.Popen:
    """The archive job as a driver process (its own process group), one actor, one file per
    batch, returned once its first output exists (or it ended, or 600 s passed: a loaded machine starts
    Ray, the job and its actor slowly; quiet, the first output comes after about 10 s)."""
    cmd = [sys.executable, "-m", "napari_jpeg_restore.distributed.restore_archive", "--src",
           str(src), "--dst", str(dst), "--model", model, "--workers", "1", "--ensemble",
           "--batch-size", "1", "--address", cluster]
    log = open(dst.parent / "job.log", "wb")  # a file: a pipe nobody reads could stall the job
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    log.close()
    deadline = time.monotonic() + 600
    while not list(dst.rglob("*.png")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    return proc


def test_killed_job_rerun_restores_each_input_exactly_once(cluster, tiny_model, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    keys = [f"{d}img{i:02d}.jpg" for i, d in enumerate(["", "x/"] * 7)]
    _slow_archive(src, keys)
    proc = _job_with_a_first_output(src, dst, tiny_model, cluster)
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the driver dies mid-way; Ray reaps its actors
    finally:
        proc.wait()
        out = (dst.parent / "job.log").read_text(errors="replace")
    first = {p.relative_to(dst) for p in dst.rglob("*.png")}
    assert 0 < len(first) < len(keys), out

    summary = run(_cfg(str(src), str(dst), tiny_model), log=lambda m: None)
    outputs = sorted(str(p.relative_to(dst)) for p in dst.rglob("*") if p.is_file()
                     and "_manifest" not in p.parts)
    assert outputs == sorted(str(Path(k).with_suffix(".png")) for k in keys)  # one each, no temp
    assert summary.counts.get("exists", 0) >= len(first)
    assert summary.counts["restored"] + summary.counts["exists"] == len(keys)
    state = final_state(read_manifest(str(dst)))
    assert set(state) == set(keys)
    assert all(r["status"] in ("restored", "exists") for r in state.values())
    restored_rows = [r for r in read_manifest(str(dst)) if r["status"] == "restored"]
    # Restored at most once per run; an output from the killed run is never restored again.
    assert len({(r["key"], r["run"]) for r in restored_rows}) == len(restored_rows)
    assert not {r["key"] for r in restored_rows if r["run"] == summary.run_id} & \
        {str(p.with_suffix(".jpg")) for p in first}


def test_stopped_job_is_marked_interrupted_and_every_output_has_a_row(cluster, tiny_model, tmp_path):
    """SIGTERM is what `ray job stop` sends the driver."""
    src, dst = tmp_path / "in", tmp_path / "out"
    keys = [f"img{i:02d}.jpg" for i in range(12)]
    _slow_archive(src, keys)
    proc = _job_with_a_first_output(src, dst, tiny_model, cluster)
    try:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=300)
        out = (dst.parent / "job.log").read_text(errors="replace")
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "interrupted" in out, out
    written = {p.name for p in dst.glob("*.png")}
    assert 0 < len(written) < len(keys), out
    info = json.loads(next((dst / "_manifest").glob("*.run.json")).read_text())
    assert info["status"] == "interrupted"
    rows = read_manifest(str(dst))
    assert {Path(r["key"]).with_suffix(".png").name for r in rows if r["status"] == "restored"} \
        == written  # every output written has its row, and no row claims a missing output
    summary = run(_cfg(str(src), str(dst), tiny_model), log=lambda m: None)
    assert summary.counts == {"exists": len(written), "restored": len(keys) - len(written)}


def _actor_processes() -> set[int]:
    """This test's Ray Data model actors: descendants of this process (its own cluster)."""
    found = set()
    for p in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):  # gone, or a zombie, meanwhile
            if "MapWorker(MapBatches(RestoreActor))" in " ".join(p.cmdline()):
                found.add(p.pid)
    return found


def test_crashed_actor_is_replaced_and_its_batch_retried(cluster, tiny_model, tmp_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    keys = [f"img{i:02d}.jpg" for i in range(6)]
    _slow_archive(src, keys)
    lines: list[str] = []
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run, _cfg(str(src), str(dst), tiny_model, workers=1, batch_size=3,
                                    ensemble=True), log=lines.append)
        deadline = time.monotonic() + 600  # a loaded machine starts Ray and the actor slowly
        while time.monotonic() < deadline and not job.done():  # crash mid-batch: after an output
            if list(dst.glob("*.png")) and _actor_processes():
                break
            time.sleep(0.05)
        (first,) = _actor_processes()
        os.kill(first, signal.SIGKILL)
        summary = job.result(timeout=600)
    assert summary.counts.get("failed", 0) == 0, lines
    assert summary.counts["restored"] + summary.counts.get("exists", 0) == len(keys)
    assert sorted(p.name for p in dst.iterdir() if p.is_file()) == \
        sorted(k.replace(".jpg", ".png") for k in keys)  # one output each, no temp files
    state = final_state(read_manifest(str(dst)))
    assert {r["status"] for r in state.values()} <= {"restored", "exists"} and len(state) == 6
    assert len({r["actor"] for r in state.values() if r["status"] == "restored"}) >= 1


def test_an_actor_that_keeps_dying_fails_its_files_and_the_job_goes_on(cluster, tiny_model, tmp_path):
    """A batch that kills its actor in every retry (a file that runs it out of memory, say)
    gets a failed row per file; the job ends instead of retrying forever."""
    src, dst = tmp_path / "in", tmp_path / "out"
    _slow_archive(src, [f"img{i:02d}.jpg" for i in range(2)])
    lines: list[str] = []
    killed: set[int] = set()
    attempts: set[str] = set()
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(run, _cfg(str(src), str(dst), tiny_model, workers=1, batch_size=2,
                                    ensemble=True), log=lines.append)
        while not job.done():  # every attempt at the batch: kill its actor once it is writing
            started = {p.name for p in dst.glob(".*.tmp-*")} - attempts if dst.is_dir() else set()
            for pid in _actor_processes() - killed if started else ():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                killed.add(pid)
            attempts |= started
            time.sleep(0.02)
        summary = job.result()
    assert summary.counts == {"failed": 2}, lines
    # the first try and Ray's two retries, each on a restarted actor (an actor Ray had started
    # meanwhile may have been killed too, before it wrote anything)
    assert len(attempts) == 3 and len(killed) >= 3, (attempts, killed)
    rows = final_state(read_manifest(str(dst)))
    assert all("killed the worker process" in r["error"] for r in rows.values()) and len(rows) == 2
    assert not list(dst.glob("*.png"))


def test_more_workers_than_the_cluster_holds_finish_with_a_clear_line(cluster, tiny_model, tmp_path):
    """--workers 3 on a 2-CPU cluster used to restore most files and then wait forever."""
    (tmp_path / "in").mkdir()
    for i in range(6):
        (tmp_path / "in" / f"f{i}.jpg").write_bytes(encode_jpeg(synthetic(i, (64, 64)), 10))
    lines: list[str] = []
    summary = run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), tiny_model, workers=3,
                       batch_size=1), log=lines.append)
    assert summary.counts == {"restored": 6} and 1 <= summary.workers <= 2  # started ones
    assert any("asked for 3 actors" in ln and "room for 2: starting 2" in ln for ln in lines), lines


def test_a_pool_that_cannot_be_scheduled_fails_fast_with_a_clear_line(cluster, tiny_model, tmp_path):
    """Another job holds the cluster's CPUs: after --startup-timeout the job stops with a line
    instead of waiting forever."""
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(encode_jpeg(synthetic(1, (64, 64)), 10))

    @ray.remote(num_cpus=2)
    class Hog:
        def ready(self) -> bool:
            return True

    hog = Hog.remote()
    try:
        ray.get(hog.ready.remote(), timeout=300)
        with pytest.raises(RuntimeError, match="not scheduled within 5 s"):
            run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), tiny_model, startup_timeout=5),
                log=lambda m: None)
    finally:
        ray.kill(hog)
    info = json.loads(next((tmp_path / "out" / "_manifest").glob("*.run.json")).read_text())
    assert info["status"] == "failed" and not (tmp_path / "out" / "a.png").exists()


def test_a_bad_model_fails_before_any_actor_starts(cluster, tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(encode_jpeg(synthetic(1, (64, 64)), 10))
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a weights file")
    with pytest.raises(LookupError, match="broken.pt is not a usable weights file"):
        run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), str(broken)), log=lambda m: None)
    assert not (tmp_path / "out" / "a.png").exists()


GPU_JOB = """
import json, sys, tempfile
import ray
from napari_jpeg_restore.distributed.archive_manifest import read_manifest
from napari_jpeg_restore.distributed.restore_archive import main

src, dst, model, device = sys.argv[1:5]
ray.init(num_cpus=8, num_gpus=2, include_dashboard=False, log_to_driver=True,
         _temp_dir=tempfile.mkdtemp(prefix="jr-gpu-"))  # Ray's fake GPUs: resources only
code = main(["--src", src, "--dst", dst, "--model", model, "--gpus-per-worker", "0.5",
             "--device", device, "--batch-size", "1"])
rows = [r for r in read_manifest(dst) if r["status"] == "restored"]
print(json.dumps({"code": code, "gpus": [r.get("gpus") for r in rows],
                  "actors": [r.get("actor") for r in rows]}))
ray.shutdown()
"""


def _gpu_job(tiny_model: str, tmp_path: Path, device: str, files: int) -> tuple[dict, str]:
    """The archive job on a fresh 8-CPU cluster with two of Ray's fake GPUs (resources only)."""
    (tmp_path / "in").mkdir()
    for i in range(files):
        (tmp_path / "in" / f"f{i:02d}.jpg").write_bytes(encode_jpeg(synthetic(i, (64, 64)), 10))
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_DEDUP_LOGS": "0"}  # every actor's line
    done = subprocess.run([sys.executable, "-c", GPU_JOB, str(tmp_path / "in"),
                           str(tmp_path / "out"), tiny_model, device], env=env,
                          capture_output=True, text=True, timeout=900, check=False)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    (result,) = [ln for ln in done.stdout.splitlines() if ln.startswith('{"code"')]
    return json.loads(result), out


def test_actors_that_cannot_start_fail_the_job_with_their_cause(tiny_model, tmp_path):
    """GPU actors on a machine whose torch has no CUDA: the job stops with the actor's own
    error and status 2 (it used to mark every file failed and exit 0)."""
    res, out = _gpu_job(tiny_model, tmp_path, "cuda", 4)
    assert res["code"] == 2 and res["gpus"] == [], out[-3000:]
    assert "could not start: RuntimeError: CUDA was requested but no CUDA device is available" \
        in out, out[-3000:]
    info = json.loads(next((tmp_path / "out" / "_manifest").glob("*.run.json")).read_text())
    assert info["status"] == "failed" and "CUDA" in info["error"]


def test_actors_are_pinned_to_gpus_two_per_gpu_at_half_a_gpu(tiny_model, tmp_path):
    """On this CPU machine with Ray's fake GPU resources: --gpus-per-worker 0.5 on 2 GPUs starts
    4 model actors (not one per CPU: 8 here), two on each GPU id Ray assigns; reading and
    writing run as CPU tasks around them."""
    res, out = _gpu_job(tiny_model, tmp_path, "cpu", 16)
    assert res["code"] == 0 and "4 cpu actor(s)" in out, out[-3000:]
    started = re.findall(r"restoration actor (\w+) started on cpu, GPU (\d)", out)
    assert len(started) == 4 and sorted(g for _, g in started) == ["0", "0", "1", "1"], out[-3000:]
    gpu_of = dict(started)
    assert len(res["gpus"]) == 16 and all(g and len(g) == 1 for g in res["gpus"])
    assert all(gpu_of[a] == g[0] for a, g in zip(res["actors"], res["gpus"]))
    assert "TaskPoolMapOperator[MapBatches(read_stage)]" in out  # a CPU stage apart from the actors


def test_actor_count_never_exceeds_what_the_cluster_can_hold():
    lines: list[str] = []
    assert actors_that_fit({"CPU": 16, "GPU": 2}, 3, 1, 1.0, lines.append) == 2
    assert "room for 2" in lines[-1]
    assert actors_that_fit({"CPU": 16, "GPU": 2}, None, 1, 0.5) == 4  # two per GPU
    assert actors_that_fit({"CPU": 2}, None, 1, 0.0) == 2
    assert actors_that_fit({"CPU": 8}, 3, 2, 0.0) == 3
    with pytest.raises(RuntimeError, match="none can start"):
        actors_that_fit({"CPU": 2}, None, 4, 0.0)


def test_actors_run_on_cuda_only_where_they_hold_a_gpu():
    lines: list[str] = []
    assert actor_device("auto", 2.0, 0.5, lines.append) == ("cuda", 0.5)
    assert actor_device("auto", 0.0, 1.0, lines.append) == ("cpu", 0.0)
    assert lines == ["no GPUs in the cluster: restoring on CPUs"]
    assert actor_device("cpu", 2.0, 0.0, lines.append) == ("cpu", 0.0)
    assert lines[-1] == "--gpus-per-worker 0: restoring on CPUs"
    with pytest.raises(ValueError, match="the cluster has no GPUs"):
        actor_device("cuda", 0.0, 1.0, lines.append)
    with pytest.raises(ValueError, match="--gpus-per-worker above 0"):
        actor_device("cuda", 2.0, 0.0, lines.append)
    with pytest.raises(ValueError, match="--device must be one of auto, cpu, cuda"):
        actor_device("tpu", 2.0, 1.0, lines.append)


def test_redaction_of_secrets():
    from napari_jpeg_restore.core.imageio.filesystem import secret_values
    from napari_jpeg_restore.distributed._common import redact, scrub

    so = {"endpoint_url": "http://127.0.0.1:1", "key": "AKIAEXAMPLE", "secret": "s3cr3t-value",
          "client_kwargs": {"aws_session_token": "tok-123456", "region_name": "eu"}}
    assert redact(so) == {"endpoint_url": "http://127.0.0.1:1", "key": "***", "secret": "***",
                          "client_kwargs": {"aws_session_token": "***", "region_name": "eu"}}
    secrets = secret_values(so, {"AWS_SECRET_ACCESS_KEY": "env-secret-1"})
    assert scrub("denied for s3cr3t-value/tok-123456/env-secret-1", secrets) == "denied for ***/***/***"


def test_inline_secrets_are_warned_about_and_a_file_keeps_them_off_the_command_line(tmp_path):
    from napari_jpeg_restore.core.imageio.filesystem import parse_storage_options

    warned: list[str] = []
    inline = '{"endpoint_url": "http://127.0.0.1:1", "secret": "s3cr3t-value"}'
    assert parse_storage_options(inline, warned.append)["secret"] == "s3cr3t-value"
    assert len(warned) == 1 and "JSON file" in warned[0] and "s3cr3t-value" not in warned[0]
    (tmp_path / "so.json").write_text(inline)
    assert parse_storage_options(str(tmp_path / "so.json"), warned.append)["secret"] == "s3cr3t-value"
    assert parse_storage_options('{"anon": true}', warned.append) == {"anon": True}
    assert len(warned) == 1


def test_keys_with_dotdot_never_write_outside_the_destination(cluster, tiny_model, s3, tmp_path):
    """An object ``in/../../escape1.jpg`` must not land two folders above --dst (local or S3),
    nor outside -o when the CLI reads the prefix."""
    from napari_jpeg_restore.core.cli import main

    fs = fsspec.filesystem("s3", **s3)
    fs.mkdir("arch")
    fs.pipe_file("arch/in/ok.jpg", encode_jpeg(synthetic(7), 10))
    for key in ("in/../../escape1.jpg", "in/../escape2.jpg", "in/a/../../../../escape3.jpg"):
        fs.pipe_file(f"arch/{key}", encode_jpeg(synthetic(8), 10))
    assert any(".." in k for k in fs.find("arch"))  # moto keeps the keys as written
    dst = tmp_path / "dst" / "out"
    summary = run(_cfg("s3://arch/in", str(dst), tiny_model, s3), log=lambda m: None)
    assert summary.counts == {"restored": 1, "failed": 3}
    written = {str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()}
    assert {w for w in written if "_manifest" not in w} == {"dst/out/ok.png"}
    rows = final_state(read_manifest(str(dst)))
    assert all(".." in r["error"] for k, r in rows.items() if k != "ok.jpg")

    before = set(fs.find("arch"))
    s3_summary = run(_cfg("s3://arch/in", "s3://arch/out/sub", tiny_model, s3), log=lambda m: None)
    assert s3_summary.counts == {"restored": 1, "failed": 3}
    new = {k for k in set(fs.find("arch")) - before if "/_manifest/" not in k}
    assert new == {"arch/out/sub/ok.png"}

    cli_out = tmp_path / "cli"
    main(["restore", "s3://arch/in/", "-o", str(cli_out), "--model", tiny_model,
          "--storage-options", json.dumps(s3)])
    assert all(p.resolve().is_relative_to(cli_out.resolve()) for p in tmp_path.rglob("*")
               if p.is_file() and "dst" not in p.parts)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=st.dictionaries(keys=st.tuples(st.sampled_from(["", "sub/", "out/"]),
                                            st.sampled_from(["p", "P", "q"]),
                                            st.sampled_from([".jpg", ".JPG", ".jpeg", ".png"])),
                             values=st.integers(0, 2), min_size=1, max_size=6),
       dst_rel=st.sampled_from(["", "out", "sub"]))
def test_archive_never_changes_an_input(cluster, tiny_model, files, dst_rel):
    """dst = the src prefix itself (refused) or a folder inside it: inputs stay byte for byte."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        for (sub, stem, suffix), seed in files.items():
            (src / sub).mkdir(parents=True, exist_ok=True)
            (src / f"{sub}{stem}{suffix}").write_bytes(encode_jpeg(synthetic(seed, (32, 40)), 10))
        before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
        dst = src / dst_rel
        try:
            run(_cfg(str(src), str(dst), tiny_model, workers=1), log=lambda m: None)
        except ValueError as err:
            assert dst_rel == "" and "among the inputs" in str(err)
        assert {p: p.read_bytes() for p in before} == before


def test_a_user_model_is_chosen_by_name_and_shipped_to_the_actors(cluster, tiny_model, tmp_path,
                                                                  monkeypatch):
    """A model in the driver's user models folder (as `jpeg-restore finetune` registers one) is
    found by name; the actors, which do not see that folder, get its weights."""
    from napari_jpeg_restore.core import registry, restore

    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copyfile(tiny_model, folder / "mine.pt")
    monkeypatch.setenv(registry.USER_MODELS_ENV, str(folder))
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(encode_jpeg(synthetic(3, (64, 80)), 10))
    summary = run(_cfg(str(tmp_path / "in"), str(tmp_path / "out"), "mine", workers=1),
                  log=lambda m: None)
    assert summary.counts == {"restored": 1}
    loaded = read_image(str(tmp_path / "in" / "a.jpg"))
    np.testing.assert_array_equal(read_image(str(tmp_path / "out" / "a.png")).array,
                                  restore(loaded.array, tiny_model, jpeg=loaded.jpeg_grid,
                                          precision="auto"))


def test_weights_shipped_to_an_actor_leave_no_file_behind(cluster, tiny_model, tmp_path, monkeypatch):
    """An actor writes shipped weights to a temporary file only while it opens its net: the
    folder is gone afterwards (a long-lived cluster's disks do not fill), and it restores."""
    from napari_jpeg_restore.core import restore
    from napari_jpeg_restore.distributed.archive_stages import RestoreActor, Settings

    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    actor = RestoreActor(Settings(str(tmp_path / "out"), "run"), None,
                         (Path(tiny_model).read_bytes(), None), whole_files=False)
    assert list((tmp_path / "tmp").iterdir()) == []
    (tmp_path / "a.jpg").write_bytes(encode_jpeg(synthetic(4, (64, 80)), 10))
    loaded = read_image(str(tmp_path / "a.jpg"))
    np.testing.assert_array_equal(
        restore(loaded.array, actor.model, jpeg=loaded.jpeg_grid),
        restore(loaded.array, tiny_model, jpeg=loaded.jpeg_grid, precision="fp32"))
