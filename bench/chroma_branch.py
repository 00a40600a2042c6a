"""Colour from the gray restorer (issue 34): train the light chroma branch of a luma-chroma model
under a frozen gray restorer, then score it on val-cbsd68 against the colour model it would replace.

    python bench/chroma_branch.py [--minutes 45] [--luma crl-lite-gray] [--weighting uniform] [--double 0.2]
                                  [--init WEIGHTS] [--swap WEIGHTS]

The branch trains (``jpeg-restore train restorer --channels 3 --luma ...``, every image of
../shared/datasets/train-*, Q10-90 step 1 drawn uniformly (``--weighting inverse``: the shipped
recipe's 1/q, which left the branch under crl-lite-gray 0.04 dB behind crl-lite-color at Q90),
``--double`` of them compressed twice (default 20%), batch 16 x 128 px; ``--init``: going on from
a trained branch) for ``--minutes`` of wall time, its lr's cosine ending with them.
Rows, as ``jpeg-restore eval`` scores them at Q10-90 and double compressed (Q10, then Q30 on a
shifted grid): ``crl-lite-color``, the luma-chroma model,
and with ``--swap`` the same chroma branch under another gray restorer (e.g. the campaign's
network: does the branch need training again when the luma restorer changes?). The run is kept
in runs/chroma/ and resumed; the section goes into bench/results/chroma_branch.md.
"""
from __future__ import annotations

import argparse
import subprocess
from pathlib import Path

from napari_jpeg_restore.core.jpeg.codec import WEIGHTINGS
from sections import RESULTS, write_section
from shapes import DATA, JR, ROOT, gains, score

QUALITIES = ("10", "20", "30", "40", "60", "90", "10+30")
RUN = ROOT / "runs" / "chroma"


def train(minutes: float, luma: str, weighting: str, double: float, init: str | None, threads: int) -> None:
    RUN.mkdir(parents=True, exist_ok=True)
    if (RUN / "model.pt").is_file():
        return
    for old in RUN.glob("eval-*.json"):  # scores of an earlier model
        old.unlink()
    with (RUN / "stdout.log").open("a") as log:
        subprocess.run([JR, "train", "restorer", "--threads", str(threads), "--channels", "3",
                        "--luma", luma, "--data", str(DATA / "train-*" / "*.jpg"),
                        "--steps", "1000000", "--time-budget", str(minutes * 60), "--batch", "16",
                        "--patch", "128", "--lr", "3e-4", "--grad-clip", "1",
                        "--qualities", "10", "90", "1", "--weighting", weighting, "--double", str(double),
                        *(["--init", init] if init else []),
                        "--log-every", "100", "--ckpt-every", "200", "--resume", "--out", str(RUN)],
                       check=True, stdout=log, stderr=subprocess.STDOUT)


def under(weights: Path, gray: str):
    """The trained luma-chroma model's chroma branch under the gray restorer ``gray`` (a new
    model; its metadata names that gray restorer)."""
    from napari_jpeg_restore.core.models import create_model
    from napari_jpeg_restore.core.registry import load_model
    from napari_jpeg_restore.core.training.lineage import lineage

    trained, luma = load_model(weights), load_model(gray)
    model = create_model("luma-chroma", channels=3, luma=luma.cfg, chroma=trained.cfg.chroma)
    model.luma.load_state_dict(luma.state_dict())
    model.chroma.load_state_dict(trained.chroma.state_dict())
    model.meta = {**trained.meta, "luma": lineage(gray, luma.meta)}
    return model


def shown(weights: str) -> str:
    """A weights file as the results name it: relative to the repository when it lies inside,
    so that a rerun from another folder replaces its section."""
    path = Path(weights).resolve()
    return str(path.relative_to(ROOT)) if path.is_file() and path.is_relative_to(ROOT) else weights


def swapped(weights: Path, gray: str, dest: Path) -> Path:
    """``under(weights, gray)`` saved to ``dest``."""
    from napari_jpeg_restore.core.registry import save_weights

    model = under(weights, gray)
    save_weights(model, dest, model.meta)
    return dest


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=45.0, help="training wall time (default: 45)")
    p.add_argument("--luma", default="crl-lite-gray", help="the frozen gray restorer (default: crl-lite-gray)")
    p.add_argument("--weighting", default="uniform", choices=list(WEIGHTINGS),
                   help="how training draws qualities (default: uniform)")
    p.add_argument("--double", type=float, default=0.2, help="share of pairs compressed twice (default: 0.2)")
    p.add_argument("--init", help="go on training this luma-chroma model's branch (default: a new branch)")
    p.add_argument("--swap", help="also score the chroma branch under this gray restorer")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    from napari_jpeg_restore.core.engines.machine import describe
    from napari_jpeg_restore.core.registry import load_model

    train(a.minutes, a.luma, a.weighting, a.double, a.init, a.threads)
    meta = load_model(RUN / "model.pt").meta
    models = {"crl-lite-color": "crl-lite-color", f"{a.luma} + chroma branch": RUN / "model.pt"}
    if a.swap:
        swap_steps = load_model(a.swap).meta.get("steps", "?")
        models[f"`{a.swap}` ({swap_steps} steps) + the same chroma branch"] = swapped(RUN / "model.pt", a.swap,
                                                                           RUN / "swapped.pt")
    rows = []
    with (RUN / "eval.log").open("a") as log:
        for i, (name, weights) in enumerate(models.items()):
            dest = RUN / f"eval-{i}.json"
            if i == 2:
                dest.unlink(missing_ok=True)  # a swap is built anew each time
            score(weights, dest, log, "val-cbsd68", QUALITIES)
            g = gains(dest)
            rows.append(f"| {name} | " + " | ".join(f"{g[q]:+.3f}" for q in QUALITIES) + " |")
            print(rows[-1], flush=True)
    steps = meta["steps"]
    # the first recipe's section keeps its heading; others are named by what differs
    recipe = "" if (a.weighting, a.double, a.init) == ("inverse", 0.2, None) else (
        f", {a.weighting} quality draw, {a.double:.0%} double compression"
        + (f", from {shown(a.init)}" if a.init else ""))
    section = "\n".join([
        f"## Chroma branch under a frozen `{a.luma}`, val-cbsd68" + recipe, "",
        f"Machine: {describe()}", "",
        (f"Trained {steps} steps ({16 * 128 * 128 * steps / 1e9:.2f} GPx of patches, "
         f"{meta['cpu_hours']:.2f} CPU-hours) under `{a.luma}`; 68 images, gain over JPEG in dB."), "",
        "| model | " + " | ".join(f"Q{q}" for q in QUALITIES) + " |",
        "|---|" + "---|" * len(QUALITIES), *rows, ""])
    write_section(RESULTS / "chroma_branch.md", "# Colour from the gray restorer: the chroma branch\n\n"
                  "Written by `python bench/chroma_branch.py`; `bench/results/luma_only.md` has the "
                  "luma alone and the perfect-chroma ceiling.", section)
    print(section)


if __name__ == "__main__":
    main()
