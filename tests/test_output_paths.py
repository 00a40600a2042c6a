"""Outputs are planned before anything is written: never on an input, never outside the
destination, never one output for two inputs. Property-based over folders of colliding names."""
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from napari_jpeg_restore.core.cli import main
from napari_jpeg_restore.core.imageio.output_paths import (
    UnsafeOutputError,
    canonical,
    join_under,
    output_path,
    plan_outputs,
)
from napari_jpeg_restore.core.imageio.writing import write_image
from napari_jpeg_restore.core.jpeg.codec import encode_jpeg
from napari_jpeg_restore.core.models import create_model
from napari_jpeg_restore.core.registry import save_weights

STEMS = ["photo", "Photo", "a", "a.b"]
SUFFIXES = [".jpg", ".JPG", ".jpeg", ".png", ".PNG", ".tif", ".tiff"]
KINDS = ["jpeg", "png", "corrupt"]


def _pixels(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (16, 24), dtype=np.uint8)


def _write(path: Path, kind: str, seed: int) -> None:
    if kind == "jpeg":
        path.write_bytes(encode_jpeg(_pixels(seed), 20))
    elif kind == "png":
        write_image(str(path) + ".tmp.png", _pixels(seed))
        os.replace(str(path) + ".tmp.png", path)
    else:
        path.write_bytes(b"\xff\xd8\xff not really a JPEG")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    torch.manual_seed(0)
    model = create_model("arcnn", channels=1)
    with torch.no_grad():
        model.body[-1].weight.normal_(0, 1e-3)  # outputs differ from inputs
    path = tmp_path_factory.mktemp("w") / "tiny.pt"
    save_weights(model, path, {"note": "test"})
    return str(path)


def test_output_path():
    assert output_path("/data/in/photo.jpg", "/data/out", "png") == "/data/out/photo.png"
    assert output_path("s3://b/in/x.photo.JPG", "s3://b/out/", "tiff") == "s3://b/out/x.photo.tif"
    assert output_path("photo.jpeg", "", "png") == "photo.png"
    assert output_path("s3://b/in/../../escape1.jpg", "/out", "png") == "/out/escape1.png"
    with pytest.raises(ValueError):
        output_path("photo.jpg", "out", "jpeg")


@pytest.mark.parametrize("key", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "C:/x.jpg", "..", "./"])
def test_join_under_refuses_keys_that_leave_the_root(key):
    with pytest.raises(UnsafeOutputError):
        join_under("/dst/out", key)


def test_join_under_normalises_harmless_segments():
    assert join_under("s3://b/out/", "./a//b.png") == "s3://b/out/a/b.png"


def test_canonical_is_one_spelling_per_file(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    f = tmp_path / "d" / "x.png"
    assert canonical(str(tmp_path / "link" / "x.png")) == canonical(f"file://{f}") == str(f.resolve())
    assert canonical("s3://b/in/../x.png") == "s3://b/x.png"
    assert canonical("s3://b/X.png", fold=True) == "s3://b/x.png"


def test_the_reported_overwrite_is_refused(tmp_path, weights, capsys):
    """The issue's case: ``restore d/ -o d/`` with photo.jpg and photo.png in d/."""
    d = tmp_path / "d"
    d.mkdir()
    _write(d / "photo.jpg", "jpeg", 1)
    _write(d / "photo.png", "png", 2)
    before = _snapshot(d)
    assert main(["restore", str(d), "-o", str(d), "--model", weights]) == 1
    err = capsys.readouterr().err
    assert "photo.jpg" in err and "is an input" in err
    assert _snapshot(d) == before


def test_plan_refuses_both_inputs_of_one_output(tmp_path):
    plan = plan_outputs([str(tmp_path / "a.jpg"), str(tmp_path / "a.jpeg"), str(tmp_path / "b.jpg")],
                        str(tmp_path / "out"))
    assert [Path(d).name for _, d in plan.pairs] == ["b.png"]
    assert set(plan.refused) == {str(tmp_path / "a.jpg"), str(tmp_path / "a.jpeg")}
    assert all("a.jpg" in m and "a.jpeg" in m for m in plan.refused.values())


def test_plan_folds_case_on_a_case_insensitive_folder(tmp_path, monkeypatch):
    from napari_jpeg_restore.core.imageio import output_paths

    monkeypatch.setattr(output_paths, "folds_case", lambda folder: True)  # as on macOS / Windows
    (tmp_path / "Photo.PNG").write_bytes(b"x")
    plan = plan_outputs([str(tmp_path / "photo.jpg"), str(tmp_path / "Photo.PNG")], str(tmp_path))
    assert str(tmp_path / "photo.jpg") in plan.refused and "is an input" in plan.refused[
        str(tmp_path / "photo.jpg")]


def test_folds_case_probe_matches_this_filesystem(tmp_path):
    from napari_jpeg_restore.core.imageio.output_paths import folds_case

    (tmp_path / "CaseProbe").write_text("x")
    assert folds_case(str(tmp_path)) == (tmp_path / "caseprobe").exists()
    assert list(tmp_path.iterdir()) == [tmp_path / "CaseProbe"]  # the probe cleans up


folders = st.dictionaries(
    keys=st.tuples(st.sampled_from(["", "sub/"]), st.sampled_from(STEMS), st.sampled_from(SUFFIXES)),
    values=st.sampled_from(KINDS), min_size=1, max_size=7)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=folders, out_inside=st.sampled_from(["", "sub", "restored"]))
def test_restore_never_changes_an_input(files, out_inside, weights):
    """Any folder of colliding stems and suffixes, output = the input folder or a folder in it:
    every input's bytes are unchanged and every output lies in the output folder."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        for i, ((sub, stem, suffix), kind) in enumerate(sorted(files.items())):
            (src / sub).mkdir(parents=True, exist_ok=True)
            _write(src / f"{sub}{stem}{suffix}", kind, i)
        before = _snapshot(src)
        out = src / out_inside
        main(["restore", str(src), "-o", str(out), "--model", weights, "--skip-above-quality", "100"])
        after = _snapshot(src)
        assert {k: after[k] for k in before} == before
        assert all((src / k).resolve().is_relative_to(out.resolve()) for k in set(after) - set(before))


def test_one_naming_function_flat_for_the_cli_and_keeping_the_tree_for_archives():
    assert output_path("a/b/photo.jpg", "out", "png") == "out/photo.png"
    assert output_path("a/b/photo.jpg", "s3://bkt/out", "tiff", keep_tree=True) == "s3://bkt/out/a/b/photo.tif"
    with pytest.raises(UnsafeOutputError, match=r"'\.\.'"):
        output_path("../x.jpg", "out", "png", keep_tree=True)
