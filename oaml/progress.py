"""Progress bars for long work: shown on a terminal, quiet in logs and tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, **kwargs: Any) -> tqdm:
    """A tqdm bar that only draws on a TTY (disable=None) and refreshes at most once a second;
    `disable=True` hides it (e.g. on every rank but the first of a data-parallel run)."""
    kwargs.setdefault("leave", False)
    kwargs["disable"] = True if kwargs.get("disable") else None
    return tqdm(iterable, desc=desc, mininterval=1.0, dynamic_ncols=True, **kwargs)
