"""Plots of retrieval results: PR curves, P@K curves, mAP against code length.

Figures are built as :class:`matplotlib.figure.Figure` objects rendered by the Agg canvas, so
importing this module never changes matplotlib's global backend and nothing needs a display.
Each file is rendered to memory and then written atomically; the format comes from the suffix.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

from ahcl._io import atomic_write_bytes
from ahcl.eval.metrics import EvaluationError, RetrievalReport

FORMATS = {".png": "png", ".svg": "svg", ".pdf": "pdf"}


def _figure():  # -> matplotlib.figure.Figure; imported lazily to keep `import ahcl.eval` light
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.0, 4.0), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise EvaluationError(f"cannot tell the plot format of {path}: use a name ending in "
                              f"{', '.join(FORMATS)}")
    import matplotlib

    buf = io.BytesIO()
    # No dates and a fixed SVG id salt keep the bytes identical between runs.
    metadata = {"Date": None} if fmt in ("svg", "pdf") else None
    with matplotlib.rc_context({"svg.hashsalt": "ahcl"}):
        fig.savefig(buf, format=fmt, metadata=metadata)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _need(items: Mapping, what: str) -> None:
    if not items:
        raise EvaluationError(f"nothing to plot: pass at least one {what}")


def plot_pr_curve(reports: Mapping[str, RetrievalReport], path: str | os.PathLike) -> Path:
    """Precision against recall over Hamming radius ``0..n_bits``, one line per method.

    Args:
        reports: method name → report.
        path: output file (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    _need(reports, "report")
    return _lines(((name, rep.pr_curve.recall, rep.pr_curve.precision)
                   for name, rep in reports.items()), path, xlabel="recall",
                  ylabel="precision", title="Precision-recall (Hamming radius)", xlim=(0, 1))


def plot_precision_at_k(reports: Mapping[str, RetrievalReport],
                        path: str | os.PathLike) -> Path:
    """P@K against K (``report.precision_curve``), one line per method.

    Args:
        reports: method name → report.
        path: output file (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    _need(reports, "report")
    return _lines(((name, rep.precision_curve_ks, rep.precision_curve)
                   for name, rep in reports.items()), path,
                  xlabel="number of retrieved items K", ylabel="precision@K",
                  title="Precision@K")


def _lines(series, path: str | os.PathLike, *, xlabel: str, ylabel: str, title: str,
           xlim: tuple[float, float] | None = None) -> Path:
    """One marked line per ``(name, x, y)``, y in [0, 1.02], grid and legend; saved to ``path``."""
    fig, ax = _figure()
    for name, x, y in series:
        ax.plot(x, y, marker=".", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, ylim=(0, 1.02), title=title)
    if xlim is not None:
        ax.set_xlim(*xlim)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_map_vs_bits(results: Mapping[str, Mapping[int, float]],
                     path: str | os.PathLike) -> Path:
    """mAP against code length, one line per method.

    Args:
        results: method name → ``{n_bits: mAP}``.
        path: output file (``.png``, ``.svg`` or ``.pdf``).

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    _need(results, "method")
    fig, ax = _figure()
    all_bits: set[int] = set()
    for name, by_bits in results.items():
        bits = sorted(by_bits)
        all_bits.update(bits)
        ax.plot(bits, [by_bits[b] for b in bits], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(all_bits), [str(b) for b in sorted(all_bits)])
    ax.set(xlabel="code length (bits)", ylabel="mAP", ylim=(0, 1.02), title="mAP vs code length")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)
