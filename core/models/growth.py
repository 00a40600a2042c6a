"""Function-preserving growth: start a deeper model from a trained shallower one."""
from __future__ import annotations

import torch
from torch import nn

from .blocks import ResBlock
from .table_condition import TableCondition

GROWN = (ResBlock, TableCondition)  # parts a model may have that its parent lacks


def load_grown(model: nn.Module, state: dict[str, torch.Tensor]) -> list[str]:
    """Load ``state`` into ``model``, which may have residual blocks or a table conditioning
    that ``state`` lacks.

    Every new :class:`ResBlock` starts as the identity (its last convolution zeroed), a new
    :class:`TableCondition` as scale 1, shift 0, so the grown model computes exactly what the
    trained one did and training continues from there. Returns the names of the new parts;
    raises ValueError for any other mismatch.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as err:  # a shape mismatch
        raise ValueError(str(err).splitlines()[-1].strip()) from None
    if result.unexpected_keys:
        raise ValueError(f"weights the model has no place for: {', '.join(result.unexpected_keys[:4])}")
    missing = set(result.missing_keys)
    new = [name for name, m in model.named_modules() if isinstance(m, GROWN)
           and all(f"{name}.{p}" in missing for p, _ in m.named_parameters())]
    covered = {f"{n}.{p}" for n in new for p, _ in model.get_submodule(n).named_parameters()}
    if missing - covered:
        raise ValueError(f"weights missing for: {', '.join(sorted(missing - covered)[:4])}")
    with torch.no_grad():
        for name in new:
            model.get_submodule(name).reset_identity()
    return new
