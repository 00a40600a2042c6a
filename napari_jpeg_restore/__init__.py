"""Blind JPEG artifact removal for napari, the command line and Ray clusters.

The headless library is :mod:`napari_jpeg_restore.core`; the Ray jobs live in
:mod:`napari_jpeg_restore.distributed`. This top-level package holds the napari plugin.
"""
from pathlib import Path as _Path

__version__ = "0.1.0"

# In a source checkout, ``core/`` and ``distributed/`` sit beside this folder and are mapped to
# subpackages at install time. Make them importable the same way when Python picks up the
# checkout itself (tests, ``ray job submit --working-dir .``), not the installed copy.
_checkout = _Path(__file__).resolve().parent.parent
if not (_Path(__file__).parent / "core").is_dir() and (_checkout / "core" / "__init__.py").is_file():
    __path__.append(str(_checkout))
