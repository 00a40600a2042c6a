"""The CPU quality campaign (issue 34): one training run of the multi-scale gray restorer, planned
up front (``TOTAL_STEPS``, one cosine over all of them) and run in slices, one per session.

    python bench/campaign.py slice --minutes 130   # resume, train about that long, stop cleanly
    python bench/campaign.py record                # commit-sized checkpoint, validation, curve

``slice`` resumes runs/campaign/last.pt, or, on a machine without it, the committed portable
checkpoint bench/campaign/checkpoint.pt (the model in fp16, Adam's moments started afresh). It
stops at the step its minutes reach at the speed of the last slice (``--until``), so every slice
ends with a checkpoint and an exported model. ``record`` writes that portable checkpoint, scores
the model on val-gray-bsd68 at Q10 and Q40 (68 images, the network alone as `jpeg-restore eval`
runs it) and appends the point to bench/results/campaign.json, .md and .png
(gain against training gigapixels and CPU-hours).
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
RUN = ROOT / "runs" / "campaign"
HERE = Path(__file__).resolve().parent
PORTABLE = HERE / "campaign" / "checkpoint.pt"
JR = str(Path(sys.executable).with_name("jpeg-restore"))
sys.path.insert(0, str(HERE))
from sections import RESULTS
from shapes import gains, score  # the same eval and gain as the shape screen

CURVE = RESULTS / "campaign.json"

PRESET = "unet"
TOTAL_STEPS = 60000  # about 8 sessions of 2.5 hours at 0.9-1.3 s per step on 2 cores
# lr 5e-4 held (the start of a 60000-step cosine) diverged between steps 400 and 500 (loss 0.22 ->
# 3e9; the 980-step screen survived it because its cosine fell fast); lite's later runs used 2e-4.
# Gradients clipped at norm 1 against a spike (the log's grad_norm is the norm before clipping)
BATCH, PATCH = 16, 128
RECIPE = ["--preset", PRESET, "--channels", "1", "--steps", str(TOTAL_STEPS), "--batch", str(BATCH),
          "--patch", str(PATCH), "--encoder", "crl-lite-gray", "--lr", "2e-4", "--grad-clip", "1",
          "--qualities", "10", "90", "1", "--weighting", "inverse", "--double", "0.2",
          "--val-data", str(DATA / "val-gray-bsd68"), "--val-every", "2000", "--log-every", "100",
          "--ckpt-every", "200"]


def history() -> list[dict]:
    log = RUN / "log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []


def run_slice(minutes: float, threads: int) -> None:
    from napari_jpeg_restore.core.training.checkpoint import load_checkpoint

    RUN.mkdir(parents=True, exist_ok=True)
    if not (RUN / "last.pt").is_file() and PORTABLE.is_file():
        shutil.copyfile(PORTABLE, RUN / "last.pt")
        print(f"resuming from the committed {PORTABLE.relative_to(ROOT)} (fresh Adam moments)")
    step, seconds_per_step = 0, 1.0
    if (RUN / "last.pt").is_file():
        step = load_checkpoint(RUN / "last.pt")["step"]
        # the speed alone: the 10 fastest of the last 50 logs (a busy foreground slows some)
        recent = sorted((r for r in history()[-50:] if "patches_per_s" in r),
                        key=lambda r: r["patches_per_s"])[-10:]
        if recent:
            seconds_per_step = sum(BATCH / r["patches_per_s"] for r in recent) / len(recent)
    until = min(TOTAL_STEPS, step + int(minutes * 60 / seconds_per_step))
    print(f"slice: step {step} -> {until} ({seconds_per_step:.2f} s per step)", flush=True)
    with (RUN / "stdout.log").open("a") as log:
        subprocess.run([JR, "train", "restorer", "--threads", str(threads),
                        "--data", str(DATA / "train-*" / "*.jpg"), *RECIPE,
                        "--resume", "--until", str(until), "--out", str(RUN)],
                       check=True, stdout=log, stderr=subprocess.STDOUT)


def record() -> None:
    from napari_jpeg_restore.core.training.checkpoint import (
        load_checkpoint,
        portable_checkpoint,
        save_checkpoint,
    )

    state = load_checkpoint(RUN / "last.pt")
    PORTABLE.parent.mkdir(exist_ok=True)
    save_checkpoint(PORTABLE, portable_checkpoint(state))
    scores = RUN / f"eval-{state['step']}.json"
    with (RUN / "stdout.log").open("a") as log:
        score(PORTABLE, scores, log)
    gain = gains(scores)
    points = json.loads(CURVE.read_text()) if CURVE.is_file() else []
    points = [p for p in points if p["step"] != state["step"]] + [{
        "step": state["step"], "gigapixels": state["step"] * BATCH * PATCH**2 / 1e9,
        "cpu_hours": state["wall_seconds"] * state["threads"] / 3600,
        "q10": gain["10"], "q40": gain["40"], "machine": state["meta"].get("machine", "")}]
    CURVE.write_text(json.dumps(points, indent=1))
    lines = [f"# CPU quality campaign: `{PRESET}` gray, {TOTAL_STEPS} steps planned", "",
             f"Batch {BATCH} x {PATCH} px, every image of `train-bsds-color` and `train-extra`, Q10-90 step 1, "
             "inverse weighting, 20% double compression, one cosine from lr 2e-4 over all steps, "
             "gradients clipped at norm 1; frozen "
             "encoder of `crl-lite-gray`. Gain over JPEG on val-gray-bsd68 (68 images), the network "
             "alone. Written by `python bench/campaign.py record` after every slice; shipped "
             "`crl-lite-gray`: +1.20 / +1.33 dB.", "",
             "| step | GPx of patches | CPU-hours | Q10 gain dB | Q40 gain dB |", "|---|---|---|---|---|",
             *[f"| {p['step']} | {p['gigapixels']:.2f} | {p['cpu_hours']:.2f} | {p['q10']:+.3f} | {p['q40']:+.3f} |"
               for p in points], "", "![gain against training](campaign.png)", ""]
    (RESULTS / "campaign.md").write_text("\n".join(lines))
    plot(points)
    print("\n".join(lines))


def plot(points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key, label in (("q10", "Q10"), ("q40", "Q40")):
        ax.plot([p["gigapixels"] for p in points], [p[key] for p in points], "o-", label=label)
    ax.axhline(1.20, color="C0", ls=":", lw=1, label="crl-lite-gray Q10")
    ax.axhline(1.55, color="C0", ls="--", lw=1, label="target Q10")
    ax.set_xlabel("training gigapixels (patches)")
    ax.set_ylabel("gain over JPEG, dB")
    ax.set_title(f"{PRESET}, val-gray-bsd68")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "campaign.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("slice", help="resume the run and train for about --minutes")
    s.add_argument("--minutes", type=float, required=True)
    s.add_argument("--threads", type=int, default=2)
    sub.add_parser("record", help="portable checkpoint, validation and curve after a slice")
    a = p.parse_args()
    run_slice(a.minutes, a.threads) if a.command == "slice" else record()


if __name__ == "__main__":
    main()
