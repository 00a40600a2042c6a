import io
import os
import struct
import sys
import uuid
import zlib

import fsspec
import numpy as np
import pytest
import tifffile
from napari_jpeg_restore.core.error_text import one_line
from napari_jpeg_restore.core.imageio import reading as images
from napari_jpeg_restore.core.imageio import writing as image_writing
from napari_jpeg_restore.core.imageio.reading import ImageReadError, read_image
from napari_jpeg_restore.core.imageio.writing import ImageWriteError, write_image
from napari_jpeg_restore.core.jpeg.codec import encode_jpeg
from PIL import Image, ImageCms, ImageOps

SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def rgb() -> np.ndarray:
    y, x = np.mgrid[:24, :40]
    return np.stack([x * 6, y * 10, (x + y) * 4], axis=2).astype(np.uint8)


def _save(im: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **options)
    return buf.getvalue()


def _read_error(data: bytes, tmp_path, name: str = "photo.jpg", **kwargs) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(ImageReadError) as info:
        read_image(path, **kwargs)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return message


def _png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming a huge size, with no pixel data."""
    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


# --- bad inputs -----------------------------------------------------------------------------

def test_errors_are_told_in_one_line():
    assert one_line(RuntimeError("Exception from core.cpp:217:\n  cannot   read\n")) == \
        "Exception from core.cpp:217: cannot read"
    assert one_line(ValueError("x" * 500), 200) == "x" * 197 + "..."
    assert one_line(KeyError()) == "KeyError"


def test_truncated_jpeg(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    data = encode_jpeg(noise, 90)
    message = _read_error(data[: len(data) // 2], tmp_path)
    assert "truncated or corrupt JPEG (image file is truncated" in message
    assert "truncated or corrupt JPEG" in _read_error(data[:300], tmp_path)  # inside the header


def test_corrupt_jpeg_scan_tables(rgb, tmp_path):
    data = bytearray(encode_jpeg(rgb, 80))
    dht = data.find(b"\xff\xc4")
    data[dht + 5:dht + 25] = b"\xff" * 20  # a Huffman table libjpeg rejects
    assert "truncated or corrupt JPEG" in _read_error(bytes(data), tmp_path)


def test_corrupt_jpeg_header(rgb, tmp_path):
    data = bytearray(encode_jpeg(rgb, 80))
    sof = data.find(b"\xff\xc0")
    data[sof + 5:sof + 9] = bytes(4)  # zero width and height
    assert _read_error(bytes(data), tmp_path).endswith("corrupt JPEG (unreadable header)")


def test_zero_byte_file(tmp_path):
    assert _read_error(b"", tmp_path).endswith(": empty file")


def test_text_named_jpg(tmp_path):
    assert "not an image" in _read_error(b"hello, I am not a picture\n", tmp_path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_decompression_bomb_is_refused_from_the_header(tmp_path):
    limit = Image.MAX_IMAGE_PIXELS
    message = _read_error(_png_header_only(50_000, 50_000), tmp_path, "bomb.png")
    assert "50000x50000" in message and "--allow-large" in message
    assert Image.MAX_IMAGE_PIXELS == limit  # Pillow's global limit is left as it was


def test_allow_large(monkeypatch, tmp_path, rgb):
    monkeypatch.setattr(images, "MAX_PIXELS", 100)
    data = _save(Image.fromarray(rgb), "PNG")
    assert "--allow-large" in _read_error(data, tmp_path, "big.png")
    np.testing.assert_array_equal(read_image(data, allow_large=True).array, rgb)


# --- colour types and depths -----------------------------------------------------------------

@pytest.mark.parametrize("adobe", [True, False])
def test_cmyk_jpeg_reads_as_rgb(tmp_path, adobe):
    if adobe:  # Pillow writes inverted CMYK with an Adobe APP14 marker, as Photoshop does
        data = _save(Image.new("CMYK", (32, 16), (0, 255, 255, 0)), "JPEG", quality=95)
        assert b"Adobe" in data
    else:  # strip the marker from a file whose stored samples are plain (non-inverted) red
        data = _save(Image.new("CMYK", (32, 16), (255, 0, 0, 255)), "JPEG", quality=95)
        app14 = data.find(b"\xff\xee")
        data = data[:app14] + data[app14 + 2 + int.from_bytes(data[app14 + 2:app14 + 4], "big"):]
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(data)
    loaded = read_image(path)
    assert loaded.array.shape == (16, 32, 3) and loaded.format == "JPEG"
    np.testing.assert_allclose(loaded.array.reshape(-1, 3).mean(0), [255, 0, 0], atol=3)


def test_16bit_gray_png(tmp_path):
    a = np.random.default_rng(0).integers(0, 65536, (20, 30), dtype=np.uint16)
    Image.fromarray(a).save(tmp_path / "g16.png")
    loaded = read_image(tmp_path / "g16.png")
    assert loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array, a)


@pytest.mark.parametrize("channels", [3, 4])
def test_16bit_colour_png_from_libpng(tmp_path, channels):
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(1).integers(0, 65536, (20, 30, channels), dtype=np.uint16)
    a[5:15] = np.cumsum(a[5:15] // 4096, axis=1)  # smooth rows, so libpng picks several filters
    bgr = a[..., [2, 1, 0, 3][:channels]]
    cv2.imwrite(str(tmp_path / "c16.png"), np.ascontiguousarray(bgr))
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.array.dtype == np.uint16 and loaded.has_alpha == (channels == 4)
    np.testing.assert_array_equal(loaded.array, a)


@pytest.mark.parametrize("shape, planar", [((20, 30), None), ((20, 30, 3), "contig"),
                                           ((20, 30, 3), "separate"), ((20, 30, 4), "contig")])
def test_16bit_tiff(tmp_path, shape, planar):
    a = np.random.default_rng(2).integers(0, 65536, shape, dtype=np.uint16)
    data = a if planar != "separate" else np.moveaxis(a, 2, 0)
    tifffile.imwrite(tmp_path / "t16.tif", data, photometric="minisblack" if a.ndim == 2 else "rgb",
                     planarconfig=planar, extrasamples=["unassalpha"] if a.shape[-1] == 4 else None)
    loaded = read_image(tmp_path / "t16.tif")
    assert loaded.format == "TIFF" and loaded.array.dtype == np.uint16
    np.testing.assert_array_equal(loaded.array, a)


def test_palette_png(tmp_path, rgb):
    pal = Image.fromarray(rgb).quantize(16)
    pal.save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    np.testing.assert_array_equal(loaded.array, np.asarray(pal.convert("RGB")))
    assert not loaded.has_alpha
    pal.save(tmp_path / "pt.png", transparency=0)
    loaded = read_image(tmp_path / "pt.png")
    assert loaded.has_alpha and loaded.array.shape == (24, 40, 4)
    np.testing.assert_array_equal(loaded.array[..., 3] == 0, np.asarray(pal) == 0)


def test_alpha_is_kept(tmp_path, rgb):
    rgba = np.dstack([rgb, np.arange(24 * 40).reshape(24, 40).astype(np.uint8)])
    Image.fromarray(rgba).save(tmp_path / "a.png")
    loaded = read_image(tmp_path / "a.png")
    assert loaded.has_alpha
    np.testing.assert_array_equal(loaded.array, rgba)
    Image.fromarray(rgba[..., [0, 3]].copy(), "LA").save(tmp_path / "la.png")
    la = read_image(tmp_path / "la.png").array
    assert la.shape == (24, 40, 4)
    np.testing.assert_array_equal(la, rgba[..., [0, 0, 0, 3]])


def test_exif_rotated_jpeg(tmp_path, rgb):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.fromarray(rgb).save(tmp_path / "rot.jpg", quality=95, exif=exif.tobytes())
    loaded = read_image(tmp_path / "rot.jpg")
    assert loaded.array.shape == (40, 24, 3)
    upright = ImageOps.exif_transpose(Image.open(tmp_path / "rot.jpg"))
    np.testing.assert_array_equal(loaded.array, np.asarray(upright))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(tmp_path, rgb, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(rgb).save(tmp_path / "o.png", exif=exif.tobytes())
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "o.png")))
    np.testing.assert_array_equal(read_image(tmp_path / "o.png").array, expected)


def test_jpeg_quant_tables_and_quality(tmp_path, rgb):
    (tmp_path / "q.jpg").write_bytes(encode_jpeg(rgb, 37))
    loaded = read_image(tmp_path / "q.jpg")
    assert loaded.quality.quality == 37 and loaded.quality.exact
    assert set(loaded.quant_tables) == {0, 1}
    png = read_image(_save(Image.fromarray(rgb), "PNG"))
    assert png.quant_tables is None and png.quality is None and png.path == "<bytes>"


# --- ICC profiles and writing ----------------------------------------------------------------

@pytest.mark.parametrize("fmt, dtype", [("png", np.uint8), ("png", np.uint16), ("tiff", np.uint8),
                                        ("tiff", np.uint16)])
def test_icc_profile_round_trip(tmp_path, rgb, fmt, dtype):
    Image.fromarray(rgb).save(tmp_path / "in.png", icc_profile=SRGB)
    loaded = read_image(tmp_path / "in.png")
    assert loaded.icc_profile == SRGB
    out = tmp_path / f"out.{fmt}"
    scale = 257 if dtype == np.uint16 else 1
    write_image(out, loaded.array.astype(dtype) * scale, format=fmt, icc_profile=loaded.icc_profile)
    again = read_image(out)
    assert again.icc_profile == SRGB and again.array.dtype == dtype
    np.testing.assert_array_equal(again.array, loaded.array.astype(dtype) * scale)


def test_mismatched_icc_profile_is_left_out(tmp_path, rgb):
    write_image(tmp_path / "g.png", rgb[..., 0], icc_profile=SRGB)  # an RGB profile on gray
    assert read_image(tmp_path / "g.png").icc_profile is None


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("shape", [(24, 40), (24, 40, 3), (24, 40, 4)])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_lossless_write_read(tmp_path, fmt, shape, dtype):
    a = np.random.default_rng(3).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    write_image(tmp_path / "x", a, format=fmt)
    loaded = read_image(tmp_path / "x")
    assert loaded.format == ("PNG" if fmt == "png" else "TIFF") and loaded.array.dtype == dtype
    np.testing.assert_array_equal(loaded.array, a)


def test_16bit_colour_png_is_standard(tmp_path):
    cv2 = pytest.importorskip("cv2")
    a = np.random.default_rng(4).integers(0, 65536, (20, 30, 4), dtype=np.uint16)
    write_image(tmp_path / "c.png", a)
    np.testing.assert_array_equal(cv2.imread(str(tmp_path / "c.png"), cv2.IMREAD_UNCHANGED),
                                  a[..., [2, 1, 0, 3]])


def test_atomic_write_leaves_only_the_output(tmp_path, rgb):
    write_image(tmp_path / "out" / "x.png", rgb)
    assert os.listdir(tmp_path / "out") == ["x.png"]


def test_failed_write_keeps_the_old_file_and_no_temp(tmp_path, rgb, monkeypatch):
    dest = tmp_path / "x.png"
    dest.write_bytes(b"old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(image_writing.os, "replace", broken_replace)
    with pytest.raises(ImageWriteError, match="No space left"):
        write_image(dest, rgb)
    assert os.listdir(tmp_path) == ["x.png"] and dest.read_bytes() == b"old"


def test_output_folder_not_writable(tmp_path, rgb):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    with pytest.raises(ImageWriteError) as info:
        write_image(blocker / "out" / "x.png", rgb)  # the "folder" is a regular file
    message = str(info.value)
    assert message.startswith(f"{blocker / 'out' / 'x.png'}: cannot write") and "\n" not in message
    assert os.listdir(tmp_path) == ["file"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder(tmp_path, rgb):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(ImageWriteError, match="Permission denied"):
            write_image(folder / "x.png", rgb)
        assert os.listdir(folder) == []
    finally:
        folder.chmod(0o700)


def test_invalid_arrays_and_formats(tmp_path, rgb):
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", rgb.astype(np.float32))
    with pytest.raises(ValueError):
        write_image(tmp_path / "x.png", rgb[..., :2])
    with pytest.raises(ValueError, match="format"):
        write_image(tmp_path / "x.jpg", rgb, format="jpeg")
    assert os.listdir(tmp_path) == []


# --- fsspec and naming -----------------------------------------------------------------------

@pytest.fixture
def memory_root():
    root = f"memory://test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def test_memory_round_trip(memory_root, rgb):
    url = f"{memory_root}/out/x.png"
    write_image(url, rgb, icc_profile=SRGB)
    loaded = read_image(url)
    assert loaded.path == url and loaded.icc_profile == SRGB
    np.testing.assert_array_equal(loaded.array, rgb)
    fs = fsspec.filesystem("memory")
    assert [p.rsplit("/", 1)[-1] for p in fs.find(memory_root)] == ["x.png"]
    with pytest.raises(ImageReadError, match="no such file"):
        read_image(f"{memory_root}/missing.png")


def test_memory_failed_move_leaves_no_temp(memory_root, rgb, monkeypatch):
    fs = fsspec.filesystem("memory")

    def broken_mv(*args, **kwargs):
        raise OSError("backend went away")

    monkeypatch.setattr(type(fs), "mv", broken_mv)
    with pytest.raises(ImageWriteError, match="backend went away"):
        write_image(f"{memory_root}/x.png", rgb)
    assert fs.find(memory_root) == []


@pytest.mark.parametrize("fmt", ["png", "tiff"])
@pytest.mark.parametrize("shape, dtype", [((300, 517), np.uint8), ((300, 517, 3), np.uint16),
                                          ((261, 300, 4), np.uint8)])
def test_bands_of_any_height_write_the_whole_image(tmp_path, fmt, shape, dtype):
    from napari_jpeg_restore.core.imageio.writing import write_image_bands

    a = np.random.default_rng(0).integers(0, np.iinfo(dtype).max, shape, dtype=dtype)
    cuts = [0, 1, 90, 91, 256, 299, shape[0]]
    bands = ((y, a[y:z]) for y, z in zip(cuts, cuts[1:]) if z > y)
    write_image_bands(tmp_path / "x", shape, dtype, bands, format=fmt)
    np.testing.assert_array_equal(read_image(tmp_path / "x").array, a)


def test_png_is_the_same_image_with_zlib_where_isal_is_missing(tmp_path, monkeypatch):
    yy, xx = np.mgrid[:120, :200]
    a = np.dstack([xx, yy, xx ^ yy]).astype(np.uint8)  # compressible: the deflaters differ
    write_image(tmp_path / "isal.png", a)
    monkeypatch.setitem(sys.modules, "isal", None)  # no wheel for this machine: zlib writes
    write_image(tmp_path / "zlib.png", a)
    assert (tmp_path / "isal.png").read_bytes() != (tmp_path / "zlib.png").read_bytes()
    for name in ("isal.png", "zlib.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name).array, a)


def test_decoding_needs_memory_that_is_there(tmp_path, monkeypatch):
    path = tmp_path / "x.jpg"
    path.write_bytes(encode_jpeg(np.zeros((64, 64), np.uint8), 50))
    monkeypatch.setattr(images, "available_memory", lambda: 1000)
    with pytest.raises(ImageReadError, match=r"x\.jpg: 64x64 pixels need about .* GiB of memory"):
        read_image(path)
    monkeypatch.setattr(images, "available_memory", lambda: None)  # unknown: no refusal
    assert read_image(path).array.shape == (64, 64)


def test_a_failing_band_producer_keeps_its_error_and_leaves_nothing(tmp_path):
    from napari_jpeg_restore.core.imageio.writing import write_image_bands

    def bands():
        yield 0, np.zeros((4, 8), np.uint8)
        raise RuntimeError("the model ran out of memory")

    with pytest.raises(RuntimeError, match="ran out of memory"):
        write_image_bands(tmp_path / "x.png", (8, 8), np.uint8, bands())
    assert list(tmp_path.iterdir()) == []  # no output, no temp file


def test_a_write_on_s3_removes_only_its_own_stale_temporaries():
    """A killed writer's temporary keys of an output go with the next write of that output; the
    cleanup lists only that output's keys (prefix listing), and leaves every other key alone."""
    pytest.importorskip("s3fs")
    pytest.importorskip("moto.server")
    from helpers import moto_s3
    from napari_jpeg_restore.core.imageio.filesystem import stale_temporaries, write_atomically

    with moto_s3() as endpoint:
        so = {"endpoint_url": endpoint}
        fs = fsspec.filesystem("s3", **so)
        fs.mkdir("out")
        fs.pipe_file("out/a.png.tmp-dead1", b"left by a killed writer")
        fs.pipe_file("out/ab.png.tmp-dead2", b"another output's, still being written")
        fs.pipe_file("out/b.png", b"a finished output")
        fs.glob = lambda *a, **k: pytest.fail("a glob lists the whole folder at every write")
        try:
            assert stale_temporaries(fs, "out/a.png") == ["out/a.png.tmp-dead1"]
            write_atomically("s3://out/a.png", lambda f: f.write(b"new"), so)
        finally:
            del fs.glob
        fs.invalidate_cache()
        assert sorted(fs.ls("out")) == ["out/a.png", "out/ab.png.tmp-dead2", "out/b.png"]
        assert fs.cat_file("out/a.png") == b"new"
