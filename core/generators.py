"""The generator form of long work (restoring, embedding): steps that report progress and let a
worker stop between them, and a result at the end."""
from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any, TypeVar

S, T, R = TypeVar("S"), TypeVar("T"), TypeVar("R")


def relay(steps: Generator[S, None, R], each: Callable[[S], T]) -> Generator[T, None, R]:
    """Run the generator ``steps``, yielding ``each(step)`` for every step it yields, and return
    what it returns (``result = yield from relay(...)``)."""
    while True:
        try:
            step = next(steps)
        except StopIteration as stop:
            return stop.value
        yield each(step)


def finish(steps: Generator[Any, None, R]) -> R:
    """Run the generator ``steps`` to its end; returns its return value."""
    try:
        while True:
            next(steps)
    except StopIteration as stop:
        return stop.value
