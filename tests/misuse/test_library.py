"""Misuse of the Python API (issue #16): each call raises one error of the documented class,
whose message is one line naming what is accepted, and never answers with a wrong number.

The ``item`` column is the issue's numbered item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from ahcl.errors import AhclError, RunError
from ahcl.eval import EvaluationError, evaluate
from ahcl.index import HammingIndex, HammingIndexError
from ahcl.index.packing import pack_codes
from ahcl.run import read_model

_RNG = np.random.default_rng(0)
PM1 = np.where(_RNG.random((6, 16)) < 0.5, -1, 1).astype(np.int64)  # ±1 integers: a valid form
LABELS = np.arange(6) % 2


def scores(codes: Any = PM1, labels: Any = LABELS, **kwargs: Any) -> Callable[[Path], Any]:
    """evaluate() of the six codes against themselves, with bad query codes, or bad labels
    (for both), or a bad keyword."""
    return lambda tmp: evaluate(codes, labels, PM1, labels, **kwargs)


def index_of(n: int = 5) -> HammingIndex:
    index = HammingIndex(16)
    index.add(np.zeros((n, 2), np.uint8))
    return index


def add_ids(ids: Any) -> Callable[[Path], Any]:
    return lambda tmp: HammingIndex(16).add(np.zeros((1, 2), np.uint8), ids=ids)


def search_k(k: Any) -> Callable[[Path], Any]:
    return lambda tmp: index_of().search(np.zeros((1, 2), np.uint8), k)


def garbage_model(tmp: Path) -> Any:
    (tmp / "model.pt").write_bytes(b"not a torch file")
    return read_model(tmp / "model.pt")


CASES = [
    # 4. a k sized beyond the index is refused before anything is allocated
    ("4", search_k(10**9), HammingIndexError, "ask for at most 5 (min(k, len(index))"),
    # 7. ambiguous codes and labels are refused, naming the accepted forms
    ("7", scores(PM1 > 0), EvaluationError, "bool codes are ambiguous; pass packed uint8"),
    ("7", scores((PM1 > 0).astype(np.int64)), EvaluationError, "int64 codes look like 0/1 bits"),
    ("7", scores(pack_codes(PM1).astype(np.int64)), EvaluationError,
     "packed bytes in a wider integer type"),
    ("7", scores(np.where(np.eye(6, 16) > 0, np.nan, PM1 * 1.0)), EvaluationError,
     "codes hold NaN or infinite values"),
    ("7", scores(np.where(np.eye(6, 16) > 0, np.inf, PM1 * 1.0)), EvaluationError,
     "codes hold NaN or infinite values"),
    ("7", scores(PM1.astype(complex)), EvaluationError, "complex128 codes have no sign to read"),
    ("7", scores(PM1.astype(str)), EvaluationError, "codes have no sign to read"),
    ("7", scores(PM1.astype(object)), EvaluationError, "object codes have no sign to read"),
    ("7", scores(labels=LABELS[:, None]), EvaluationError,
     "labels of shape (6, 1) / (6, 1) are ambiguous"),
    ("7", scores(labels=LABELS * 1.0), EvaluationError, "class-id labels must be integers"),
    ("7", scores(labels=np.where(np.eye(6, 3) > 0, np.nan, np.eye(3)[LABELS])), EvaluationError,
     "multi-hot labels must be 0/1"),
    ("7", scores(labels=2 * np.eye(3)[LABELS]), EvaluationError, "multi-hot labels must be 0/1"),
    ("7", scores(radius=2.5), EvaluationError, "radius must be an integer >= 0, got 2.5"),
    ("7", scores(topk=("10",)), EvaluationError, "topk must be positive integers"),
    ("7", scores(topk=(1.5,)), EvaluationError, "topk must be positive integers"),
    # 11. ids that collide with the padding or overflow, and k that is not a whole number
    ("11", add_ids([-1]), HammingIndexError, "(-1 is the padding of search results)"),
    ("11", add_ids([2**63 - 1]), HammingIndexError, "ids must be in 0.."),
    ("11", add_ids([1000.5]), HammingIndexError, "ids must be integers, got float64"),
    ("11", add_ids([True]), HammingIndexError, "ids must be integers, got bool"),
    ("11", search_k(1.7), HammingIndexError, "k must be an integer >= 1, got 1.7"),
    ("11", search_k(True), HammingIndexError, "k must be an integer >= 1, got True"),
    ("11", garbage_model, RunError, "it is only ever loaded as tensors"),
]


@pytest.mark.parametrize("item, call, error, says", CASES,
                         ids=[f"{c[0]}:{c[3][:40]}" for c in CASES])
def test_misuse_raises_one_clear_error(item, call, error, says, tmp_path) -> None:
    with pytest.raises(error) as info:
        call(tmp_path)
    message = str(info.value)
    assert isinstance(info.value, AhclError) and "\n" not in message
    assert says in message, message
    assert "weights_only=False" not in message  # item 11: never suggest unpickling code


def test_valid_forms_still_score() -> None:
    """The refusals above leave every documented form working: packed, ±1, real, multi-hot."""
    packed = evaluate(pack_codes(PM1), LABELS, pack_codes(PM1), LABELS).map
    assert evaluate(PM1, LABELS, PM1, LABELS).map == packed
    assert evaluate(PM1 * 0.5, LABELS, PM1, LABELS).map == packed
    assert evaluate(PM1, np.eye(3)[LABELS], PM1, np.eye(3)[LABELS].astype(bool)).map == packed
