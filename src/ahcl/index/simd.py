"""Which Hamming kernel path runs: chosen from the CPU's features, forced by name when asked.

Three paths compute the same exact results (tests force each one against brute force):

``popcnt``
    one scalar POPCNT per 64-bit word, row by row (inline assembly on x86-64, so LLVM cannot
    turn it into vector code). Any CPU.
``avx2``
    a vertical (bit-sliced) Harley-Seal count: the codes of 256 rows are transposed into bit
    planes (:mod:`ahcl.index.planes`), and carry-save adders on 256-bit vectors count the
    differing bits of all 256 rows at once, about 6 logic operations per row and 16 bits
    instead of a popcount per word. Chosen on CPUs with AVX2 but no VPOPCNTQ, where a vector
    popcount is a nibble lookup and costs more, and for codes of up to 32 bits on any AVX2 CPU,
    where 16 or 32 planes cost less than a 64-bit popcount per row. Keeps a transposed copy of
    the codes (as large as the codes) per segment while the index is unchanged.
``avx512``
    VPOPCNTQ on 512-bit vectors of rows: 8 rows per instruction and word. Chosen on CPUs with
    AVX512-VPOPCNTDQ for codes of more than 32 bits.

All three are plain LLVM IR (vector logic, ``llvm.ctpop`` on vectors), so each compiles and
gives the same answers on any CPU; only the speed depends on the instructions the CPU has.

Choice: :func:`current_path` returns, in order, the path forced for the calling thread by
:func:`use_path`, the path named by the environment variable ``AHCL_HAMMING_PATH``
(``auto`` or unset: choose), or :func:`best_path`, read from the features numba compiles for
(``NUMBA_CPU_FEATURES`` when set, else the host CPU's, from LLVM), so code compiled for an older
CPU model is never handed a path it lacks the instructions for.
"""

from __future__ import annotations

import contextlib
import functools
import os
import platform
import threading
from typing import Iterator

import numba
from llvmlite import binding as llvm

from ahcl.errors import UnknownNameError

PATHS = ("popcnt", "avx2", "avx512")
POPCNT, AVX2, AVX512 = range(3)  # kernel codes, in PATHS order
ENV = "AHCL_HAMMING_PATH"
_local = threading.local()
_UNSET = object()


def target_features() -> frozenset[str]:
    """The CPU features numba's code generator targets (``+name`` entries of its feature string)."""
    return _features(numba.config.CPU_FEATURES)


@functools.lru_cache(maxsize=8)
def _features(spec: str | None) -> frozenset[str]:
    """:func:`target_features` of a feature string (``None``: the host's, asked of LLVM once per
    process: it costs about 0.2 ms, as much as a small search)."""
    if spec is None:
        spec = llvm.get_host_cpu_features().flatten()
    return frozenset(f[1:] for f in spec.split(",") if f.startswith("+"))


def is_x86_64() -> bool:
    """Whether kernels compile for x86-64 (the scalar path then uses the POPCNT instruction)."""
    return platform.machine().lower() in ("x86_64", "amd64")


def best_path(features: frozenset[str] | None = None, n_bits: int | None = None) -> str:
    """The fastest path for ``features`` (default: :func:`target_features`) and codes of
    ``n_bits``: ``avx512`` with VPOPCNTQ, except for codes of up to 32 bits, where 16 or 32 bit
    planes cost less than a 64-bit popcount per row (measured: ``benchmarks/bench_index.py``);
    ``avx2`` with AVX2; else ``popcnt``."""
    features = target_features() if features is None else features
    if {"avx512f", "avx512vpopcntdq"} <= features and not (n_bits is not None and n_bits <= 32):
        return "avx512"
    if "avx2" in features:
        return "avx2"
    return "avx512" if {"avx512f", "avx512vpopcntdq"} <= features else "popcnt"


def _check(name: str, source: str) -> str:
    if name not in PATHS:
        raise UnknownNameError("Hamming kernel path", name, PATHS + ("auto",), context=source)
    return name


def current_path(n_bits: int | None = None) -> str:
    """The path the calling thread's next search of ``n_bits`` codes runs (see the module
    docstring)."""
    forced = getattr(_local, "path", _UNSET)
    if forced is None:
        return best_path(n_bits=n_bits)
    if forced is not _UNSET:
        return forced
    name = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if name == "auto":
        return best_path(n_bits=n_bits)
    return _check(name, f"in ${ENV}")


def path_code(n_bits: int | None = None) -> int:
    """Kernel code (:data:`POPCNT`, :data:`AVX2`, :data:`AVX512`) of :func:`current_path`."""
    return PATHS.index(current_path(n_bits))


@contextlib.contextmanager
def use_path(name: str) -> Iterator[None]:
    """Force ``name`` for the calling thread inside this block (``"auto"``: choose, ignoring
    ``AHCL_HAMMING_PATH``).

    Thread-local and scoped, like :func:`ahcl.index.kernels.thread_limit`: other threads and
    later calls keep their own choice.
    """
    chosen = None if name == "auto" else _check(name, "")
    previous = getattr(_local, "path", _UNSET)
    _local.path = chosen
    try:
        yield
    finally:
        _local.path = previous


def cpu_summary() -> dict[str, object]:
    """CPU model, the SIMD features that matter here, and the path :func:`best_path` takes."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    wanted = ("popcnt", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512vpopcntdq",
              "avx512bitalg")
    features = target_features()
    return {"model": model, "target_cpu": numba.config.CPU_NAME or llvm.get_host_cpu_name(),
            "simd": [f for f in wanted if f in features], "best_path": best_path(features)}
