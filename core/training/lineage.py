"""Lineage of a trained model: the runs it stands on (``--init``, ``--encoder``), as recorded in
its weights file's metadata, and the compute they took together."""
from __future__ import annotations

from typing import Any

from ..models import QualityEncoder
from ..registry import load_model


def lineage(weights: str, meta: dict[str, Any]) -> dict[str, Any]:
    """What to record about a run this one builds on: source, steps, CPU-hours, options."""
    keep = ("steps", "cpu_hours", "init", "encoder", "luma", "ranker", "options")
    return {"weights": str(weights), **{k: meta[k] for k in keep if meta.get(k) is not None}}


def encoder_lineage(weights: str, file: str | None = None) -> dict[str, Any]:
    """Lineage of the encoder a restorer stage freezes (``--encoder``; read from ``file`` when it
    was fetched). When the weights are a restorer's, only the encoder run its chain stands on
    counts, not that restorer's own training; an encoder trained jointly inside a restorer is
    not separable, so that restorer counts whole."""
    src = load_model(file or weights)
    if isinstance(src, QualityEncoder):
        return lineage(weights, src.meta)
    meta = src.meta
    while meta and not meta.get("encoder"):
        meta = meta.get("init")
    return {**meta["encoder"], "via": str(weights)} if meta else lineage(weights, src.meta)


def run_chain(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The training runs behind a model, oldest first (each ``--init`` is the previous one)."""
    chain = []
    while meta:
        chain.append(meta)
        meta = meta.get("init")
    return chain[::-1]


def total_cpu_hours(meta: dict[str, Any]) -> float:
    """CPU-hours of a run plus those of the runs it stands on (``--init``, ``--encoder``,
    ``--luma``, ``--ranker``)."""
    return (meta.get("cpu_hours", 0.0)
            + sum(total_cpu_hours(meta[k]) for k in ("init", "encoder", "luma", "ranker") if meta.get(k)))
