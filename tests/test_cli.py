"""The jpeg-restore CLI end to end: a batch with bad files goes on, outputs are written
atomically, inputs are never overwritten, and each bad input gets one clear line."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from napari_jpeg_restore.core.cli import main
from napari_jpeg_restore.core.imageio import reading as images
from napari_jpeg_restore.core.imageio.reading import read_image
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.jpeg.codec import decode_jpeg, encode_jpeg
from napari_jpeg_restore.core.models import create_model
from napari_jpeg_restore.core.registry import MODELS, save_weights
from PIL import Image, ImageCms


def _photo(h=64, w=96, seed=0):
    yy, xx = np.mgrid[:h, :w]
    rgb = np.stack([xx * 2, yy * 3, (xx + yy)], axis=2) + np.random.default_rng(seed).normal(0, 4, (h, w, 3))
    return np.clip(rgb, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    """A small colour model (ARCNN, perturbed so outputs differ from inputs)."""
    torch.manual_seed(0)
    model = create_model("arcnn", channels=3)
    with torch.no_grad():
        model.body[-1].weight.normal_(0, 1e-3)
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    save_weights(model, path, {"note": "test"})
    return str(path)


@pytest.fixture
def batch(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "good.jpg").write_bytes(encode_jpeg(_photo(), 20))
    (src / "gray.jpg").write_bytes(encode_jpeg(_photo()[..., 0], 20))
    data = encode_jpeg(_photo(seed=1), 90)
    (src / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (src / "empty.jpg").write_bytes(b"")
    (src / "notes.jpg").write_text("this is not a picture\n")
    return src


def _outputs(folder):
    return sorted(p.name for p in folder.iterdir())


def test_batch_goes_on_past_bad_files(batch, tmp_path, weights, capsys):
    out = tmp_path / "out"
    before = {p.name: p.read_bytes() for p in batch.iterdir()}
    rc = main(["restore", str(batch), "-o", str(out), "--model", weights])
    err = capsys.readouterr().err
    assert rc == 1
    assert _outputs(out) == ["good.png", "gray.png"]
    lines = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(lines) == 3 and "Traceback" not in err
    assert any("truncated.jpg" in l and "truncated or corrupt JPEG" in l for l in lines)
    assert any("empty.jpg" in l and "empty" in l for l in lines)
    assert any("notes.jpg" in l and "not an image" in l for l in lines)
    assert "restored 2, skipped 0, failed 3" in err
    assert {p.name: p.read_bytes() for p in batch.iterdir()} == before  # inputs untouched
    good = read_image(out / "good.png").array
    assert good.shape == (64, 96, 3) and read_image(out / "gray.png").array.shape == (64, 96)


def test_skip_existing_and_resume(batch, tmp_path, weights, capsys):
    out = tmp_path / "out"
    main(["restore", str(batch / "good.jpg"), "-o", str(out), "--model", weights])
    stamp = (out / "good.png").stat().st_mtime_ns
    rc = main(["restore", str(batch / "good.jpg"), str(batch / "gray.jpg"), "-o", str(out),
               "--model", weights, "--skip-existing"])
    assert rc == 0 and "restored 1, skipped 1" in capsys.readouterr().err
    assert (out / "good.png").stat().st_mtime_ns == stamp


def test_restore_with_ensemble_writes_the_x8_average(batch, tmp_path, weights):
    from napari_jpeg_restore.core import restore

    loaded = read_image(batch / "good.jpg")
    assert main(["restore", str(batch / "good.jpg"), "-o", str(tmp_path / "e"), "--model", weights,
                 "--ensemble"]) == 0
    written = read_image(tmp_path / "e" / "good.png").array
    grid = loaded.jpeg_grid
    # The CLI's default --precision auto, as restore() is told here.
    np.testing.assert_array_equal(written, restore(loaded.array, weights, ensemble=True, jpeg=grid,
                                                   precision="auto"))
    assert not np.array_equal(written, restore(loaded.array, weights, jpeg=grid, precision="auto"))


def test_threads_option_sets_the_network_threads_and_is_checked(batch, tmp_path, weights, capsys):
    before = torch.get_num_threads()
    try:
        assert main(["restore", str(batch / "good.jpg"), "-o", str(tmp_path / "t"), "--model", weights,
                     "--threads", "1"]) == 0
        assert torch.get_num_threads() == 1 and (tmp_path / "t" / "good.png").is_file()
    finally:
        torch.set_num_threads(before)
    with pytest.raises(SystemExit) as exit_:
        main(["restore", str(batch / "good.jpg"), "-o", str(tmp_path / "u"), "--threads", "0"])
    assert exit_.value.code == 2 and "thread count must be 1 or more" in capsys.readouterr().err


def test_never_overwrites_an_input(tmp_path, weights, capsys):
    src = tmp_path / "pic.png"
    write_image(src, _photo())
    before = src.read_bytes()
    rc = main(["restore", str(src), "-o", str(tmp_path), "--model", weights])
    assert rc == 1 and "is an input" in capsys.readouterr().err
    assert src.read_bytes() == before


def test_progress_counts_tiles_of_one_image(tmp_path, weights, capsys, monkeypatch):
    import functools

    from napari_jpeg_restore.core.restoration import file_restore

    # A big image's bar, without the wait and with every update drawn, however fast the machine.
    monkeypatch.setattr(file_restore, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(file_restore, "tqdm", functools.partial(file_restore.tqdm, mininterval=0, miniters=1))
    src = tmp_path / "one.jpg"
    src.write_bytes(encode_jpeg(_photo(128, 128), 30))
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--model", weights,
                 "--tile", "64", "--overlap", "8"]) == 0
    err = capsys.readouterr().err
    counts = [tuple(map(int, m)) for m in re.findall(r"one\.jpg:.*?(\d+)/(\d+) \[", err)]
    assert counts and {total for _, total in counts} == {9}  # 3 x 3 tiles of 64 px
    assert len({done for done, _ in counts}) > 1  # a bar that moves within the one image


def test_high_quality_jpegs_are_skipped_by_default(tmp_path, weights, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "fine.jpg").write_bytes(encode_jpeg(_photo(), 97))
    (tmp_path / "in" / "coarse.jpg").write_bytes(encode_jpeg(_photo(), 30))
    write_image(tmp_path / "in" / "never.png", _photo())  # never compressed: nothing to remove
    write_image(tmp_path / "in" / "was_jpeg.png", decode_jpeg(encode_jpeg(_photo(), 30)))
    assert main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "o"), "--model", weights]) == 0
    assert ("restored 2, skipped 2 (1 JPEG quality above 90, 1 no JPEG compression found)"
            in capsys.readouterr().err)
    assert _outputs(tmp_path / "o") == ["coarse.png", "was_jpeg.png"]
    assert main(["restore", str(tmp_path / "in" / "fine.jpg"), "-o", str(tmp_path / "o"),
                 "--model", weights, "--skip-above-quality", "100"]) == 0
    assert (tmp_path / "o" / "fine.png").is_file()


def test_empty_folder_says_no_images(tmp_path, weights, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["restore", str(tmp_path / "empty"), "-o", str(tmp_path / "o"), "--model", weights])
    err = capsys.readouterr().err
    assert rc == 1 and "no images in this folder" in err and "no such file" not in err
    assert "failed 1" in err


def test_output_folder_not_writable(batch, tmp_path, weights, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    rc = main(["restore", str(batch / "good.jpg"), "-o", str(blocker / "sub"), "--model", weights])
    err = capsys.readouterr().err
    assert rc == 2 and "not writable" in err and len(err.strip().splitlines()) == 1


def test_missing_input_is_reported(tmp_path, weights, capsys):
    rc = main(["restore", str(tmp_path / "nope.jpg"), "-o", str(tmp_path / "o"), "--model", weights])
    err = capsys.readouterr().err
    assert rc == 1 and "nope.jpg" in err and "failed 1" in err


def test_decompression_bomb_needs_allow_large(tmp_path, weights, capsys, monkeypatch):
    src = tmp_path / "big.jpg"
    src.write_bytes(encode_jpeg(_photo(), 50))
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    rc = main(["restore", str(src), "-o", str(tmp_path / "o"), "--model", weights])
    assert rc == 1 and "--allow-large" in capsys.readouterr().err
    rc = main(["restore", str(src), "-o", str(tmp_path / "o"), "--model", weights, "--allow-large"])
    assert rc == 0 and (tmp_path / "o" / "big.png").is_file()


def test_cmyk_palette_alpha_16bit_exif_icc(tmp_path, weights):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    photo = _photo()
    Image.fromarray(photo).convert("CMYK").save(src / "cmyk.jpg", quality=90)
    Image.fromarray(photo).quantize(16).save(src / "palette.png")
    write_image(src / "alpha.png", np.dstack([photo, np.full(photo.shape[:2], 77, np.uint8)]))
    write_image(src / "deep.png", (photo[..., 0].astype(np.uint16) * 257))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    Image.fromarray(photo).save(src / "rotated.jpg", quality=80, exif=exif.tobytes())
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.fromarray(photo).save(src / "icc.jpg", quality=80, icc_profile=srgb)
    assert main(["restore", str(src), "-o", str(out), "--model", weights,
                 "--skip-above-quality", "100"]) == 0
    assert read_image(out / "cmyk.png").array.shape == (64, 96, 3)
    assert read_image(out / "palette.png").array.shape == (64, 96, 3)
    alpha = read_image(out / "alpha.png").array
    assert alpha.shape == (64, 96, 4) and (alpha[..., 3] == 77).all()
    deep = read_image(out / "deep.png").array
    assert deep.dtype == np.uint16 and abs(deep.astype(int) - photo[..., 0].astype(int) * 257).mean() < 2 * 257
    assert read_image(out / "rotated.png").array.shape == (96, 64, 3)  # shown upright
    assert read_image(out / "icc.png").icc_profile == srgb


def test_quality_command(tmp_path, capsys):
    (tmp_path / "a.jpg").write_bytes(encode_jpeg(_photo(), 37))
    write_image(tmp_path / "b.png", _photo())
    write_image(tmp_path / "c.png", decode_jpeg(encode_jpeg(_photo(), 37))[3:, 2:])
    assert main(["quality", str(tmp_path / "a.jpg"), str(tmp_path / "b.png"), str(tmp_path / "c.png")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "tables: Q37 (exact)" in out[0] and "pixels: " not in out[0]  # no traces needed
    assert "(estimated from pixels)" in out[0]
    assert "tables: -" in out[1] and "pixels: no JPEG traces" in out[1]
    assert re.search(r"pixels: JPEG ~Q3[4-9], 8x8 grid at \(5, 6\)", out[2]), out[2]


def test_eval_jpeg_row(tmp_path, capsys):
    for i in range(2):
        write_image(tmp_path / f"{i}.png", _photo(seed=i)[..., 1])
    assert main(["eval", "--data", str(tmp_path), "--quality", "10", "10+30", "--jpeg-only"]) == 0
    table = capsys.readouterr().out
    assert "| 10 |" in table and "| 10+30 |" in table


def test_models_lists_registry(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in MODELS:
        assert name in out


def test_demo_with_shipped_weights(tmp_path, capsys):
    if not any(m.has_weights for m in MODELS.values()):
        assert main(["demo", "-o", str(tmp_path)]) == 2
        assert "no shipped weights" in capsys.readouterr().err
        return
    assert main(["demo", "-o", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "side_by_side.png").is_file()
    gain = float(out.split("gain: ")[1].split(" dB")[0])
    assert gain > 0.3


def test_embed_plots_and_scores(tmp_path, capsys):
    import json

    enc = tmp_path / "enc.pt"
    save_weights(create_model("cqe", "lite", 1), enc)
    for i in range(3):
        write_image(tmp_path / "data" / f"{i}.png", _photo(128, 128, seed=i)[..., 0])
    plot = tmp_path / "emb.png"
    rc = main(["embed", str(tmp_path / "data"), "--model", str(enc), "--crop", "64", "--projection", "pca",
               "--quality", "10", "50", "90", "--unseen", "30", "--plot", str(plot)])
    assert rc == 0 and plot.stat().st_size > 10_000
    report = json.loads(capsys.readouterr().out)
    assert report["qualities"] == [10, 30, 50, 90] and 0 <= report["spearman_pc1"] <= 1
    assert 0 <= report["spearman_within_image"] <= 1
    assert 0 <= report["unseen_between"] <= 1 and 0 <= report["probe_within_10"] <= 1


def test_quality_ordering_separates_content_from_quality():
    from napari_jpeg_restore.core.quality.embedding import quality_ordering

    q = np.tile(np.arange(10, 91, 10), 12)
    image = np.repeat(np.arange(12), 9)
    content = np.random.default_rng(0).normal(0, 3, 12)[image]  # each picture shifts its embeddings
    e = (q / 90.0 + content)[:, None]
    scores = quality_ordering(e, q, groups=image)
    assert scores["spearman_within_image"] == pytest.approx(1.0)
    assert scores["spearman_pc1"] < 0.5  # across images content dominates


def test_unseen_qualities_between_their_neighbours_and_knn_within_10():
    from napari_jpeg_restore.core.quality.embedding import quality_ordering, unseen_between

    levels = np.arange(10, 91, 10)
    q = np.tile(levels, 5)
    e = (q + np.random.default_rng(0).normal(0, 0.5, len(q)))[:, None]  # a line ordered by Q
    scores = quality_ordering(e, q)
    assert scores["knn_accuracy"] > 0.9 and scores["knn_within_10"] == 1.0
    unseen = np.array([5, 15, 45, 95])
    assert unseen_between(e, q, unseen[:, None].astype(float), unseen) == 1.0
    assert unseen_between(e, q, unseen[::-1, None].astype(float), unseen) == 0.0  # reversed


def test_restore_between_fsspec_urls(weights, capsys):
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.pipe("/cli-in/a.jpg", encode_jpeg(_photo(), 30))
    fs.pipe("/cli-in/sub/b.jpg", encode_jpeg(_photo(seed=2), 30))
    fs.pipe("/cli-in/broken.jpg", b"\xff\xd8 nope")
    rc = main(["restore", "memory://cli-in/", "-o", "memory://cli-out", "--model", weights])
    assert rc == 1 and "broken.jpg" in capsys.readouterr().err
    assert sorted(fs.ls("/cli-out", detail=False)) == ["/cli-out/a.png", "/cli-out/b.png"]


def test_same_stem_in_two_folders_is_not_overwritten(tmp_path, weights, capsys):
    for sub, seed in (("a", 1), ("b", 2)):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / "x.jpg").write_bytes(encode_jpeg(_photo(seed=seed), 30))
    rc = main(["restore", str(tmp_path / "a"), str(tmp_path / "b"), "-o", str(tmp_path / "out"), "--model", weights])
    err = capsys.readouterr().err
    assert rc == 1 and "would write the same output" in err
    assert str(tmp_path / "a" / "x.jpg") in err and str(tmp_path / "b" / "x.jpg") in err
    assert _outputs(tmp_path / "out") == []  # neither wins by the order of the arguments
    assert read_image("memory://cli-out/a.png").array.shape == (64, 96, 3)


def test_calibrate_makes_a_harmful_model_pass_through(tmp_path, weights, capsys):
    """A random network loses PSNR at every quality: once calibrated, it leaves JPEGs as they are."""
    import shutil

    from napari_jpeg_restore.core.registry import load_model

    model = tmp_path / "harmful.pt"
    shutil.copy(weights, model)
    (tmp_path / "train").mkdir()
    for i in range(2):
        write_image(tmp_path / "train" / f"{i}.png", _photo(160, 176, seed=i))
    src = tmp_path / "x.jpg"
    src.write_bytes(encode_jpeg(_photo(seed=5), 20))
    assert main(["restore", str(src), "-o", str(tmp_path / "before"), "--model", str(model)]) == 0
    assert not np.array_equal(read_image(tmp_path / "before" / "x.png").array, read_image(src).array)
    assert main(["calibrate", str(model), "--data", str(tmp_path / "train"), "--crops", "2"]) == 0
    assert "restores no quality" in capsys.readouterr().out
    assert (tmp_path / "harmful.calibration.json").is_file()
    assert load_model(model).calibration is not None
    assert main(["restore", str(src), "-o", str(tmp_path / "after"), "--model", str(model)]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "after" / "x.png").array, read_image(src).array)


def test_model_from_a_url_with_its_calibration(tmp_path, weights, monkeypatch, capsys):
    """--model takes an fsspec URL (here memory://; s3:// alike): the weights and the
    calibration beside them are fetched to the cache and used."""
    import fsspec
    from napari_jpeg_restore.core.jpeg.consistency import Calibration

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    fs.pipe_file("/models/m.pt", Path(weights).read_bytes())
    never = Calibration(np.array([10, 100]), {"on_grid": np.array([-1.0, -1.0])})
    never.save(tmp_path / "c.json")
    fs.pipe_file("/models/m.calibration.json", (tmp_path / "c.json").read_bytes())
    src = tmp_path / "x.jpg"
    src.write_bytes(encode_jpeg(_photo(seed=5), 20))
    assert main(["restore", str(src), "-o", str(tmp_path / "o"), "--model", "memory://models/m.pt"]) == 0
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "x.png").array, read_image(src).array)
    fs.rm("/models/m.calibration.json")  # without it the model restores
    assert main(["restore", str(src), "-o", str(tmp_path / "p"), "--model", "memory://models/m.pt"]) == 0
    assert not np.array_equal(read_image(tmp_path / "p" / "x.png").array, read_image(src).array)
    assert main(["restore", str(src), "-o", str(tmp_path / "q"), "--model", "memory://models/none.pt"]) == 2
    assert "no weights file at memory://models/none.pt" in capsys.readouterr().err
