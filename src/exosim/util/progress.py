"""Progress on stderr for commands that loop over many scenarios or protocols.

A tqdm bar when stderr is a terminal and tqdm is installed (the ``sensitivity`` extra);
otherwise the items unchanged, so logs and pipes stay clean.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(items: Iterable[T], *, total: int | None = None, desc: str = "exosim", unit: str = "it") -> Iterator[T]:
    """Iterate ``items``, drawing a progress bar on stderr when it is a terminal."""
    if sys.stderr.isatty() and importlib.util.find_spec("tqdm") is not None:
        from tqdm import tqdm

        yield from tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False)
    else:
        yield from items
