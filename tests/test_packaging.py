"""Packaging: one import root, headless core, data and weights inside the wheel."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_core_imports_without_napari_qt_or_ray():
    code = ("import sys, napari_jpeg_restore.core, napari_jpeg_restore.core.cli;"
            "bad = [m for m in ('napari', 'ray', 'qtpy', 'PyQt5', 'PyQt6', 'PySide6') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    assert subprocess.run([sys.executable, "-c", code], cwd="/").returncode == 0


@pytest.mark.slow
def test_wheel_maps_core_and_distributed_under_one_root(tmp_path):
    built = subprocess.run([sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path),
                            str(ROOT)], check=True, capture_output=True, text=True)
    assert "absent from the `packages` configuration" not in built.stdout + built.stderr
    (wheel,) = tmp_path.glob("napari_jpeg_restore-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"napari_jpeg_restore"}  # never a top-level core or distributed
    sources = {f"napari_jpeg_restore/core/{p.relative_to(ROOT / 'core').as_posix()}"
               for p in (ROOT / "core").rglob("*.py")}
    assert sources <= set(names), sorted(sources - set(names))  # every subpackage packaged
    assert "napari_jpeg_restore/distributed/__init__.py" in names
    assert "napari_jpeg_restore/core/data/astronaut.png" in names
    shipped = sorted(p.name for p in (ROOT / "core" / "weights").glob("*.pt"))
    assert sorted(n.rsplit("/", 1)[1] for n in names if n.startswith("napari_jpeg_restore/core/weights/")
                  and n.endswith(".pt")) == shipped


def test_cli_waits_passively_unless_told_and_core_import_is_light():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = ("import sys, os, napari_jpeg_restore.core as c, napari_jpeg_restore.core.cli; "
            "print('torch' in sys.modules, os.environ['OMP_WAIT_POLICY'], callable(c.restore))")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["False", "PASSIVE", "True"]
    env["OMP_WAIT_POLICY"] = "ACTIVE"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[1] == "ACTIVE"


def test_napari_extra_leaves_the_qt_backend_to_the_user_and_tests_run_on_qt6():
    """napari's plugin guidance: depend on napari + qtpy, never on a Qt binding (it breaks the
    bundled app and conda installs); the tests bring PyQt6 (napari deprecates PyQt5)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    bindings = ("pyqt5", "pyqt6", "pyside2", "pyside6", "napari[")
    assert not [r for r in extras["napari"] if r.lower().startswith(bindings)]
    assert "qtpy" in extras["napari"] and any(r.startswith("pytest-qt") for r in extras["dev"])
    pytest.importorskip("qtpy", reason="needs the napari extra")
    code = "import qtpy; print(qtpy.API_NAME, qtpy.QT6)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.stdout.split() == ["PyQt6", "True"], out.stdout + out.stderr
