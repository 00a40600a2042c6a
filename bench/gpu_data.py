"""Build the git-ignored ``.gpu-data/`` folder that travels with a GPU run (``bench/gpu_train.sh``):
what is sent to the GPU machine is capped at 64 MiB, code included.

* ``val-gray/``, ``val-color/``: the two validation sets, re-encoded as lossless WebP (35% smaller
  than their PNGs; the script checks that every decoded pixel is unchanged).
* ``train/``: every ``train-bsds-color`` JPEG as it is, then ``train-extra`` JPEGs as they are, in
  a fixed shuffled order, while they fit under the cap. Validation images are never in it.

    python bench/gpu_data.py [--shared ../shared/datasets] [--cap-mib 64]
"""
from __future__ import annotations

import argparse
import io
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / ".gpu-data"
MIB = 2**20


def sent_bytes() -> int:
    """Bytes of the working tree that travels without ``carry``: tracked and untracked files
    that git does not ignore."""
    names = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / n.decode()).stat().st_size for n in names if n and (ROOT / n.decode()).is_file())


def lossless_webp(src: Path, dst: Path) -> int:
    image = Image.open(src)
    buf = io.BytesIO()
    image.save(buf, "WEBP", lossless=True, quality=100, method=4)  # 6 is 5x slower for ~2%
    back = Image.open(io.BytesIO(buf.getvalue())).convert(image.mode)
    if not np.array_equal(np.asarray(back), np.asarray(image)):
        raise RuntimeError(f"{src}: WebP round trip changed pixels")
    dst.write_bytes(buf.getvalue())
    return len(buf.getvalue())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", default=str(ROOT.parent / "shared" / "datasets"))
    p.add_argument("--cap-mib", type=float, default=64.0, help="what may travel in all (default: 64)")
    p.add_argument("--margin-mib", type=float, default=2.0, help="left free under the cap (default: 2)")
    a = p.parse_args()
    shared = Path(a.shared)
    if OUT.exists():
        shutil.rmtree(OUT)
    room = int((a.cap_mib - a.margin_mib) * MIB) - sent_bytes()
    used = 0
    for name, src in (("val-gray", "val-gray-bsd68"), ("val-color", "val-cbsd68")):
        (OUT / name).mkdir(parents=True)
        for f in sorted((shared / src).glob("*.png")):
            used += lossless_webp(f, OUT / name / f"{f.stem}.webp")
    (OUT / "train").mkdir()
    bsds = sorted((shared / "train-bsds-color").glob("*.jpg"))
    extra = sorted((shared / "train-extra").glob("*.jpg"))
    random.Random(0).shuffle(extra)
    taken = {"train-bsds-color": 0, "train-extra": 0}
    for f in bsds + extra:
        size = f.stat().st_size
        if used + size > room:
            if f in bsds:
                raise SystemExit(f"train-bsds-color does not fit under {a.cap_mib} MiB")
            continue
        shutil.copyfile(f, OUT / "train" / f"{f.parent.name}-{f.name}")
        used += size
        taken[f.parent.name] += 1
    megapixels = sum(np.prod(Image.open(f).size) for f in (OUT / "train").iterdir()) / 1e6
    summary = (f"{OUT.name}: {used / MIB:.1f} MiB beside {sent_bytes() / MIB:.1f} MiB of code; train: "
               f"{taken['train-bsds-color']} of {len(bsds)} BSDS + {taken['train-extra']} of {len(extra)} "
               f"train-extra images, {megapixels:.1f} MP; val: 68 gray + 68 colour (lossless WebP)")
    (OUT / "SUMMARY.txt").write_text(summary + "\n")
    print(summary)


if __name__ == "__main__":
    main()
