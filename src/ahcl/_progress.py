"""Progress bars on stderr that stay silent when stderr is not a terminal.

Library code calls :func:`progress`; it never prints. ``AHCL_PROGRESS=1`` forces bars on,
``AHCL_PROGRESS=0`` forces them off (tests set it off).
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, Iterator, TypeVar

from tqdm.auto import tqdm

T = TypeVar("T")


def progress_enabled() -> bool:
    """Whether progress bars should be drawn."""
    forced = os.environ.get("AHCL_PROGRESS")
    if forced is not None:
        return forced not in ("0", "", "false", "no")
    return sys.stderr.isatty()


def progress(iterable: Iterable[T], total: int | None = None, desc: str | None = None,
             unit: str = "it", unit_scale: bool = False) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr when enabled, else return it unchanged."""
    if not progress_enabled():
        return iter(iterable)
    return iter(tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                     file=sys.stderr, leave=False, dynamic_ncols=True))


def progress_bar(total: int | None, desc: str | None = None, unit: str = "it",
                 unit_scale: bool = False) -> tqdm:
    """A manually updated bar (``.update(n)``, ``.close()``); disabled when bars are off."""
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=unit_scale, file=sys.stderr,
                leave=False, dynamic_ncols=True, disable=not progress_enabled())
