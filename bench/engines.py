"""Inference engines side by side on one model, the same images and the same threads: PyTorch
eager (fp32, bf16 autocast; contiguous and channels-last), torch.compile, ONNX Runtime (CPU EP,
fp32 and static int8), OpenVINO (fp32, bf16, int8 from the same quantized graph, int8 from
NNCF's post-training quantization). Each engine
runs the network alone on the 68 val-gray-bsd68 pictures (320x480, portrait ones turned) at
Q10 and Q40; cells: megapixels/s over all 136 calls after a warm-up, mean PSNR of the network's
output against the clean picture, and its difference to eager fp32. The FBCNN architecture
(bench/fbcnn_arch.py) and the CRL paper preset (random weights) are timed in the same run.
Engines whose package is missing are listed as such. Writes this machine's section of bench/results/engines.md.

    python bench/engines.py [--model crl-lite-gray] [--threads 2] [--limit N]

Run it in an environment with onnx, onnxruntime, onnxscript, openvino and nncf installed
(OpenVINO is a dependency of the project; the others are not: docs/speed.md says why).
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from napari_jpeg_restore.core.engines.machine import describe, isa
from napari_jpeg_restore.core.engines.openvino_import import import_openvino
from napari_jpeg_restore.core.error_text import one_line
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import load_images
from napari_jpeg_restore.core.imageio.sources import expand
from napari_jpeg_restore.core.jpeg.codec import compress
from napari_jpeg_restore.core.models import count_parameters, create_model
from napari_jpeg_restore.core.registry import load_model

sys.path.insert(0, str(Path(__file__).parent))
from fbcnn_arch import FBCNNArch  # noqa: E402
from sections import RESULTS, write_section

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"
H, W = 320, 480
QUALITIES = (10, 40)
Net = Callable[[np.ndarray], np.ndarray]  # (1, C, H, W) float32 in 0..1 -> the same


def pictures(folder: Path, limit: int | None) -> list[np.ndarray]:
    """Clean gray pictures, landscape, cropped to H x W."""
    out = []
    for im in load_images(expand(str(folder))[:limit], 1):
        im = im[..., 0] if im.ndim == 3 else im
        im = im.T if im.shape[0] > im.shape[1] else im
        out.append(im[:H, :W])
    return out


def eager(model: torch.nn.Module, bf16: bool, channels_last: bool) -> Net:
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            t = torch.from_numpy(x).contiguous(memory_format=layout)
            return model(t).float().numpy()
    return run


def compiled(model: torch.nn.Module, bf16: bool) -> Net:
    return eager(torch.compile(model.to(memory_format=torch.channels_last)), bf16, True)


def export_onnx(model: torch.nn.Module, path: Path) -> Path:
    torch.onnx.export(model, (torch.rand(1, 1, H, W),), str(path), input_names=["x"],
                      output_names=["y"], opset_version=17, dynamo=False)
    return path


def quantize_int8(fp32: Path, calibration: list[np.ndarray], out: Path) -> Path:
    """Static int8 (QDQ, per-channel weights) calibrated on training crops, never validation."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": x} for x in calibration])

        def get_next(self):
            return next(self.items, None)

    quantize_static(str(fp32), str(out), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def quantize_nncf(fp32: Path, calibration: list[np.ndarray], out: Path) -> Path:
    """OpenVINO's own int8 route: NNCF post-training quantization (per-channel weights, mixed
    preset: asymmetric activations, fast bias correction), the same calibration crops."""
    ov = import_openvino()  # OpenVINO's telemetry left out; NNCF (bench-only) has its own
    import nncf

    model = ov.Core().read_model(str(fp32))
    quantized = nncf.quantize(model, nncf.Dataset(calibration), preset=nncf.QuantizationPreset.MIXED,
                              subset_size=len(calibration))
    ov.save_model(quantized, str(out))
    return out


def onnxruntime_net(path: Path, threads: int) -> Net:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: session.run(None, {"x": x})[0]


def openvino_net(path: Path, threads: int, precision: str) -> Net:
    net = import_openvino().Core().compile_model(str(path), "CPU", {
        "INFERENCE_PRECISION_HINT": precision, "INFERENCE_NUM_THREADS": threads,
        "PERFORMANCE_HINT": "LATENCY"})
    return lambda x: net(x)[0]


def measure(run: Net, inputs: list[np.ndarray], warmup: int = 2) -> float:
    """Megapixels/s over every input (after ``warmup`` calls)."""
    for x in inputs[:warmup]:
        run(x)
    t = time.perf_counter()
    for x in inputs:
        run(x)
    return len(inputs) * H * W / 1e6 / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="crl-lite-gray")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--limit", type=int, default=None, help="validation pictures (default: all 68)")
    ap.add_argument("--out", default=str(RESULTS / "engines.md"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    clean = pictures(SHARED / "val-gray-bsd68", a.limit)
    jpegs = {q: [compress(c, q) for c in clean] for q in QUALITIES}
    inputs = [(j.astype(np.float32) / 255)[None, None] for q in QUALITIES for j in jpegs[q]]
    calibration = [(compress(c, q).astype(np.float32) / 255)[None, None]
                   for c, q in zip(pictures(SHARED / "train-bsds-color", 16), [10, 20, 30, 40, 60, 80] * 3)]
    model = load_model(a.model).eval()

    def scores(run: Net) -> dict[int, float]:
        out, k = {}, 0
        for q in QUALITIES:
            vals = []
            for c in clean:
                y = np.clip(run(inputs[k])[0, 0], 0, 1)
                vals.append(psnr(c, np.round(y * 255).astype(np.uint8)))
                k += 1
            out[q] = float(np.mean(vals))
        return out

    tmp = Path(tempfile.mkdtemp(prefix="engines-"))
    have = {p: importlib.util.find_spec(p) is not None for p in ("onnx", "onnxruntime", "openvino", "nncf")}
    onnx_path = int8_path = None
    if have["onnx"]:
        onnx_path = export_onnx(model, tmp / "model.onnx")
        if have["onnxruntime"]:
            int8_path = quantize_int8(onnx_path, calibration, tmp / "model.int8.onnx")
    engines: list[tuple[str, Callable[[], Net] | None]] = [
        ("PyTorch eager fp32, contiguous", lambda: eager(model, False, False)),
        ("PyTorch eager fp32, channels-last", lambda: eager(model, False, True)),
        ("PyTorch eager bf16 autocast, contiguous", lambda: eager(model, True, False)),
        ("PyTorch eager bf16 autocast, channels-last (`--engine torch`)", lambda: eager(model, True, True)),
        ("torch.compile fp32, channels-last", lambda: compiled(model, False)),
        ("torch.compile bf16 autocast, channels-last", lambda: compiled(model, True)),
        ("ONNX Runtime fp32 (CPU EP)", have["onnxruntime"] and onnx_path and (lambda: onnxruntime_net(onnx_path, a.threads))),
        ("ONNX Runtime int8 (static QDQ)", int8_path and (lambda: onnxruntime_net(int8_path, a.threads))),
        ("OpenVINO fp32", have["openvino"] and onnx_path and (lambda: openvino_net(onnx_path, a.threads, "f32"))),
        ("OpenVINO bf16 (`--engine auto`)", have["openvino"] and onnx_path and (lambda: openvino_net(onnx_path, a.threads, "bf16"))),
        ("OpenVINO int8 (the same QDQ graph)", have["openvino"] and int8_path and (lambda: openvino_net(int8_path, a.threads, "bf16"))),
        ("OpenVINO int8 (NNCF post-training)", have["openvino"] and have["nncf"] and onnx_path and (
            lambda: openvino_net(quantize_nncf(onnx_path, calibration, tmp / "model.nncf.xml"), a.threads, "bf16"))),
    ]
    lines = ["", f"## {time.strftime('%Y-%m-%d')}", "",
             f"Machine: {describe()}; ISA: {isa()}; {a.threads} threads "
             f"for every engine; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}", "",
             f"Model: {a.model} ({count_parameters(model) / 1e6:.2f} M parameters), the network alone on "
             f"{len(clean)} val-gray-bsd68 pictures at {H}x{W}, Q{QUALITIES[0]} and Q{QUALITIES[1]}.", "",
             "| engine | MP/s | vs eager fp32 | PSNR Q10 | PSNR Q40 | ΔPSNR Q10 | ΔPSNR Q40 | set-up s |",
             "|---|---|---|---|---|---|---|---|"]
    base: tuple[float, dict[int, float]] | None = None
    for name, make in engines:
        if not make:
            lines.append(f"| {name} | not installed | | | | | | |")
            continue
        t0 = time.perf_counter()
        try:
            run = make()
            run(inputs[0])  # compiles / plans here
        except Exception as err:  # noqa: BLE001 - an engine that cannot run this model is a row
            lines.append(f"| {name} | failed: {type(err).__name__}: {one_line(err, 120)} | | | | | | |")
            print(lines[-1], flush=True)
            continue
        setup = time.perf_counter() - t0
        speed, score = measure(run, inputs), scores(run)
        base = base or (speed, score)
        lines.append(f"| {name} | {speed:.2f} | {speed / base[0]:.2f}x | {score[10]:.3f} | {score[40]:.3f} | "
                     f"{score[10] - base[1][10]:+.3f} | {score[40] - base[1][40]:+.3f} | {setup:.1f} |")
        print(lines[-1], flush=True)
    lines += ["", "Same run, random weights, PyTorch eager, channels-last, the same inputs (speed only):", "",
              "| network | parameters | MP/s fp32 | MP/s bf16 |", "|---|---|---|---|"]
    for name, net in (("FBCNN architecture (bench/fbcnn_arch.py)", FBCNNArch(1)),
                      ("CRL paper preset", create_model("crl", "paper", 1, use_encoder=True))):
        net = net.eval()
        speeds = [measure(eager(net, bf16, True), inputs[:6], warmup=1) for bf16 in (False, True)]
        lines.append(f"| {name} | {count_parameters(net) / 1e6:.2f} M | {speeds[0]:.3f} | {speeds[1]:.3f} |")
        print(lines[-1], flush=True)
    write_section(Path(a.out), "# Inference engines on one model", "\n".join(lines).strip())
    print(f"wrote this machine's section of {a.out}")


if __name__ == "__main__":
    main()
