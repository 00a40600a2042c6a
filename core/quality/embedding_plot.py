"""``jpeg-restore embed``: quality embeddings of clean images compressed at many qualities,
plotted in 2-D like the paper's Fig. 2, with numbers for how well they order quality."""
from __future__ import annotations

import argparse
import json

import numpy as np

from ..imageio.reading import load_images
from ..imageio.sources import expand
from ..engines.default_model import default_model_name
from ..registry import load_model
from .embedding import embed, project_2d, quality_crops, quality_ordering, unseen_between


def plot_embeddings(points: np.ndarray, qualities: np.ndarray, path: str, title: str,
                    unseen: np.ndarray | None = None) -> None:
    """Scatter of 2-D points coloured by quality; unseen qualities drawn as crosses."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 5.2), dpi=120)
    seen = np.ones(len(points), bool) if unseen is None else ~unseen
    sc = ax.scatter(points[seen, 0], points[seen, 1], c=qualities[seen], cmap="viridis",
                    vmin=qualities.min(), vmax=qualities.max(), s=14, label="trained Q")
    if unseen is not None and unseen.any():
        ax.scatter(points[unseen, 0], points[unseen, 1], c=qualities[unseen], cmap="viridis",
                   vmin=qualities.min(), vmax=qualities.max(), s=30, marker="x", label="unseen Q")
        ax.legend(loc="best", fontsize=8)
    fig.colorbar(sc, ax=ax, label="JPEG quality")
    ax.set_title(title, fontsize=10)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def embed_command(a: argparse.Namespace) -> int:
    net = load_model(a.model or default_model_name(1))
    images = load_images(expand(a.data)[: a.limit], net.cfg.in_channels)
    qualities = sorted(set(a.quality) | set(a.unseen or []))
    crops, labels = quality_crops(images, qualities, crop=a.crop)
    emb, estimate = embed(net, crops, progress=True)  # embeddings, the probe's quality
    trained = np.isin(labels, a.quality)
    groups = np.arange(len(labels)) // len(qualities)  # quality_crops: image-major order
    scores = quality_ordering(emb[trained], labels[trained], groups=groups[trained])
    if (~trained).any():
        scores["unseen_between"] = unseen_between(emb[trained], labels[trained], emb[~trained],
                                                  labels[~trained])
    scores["probe_within_10"] = float((np.abs(estimate - labels) <= 10).mean())
    scores["probe_mae"] = float(np.abs(estimate - labels).mean())
    points = project_2d(emb, a.projection)
    title = (f"{a.projection.upper()} of quality embeddings, {len(images)} images\n"
             f"|Spearman(PC1, Q)| = {scores['spearman_pc1']:.3f}, "
             f"within-image |Spearman| = {scores['spearman_within_image']:.2f}\n"
             f"5-NN accuracy of Q = {scores['knn_accuracy']:.2f} (chance {scores['chance']:.2f})")
    plot_embeddings(points, labels, a.plot, title, unseen=~trained)
    print(json.dumps({"images": len(images), "qualities": qualities, **scores, "plot": a.plot}))
    return 0
