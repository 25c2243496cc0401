"""A trained run on disk: what ``ahcl train`` writes, and :func:`load_run` to use it.

Layout of a run folder (every file written atomically; ``run.json`` last, as the mark of a
complete run)::

    run.json          format, version, n_bits, method, sizes, sha256 of db_codes.npy
    config.json       the resolved training config (replays the run)
    split.json        query / database indices and image paths
    model.pt          the network's state_dict (loaded with torch.load(weights_only=True))
    db_codes.npy      learned database codes, packed uint8 (n, n_bits/8)
    db.json           data root, database paths (relative to it), labels, class names
    code_state.npz    M = UᵀU, R (per-class sums of u), r, λ: the code step for new labelled items
    metrics.jsonl     one JSON line per outer iteration
    timings.json      seconds spent in features, training, total
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ahcl.errors import RunError
from ahcl.index.hits import Hit

RUN_FORMAT = "ahcl-run"
RUN_VERSION = 1
RUN_FILES = ("run.json", "config.json", "split.json", "model.pt", "db_codes.npy", "db.json")
ASYMMETRIC_FILES = ("code_state.npz",)  # runs of AHCL / ADSH only


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass
class Run:
    """A trained run loaded from disk (see the module doc for its files).

    Attributes:
        path: the run folder.
        config: the resolved training config (flat dict).
        n_bits: code length.
        classes: class names; labels index into them.
        db_codes: packed uint8 (n, n_bits/8) learned database codes.
        db_labels: int64 (n,).
        db_paths: absolute database image paths (n,).
        data_root: the dataset folder the run was trained on.
    """

    path: Path
    config: dict[str, Any]
    n_bits: int
    classes: list[str]
    db_codes: np.ndarray
    db_labels: np.ndarray
    db_paths: list[str]
    data_root: Path
    info: dict[str, Any] = field(default_factory=dict)
    _encoder: Any = field(default=None, repr=False)
    _index: Any = field(default=None, repr=False)

    @property
    def method(self) -> str:
        return str(self.config["method"])

    def encoder(self):
        """The query encoder (network + backbone), built on first use."""
        if self._encoder is None:
            from ahcl.encoder import Encoder

            self._encoder = Encoder.from_run(self)
        return self._encoder

    def encode(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Network codes ``sign(u)`` of images: packed uint8 (len(paths), n_bits/8)."""
        return self.encoder().encode(paths)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Network codes of in-memory RGB PIL images: packed uint8 (len(images), n_bits/8)."""
        return self.encoder().encode_images(images)

    def codes_for_labelled(self, paths: Sequence[str | Path], labels: np.ndarray) -> np.ndarray:
        """Database codes for new labelled images: the code step for those rows alone.

        The code depends only on the label and the stored code-step statistics, not on the
        pixels; ``paths`` is taken for symmetry with :meth:`encode` and checked for length.
        """
        from ahcl.index.packing import pack_codes
        from ahcl.methods.ahcl import CodeState, code_new_rows

        labels = np.asarray(labels, dtype=np.int64)
        if len(paths) != len(labels):
            raise RunError(f"{len(paths)} images but {len(labels)} labels")
        if not (self.path / "code_state.npz").is_file():
            raise RunError(f"{self.method} has no database-code step (only ahcl and adsh do): "
                           "add these images without a label to give them network codes")
        with np.load(self.path / "code_state.npz", allow_pickle=False) as z:
            state = CodeState(z["gram_u"], z["class_sums_u"], float(z["r"]), float(z["lam"]))
        return pack_codes(code_new_rows(state, labels, self.n_bits))

    def search(self, paths: Sequence[str | Path], k: int = 10) -> list[list[Hit]]:
        """Encode ``paths`` and rank the database: for each query, the ``k`` nearest hits
        ordered by (Hamming distance, database row)."""
        return self.search_codes(self.encode(paths), k)

    def queries(self, folder: str | Path | None = None) -> tuple[list[str], np.ndarray]:
        """Query image paths and labels: the run's own held-out queries, or a labelled folder.

        A folder's class names are matched to the run's by name.

        Raises:
            RunError: the run has no queries, or the folder has classes the run does not know.
        """
        if folder is None:
            split = _read_json(self.path / "split.json")
            rel = [split["paths"][i] for i in split["query"]]
            if not rel:
                raise RunError(f"{self.path} has no held-out queries (trained with "
                               "query_fraction 0): pass --queries DIR")
            index = {name: i for i, name in enumerate(self.classes)}
            labels = np.array([index[p.split("/")[0]] for p in rel], dtype=np.int64)
            return [str(self.data_root / p) for p in rel], labels
        from ahcl.data.folder import read_image_folder

        qf = read_image_folder(folder)
        unknown = sorted(set(qf.classes) - set(self.classes))
        if unknown:
            raise RunError(f"query classes not known to the run: {', '.join(unknown)} "
                           f"(the run knows {', '.join(self.classes)})")
        mapping = np.array([self.classes.index(c) for c in qf.classes], dtype=np.int64)
        return [str(p) for p in qf.absolute_paths], mapping[qf.labels]

    def evaluate(self, folder: str | Path | None = None, topk: Sequence[int] = (10, 100, 1000)):
        """Encode the queries (see :meth:`queries`) and score them against the database codes.

        Returns:
            The :class:`ahcl.eval.metrics.RetrievalReport`.
        """
        from ahcl.eval.metrics import evaluate

        paths, labels = self.queries(folder)
        return evaluate(self.encode(paths), labels, self.db_codes, self.db_labels, topk=topk)

    def search_codes(self, query_codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Rank the database for packed query codes (see :meth:`search`)."""
        if self._index is None:
            from ahcl.index import HammingIndex

            # ids = database rows, so the index's (distance, id) order is (distance, row).
            self._index = HammingIndex(self.n_bits)
            self._index.add(self.db_codes)
        D, I = self._index.search(query_codes, min(k, len(self.db_labels)))
        return [[Hit(int(j), int(d), int(self.db_labels[j]), self.classes[self.db_labels[j]],
                     self.db_paths[j], {"path": self.db_paths[j]}) for d, j in zip(drow, irow)]
                for drow, irow in zip(D, I)]


def load_run(path: str | Path) -> Run:
    """Open a run folder written by ``ahcl train``.

    Raises:
        RunError: missing files, another format version, or codes that do not match the config.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} not found")
    required = RUN_FILES
    if (path / "config.json").is_file() and _read_json(path / "config.json").get("method") in (
            "ahcl", "adsh"):
        required += ASYMMETRIC_FILES
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        hint = " (training unfinished? resume with ahcl train --resume)" if "run.json" in missing \
            else ""
        raise RunError(f"{path} is not a complete run: missing {', '.join(missing)}{hint}")
    info = _read_json(path / "run.json")
    if info.get("format") != RUN_FORMAT or info.get("version") != RUN_VERSION:
        raise RunError(f"{path} is a run of format {info.get('format')!r} version "
                       f"{info.get('version')!r}; this ahcl reads {RUN_FORMAT} version {RUN_VERSION}")
    config = _read_json(path / "config.json")
    db = _read_json(path / "db.json")
    try:
        codes = np.load(path / "db_codes.npy", allow_pickle=False)
    except ValueError as exc:
        raise RunError(f"{path / 'db_codes.npy'} is unreadable: {exc}") from None
    if sha256_file(path / "db_codes.npy") != info.get("db_codes_sha256"):
        raise RunError(f"{path / 'db_codes.npy'} does not match the checksum in run.json")
    n_bits = int(info["n_bits"])
    labels = np.asarray(db["labels"], dtype=np.int64)
    if (codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != n_bits
            or int(config.get("n_bits", -1)) != n_bits or len(codes) != len(labels)
            or len(labels) != len(db["paths"])):
        raise RunError(f"{path}: database codes {codes.dtype} {codes.shape} do not match the config "
                       f"({n_bits} bits, {len(labels)} items)")
    root = Path(db["root"])
    return Run(path=path, config=config, n_bits=n_bits, classes=list(db["classes"]),
               db_codes=codes, db_labels=labels, db_paths=[str(root / p) for p in db["paths"]],
               data_root=root, info=info)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable: {exc}") from None
