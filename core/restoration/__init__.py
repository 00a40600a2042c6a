"""Restoration: what a picture's compression means (Compression), the tiled restore of an array,
the file-restore step every shell runs, and calibration (where a model helps)."""
