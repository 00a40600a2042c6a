"""What a restoration assumes about an image's compression (core.compression): the file's
tables, a re-saved JPEG read from its pixels, the user's --assume-quality, and a restorer
conditioned on the table it is given."""
import json

import numpy as np
import pytest
import torch
from helpers import conditioned_restorer
from napari_jpeg_restore.core import restore
from napari_jpeg_restore.core.cli import main
from napari_jpeg_restore.core.engines.net import run_net
from napari_jpeg_restore.core.engines.torch_net import TorchNet
from napari_jpeg_restore.core.evaluation.metrics import psnr
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.jpeg.codec import compress, encode_jpeg, ijg_table
from napari_jpeg_restore.core.jpeg.consistency import JpegGrid
from napari_jpeg_restore.core.restoration.compression import assess


@pytest.fixture(scope="module")
def gray(sample_gray):
    return sample_gray[:256, :320]


def test_tables_are_trusted_unless_the_pixels_show_a_much_stronger_earlier_compression(gray):
    q90 = assess(compress(gray, 90)[..., None], JpegGrid.ijg(90))
    assert (q90.source, q90.quality, q90.grid is not None) == ("tables", 90, True)
    resaved = assess(compress(compress(gray, 20), 95)[..., None], JpegGrid.ijg(95))
    assert resaved.source == "pixels" and abs(resaved.quality - 20) <= 10
    assert resaved.grid is None and resaved.tables_quality == 95  # no clipping to the Q95 file
    assert "the tables say Q95" in resaved.describe()
    told = assess(compress(gray, 90)[..., None], JpegGrid.ijg(90), assume_quality=30)
    assert (told.source, told.quality, told.grid) == ("assumed", 30, None)
    assert assess(gray[..., None], None).quality is None  # nothing known, nothing estimated
    guessed = assess(compress(gray, 30)[..., None], None, estimate=True)
    assert guessed.source == "pixels" and abs(guessed.quality - 30) <= 10
    assert np.array_equal(guessed.steps, ijg_table(guessed.quality))
    cropped = compress(gray, 30)[3:, 5:, None]  # its grid is not at the top left any more
    assert abs(assess(cropped, None, estimate=True).quality - 30) <= 10


def test_the_quality_command_reads_a_cropped_picture_on_its_grid(gray, tmp_path, capsys):
    from napari_jpeg_restore.core.imageio.writing import write_image

    write_image(tmp_path / "crop.png", compress(gray, 30)[3:, 5:])
    assert main(["quality", "--json", str(tmp_path / "crop.png")]) == 0
    row = json.loads(capsys.readouterr().out)
    assert abs(row["encoder_quality"] - 30) <= 10, row  # read at the top left it was ~Q80


def test_a_resaved_jpeg_is_restored_not_skipped(gray, tmp_path, capsys):
    (tmp_path / "in").mkdir()
    resaved = compress(gray, 20)
    (tmp_path / "in" / "shared.jpg").write_bytes(encode_jpeg(resaved, 95))  # tables say Q95
    assert main(["quality", str(tmp_path / "in" / "shared.jpg")]) == 0
    said = capsys.readouterr().out
    assert "tables: Q95 (exact)" in said and "(estimated from pixels; the tables say Q95)" in said
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "o")]) == 0
    assert "restored 1, skipped 0" in capsys.readouterr().err
    decoded = read_image(tmp_path / "in" / "shared.jpg").array
    out = read_image(tmp_path / "o" / "shared.png").array
    assert psnr(gray, out) > psnr(gray, decoded) + 0.5


def test_assume_quality_reaches_a_conditioned_model_and_is_checked(gray, tmp_path, capsys):
    from napari_jpeg_restore.core.registry import save_weights

    weights = tmp_path / "conditioned.pt"
    save_weights(conditioned_restorer(), weights)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fine.jpg").write_bytes(encode_jpeg(gray, 85))
    for out, extra in (("a", []), ("b", ["--assume-quality", "15"])):
        assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / out),
                     "--model", str(weights), "--precision", "fp32", *extra]) == 0
    src = read_image(tmp_path / "in" / "fine.jpg").array
    told = read_image(tmp_path / "b" / "fine.png").array
    assert np.array_equal(told, restore(src, str(weights), assume_quality=15))
    assert not np.array_equal(told, read_image(tmp_path / "a" / "fine.png").array)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "c"), "--assume-quality", "0"])
    assert exit_.value.code == 2 and "must be a whole number in 1..100, got '0'" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_a_conditioned_restorer_sees_the_table_turned_with_the_picture(gray):
    model = conditioned_restorer()
    net = TorchNet(model.eval(), torch.device("cpu"), "fp32")
    x = (compress(gray, 20)[:64, :96].astype(np.float32) / 255)[None, None]
    steps = np.arange(1, 65, dtype=np.float32).reshape(8, 8)  # asymmetric: a turn shows
    t, t_turned = (a.reshape(1, 64).copy() for a in (steps, steps.T))
    ens = run_net(net, x, ensemble=True, tables=t)
    turned = run_net(net, x.swapaxes(-1, -2), ensemble=True, tables=t_turned)
    assert np.allclose(turned.swapaxes(-1, -2), ens, atol=1e-5)
    assert not np.allclose(run_net(net, x, tables=t), run_net(net, x, tables=t_turned))
    # restore() hands the file's table to the model, or the pixel estimate's without one
    jpeg = compress(gray, 20)
    with_tables = restore(jpeg, model, jpeg=JpegGrid.ijg(20), calibrated=False)
    assumed = restore(jpeg, model, jpeg=JpegGrid.ijg(20), assume_quality=20, calibrated=False)
    assert np.array_equal(with_tables, assumed)  # the same table either way
    stronger = restore(jpeg, model, jpeg=JpegGrid.ijg(20), assume_quality=10, calibrated=False)
    assert not np.array_equal(with_tables, stronger)
    assert restore(jpeg, model).shape == jpeg.shape  # no tables: estimated from the pixels


def test_without_a_shipped_quality_encoder_the_tables_are_trusted(gray, tmp_path, monkeypatch):
    from napari_jpeg_restore.core import registry

    monkeypatch.setattr(registry, "WEIGHTS_DIR", tmp_path)  # an install without cqe-lite weights
    resaved = assess(compress(compress(gray, 20), 95)[..., None], JpegGrid.ijg(95))
    assert (resaved.source, resaved.quality) == ("tables", 95)  # no noisy guess overrules them
    assert assess(gray[..., None], None, estimate=True).source == "none"


def test_the_quality_encoder_reads_every_dtype_as_the_restorer_maps_it(gray):
    from napari_jpeg_restore.core.quality.reading import encoder_uint8

    twelve_bit = gray.astype(np.uint16) * 16  # 12-bit camera data: read as its 8-bit version
    assert np.abs(encoder_uint8(twelve_bit).astype(int) - gray).max() <= 1
    assert np.array_equal(encoder_uint8(gray.astype(np.int16)), gray)  # 8-bit values in int16
    unit = gray.astype(np.float32) / 255
    unit[0, 0] = np.nan  # a NaN pixel does not stop the reading
    read = encoder_uint8(unit)
    assert read.dtype == np.uint8 and np.array_equal(read[1:], gray[1:])
    # Every reader of a whole picture (jpeg-restore quality, the re-saved check) maps it so.
    from napari_jpeg_restore.core.engines.selection import open_quality_net
    from napari_jpeg_restore.core.quality.reading import pixel_quality

    encoder = open_quality_net("cqe-lite-gray")  # read by 65535, the 12-bit picture was ~Q78, not ~Q30
    eight = compress(gray, 30)
    assert abs(pixel_quality(encoder, eight.astype(np.uint16) * 16) - pixel_quality(encoder, eight)) < 1


def test_one_plan_for_every_shell(gray):
    """plan_image decides for the CLI, the widget and the Ray job: the JPEG's grid from the
    tables or the pixels, what the restoration assumes, and what is left alone."""
    from napari_jpeg_restore.core.restoration.options import RestoreOptions
    from napari_jpeg_restore.core.restoration.plan import plan_image

    found = plan_image(compress(gray, 30))  # a JPEG saved as PNG: its traces
    assert found.grid is not None and abs(found.grid.quality - 30) <= 5 and found.skip is None
    assert found.compression.quality == found.grid.quality
    assert plan_image(gray).skip == "no JPEG compression found"
    rgb = np.repeat(compress(gray, 30)[..., None], 3, axis=2)
    rgba = np.dstack([rgb, np.full(gray.shape, 7, np.uint8)])
    assert plan_image(rgba).grid is not None  # alpha is no part of the compression
    fine = compress(gray, 95)
    assert plan_image(fine, JpegGrid.ijg(95)).skip == "JPEG quality above 90"
    assert plan_image(fine, JpegGrid.ijg(95), RestoreOptions(skip_above_quality=100)).skip is None
    told = plan_image(fine, JpegGrid.ijg(95), RestoreOptions(assume_quality=20))
    assert (told.compression.source, told.compression.quality, told.skip) == ("assumed", 20, None)
