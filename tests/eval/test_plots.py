"""Plots are written atomically, in the format their suffix names, without touching pyplot."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ahcl.eval import EvaluationError, RetrievalReport, evaluate
from ahcl.eval.plots import plot_map_vs_bits, plot_pr_curve, plot_precision_at_k

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def reports() -> dict[str, RetrievalReport]:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 60)
    out = {}
    for name, flip in (("good", 0.1), ("noisy", 0.4)):
        centres = rng.integers(0, 2, (3, 32))
        bits = centres[labels] ^ (rng.random((60, 32)) < flip)
        codes = np.packbits(bits.astype(bool), axis=1, bitorder="little")
        out[name] = evaluate(codes[:10], labels[:10], codes[10:], labels[10:])
    return out


def test_pr_and_precision_at_k_png(tmp_path: Path, reports: dict) -> None:
    for plot, name in ((plot_pr_curve, "pr.png"), (plot_precision_at_k, "pk.png")):
        path = plot(reports, tmp_path / "sub" / name)
        data = path.read_bytes()
        assert path == tmp_path / "sub" / name
        assert len(data) > 1000 and data.startswith(PNG_MAGIC)
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["pk.png", "pr.png"]


def test_map_vs_bits_formats(tmp_path: Path) -> None:
    results = {"AHCL": {16: 0.61, 32: 0.7, 64: 0.74}, "DPSH": {16: 0.5, 64: 0.6}}
    assert plot_map_vs_bits(results, tmp_path / "m.png").read_bytes().startswith(PNG_MAGIC)
    assert plot_map_vs_bits(results, tmp_path / "m.pdf").read_bytes().startswith(b"%PDF")
    svg = plot_map_vs_bits(results, tmp_path / "m.svg").read_bytes()
    assert b"<svg" in svg[:2000]
    # Dates are left out, so a re-plot gives the same bytes.
    assert plot_map_vs_bits(results, tmp_path / "m.svg").read_bytes() == svg


def test_bad_suffix_leaves_nothing(tmp_path: Path, reports: dict) -> None:
    with pytest.raises(EvaluationError, match=r"\.png"):
        plot_pr_curve(reports, tmp_path / "pr.jpeg")
    with pytest.raises(EvaluationError, match="at least one"):
        plot_precision_at_k({}, tmp_path / "pk.png")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_plots_leave_pyplot_and_backend_alone(tmp_path: Path) -> None:
    # In a fresh interpreter: plotting must neither import pyplot nor pick a backend.
    code = ("import sys, matplotlib; from ahcl.eval.plots import plot_map_vs_bits; "
            "b = matplotlib.rcParams._get_backend_or_none(); "
            f"plot_map_vs_bits({{'a': {{8: 0.5}}}}, {str(tmp_path / 'x.png')!r}); "
            "sys.exit(2 * ('matplotlib.pyplot' in sys.modules) "
            "+ (matplotlib.rcParams._get_backend_or_none() != b))")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
    assert (tmp_path / "x.png").read_bytes().startswith(PNG_MAGIC)
