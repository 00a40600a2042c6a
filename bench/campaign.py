"""The CPU quality campaign (issue 34): one training run of the multi-scale gray restorer, planned
up front (``TOTAL_STEPS``, one cosine over all of them) and run in slices, one per session.

    python bench/campaign.py slice --minutes 130   # resume, train that long, stop cleanly, record
    python bench/campaign.py record                # commit-sized checkpoint, validation, curve
    python bench/campaign.py ship gray|color       # crl-gray / crl-color into the package

Stages (``--stage``, in ``STAGES``): ``unet-narrow``, the blind run (runs/campaign-unet-narrow,
stopped at step 22410), then ``unet-narrow+tables``, its export going on conditioned on the
JPEG's luma table (runs/campaign-cond), then that network on other quality draws (1/q, then
1/sqrt(q): runs/campaign-cond-inv, runs/campaign-cond-sqrt, the default). ``slice`` resumes the
stage's last.pt, or, on a machine without it, its committed portable checkpoint
(bench/campaign/checkpoint*.pt: int8 kernels, Adam's moments started afresh). After
``--minutes`` it gives the run a Ctrl-C, which ends it after the current step with a checkpoint
and an exported model, on any machine at any speed, then records. ``record`` writes the portable
checkpoint, scores it on val-gray-bsd68 at Q10, Q40, Q80 and Q90 (68 images, the network alone as
`jpeg-restore eval` runs it) and appends the point to bench/results/campaign.json, .md and .png
(gain against training gigapixels and CPU-hours).

``ship gray`` makes ``crl-gray`` of the current stage's exported model (its run's model.pt,
written when a slice ends): fp16 weights and their calibration (``jpeg-restore calibrate`` on training crops) are
staged in runs/ship/, scored as the command line runs them (calibration and pass-through
included) on val-gray-bsd68 at Q10-Q100 and double compressed, and move into core/weights only
if they gain at least as much as ``crl-lite-gray`` at every quality (``--force``: anyway); then
``bench/model_card.py`` writes the card. ``ship color`` does the same for ``crl-color``: the
chroma branch that ``bench/chroma_branch.py`` trained (runs/chroma/model.pt, with ``--luma`` the
gray restorer it goes under) under crl-gray where that is shipped, else under crl-lite-gray,
against ``crl-lite-color`` on val-cbsd68.
"""
from __future__ import annotations

import argparse
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "datasets"
RUN = ROOT / "runs" / "campaign-unet-narrow"  # unet's run stays in runs/campaign
HERE = Path(__file__).resolve().parent
PORTABLE = HERE / "campaign" / "checkpoint.pt"
JR = str(Path(sys.executable).with_name("jpeg-restore"))
sys.path.insert(0, str(HERE))
import chroma_branch
from sections import RESULTS
from shapes import gains, score  # the same eval and gain as the shape screen

CURVE = RESULTS / "campaign.json"

# `unet` (scratch, lite's frozen encoder; runs/campaign) ran 9134 steps (2.4 GPx) of a 32000-step
# plan and was stopped behind lite at every quality, most at the top (step 9134: -0.03 / -0.12 /
# -0.31 dB at Q10 / Q40 / Q90; step 8646: -0.15 at Q10, -0.56 at Q90; the 1/q weighting rarely
# draws the top qualities): the planned switch to `unet-narrow` grown from the shipped lite
# restorer, which starts with lite's gains at every quality.
PRESET = "unet-narrow"
SOURCE = "crl-lite-gray"  # grown from it (models.growth); its 4.9 CPU-hours come first
# first planned as 48000 steps (about three sessions at 0.45 (AMD) to 0.3 s (Intel) a step); the
# run's own validation was flat from step 8000 to 18493 at lite's level, with a hole at Q70-80, so
# from step 18493 the plan is 27000 (the cosine cools down within one slice: lr 0.21x peak there)
# and qualities are drawn uniformly (the 1/q draw gave Q80 little weight; lite's uniform first run
# gains 0.4 dB more there). Each slice commits the portable checkpoint (int8, about 2.8 MB); the
# campaign may add about 60 MB to the repository in all
TOTAL_STEPS = 27000
REPLANNED_AT = 18493  # steps before it: 48000 planned, 1/q weighting
# lr 2e-4 as the grown screen and lite's later runs; gradients clipped at norm 1 against a spike
# (the log's grad_norm is the norm before clipping; unet diverged at a held 5e-4 without it)
BATCH, PATCH = 16, 128
RECIPE = ["--preset", PRESET, "--channels", "1", "--steps", str(TOTAL_STEPS), "--batch", str(BATCH),
          "--patch", str(PATCH), "--init", SOURCE, "--lr", "2e-4", "--grad-clip", "1",
          "--qualities", "10", "90", "1", "--weighting", "uniform", "--double", "0.2",
          "--val-data", str(DATA / "val-gray-bsd68"), "--val-qualities", "10", "40", "80",
          "--val-every", "2000", "--log-every", "100",
          "--ckpt-every", "200"]
# scored after every slice; 90: where unet fell furthest behind; 80: where unet-narrow's step-18493
# network gained 0.43 dB less than lite (+0.90 against +1.33; Q70 -0.13) while level at 10, 40, 90
QUALITIES = ("10", "40", "80", "90")
LITE = {"10": 1.232, "40": 1.344, "80": 1.332, "90": 1.550}  # crl-lite-gray as `jpeg-restore eval` runs it

# Stage 2 (2026-12-06): the blind run stopped at step 22410 (lr 1.6e-5, 0.26 dB behind lite at
# Q80, 0.03 at Q10); a blind network cannot tell Q80 from Q40 and trades one for the other, so
# its export goes on as a table-conditioned network (FiLM from the JPEG's luma table, started as
# the identity: models.growth), its own cosine from lr 1e-4 over 85 minutes of two cores
COND_PRESET = "unet-narrow+tables"
COND_RUN = ROOT / "runs" / "campaign-cond"
COND_RECIPE = ["--preset", PRESET, "--channels", "1", "--steps", "100000", "--time-budget", "5100",
               "--batch", str(BATCH), "--patch", str(PATCH), "--init", str(RUN / "model.pt"),
               "--table-condition", "--lr", "1e-4", "--grad-clip", "1",
               *RECIPE[RECIPE.index("--qualities"):]]


def _then(recipe: list[str], init: Path, **changes: str) -> list[str]:
    """``recipe`` started from ``init`` with some of its options changed (``time_budget="2100"``)."""
    out = [*recipe]
    out[out.index("--init") + 1] = str(init)
    for key, value in changes.items():
        out[out.index("--" + key.replace("_", "-")) + 1] = value
    return out


# Stage 3 (2026-12-06): stage 2's export on a 1/q draw, its own cosine from lr 3e-5 over 35
# minutes (lifted Q10-20, lowered Q70-80); stage 4 (2026-12-06): stage 3's export on the draw
# between the two (1/sqrt(q)), lr 3e-5 over 80 minutes
INV_STAGE, SQRT_STAGE = "tables, 1/q draw", "tables, 1/sqrt(q) draw"
INV_RUN, SQRT_RUN = ROOT / "runs" / "campaign-cond-inv", ROOT / "runs" / "campaign-cond-sqrt"
# stage -> (run folder, committed portable checkpoint, recipe), in the order they ran: each
# stage's steps and CPU-hours count on from the stage before it
STAGES = {
    PRESET: (RUN, PORTABLE, RECIPE),
    COND_PRESET: (COND_RUN, HERE / "campaign" / "checkpoint-tables.pt", COND_RECIPE),
    INV_STAGE: (INV_RUN, HERE / "campaign" / "checkpoint-tables-inverse.pt",
                _then(COND_RECIPE, COND_RUN / "model.pt", time_budget="2100", lr="3e-5", weighting="inverse")),
    SQRT_STAGE: (SQRT_RUN, HERE / "campaign" / "checkpoint-tables-inverse-sqrt.pt",
                 _then(COND_RECIPE, INV_RUN / "model.pt", time_budget="4800", lr="3e-5", weighting="inverse-sqrt")),
}
CURRENT = SQRT_STAGE


def run_slice(stage: str, minutes: float, threads: int) -> None:
    from napari_jpeg_restore.core.training.checkpoint import load_checkpoint

    run_dir, portable, recipe = STAGES[stage]

    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "last.pt").is_file() and portable.is_file():
        shutil.copyfile(portable, run_dir / "last.pt")
        print(f"resuming from the committed {portable.relative_to(ROOT)} (fresh Adam moments)")
    step = load_checkpoint(run_dir / "last.pt")["step"] if (run_dir / "last.pt").is_file() else 0
    print(f"{stage} slice: from step {step} for {minutes:g} minutes", flush=True)
    with (run_dir / "stdout.log").open("a") as log:
        run = subprocess.Popen([JR, "train", "restorer", "--threads", str(threads),
                                "--data", str(DATA / "train-*" / "*.jpg"), *recipe,
                                "--resume", "--out", str(run_dir)], stdout=log, stderr=subprocess.STDOUT)
        try:
            run.wait(timeout=minutes * 60)
        except subprocess.TimeoutExpired:
            run.send_signal(signal.SIGINT)  # ends after the current step, as a Ctrl-C does
            run.wait()
    if run.returncode:
        sys.exit(f"training failed (exit {run.returncode}); see {run_dir / 'stdout.log'}")
    record(stage)  # what a session commits, ready before anything else can go wrong


def record(stage: str) -> None:
    from napari_jpeg_restore.core.training.checkpoint import (
        load_checkpoint,
        portable_checkpoint,
        save_checkpoint,
    )

    run_dir, portable, _ = STAGES[stage]
    state = load_checkpoint(run_dir / "last.pt")
    portable.parent.mkdir(exist_ok=True)
    save_checkpoint(portable, portable_checkpoint(state))
    scores = run_dir / f"eval-{state['step']}.json"
    with (run_dir / "stdout.log").open("a") as log:
        score(portable, scores, log, qualities=QUALITIES)
    gain = gains(scores)
    points = json.loads(CURVE.read_text()) if CURVE.is_file() else []
    # a stage counts on from where the stage before it ended (its last point), stage 1 from lite
    order = list(STAGES)
    before = max((p for p in points if p["preset"] == order[order.index(stage) - 1]), key=lambda p: p["step"]) \
        if stage != PRESET else {"step": 0, "cpu_hours": 0.0}
    step = before["step"] + state["step"]
    points = [p for p in points if (p["preset"], p["step"]) != (stage, step)] + [{
        "preset": stage, "step": step, "gigapixels": step * BATCH * PATCH**2 / 1e9,
        "cpu_hours": before["cpu_hours"] + state["wall_seconds"] * state["threads"] / 3600,
        **{f"q{q}": gain[q] for q in QUALITIES}, "machine": state["meta"].get("machine", "")}]
    write_curve(points)


def write_curve(points: list[dict]) -> None:
    """The curve's points into bench/results/campaign.json, its table (.md) and its plot (.png)."""
    CURVE.write_text(json.dumps(points, indent=1))
    cell = lambda p, q: f"{p[q]:+.3f}" if q in p else "-"  # noqa: E731
    lines = [f"# CPU quality campaign: `{PRESET}` gray grown from `{SOURCE}`, {TOTAL_STEPS} steps planned", "",
             f"Batch {BATCH} x {PATCH} px, every image of `train-bsds-color` and `train-extra`, Q10-90 step 1, "
             "20% double compression, one cosine from lr 2e-4 over all steps (48000 planned and "
             f"qualities drawn by 1/q until step {REPLANNED_AT}, then {TOTAL_STEPS} and a uniform draw), "
             f"gradients clipped at norm 1; `{PRESET}` starts as `{SOURCE}` (its new residual blocks "
             "as identities) and its CPU-hours count from there (the source's 4.9 come on top). "
             "Gain over JPEG on val-gray-bsd68 (68 images), the network alone, as committed (the "
             "portable checkpoint). Written by `python bench/campaign.py record` after every "
             f"slice; shipped `{SOURCE}`, scored the same way (`jpeg-restore eval`, JPEG-consistent): "
             f"{' / '.join(f'{LITE[q]:+.3f}' for q in QUALITIES)} dB at Q10 / Q40 / Q80 / Q90 (its card, the "
             "network alone: +1.20 / +1.33 / +1.33 / +1.55).", "",
             "The first rows are the stopped `unet` run (from scratch, 32000 steps planned): behind "
             "lite at every quality after 2.4 GPx, furthest at the top. CPU-hours count the steps "
             "a run kept: slices that ended on a machine that went away before they were committed "
             "are not counted (its 7400 point is one such branch).", "",
             (f"`{COND_PRESET}` rows: stage 2, the blind run's step-22410 export going on as a "
              "table-conditioned network (`--table-condition`: the JPEG's luma table scales and "
              "shifts its decoder features; started as the identity), its own cosine from lr 1e-4 "
              "over 85 minutes, the same data and draw; steps and CPU-hours count on from stage 1. "
              f"`{INV_STAGE}`: stage 3, stage 2's export drawing qualities by 1/q (lr 3e-5 cosine, 35 "
              f"minutes); `{SQRT_STAGE}`: stage 4, stage 3's export drawing by 1/sqrt(q) (lr 3e-5, "
              "80 minutes)."), "",
             "| preset | step | GPx of patches | CPU-hours | Q10 gain dB | Q40 gain dB | Q80 gain dB | Q90 gain dB |",
             "|---|---|---|---|---|---|---|---|",
             *[f"| {p['preset']} | {p['step']} | {p['gigapixels']:.2f} | {p['cpu_hours']:.2f} | "
               f"{cell(p, 'q10')} | {cell(p, 'q40')} | {cell(p, 'q80')} | {cell(p, 'q90')} |" for p in points],
             "", "![gain against training](campaign.png)", ""]
    (RESULTS / "campaign.md").write_text("\n".join(lines))
    plot(points)
    print("\n".join(lines))


SHIP_QUALITIES = ("10", "20", "30", "40", "50", "60", "70", "80", "90", "100", "10+30")
# what each shipped name is made of, the model it must beat at every quality, and where
SHIPS = {"gray": ("crl-gray", STAGES[CURRENT][0] / "model.pt", SOURCE, "val-gray-bsd68"),
         "color": ("crl-color", ROOT / "runs" / "chroma" / "model.pt", "crl-lite-color", "val-cbsd68")}


def ship(kind: str, force: bool) -> None:
    from napari_jpeg_restore.core.jpeg.consistency import calibration_path
    from napari_jpeg_restore.core.registry import MODELS, load_model, save_weights

    name, trained, reference, data = SHIPS[kind]
    info = MODELS[name]
    if kind == "color":  # the trained chroma branch under the best gray restorer shipped now
        model = chroma_branch.under(trained, "crl-gray" if MODELS["crl-gray"].has_weights else SOURCE)
    else:
        model = load_model(trained)
    staged = ROOT / "runs" / "ship" / f"{name}.pt"
    staged.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, staged, {**model.meta, "description": info.description}, half=True)
    train = [str(DATA / "train-bsds-color"), str(DATA / "train-extra")]
    with (staged.parent / f"{name}.log").open("a") as log:
        subprocess.run([JR, "calibrate", str(staged), "--data", *train], check=True, stdout=log,
                       stderr=subprocess.STDOUT)
        scored = {staged: staged.with_suffix(".eval.json"), reference: staged.with_name(f"{reference}.eval.json")}
        for weights, dest in scored.items():
            dest.unlink(missing_ok=True)  # the staged weights are new each time
            score(weights, dest, log, data, SHIP_QUALITIES)
    new, old = (gains(dest) for dest in scored.values())
    print(f"gain over JPEG on {data}, dB, as the command line runs each model:")
    for q in SHIP_QUALITIES:
        print(f"  Q{q:>6}  {name} {new[q]:+.3f}  {reference} {old[q]:+.3f}  ({new[q] - old[q]:+.3f})")
    behind = [q for q in SHIP_QUALITIES if new[q] < old[q]]
    if behind and not force:
        sys.exit(f"not shipped: behind {reference} at Q{', Q'.join(behind)} (--force ships anyway)")
    for src, dst in ((staged, info.path), (calibration_path(staged), calibration_path(info.path))):
        shutil.copyfile(src, dst)
    subprocess.run([sys.executable, str(HERE / "model_card.py"), name], check=True)


def plot(points: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.8))
    styles = dict(zip(["unet", *STAGES], ["x:", "o-", "s--", "^-.", "D-."]))
    for preset, style in styles.items():
        run = [p for p in points if p["preset"] == preset]
        if not run:
            continue
        for key, colour in (("q10", "C0"), ("q40", "C1"), ("q80", "C3"), ("q90", "C2")):
            at = [p for p in run if key in p]
            ax.plot([p["gigapixels"] for p in at], [p[key] for p in at], style, color=colour,
                    label=f"{preset} Q{key[1:]}")
    ax.axhline(LITE["10"], color="C0", ls=":", lw=1, label=f"{SOURCE} Q10")
    ax.axhline(1.55, color="C0", ls="--", lw=1, label="target Q10")
    ax.set_xlabel("training gigapixels (patches)")
    ax.set_ylabel("gain over JPEG, dB")
    ax.set_title("CPU campaign, val-gray-bsd68")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(RESULTS / "campaign.png", dpi=100)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    stage = argparse.ArgumentParser(add_help=False)
    stage.add_argument("--stage", choices=list(STAGES), default=CURRENT,
                       help=f"which run (default: {CURRENT!r}, the current stage)")
    s = sub.add_parser("slice", parents=[stage], help="resume the run, train for --minutes, then record")
    s.add_argument("--minutes", type=float, required=True)
    s.add_argument("--threads", type=int, default=2)
    sub.add_parser("record", parents=[stage], help="portable checkpoint, validation and curve after a slice")
    s = sub.add_parser("ship", help="crl-gray (or crl-color) into the package if it beats lite everywhere")
    s.add_argument("kind", choices=sorted(SHIPS))
    s.add_argument("--force", action="store_true", help="ship even where it is behind lite")
    a = p.parse_args()
    if a.command == "slice":
        run_slice(a.stage, a.minutes, a.threads)
    elif a.command == "record":
        record(a.stage)
    else:
        ship(a.kind, a.force)


if __name__ == "__main__":
    main()
