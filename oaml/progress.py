"""Progress bars for long work: shown on a terminal, quiet in logs and tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm import tqdm

T = TypeVar("T")


def progress(iterable: Iterable[T], desc: str, **kwargs: Any) -> tqdm:
    """A tqdm bar that only draws on a TTY (disable=None) and refreshes at most once a second."""
    kwargs.setdefault("leave", False)
    return tqdm(iterable, desc=desc, disable=None, mininterval=1.0, dynamic_ncols=True, **kwargs)
