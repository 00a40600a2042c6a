"""Tiles of the quality embeddings and heatmaps."""
import numpy as np
from napari_jpeg_restore.core.quality.reading import tiles


def test_heatmap_tiles_cover_the_whole_image():
    image = np.arange(481 * 321).reshape(321, 481)
    parts, grid = tiles(image, 64)
    assert grid == (5, 7) and len(parts) == 35  # the remainder is dropped for embeddings
    parts, grid = tiles(image, 64, cover=True)
    assert grid == (6, 8) and all(p.shape == (64, 64) for p in parts)
    # the edge tiles start on the 8x8 grid (the quality encoder's DCT branch reads it there)
    # and end within 7 px of the edge: 481 - 64 = 417 -> 416, 321 - 64 = 257 -> 256
    assert parts[7][0, 0] == image[0, 416] and parts[-1][0, 0] == image[256, 416]
