import numpy as np
import pytest
from napari_jpeg_restore.core.jpeg.codec import (
    compress,
    decode_jpeg,
    double_compress,
    encode_jpeg,
    estimate_quality,
    ijg_table,
    random_quality,
    read_quant_tables,
)
from PIL import Image

# IJG tables at quality 50 (scale 100%), natural order, as printed in ITU-T T.81 Annex K.
IJG_LUMA_Q50 = np.array([
    [16, 11, 10, 16, 24, 40, 51, 61],
    [12, 12, 14, 19, 26, 58, 60, 55],
    [14, 13, 16, 24, 40, 57, 69, 56],
    [14, 17, 22, 29, 51, 87, 80, 62],
    [18, 22, 37, 56, 68, 109, 103, 77],
    [24, 35, 55, 64, 81, 104, 113, 92],
    [49, 64, 78, 87, 103, 121, 120, 101],
    [72, 92, 95, 98, 112, 100, 103, 99],
])
IJG_CHROMA_Q50 = np.full((8, 8), 99)
IJG_CHROMA_Q50[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]


@pytest.fixture
def rgb() -> np.ndarray:
    rng = np.random.default_rng(0)
    smooth = np.kron(rng.integers(0, 256, (6, 8, 3)), np.ones((8, 8, 1)))[:45, :61]
    return np.clip(smooth + rng.normal(0, 12, smooth.shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("gray", [True, False])
def test_quality_estimate_is_exact_for_every_pillow_quality(rgb, gray):
    image = rgb[..., 0] if gray else rgb
    for q in range(1, 101):
        est = jpeg_quality(encode_jpeg(image, q))
        assert (est.quality, est.exact, est.distance) == (q, True, 0.0)


def jpeg_quality(source):
    """:func:`estimate_quality` of a JPEG file or bytes; None when it is not a JPEG."""
    try:
        return estimate_quality(read_quant_tables(source))
    except ValueError:
        return None


def test_quality_estimate_nearest_for_a_custom_table():
    table = ijg_table(75).astype(int)
    table[0, :4] += 3  # no libjpeg quality writes this
    est = estimate_quality(table.ravel())
    assert not est.exact and est.distance > 0 and abs(est.quality - 75) <= 2
    assert estimate_quality({0: ijg_table(75), 1: IJG_CHROMA_Q50}).quality == 75


def test_quant_tables_are_in_natural_order(rgb, tmp_path):
    path = tmp_path / "q50.jpg"
    path.write_bytes(encode_jpeg(rgb, 50))
    tables = read_quant_tables(path)
    assert sorted(tables) == [0, 1]
    assert tables[0].dtype == np.uint16 and tables[0].shape == (8, 8)
    np.testing.assert_array_equal(tables[0], IJG_LUMA_Q50)
    np.testing.assert_array_equal(tables[1], IJG_CHROMA_Q50)
    np.testing.assert_array_equal(ijg_table(50), IJG_LUMA_Q50)
    assert read_quant_tables(Image.open(path))[0][0, 1] == 11  # zigzag order would give 11, 12 ...


def test_jpeg_quality_is_none_for_other_files(tmp_path, rgb):
    png = tmp_path / "x.png"
    Image.fromarray(rgb).save(png)
    assert jpeg_quality(png) is None
    assert jpeg_quality(b"not an image") is None
    with pytest.raises(ValueError, match="not a JPEG"):
        read_quant_tables(png)


@pytest.mark.parametrize("channels", [1, 3])
def test_round_trip_shapes_and_dtypes(rgb, channels):
    image = rgb[..., 0] if channels == 1 else rgb
    data = encode_jpeg(image, 40)
    assert data[:2] == b"\xff\xd8"
    out = decode_jpeg(data)
    assert out.shape == image.shape and out.dtype == np.uint8 and out.flags.writeable
    assert np.array_equal(compress(image, 40), out)
    assert np.abs(out.astype(int) - image).mean() < 20


def test_subsampling_changes_colour_output(rgb):
    full, sub = (decode_jpeg(encode_jpeg(rgb, 90, s)) for s in ("4:4:4", "4:2:0"))
    assert np.abs(full.astype(int) - rgb).mean() < np.abs(sub.astype(int) - rgb).mean()


def test_double_compression_differs_from_single(rgb):
    single = compress(rgb, 20)
    double = double_compress(rgb, 20, 40)
    assert double.shape == rgb.shape and double.dtype == np.uint8
    assert not np.array_equal(double, single)
    np.testing.assert_array_equal(double[:4], single[:4])  # outside the shifted window: one pass
    np.testing.assert_array_equal(double[4:, 4:], compress(single[4:, 4:], 40))
    np.testing.assert_array_equal(double_compress(rgb, 20, 40, (0, 0)), compress(single, 40))


@pytest.mark.parametrize("quality", [0, 101, -5, 50.0, True, "50"])
def test_invalid_quality_raises(rgb, quality):
    with pytest.raises(ValueError, match="quality"):
        encode_jpeg(rgb, quality)


def test_invalid_inputs_raise(rgb):
    with pytest.raises(ValueError, match="subsampling"):
        encode_jpeg(rgb, 50, "4:1:1")
    with pytest.raises(ValueError, match="uint8"):
        encode_jpeg(rgb.astype(np.uint16), 50)
    with pytest.raises(ValueError, match="shift"):
        double_compress(rgb, 10, 20, (-1, 4))


def test_random_quality():
    rng = np.random.default_rng(1)
    draws = {random_quality(rng) for _ in range(300)}
    assert draws == set(range(10, 91, 10))
    assert {random_quality(rng, 5, 7, 1) for _ in range(100)} == {5, 6, 7}
    with pytest.raises(ValueError):
        random_quality(rng, 0, 50)
