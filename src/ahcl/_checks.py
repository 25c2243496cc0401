"""Checks of setting values: type, finiteness and range, each failure one
:class:`~ahcl.errors.InvalidValueError` that names the setting, what it accepts and what it got.

YAML and ``--set`` hand over whatever they parse (``16.0``, ``.nan``, ``true``), so every config
and hyper-parameter field goes through one of these before anything is written.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any, Iterable

from ahcl.errors import InvalidValueError

#: The longest code ``n_bits`` may ask for (a code of 4096 bits is 512 bytes per item).
MAX_BITS = 4096
MAX_SEED = 2**63 - 1
#: The widest MLP layer ``hidden`` may ask for (from 1280 MobileNetV2 features: 84 MB of
#: float32 weights), so a typo is one line instead of an allocation of terabytes.
MAX_HIDDEN = 16384
#: The largest real setting accepted: the network computes in float32 (at most 3.4e38), and
#: torch's optimizers scale the lr by up to 1/(1 - 0.9) before converting it, failing with a
#: traceback past that; no setting means anything near this size.
MAX_REAL = 1e30


def _range_words(lo: float | None, hi: float | None, lo_open: bool, hi_open: bool) -> str:
    parts = []
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"{'<' if hi_open else '<='} {hi:g}")
    return " and ".join(parts)


def check_int(name: str, value: Any, lo: int | None = None, hi: int | None = None,
              optional: bool = False) -> None:
    """An integer (not a bool, not ``16.0``) in ``[lo, hi]``; ``None`` too when ``optional``."""
    if value is None and optional:
        return
    words = "an integer" + (f" {_range_words(lo, hi, False, False)}" if lo is not None
                            or hi is not None else "")
    if optional:
        words += " (or null)"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidValueError(name, value, words)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise InvalidValueError(name, value, words)


def check_float(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                lo_open: bool = False, hi_open: bool = False) -> None:
    """A finite real number (ints accepted, bools not; at most :data:`MAX_REAL` in size) in the
    given range."""
    rng = _range_words(lo, hi, lo_open, hi_open)
    words = "a finite number" + (f" {rng}" if rng else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or \
            not math.isfinite(float(value)):
        raise InvalidValueError(name, value, words)
    v = float(value)
    if abs(v) > MAX_REAL:
        raise InvalidValueError(name, value, f"{words}, at most {MAX_REAL:.3g} in size (the "
                                             "network computes in float32)")
    if lo is not None and (v < lo or (lo_open and v == lo)):
        raise InvalidValueError(name, value, words)
    if hi is not None and (v > hi or (hi_open and v == hi)):
        raise InvalidValueError(name, value, words)


def check_bool(name: str, value: Any) -> None:
    """``true`` or ``false``."""
    if not isinstance(value, bool):
        raise InvalidValueError(name, value, "true or false")


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> None:
    """One of ``choices``."""
    choices = tuple(choices)
    if not isinstance(value, str) or value not in choices:
        raise InvalidValueError(name, value, "one of " + ", ".join(map(repr, choices)))


def check_n_bits(n_bits: Any) -> None:
    """A positive multiple of 8, at most :data:`MAX_BITS` (the packed format; memory)."""
    words = f"a positive multiple of 8, at most {MAX_BITS}"
    if isinstance(n_bits, bool) or not isinstance(n_bits, numbers.Integral) or n_bits <= 0 \
            or n_bits % 8 or n_bits > MAX_BITS:
        raise InvalidValueError("n_bits", n_bits, words)


def check_seed(value: Any) -> None:
    check_int("seed", value, 0, MAX_SEED)


def check_hidden(value: Any) -> None:
    """The width of an MLP layer: 0 (none) to :data:`MAX_HIDDEN`."""
    check_int("hidden", value, 0, MAX_HIDDEN)


def store_floats(params: Any) -> None:
    """Store every ``float`` field of a checked params dataclass as a float: an integer such as
    2**64 is a valid weight, but numpy and torch refuse it as a C integer (with a traceback)."""
    for f in dataclasses.fields(params):
        if f.type in ("float", float):
            setattr(params, f.name, float(getattr(params, f.name)))
