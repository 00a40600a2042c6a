"""The import contracts of pyproject.toml (import-linter), checked on the installed layout:
core imports neither napari, Qt nor Ray, and the plugin and the Ray jobs are apart."""
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

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
                          env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=120)


def test_import_contracts_are_kept(tmp_path):
    result = lint(installed_layout(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_core_module_importing_ray_breaks_the_contract(tmp_path):
    tree = installed_layout(tmp_path)
    metrics = tree / "napari_jpeg_restore" / "core" / "metrics.py"
    metrics.write_text(metrics.read_text() + "\nimport ray  # noqa: E402\n")
    result = lint(tree)
    assert result.returncode != 0
    assert "core imports neither napari, Qt, Ray nor the shells over it BROKEN" in result.stdout
    assert "napari_jpeg_restore.core.metrics -> ray" in result.stdout


def test_contracts_name_every_plugin_module():
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    named = {m for c in contracts for key in ("source_modules", "forbidden_modules") for m in c.get(key, [])}
    plugin = {f"napari_jpeg_restore.{f.stem}" for f in (ROOT / "napari_jpeg_restore").glob("_*.py")
              if f.stem != "__init__"}
    assert plugin and plugin <= named, sorted(plugin - named)
