"""End to end through the real `ray job submit`: a head node started with `ray start`, the
repository uploaded as the job's working dir, S3 (moto) reached through AWS_* environment
variables only (no --storage-options): the job's actors must receive them from the driver."""
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("ray", reason="needs the ray extra: pip install 'napari-jpeg-restore[ray]'")
pytest.importorskip("ray.dashboard", reason="needs ray[default] (dashboard, job server)")
pytest.importorskip("s3fs", reason="needs s3fs (the s3 extra)")
pytest.importorskip("moto.server", reason="needs moto[server] (dev extra)")

import fsspec
from helpers import (
    free_port,
    moto_s3,
    synthetic,
    train_tiny_restorer,
)
from napari_jpeg_restore.core.jpeg.codec import encode_jpeg

# The timeout only guards against hangs: with two busy processes on two cores the DDP
# restart test took over 400 s (about 90 s on a quiet machine).
pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(1800)]
REPO = Path(__file__).resolve().parents[1]
EXCLUDES = [".git", ".venv", "runs", "build", "*.egg-info", ".pytest_cache", "docs", "bench"]


@pytest.fixture(scope="module")
def head_node(tmp_path_factory):
    ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or shutil.which("ray")
    if ray_bin is None:
        pytest.skip("the `ray` command is not installed")
    if "RAY_ADDRESS" in os.environ:
        pytest.skip("RAY_ADDRESS is set; not starting a second head node")
    with moto_s3() as endpoint:
        env = {**os.environ, "AWS_ENDPOINT_URL": endpoint,
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        gcs, dash = free_port(), free_port()
        # Every port a head node listens on is taken free: the defaults (e.g. the job agent's
        # 52365) collide with any other Ray cluster on the host, and the job server then
        # answers "No available agent to submit job" for as long as the other one runs.
        ports = [f"--{name}={free_port()}" for name in (
            "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "metrics-export-port",
            "runtime-env-agent-port", "ray-client-server-port", "node-manager-port",
            "object-manager-port")]
        temp = tmp_path_factory.mktemp("ray")
        # `ray start --block` in its own process group: the head node's processes are its
        # children, so stopping exactly this cluster is one signal to the group (`ray stop`
        # would stop every Ray cluster on the host, other people's included).
        with open(temp / "head.log", "w") as out:
            head = subprocess.Popen(
                [ray_bin, "start", "--head", "--block", f"--port={gcs}", "--dashboard-host=127.0.0.1",
                 f"--dashboard-port={dash}", "--num-cpus=2", "--include-dashboard=true",
                 "--disable-usage-stats", f"--temp-dir={temp}", *ports],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if head.poll() is not None:
                pytest.fail(f"ray start failed:\n{(temp / 'head.log').read_text()}")
            yield ray_bin, f"http://127.0.0.1:{dash}", endpoint, env
        finally:
            _stop_group(head)


def _stop_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """SIGTERM to the process group led by ``proc`` (ours alone), SIGKILL if any member is
    still there after ``grace`` seconds."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        proc.poll()  # reap the leader, or the group never empties
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(30)


def _until_ready(run, ready, seconds: float = 240):
    """``run()`` again (pausing longer each time) until ``ready(result)`` or ``seconds`` pass: a
    busy machine brings the job agent up late, so readiness is waited for, not assumed."""
    deadline, pause = time.monotonic() + seconds, 1.0
    while True:
        result = run()
        if ready(result) or time.monotonic() > deadline:
            return result
        time.sleep(pause)
        pause = min(2 * pause, 15.0)


def test_ray_job_submit_restores_s3_archive(head_node, tmp_path):
    ray_bin, dashboard, endpoint, env = head_node
    model = train_tiny_restorer(tmp_path / "tiny.pt", steps=40)
    fs = fsspec.filesystem("s3", endpoint_url=endpoint)
    fs.mkdir("jobs")
    for i in range(5):
        fs.pipe_file(f"jobs/in/{i}.jpg", encode_jpeg(synthetic(i, (64, 96)), 20))
    fs.pipe_file("jobs/in/broken.jpg", b"\xff\xd8\xff\xdb garbage")
    # Ray 2.5x clusters use token authentication; the CLI finds the token in ~/.ray/auth_token.
    submit_env = {**env, "RAY_ADDRESS": dashboard, "RAY_AUTH_MODE": env.get("RAY_AUTH_MODE", "token")}
    listing = _until_ready(
        lambda: subprocess.run([ray_bin, "job", "list", "--address", dashboard], env=submit_env,
                               capture_output=True, text=True, timeout=120),
        lambda r: r.returncode == 0)
    assert listing.returncode == 0, listing.stdout + listing.stderr
    submit = _until_ready(lambda: subprocess.run(
        [ray_bin, "job", "submit", "--address", dashboard, "--working-dir", str(REPO),
         "--runtime-env-json", json.dumps({"excludes": EXCLUDES}), "--",
         sys.executable, "-m", "napari_jpeg_restore.distributed.restore_archive",
         "--src", "s3://jobs/in", "--dst", "s3://jobs/out", "--model", str(model),
         "--workers", "2", "--batch-size", "2"],
        env=submit_env, capture_output=True, text=True, timeout=300),
        lambda r: "No available agent" not in r.stdout + r.stderr)
    log = submit.stdout + submit.stderr
    assert submit.returncode == 0, log
    job_id = re.search(r"Job '(raysubmit_\w+)' submitted", log).group(1)
    status = subprocess.run([ray_bin, "job", "status", "--address", dashboard, job_id],
                            env=submit_env, capture_output=True, text=True, timeout=60)
    assert f"Job '{job_id}' succeeded" in status.stdout + status.stderr  # JobStatus.SUCCEEDED
    assert "no GPUs in the cluster" in log and "restored 5" in log and "failed 1" in log
    # The credentials reach the actors, and appear nowhere Ray or the job records anything.
    recorded = [log] + [subprocess.run([ray_bin, "job", *cmd, "--address", dashboard], env=submit_env,
                                       capture_output=True, text=True, timeout=60,
                                       check=False).stdout
                        for cmd in (["logs", job_id], ["list"])]
    recorded += [fs.cat_file(p).decode() for p in fs.find("jobs/out/_manifest")]
    assert "restored 5" in recorded[1] and job_id in recorded[2] and len(recorded) >= 5
    assert not [text for text in recorded if "testing-secret-value" in text]
    assert sorted(p.rsplit("/", 1)[1] for p in fs.find("jobs/out") if p.endswith(".png")) == \
        [f"{i}.png" for i in range(5)]
    rows = [json.loads(line) for p in fs.find("jobs/out/_manifest") if p.endswith(".jsonl")
            for line in fs.cat_file(p).decode().splitlines()]
    assert sorted(r["status"] for r in rows) == ["failed"] + ["restored"] * 5
