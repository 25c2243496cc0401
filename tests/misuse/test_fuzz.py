"""Fuzzing (issue #16): any ``--set KEY=VALUE`` of ``ahcl train`` is a run or one line with
nothing written, and any arrays given to :func:`ahcl.evaluate` are scored exactly as the explicit
reference scores them or refused with an :class:`EvaluationError`, never a silent wrong number."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import ahcl
import ahcl.training
from ahcl.cli import main
from ahcl.config import TrainConfig, params_class, parse_set
from ahcl.errors import AhclError
from ahcl.eval import EvaluationError, evaluate
from tests.eval.test_metrics import assert_matches, reference
from tests.misuse.snapshot import snapshot

FUZZ = dict(deadline=None, database=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

# ------------------------------------------------------------------ --set values of ahcl train
KEYS = sorted({f.name for f in dataclasses.fields(TrainConfig)} - {"params"}
              | {f.name for f in dataclasses.fields(params_class("ahcl"))})
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                     st.integers(-3, 40), st.floats(), st.floats(-2, 2), st.text(max_size=6),
                     st.sampled_from(["auto", "cpu", "cuda", "sgd", "adam", "hard", "soft",
                                      "frozen", "finetune", "none", "scene", "fp16", "adsh"]))
VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))
#: Values a setting might well take (so that runs are accepted too, not only refusals).
PLAUSIBLE = st.one_of(st.integers(0, 64), st.floats(0, 1), st.sampled_from([8, 16, 32, 0.5]),
                      st.lists(st.integers(0, 3), max_size=2))


def as_yaml(value: Any) -> str:
    """``value`` as the text after ``--set KEY=`` (YAML flow style)."""
    if isinstance(value, float):
        return ".nan" if math.isnan(value) else (".inf" if value > 0 else "-.inf") \
            if math.isinf(value) else repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(as_yaml(v) for v in value) + "]"
    return json.dumps(value)  # null, true, 3, "text" (YAML reads JSON scalars)


SETTINGS = st.lists(st.tuples(st.sampled_from(KEYS), st.one_of(
    VALUES.map(as_yaml), PLAUSIBLE.map(as_yaml), st.text(max_size=8))), min_size=1, max_size=2)


class Accepted(Exception):
    """Raised where training would write its first file: the values passed every check."""


def _train(data: Path, out: Path, pairs: list[tuple[str, str]]) -> int:
    sets = [a for key, text in pairs for a in ("--set", f"{key}={text}")]
    return main(["train", "--data", str(data), "--out", str(out), "--backbone", "tiny_cnn",
                 "--bits", "16", "--workers", "0", "--set", "outer_iters=1", "--set",
                 "hidden=16", *sets])


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if not line.startswith("iteration ")]
    assert len(lines) == 1 and lines[0].startswith("ahcl: error: "), err
    assert "Traceback" not in err
    return lines[0]


@settings(max_examples=60, **FUZZ)
@given(pairs=SETTINGS)
def test_any_set_value_is_checked_before_anything_is_written(pairs, synthetic_scenes, tmp_path,
                                                              capsys, monkeypatch) -> None:
    """Every key of the config with any value, up to the point where the run folder would be
    made: each is accepted, or exit 1 with one line, and nothing anywhere is written."""
    def accepted(*args: Any, **kwargs: Any) -> None:
        raise Accepted

    monkeypatch.setattr(ahcl.training, "start_run", accepted)
    monkeypatch.chdir(tmp_path)  # a relative path among the values stays in here
    before = snapshot(tmp_path)
    capsys.readouterr()
    try:
        code = _train(synthetic_scenes, tmp_path / "run", pairs)
    except Accepted:
        code = None
    err = capsys.readouterr().err
    event("accepted" if code is None else f"exit {code}")
    assert code in (None, 1), err
    if code == 1:
        _one_error_line(err)
    assert snapshot(tmp_path) == before


#: Keys whose values cannot make a run of the tiny set slow (epochs, sweeps and code length can).
CHEAP = ["lam", "gamma", "lr", "weight_decay", "dropout", "seed", "similarity", "optimizer",
         "lr_milestones", "num_samples", "batch_size", "query_fraction", "instance_bits",
         "hidden"]


@settings(max_examples=25, **FUZZ)
@given(pairs=st.lists(st.tuples(st.sampled_from(CHEAP), st.one_of(
    VALUES, PLAUSIBLE, PLAUSIBLE, PLAUSIBLE).map(as_yaml)), min_size=1, max_size=1))
def test_any_set_value_trains_or_fails_cleanly(pairs, synthetic_scenes, tmp_path, capsys) -> None:
    """Really trained: exit 0 with a run that loads and finite losses, or exit 1 with one line
    and either nothing written or a diverged run's checkpoint kept."""
    out = tmp_path / f"run-{len(list(tmp_path.iterdir()))}"
    capsys.readouterr()
    code = _train(synthetic_scenes, out, pairs)
    err = capsys.readouterr().err
    event(f"exit {code}")
    assert code in (0, 1), err
    if code == 0:
        ahcl.load_run(out)
        losses = [json.loads(line)["loss"] for line in (out / "metrics.jsonl").open()]
        assert losses and all(math.isfinite(x) for x in losses)
    elif "training diverged" in _one_error_line(err):
        assert (out / "checkpoint.pt").is_file() and not (out / "run.json").exists()
    else:
        assert not out.exists()


@settings(max_examples=100, database=None, deadline=None)
@given(st.text(max_size=30))
def test_any_set_text_parses_or_is_refused(text) -> None:
    try:
        parse_set([text])
    except AhclError as exc:
        assert "\n" not in str(exc)


# -------------------------------------------------------------------- inputs of ahcl.evaluate
DTYPES = ["bool", "int8", "int16", "int64", "uint8", "float16", "float32", "float64",
          "complex64", "object", "U3"]


def _codes(rng: np.random.Generator, n: int, width: int, dtype: str, kind: str,
           nan: bool) -> np.ndarray:
    values = {"pm1": np.where(rng.random((n, width)) < 0.5, -1, 1),
              "01": rng.integers(0, 2, (n, width)),
              "bytes": rng.integers(0, 256, (n, width)),
              "real": rng.normal(size=(n, width)) * 3}[kind]
    with np.errstate(invalid="ignore", over="ignore"):
        codes = values.astype(dtype)
    if nan and codes.size and np.issubdtype(codes.dtype, np.floating):
        codes.flat[rng.integers(codes.size)] = np.nan
    return codes


def _labels(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    hot = np.eye(3)[rng.integers(0, 3, n)]
    return {"ids": rng.integers(0, 3, n), "float-ids": rng.integers(0, 3, n) * 1.0,
            "n-by-1": rng.integers(0, 3, (n, 1)), "multi-hot": hot,
            "multi-hot-bool": hot.astype(bool), "multi-hot-2": 2 * hot,
            "multi-hot-nan": np.where(rng.random((n, 3)) < 0.2, np.nan, hot)}[kind]


def _bits(codes: np.ndarray) -> np.ndarray | None:
    """The packed codes the documented contract reads from ``codes``, or None where it reads
    none: uint8 is packed already; ±1 integers and finite reals give their sign (>= 0: bit 1)."""
    if codes.ndim != 2:
        return None
    if codes.dtype == np.uint8:
        return codes
    integer = np.issubdtype(codes.dtype, np.integer)
    if not (integer or np.issubdtype(codes.dtype, np.floating)) or codes.shape[1] % 8:
        return None
    if (integer and not np.isin(codes, (-1, 1)).all()) or not np.isfinite(codes).all():
        return None
    return np.packbits(codes >= 0, axis=1)


def _relevant(ql: np.ndarray, dl: np.ndarray) -> np.ndarray | None:
    """Which database items the contract calls relevant to which query, or None where the
    labels are no documented form (class ids, or 0/1 multi-hot with more than one column)."""
    if ql.ndim == dl.ndim == 1 and all(np.issubdtype(x.dtype, np.integer) for x in (ql, dl)):
        return ql[:, None] == dl[None, :]
    if ql.ndim == dl.ndim == 2 and ql.shape[1] == dl.shape[1] > 1 and all(
            x.dtype == bool or np.isin(x, (0, 1)).all() for x in (ql, dl)):
        return (ql.astype(int) @ dl.astype(int).T) > 0
    return None


@settings(max_examples=300, **FUZZ)
@given(dtype=st.sampled_from(DTYPES), kind=st.sampled_from(["pm1", "01", "bytes", "real"]),
       nq=st.integers(0, 4), n=st.integers(0, 7), width=st.sampled_from([0, 1, 2, 3, 8, 16]),
       labels=st.sampled_from(["ids", "float-ids", "n-by-1", "multi-hot", "multi-hot-bool",
                               "multi-hot-2", "multi-hot-nan"]),
       nan=st.booleans(), seed=st.integers(0, 2**16))
def test_evaluate_scores_right_or_refuses(dtype, kind, nq, n, width, labels, nan, seed) -> None:
    rng = np.random.default_rng(seed)
    q, db = _codes(rng, nq, width, dtype, kind, nan), _codes(rng, n, width, dtype, kind, nan)
    ql, dl = _labels(rng, nq, labels), _labels(rng, n, labels)
    qb, dbb, relevant = _bits(q), _bits(db), _relevant(ql, dl)
    valid = (qb is not None and dbb is not None and relevant is not None and nq and n
             and qb.shape[1] == dbb.shape[1] > 0)
    topk, curve = [1, 3], [k for k in (1, 2) if k <= n]
    if not valid:
        with pytest.raises(EvaluationError) as info:
            evaluate(q, ql, db, dl, topk=topk, radius=2, curve_ks=curve)
        assert "\n" not in str(info.value)
        return
    report = evaluate(q, ql, db, dl, topk=topk, radius=2, curve_ks=curve)
    assert_matches(report, reference(qb, dbb, relevant, topk, 2, curve))
