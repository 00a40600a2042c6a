"""restore(): tiling, dtypes, channel layouts, determinism."""
from pathlib import Path

import numpy as np
import pytest
import torch
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.models import create_model
from napari_jpeg_restore.core.restoration.image_restore import _windows, restore_steps
from napari_jpeg_restore.core.restoration.options import RestoreOptions


def _randomised(model):
    """Untrained restorers are the identity; perturb the last layer so tiling effects show."""
    torch.manual_seed(0)
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.05)
    return model.eval()


@pytest.fixture(scope="module")
def gray_model():
    return _randomised(create_model("crl", "lite", 1))


@pytest.fixture(scope="module")
def color_model():
    return _randomised(create_model("crl", "lite", 3))


def _smooth(shape, seed=0):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    base = 127 + 60 * np.sin(xx / 17.0) * np.cos(yy / 23.0)
    if len(shape) == 3:
        base = base[..., None] + rng.integers(-20, 20, size=(1, 1, shape[2]))
    return np.clip(base + rng.normal(0, 5, shape), 0, 255).astype(np.uint8)


def test_windows_cover_and_align():
    for size in (50, 512, 513, 1000, 2049):
        spans = _windows(size, 256, 32, 16)
        covered = np.zeros(size, bool)
        for s, e in spans:
            assert s % 16 == 0 and e - s < 256 + 16
            covered[s:e] = True
        assert covered.all() and spans[-1][1] == size
        assert all(a_end - b >= 32 for (_, a_end), (b, _) in zip(spans, spans[1:]))
        n = len(spans)
        assert n <= max(1, -(-(size - 32) // (256 - 32)))  # no more tiles than fixed steps need
        assert sum(e - s for s, e in spans) <= size + (n - 1) * 32 + n * 16  # evened out


def test_tiled_matches_untiled(gray_model):
    img = _smooth((300, 457))
    whole = restore(img, gray_model, tile=4096)
    tiled = restore(img, gray_model, tile=128, overlap=48)
    diff = np.abs(whole.astype(int) - tiled)
    assert diff.mean() < 0.5 and np.percentile(diff, 99) <= 3


def test_dtypes_and_ranges_round_trip(gray_model):
    img8 = _smooth((64, 80))
    img8[0, 0], img8[0, 1] = 0, 255  # full range, so the float mapping below is exact
    out8 = restore(img8, gray_model)
    assert out8.dtype == np.uint8 and out8.shape == img8.shape
    img16 = img8.astype(np.uint16) * 257
    out16 = restore(img16, gray_model)
    assert out16.dtype == np.uint16
    assert np.abs(out16.astype(int) / 257 - out8).mean() < 1.0
    f = img8.astype(np.float32) / 255 * 1000 - 200  # float outside [0, 1]: range kept
    outf = restore(f, gray_model)
    assert outf.dtype == np.float32
    assert np.abs((outf + 200) / 1000 * 255 - out8).mean() < 1.0


def test_rgba_alpha_passes_through(color_model):
    rgb = _smooth((64, 64, 3))
    alpha = np.random.default_rng(2).integers(0, 256, (64, 64), dtype=np.uint8)
    out = restore(np.dstack([rgb, alpha]), color_model)
    assert out.shape == (64, 64, 4)
    np.testing.assert_array_equal(out[..., 3], alpha)


def test_gray_model_on_rgb_and_color_model_on_gray(gray_model, color_model):
    rgb = _smooth((48, 48, 3))
    assert restore(rgb, gray_model).shape == rgb.shape
    gray = _smooth((48, 48))
    assert restore(gray, color_model).shape == gray.shape


def test_deterministic(gray_model):
    img = _smooth((96, 96))
    np.testing.assert_array_equal(restore(img, gray_model, tile=64), restore(img, gray_model, tile=64))


def test_steps_report_progress_and_can_stop_early(gray_model):
    steps = restore_steps(_smooth((256, 256)), gray_model, RestoreOptions(tile=64, overlap=16))
    first = next(steps)
    assert first[0] == 1 and first[1] > 1
    steps.close()  # a cancelled worker: no exception, nothing left running


def test_bad_shapes_are_refused(gray_model):
    with pytest.raises(ValueError, match="expected a 2-D"):
        restore(np.zeros((4, 4, 4, 4), np.uint8), gray_model)
    with pytest.raises(TypeError, match="dtype"):
        restore(np.zeros((16, 16), np.int64), gray_model)


def test_ensemble_is_rotation_and_flip_equivariant(gray_model):
    img = _smooth((96, 128))  # sides on the model's stride: no padding to break the symmetry
    plain = restore(img, gray_model)
    ens = restore(img, gray_model, ensemble=True)
    assert ens.shape == img.shape and ens.dtype == img.dtype
    assert not np.array_equal(ens, plain)  # the eight views really differ for this model
    for transform in (np.rot90, np.fliplr, lambda a: np.rot90(a, 3)):
        moved = restore(np.ascontiguousarray(transform(img)), gray_model, ensemble=True)
        assert np.abs(moved.astype(int) - transform(ens)).max() <= 1  # rounding only
    odd = _smooth((50, 70))
    assert restore(odd, gray_model, ensemble=True).shape == odd.shape


def test_bands_stream_top_to_bottom_and_match_restore(gray_model):
    from napari_jpeg_restore.core.restoration.image_restore import restore_bands

    img = _smooth((300, 200))
    events = list(restore_bands(img, gray_model, RestoreOptions(tile=96, overlap=16, device="cpu")))
    bands = [b for _, _, b in events if b is not None]
    assert [d for d, _, _ in events] == list(range(1, events[-1][1] + 1))  # one event a tile
    first_band_at = next(i for i, (_, _, b) in enumerate(events) if b is not None)
    assert first_band_at < len(events) - 1 and len(bands) > 2  # rows leave before the last tile
    assert [y for y, _ in bands] == list(np.cumsum([0] + [len(r) for _, r in bands[:-1]]))
    np.testing.assert_array_equal(np.concatenate([r for _, r in bands]),
                                  restore(img, gray_model, tile=96, overlap=16, device="cpu"))


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 0), np.uint8), "non-empty"),
    (np.full((16, 16), np.nan, np.float32), "NaN"),
    (np.zeros(16, np.uint8), "2-D"),
])
def test_bad_arrays_get_a_clear_value_error(gray_model, bad, message):
    with pytest.raises(ValueError, match=message):
        restore(bad, gray_model, device="cpu")


def test_restoring_a_file_costs_little_beyond_its_decoded_pixels(tmp_path):
    """Peak memory while restoring a 16-MP gray JPEG file, beyond what the process held after
    restoring a 1-MP one with the same tiles (model working memory): with band-by-band
    restoration and streamed writing it stays within a few copies of the 8-bit image (measured:
    6.7, of which 2 decoding and the rest tile-row buffers; full-size float buffers, as before,
    cost 20 or more)."""
    import subprocess
    import sys

    if not Path("/proc/self/clear_refs").exists():
        pytest.skip("reads the resident set size from /proc (Linux)")

    from napari_jpeg_restore.core.jpeg.codec import encode_jpeg
    from napari_jpeg_restore.core.registry import save_weights

    side = 4000
    (tmp_path / "big.jpg").write_bytes(encode_jpeg(_smooth((side, side)), 30))
    (tmp_path / "small.jpg").write_bytes(encode_jpeg(_smooth((1024, 1024)), 30))  # full tiles
    save_weights(create_model("crl", "lite", 1, use_encoder=False, top_blocks=1), tmp_path / "m.pt")
    # VmHWM (peak) and VmRSS (now) of the child's own address space; ru_maxrss would carry
    # the forking parent's peak across exec.
    script = f"""
from napari_jpeg_restore.core.restoration.file_restore import restore_file
from napari_jpeg_restore.core.restoration.options import RestoreOptions
from napari_jpeg_restore.core.registry import load_model
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) * 1024
m = load_model({str(tmp_path / 'm.pt')!r})
restore_file({str(tmp_path / 'small.jpg')!r}, {str(tmp_path / 'small.png')!r}, m, RestoreOptions(device="cpu"))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")  # resets VmHWM to the current RSS
base = status("VmRSS:")
restore_file({str(tmp_path / 'big.jpg')!r}, {str(tmp_path / 'big.png')!r}, m, RestoreOptions(device="cpu"))
print(status("VmHWM:") - base)
"""
    grown = int(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                               check=True).stdout.split()[-1])
    assert (tmp_path / "big.png").stat().st_size > 0
    assert grown < 10 * side * side, f"peak grew by {grown / 2**20:.0f} MiB"


def test_gray_content_in_rgb_gets_no_colour_cast(color_model, gray_model):
    """A gray picture stored as RGB (R = G = B) comes back neutral, whatever model runs it."""
    gray = _smooth((96, 128))
    rgb = np.repeat(gray[..., None], 3, axis=2)
    for model in (color_model, gray_model):
        out = restore(rgb, model, device="cpu", tile=64)
        assert (out[..., 0] == out[..., 1]).all() and (out[..., 0] == out[..., 2]).all()
    np.testing.assert_array_equal(restore(rgb, gray_model, device="cpu")[..., 0],
                                  restore(gray, gray_model, device="cpu"))
    rgba = np.dstack([rgb, np.full(gray.shape, 9, np.uint8)])
    assert (restore(rgba, color_model, device="cpu")[..., 3] == 9).all()
    tinted = rgb.copy()
    tinted[0, 0, 2] += 1  # one pixel off: a colour image, restored as colour
    assert restore(tinted, color_model, device="cpu").shape == rgb.shape


def test_12_bit_data_in_uint16_gets_the_gain_of_its_8_bit_version():
    """Camera data of 12 bits stored as uint16 is scaled by 4095, not 65535 (which halved
    the gain); a layer's contrast limits, given as the value range, do the same."""
    from napari_jpeg_restore.core.jpeg.codec import compress

    def gain(clean, jpeg, out, peak):
        def p(a):
            return 10 * np.log10(peak ** 2 / np.mean((a.astype(float) - clean) ** 2))
        return p(out) - p(jpeg)

    clean8 = _smooth((128, 160), seed=3)
    jpeg8 = compress(clean8, 10)
    g8 = gain(clean8, jpeg8, restore(jpeg8, "crl-lite-gray", device="cpu"), 255)
    def to12(a):
        return np.round(a.astype(np.float64) * 4095 / 255).astype(np.uint16)
    clean12, jpeg12 = to12(clean8), to12(jpeg8)
    g12 = gain(clean12, jpeg12, restore(jpeg12, "crl-lite-gray", device="cpu"), 4095)
    assert g8 > 0.5 and abs(g12 - g8) < 0.1, (g8, g12)
    full = restore(jpeg12, "crl-lite-gray", device="cpu", value_range=(0, 65535))
    assert gain(clean12, jpeg12, full, 4095) < g8 - 0.2  # the old scaling: clearly less
    wide = jpeg12.copy()
    wide[0, 0] = 60000  # one hot pixel beyond the limits: kept, not clipped to them
    out = restore(wide, "crl-lite-gray", device="cpu", value_range=(0, 4095))
    assert out[0, 0] > 4095



def test_precision_auto_picks_bf16_only_where_the_cpu_has_it(monkeypatch):
    from napari_jpeg_restore.core.engines import precision

    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "fma"})
    assert precision.resolve_precision("auto", cpu) == "fp32"  # emulated bf16 would be slower
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precision.resolve_precision("auto", cpu) == "bf16"
    assert precision.resolve_precision("fp32", cpu) == "fp32"
    assert precision.resolve_precision("fp16", cpu) == "fp16"  # asked for: CUDA GPUs without bf16
    amx = {"avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_tile"}
    monkeypatch.setattr(precision, "cpu_flags", lambda: amx)
    assert precision.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: amx - {"amx_bf16", "amx_tile"})
    assert precision.resolve_precision("auto", cpu) == "fp32"  # AMX hidden: bf16 was slower
    monkeypatch.setattr(precision, "cpu_flags", lambda: amx)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")  # kernels capped below AMX
    assert precision.resolve_precision("auto", cpu) == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precision.resolve_precision("auto", cpu) == "bf16"  # AMD Zen 4: 1.6-2x fp32
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # kernels capped below bf16: emulated
    assert precision.resolve_precision("auto", cpu) == "fp32"
    with pytest.raises(ValueError, match="precision"):
        precision.resolve_precision("int8", cpu)


def test_the_benchmarks_machine_line_names_the_isa_and_any_kernel_caps(monkeypatch):
    from napari_jpeg_restore.core.engines import machine

    for cap in machine.KERNEL_CAPS:
        monkeypatch.delenv(cap, raising=False)
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"sse4_2", "amx_bf16", "avx2", "avx512f"})
    assert machine.isa() == "avx2, avx512f, amx_bf16"
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # an AVX2 machine emulated
    assert machine.isa() == "avx2, avx512f, amx_bf16; kernels capped: ONEDNN_MAX_CPU_ISA=AVX2"
    monkeypatch.setattr(machine, "cpu_flags", set)
    assert machine.isa().startswith("none of AVX2/AVX-512/AMX")


def test_a_quality_encoder_is_refused_as_a_restorer_with_a_clear_line():
    with pytest.raises(TypeError, match="quality encoder: it estimates quality"):
        restore(np.zeros((64, 64), np.uint8), create_model("cqe", "lite", 1))
