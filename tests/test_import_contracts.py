"""The import contracts of pyproject.toml (import-linter), checked on the installed layout:
core imports neither napari, Qt nor Ray, the plugin and the Ray jobs are apart, core's layers
import only downwards and no core package has an import cycle."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")


def installed_layout(dest: Path) -> Path:
    """The package's Python files as pip installs them (core/ and distributed/ inside it)."""
    pkg = dest / "napari_jpeg_restore"
    python_only = shutil.ignore_patterns("__pycache__", "*.pt", "*.png", "*.json", "*.md")
    shutil.copytree(ROOT / "napari_jpeg_restore", pkg, ignore=python_only)
    for sub in ("core", "distributed"):
        shutil.copytree(ROOT / sub, pkg / sub, ignore=python_only)
    return dest


def lint(tree: Path) -> subprocess.CompletedProcess:
    if not LINT.is_file():
        pytest.fail(f"{LINT} is missing: install the dev extras (import-linter)")
    return subprocess.run([str(LINT), str(ROOT / "pyproject.toml"), "--no-cache"], cwd=tree,
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin", "COLUMNS": "250"},
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept(tmp_path):
    result = lint(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_ray_breaks_the_contract(tmp_path):
    tree = installed_layout(tmp_path)
    metrics = tree / "napari_jpeg_restore" / "core" / "evaluation" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nimport ray  # noqa: E402\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "core imports neither napari, Qt, Ray nor the shells over it BROKEN" in result.stdout
    assert "napari_jpeg_restore.core.evaluation.metrics -> ray" in result.stdout


def _inject(tree: Path, module: str, line: str) -> None:
    path = tree / "napari_jpeg_restore" / "core" / module
    path.write_text(path.read_text() + f"\n{line}  # noqa: E402\n")


def test_an_upward_import_breaks_the_layers(tmp_path):
    """The JPEG codec importing the restore step: a layer reaching above itself (a cycle
    through the layers, since restoration imports jpeg)."""
    tree = installed_layout(tmp_path)
    _inject(tree, "jpeg/codec.py", "from ..restoration import image_restore")
    result = lint(tree)
    assert result.returncode != 0
    assert "nothing imports upwards BROKEN" in result.stdout
    assert ("napari_jpeg_restore.core.jpeg is not allowed to import napari_jpeg_restore.core."
            "restoration") in result.stdout


def test_a_cycle_inside_a_package_breaks_the_acyclic_contract(tmp_path):
    tree = installed_layout(tmp_path)
    _inject(tree, "engines/device.py", "from . import selection")  # selection imports device
    result = lint(tree)
    assert result.returncode != 0
    assert "no import cycle between the modules of any core package BROKEN" in result.stdout


def test_a_new_core_module_needs_a_layer(tmp_path):
    tree = installed_layout(tmp_path)
    (tree / "napari_jpeg_restore" / "core" / "helpers.py").write_text("X = 1\n")
    result = lint(tree)
    assert result.returncode != 0 and "helpers" in result.stdout


def test_contracts_name_every_plugin_module():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    named = {m for c in contracts for key in ("source_modules", "forbidden_modules") for m in c.get(key, [])}
    plugin = {f"napari_jpeg_restore.{f.stem}" for f in (ROOT / "napari_jpeg_restore").glob("_*.py")
              if f.stem != "__init__"}
    assert plugin and plugin <= named, sorted(plugin - named)
