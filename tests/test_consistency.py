"""The "do no harm" layer: JPEG-consistent restoration, grids found in pixels, calibration."""
import io

import numpy as np
import pytest
import torch
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.block_dct import blocks_dct, blocks_idct
from napari_jpeg_restore.core.jpeg.codec import (
    compress,
    decode_jpeg,
    encode_jpeg,
    read_quant_tables,
)
from napari_jpeg_restore.core.jpeg.consistency import (
    Calibration,
    JpegGrid,
    constrain,
    ycc_planes,
)
from napari_jpeg_restore.core.jpeg.traces import find_jpeg_grid
from napari_jpeg_restore.core.models import create_model
from PIL import Image


def block_coefficients(pixels: np.ndarray) -> np.ndarray:
    """(C, H/8, W/8, 8, 8) DCT coefficients of the gray or Y/Cb/Cr planes of HxWxC pixels
    whose sides are multiples of 8."""
    return np.stack([blocks_dct(p) for p in ycc_planes(pixels)])


def _texture(h=160, w=200, seed=0):
    """A never-compressed picture with edges, gradients and fine texture."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:h, :w]
    img = 120 + 50 * np.sin(xx / 7.0) * np.cos(yy / 11.0) + 40 * (xx > w // 2) - 30 * (yy > h // 3)
    return np.clip(img + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8)


def _lattice_distance(pixels, grid):
    """Mean distance (in steps) of the luma coefficients of whole blocks from the lattice."""
    oy, ox = grid.offset
    y = pixels[oy:, ox:].reshape(pixels.shape[0] - oy, pixels.shape[1] - ox, -1)
    y = y[: y.shape[0] // 8 * 8, : y.shape[1] // 8 * 8]
    c = block_coefficients(y)[0] / grid.luma
    return float(np.abs(c - np.round(c)).mean())


def test_block_dct_is_jpegs_transform():
    x = np.random.default_rng(0).uniform(0, 255, (16, 24)).astype(np.float32)
    np.testing.assert_allclose(blocks_idct(blocks_dct(x)), x, atol=1e-3)
    data = encode_jpeg(_texture(), 50)
    grid = JpegGrid.from_tables(read_quant_tables(data))
    on = _lattice_distance(decode_jpeg(data), grid)
    assert on < 0.05 and _lattice_distance(_texture(), grid) > 2 * on  # never compressed: off it


def test_clipping_moves_a_restoration_towards_the_original():
    clean = _texture()
    data = encode_jpeg(clean, 90)
    jpeg = decode_jpeg(data)
    grid = JpegGrid.from_tables(read_quant_tables(data))
    wild = np.clip(jpeg + np.random.default_rng(1).normal(0, 12, jpeg.shape), 0, 255).astype(np.uint8)
    out = constrain(wild[..., None], jpeg[..., None], grid)[..., 0]
    assert psnr(clean, out) > psnr(clean, wild) + 3
    c = block_coefficients(jpeg[..., None])[0]
    lattice = np.round(c / grid.luma) * grid.luma
    assert (np.abs(block_coefficients(out[..., None])[0] - lattice) <= grid.luma / 2 + 1.5).all()


@pytest.fixture(scope="module")
def wild_model():
    torch.manual_seed(0)
    model = create_model("crl", "lite", 1)
    with torch.no_grad():
        model.tail.weight.normal_(0, 0.05)
    return model.eval()


@pytest.mark.parametrize("tile", [64, 128, 192])  # 4 bands, 2, 1 (finished in 64-row spans)
def test_bands_are_constrained_on_the_grid_of_a_cropped_jpeg(wild_model, tile):
    jpeg = compress(_texture(203, 171), 30)[5:, 3:]  # the grid now starts at (3, 5)
    grid = find_jpeg_grid(jpeg)
    assert grid is not None and grid.offset == (3, 5) and abs(grid.quality - 30) <= 3
    banded = restore(jpeg, wild_model, tile=tile, overlap=8, jpeg=grid)
    whole = constrain(restore(jpeg, wild_model, tile=tile, overlap=8)[..., None], jpeg[..., None], grid)
    np.testing.assert_array_equal(banded, whole[..., 0])


@pytest.mark.parametrize("quality", [10, 20, 50, 75, 90])
@pytest.mark.parametrize("cut", [(0, 0), (3, 6)])
def test_grid_and_quality_are_found_in_pixels(quality, cut):
    from napari_jpeg_restore.core.evaluation.demo import SAMPLE

    photo = read_image(SAMPLE).array[:256, :320, :3]  # a never-compressed photograph
    for image in (photo, photo[..., 1]):
        found = find_jpeg_grid(compress(image, quality)[cut[0]:, cut[1]:])
        assert found is not None and found.offset == ((-cut[0]) % 8, (-cut[1]) % 8)
        assert abs(found.quality - quality) <= 3


def test_no_grid_in_never_compressed_or_q100_pixels():
    image = _texture()
    assert find_jpeg_grid(image) is None
    assert find_jpeg_grid(compress(image, 100)) is None
    assert find_jpeg_grid(np.dstack([image, image, image, image])) is None  # RGBA: alpha ignored
    assert find_jpeg_grid(image.astype(np.uint16)) is None


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_moves_the_grid(orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    buf = io.BytesIO()
    Image.fromarray(_texture(37, 51)).save(buf, "JPEG", quality=50, exif=exif.tobytes())
    loaded = read_image(buf.getvalue())
    grid = loaded.jpeg_grid
    assert grid.transposed == (orientation >= 5)
    on = _lattice_distance(loaded.array, grid)
    for shift in ((1, 0), (0, 1)):
        wrong = JpegGrid(grid.luma, grid.quality, tuple((o + s) % 8 for o, s in zip(grid.offset, shift)))
        assert _lattice_distance(loaded.array, wrong) > 2 * on
    if orientation >= 5:  # the stored table, not transposed, fits worse
        assert _lattice_distance(loaded.array, JpegGrid(grid.luma.T, grid.quality, grid.offset)) > on


def test_calibration_restores_only_where_every_kind_gains(tmp_path):
    cal = Calibration(np.array([80, 85, 90, 95]),
                      {"on_grid": np.array([0.5, 0.4, 0.3, -1.0]),
                       "off_grid": np.array([0.6, 0.01, 0.2, 0.1])})
    assert cal.restores(80) and not cal.restores(82) and not cal.restores(85)
    assert cal.restores(90) and not cal.restores(92) and not cal.restores(100) and cal.restores(10)
    cal.save(tmp_path / "c.json")
    back = Calibration.load(tmp_path / "c.json")
    assert [back.restores(q) for q in range(1, 101)] == [cal.restores(q) for q in range(1, 101)]


@pytest.mark.parametrize("name", ["crl-lite-gray", "crl-lite-color"])
def test_shipped_models_do_no_harm_at_any_quality(name, tmp_path):
    """Q10...Q100 in steps of 5 on a crop of a bundled sample, as a file is restored: never
    a loss; where the model does not gain (Q95 up) the image comes back bit for bit."""
    from napari_jpeg_restore.core.evaluation.demo import SAMPLE
    from napari_jpeg_restore.core.restoration.file_restore import restore_file
    from napari_jpeg_restore.core.restoration.options import RestoreOptions

    clean = read_image(SAMPLE).array[96:288, 160:352]
    clean = clean if name.endswith("color") else clean[..., 1]
    for q in range(10, 101, 5):
        src, dest = tmp_path / f"q{q}.jpg", tmp_path / f"q{q}.png"
        src.write_bytes(encode_jpeg(clean, q))
        res = restore_file(str(src), str(dest), name,
                           RestoreOptions(device="cpu", skip_above_quality=100))
        assert res.status == "restored"
        jpeg, out = read_image(src).array, read_image(dest).array
        gain = psnr(clean, out) - psnr(clean, jpeg)
        assert gain >= 0, (q, gain)
        if q >= 95:
            np.testing.assert_array_equal(out, jpeg)
        if q <= 50:
            assert gain > 0.5, (q, gain)
