"""A trained run on disk: what ``ahcl train`` writes, and :func:`load_run` to use it.

Layout of a run folder (every file written atomically; ``run.json`` last, as the mark of a
complete run)::

    run.json          format, version, n_bits (and semantic_bits, instance_bits), method, sizes,
                      sha256 of every other file
    config.json       the resolved training config (replays the run)
    split.json        query / database indices and image paths
    model.pt          the network's state_dict (loaded with torch.load(weights_only=True))
    db_codes.npy      database codes, packed uint8 (n, n_bits/8): the learned (semantic) code,
                      then the instance code (:mod:`ahcl.methods.instance`) when the run has one
    instance.npz      the instance projection (mean, weights), runs with instance bits only
    db.json           data root, database paths (relative to it), labels, class names
    code_state.npz    M = UᵀU, R (per-class sums of u), r, λ: the code step for new labelled items
    metrics.jsonl     one JSON line per outer iteration
    timings.json      seconds spent in features, training, total
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ahcl._io import atomic_write, atomic_write_json, atomic_write_text, file_digest
from ahcl._version import __version__
from ahcl.config import RUNTIME_KEYS
from ahcl.data.folder import read_image_folder
from ahcl.data.splits import Split, load_split, save_split
from ahcl.device import CPU, Placement, default_workers
from ahcl.device import placement as device_placement
from ahcl.encoder import Encoder
from ahcl.errors import RunError
from ahcl._progress import progress_bar
from ahcl.data.alter import altered_copies, near_duplicate_rows
from ahcl.data.scenes import (SceneCatalog, SceneTiles, Tile, TileReader, place_tile,
                              scene_catalog, scene_tiles)
from ahcl.eval.metrics import RetrievalReport, evaluate
from ahcl.eval.near_duplicates import (NearDuplicateReport, near_duplicate_ranks,
                                       near_duplicate_report)
from ahcl.index import HammingIndex
from ahcl.index.index import search_results
from ahcl.index.hits import Hit
from ahcl.index.packing import pack_codes
from ahcl.methods.ahcl import CodeState, code_new_rows
from ahcl.models.features import data_loader
from ahcl.methods.instance import InstanceProjection
from ahcl.methods.registry import KINDS

RUN_FORMAT = "ahcl-run"
RUN_VERSION = 2  # 2: instance codes (semantic_bits, instance_bits, instance.npz)
READ_VERSIONS = (1, 2)
INSTANCE = "instance.npz"
RUN_FILES = ("run.json", "config.json", "split.json", "model.pt", "db_codes.npy", "db.json")
ASYMMETRIC_FILES = ("code_state.npz",)  # runs of the asymmetric methods only (AHCL, ADSH)
CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return file_digest(path, "sha256")


def _has_code_step(method: str | None) -> bool:
    return KINDS.get(str(method)) == "asymmetric"


@dataclass
class Run:
    """A trained run loaded from disk (see the module doc for its files).

    Attributes:
        path: the run folder.
        config: the resolved training config (flat dict).
        n_bits: bits per item (semantic plus instance).
        classes: class names; labels index into them.
        db_codes: packed uint8 (n, n_bits/8) database codes (learned semantic code, then the
            instance code).
        db_labels: int64 (n,).
        db_paths: absolute database image paths (n,).
        data_root: the dataset folder the run was trained on.
        instance: the instance projection (``None``: a run without instance bits).
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
    placement: Placement = CPU
    num_workers: int | None = None
    compile: bool = False
    instance: InstanceProjection | None = field(default=None, repr=False)
    _encoder: Any = field(default=None, repr=False)
    _index: Any = field(default=None, repr=False)

    @property
    def method(self) -> str:
        return str(self.config["method"])

    @property
    def instance_bits(self) -> int:
        """Bits of each code spent on the instance code (0: none)."""
        return self.instance.n_bits if self.instance is not None else 0

    @property
    def semantic_bits(self) -> int:
        """Bits of the learned (semantic) code: the first ones of each code."""
        return self.n_bits - self.instance_bits

    def check_index(self, index: HammingIndex, where: str | Path) -> None:
        """Refuse an index whose codes this run does not make (another width or split).

        Raises:
            RunError: naming both and what to do.
        """
        def shape(n_bits: int, semantic: int) -> str:
            return f"{n_bits}-bit codes" + (f" ({semantic} semantic + {n_bits - semantic} "
                                            "instance bits)" if semantic != n_bits else "")

        mine, theirs = shape(self.n_bits, self.semantic_bits), shape(index.n_bits,
                                                                     index.semantic_bits)
        if mine != theirs:
            raise RunError(f"run {self.path} makes {mine} but {where} holds {theirs}: use the "
                           "run the index was built from, or rebuild the index with this run",
                           path=str(where))

    def new_index(self, **options: Any) -> HammingIndex:
        """An empty :class:`HammingIndex` for this run's codes (split into semantic and instance
        bits when the run has instance codes); ``options`` go to its constructor."""
        return HammingIndex(self.n_bits, semantic_bits=self.semantic_bits, **options)

    def encoder(self) -> Encoder:
        """The query encoder (network + backbone), built on first use from ``model.pt``."""
        if self._encoder is None:
            model = self.path / "model.pt"
            self._encoder = Encoder.from_state(read_model(model), self.config, self.n_bits,
                                               len(self.classes), source=model,
                                               placement=self.placement,
                                               num_workers=self.num_workers,
                                               compile=self.compile, instance=self.instance)
        return self._encoder

    def encode(self, paths: Sequence[str | Path]) -> np.ndarray:
        """Network codes ``sign(u)`` of images: packed uint8 (len(paths), n_bits/8)."""
        return self.encoder().encode(paths)

    def encode_images(self, images: Sequence[Any]) -> np.ndarray:
        """Network codes of in-memory RGB PIL images: packed uint8 (len(images), n_bits/8)."""
        return self.encoder().encode_images(images)

    def image_inputs(self, images: Sequence[Any]) -> list[Any]:
        """The network inputs (tensors) of in-memory PIL images, made in this thread; see
        :meth:`encode_inputs`."""
        return self.encoder().image_inputs(images)

    def encode_inputs(self, inputs: Sequence[Any]) -> np.ndarray:
        """Network codes of inputs made by :meth:`image_inputs` (equal to
        :meth:`encode_images` of their images): packed uint8 (len(inputs), n_bits/8)."""
        return self.encoder().encode_inputs(inputs)

    def codes_for_labelled(self, paths: Sequence[str | Path], labels: np.ndarray, *,
                           images: Sequence[Any] | None = None) -> np.ndarray:
        """Database codes for new labelled images: the code step for those rows alone.

        The semantic code depends only on the label and the stored code-step statistics, not on
        the pixels; the instance code (runs that have one) is computed from the images: the
        files ``paths``, or the in-memory PIL ``images`` when given (uploads not yet stored).
        """
        labels = np.asarray(labels, dtype=np.int64)
        if len(paths) != len(labels):
            raise RunError(f"{len(paths)} images but {len(labels)} labels")
        if not (self.path / "code_state.npz").is_file():
            with_step = ", ".join(m for m in KINDS if _has_code_step(m))
            raise RunError(f"{self.method} has no database-code step (only {with_step} do): "
                           "add these images without a label to give them network codes",
                           path=self.path)
        try:
            with np.load(self.path / "code_state.npz", allow_pickle=False) as z:
                state = CodeState(z["gram_u"], z["class_sums_u"], float(z["r"]),
                                  float(z["lam"]))
        except (OSError, ValueError, KeyError, EOFError) as exc:
            raise RunError(f"{self.path / 'code_state.npz'} is unreadable "
                           f"({type(exc).__name__}): the run is damaged",
                           path=self.path / "code_state.npz") from None
        semantic = pack_codes(code_new_rows(state, labels, self.semantic_bits))
        if self.instance is None:
            return semantic
        instance = self.encoder().instance_codes(paths, images=images)
        return np.ascontiguousarray(np.hstack([semantic, instance]))

    def search(self, paths: Sequence[str | Path], k: int = 10) -> list[list[Hit]]:
        """Encode ``paths`` and rank the database: for each query, the ``k`` nearest hits
        ordered by (semantic distance, instance distance, database row) — by (Hamming distance,
        row) for a run without instance codes."""
        return self.search_codes(self.encode(paths), k)

    def queries(self, folder: str | Path | None = None) -> tuple[list[str], np.ndarray]:
        """Query image paths and labels: the run's own held-out queries, or a labelled folder.

        A folder's class names are matched to the run's by name.

        Raises:
            RunError: the run has no queries, or the folder has classes the run does not know.
        """
        if folder is None:
            return self._held_out_queries()
        qf = read_image_folder(folder, min_classes=1)  # queries of one class are a valid set
        unknown = sorted(set(qf.classes) - set(self.classes))
        if unknown:
            raise RunError(f"query classes not known to the run: {', '.join(unknown)} "
                           f"(the run knows {', '.join(self.classes)})")
        mapping = np.array([self.classes.index(c) for c in qf.classes], dtype=np.int64)
        return [str(p) for p in qf.absolute_paths], mapping[qf.labels]

    def _held_out_queries(self) -> tuple[list[str], np.ndarray]:
        """The queries ``split.json`` holds out, checked (indices in range, known classes)."""
        where = self.path / "split.json"
        split = load_split(where)  # DatasetError: indices out of range, malformed
        paths = _read_mapping(where).get("paths")
        index = {name: i for i, name in enumerate(self.classes)}
        if not isinstance(paths, list) or len(paths) != split.n_items or not all(
                isinstance(p, str) and p.split("/")[0] in index for p in paths):
            raise RunError(f"{where}: its image paths do not match the run's {split.n_items} "
                           f"items of classes {', '.join(self.classes)}: the run is damaged",
                           path=where)
        rel = [paths[i] for i in split.query]
        if not rel:
            raise RunError(f"{self.path} has no held-out queries (trained with "
                           "query_fraction 0): pass --queries DIR")
        labels = np.array([index[p.split("/")[0]] for p in rel], dtype=np.int64)
        return [str(self.data_root / p) for p in rel], labels

    def evaluate(self, folder: str | Path | None = None,
                 topk: Sequence[int] = (10, 100, 1000)) -> RetrievalReport:
        """Encode the queries (see :meth:`queries`) and score them against the database codes."""
        paths, labels = self.queries(folder)
        return evaluate(self.encode(paths), labels, self.db_codes, self.db_labels, topk=topk,
                        semantic_bits=self.semantic_bits if self.instance is not None else None)

    def near_duplicates(self, n: int = 500, seed: int = 0) -> NearDuplicateReport:
        """The near-duplicate protocol (:mod:`ahcl.data.alter`): ``n`` database images, each
        altered (crop, quarter turn, brightness, JPEG), encoded as queries; where does each
        one's source rank in the database? Same ranking as :meth:`search`."""
        rows = near_duplicate_rows(len(self.db_paths), n, seed)
        codes = self.encode_images(altered_copies(self.db_paths, rows, seed))
        ranks = near_duplicate_ranks(codes, self.db_codes, rows,
                                     semantic_bits=self.semantic_bits if self.instance else None)
        return near_duplicate_report(ranks, n_db=len(self.db_codes))

    def encode_scenes(self, scenes: Sequence[str | Path], *, tile: int = 256, stride: int = 256,
                      bands: Sequence[int] | None = None, min_valid: float = 0.9,
                      batch_size: int = 64) -> tuple[np.ndarray, list[dict[str, Any]],
                                                     dict[str, int]]:
        """Cut GeoTIFF scenes into tiles (:func:`ahcl.data.scenes.scene_tiles`: windowed reads,
        nodata tiles skipped) and encode them.

        Every scene is opened and checked before any tile is encoded, so a bad scene fails the
        call with one :class:`~ahcl.data.scenes.SceneError` and nothing done.

        Returns:
            codes ``uint8 (n, n_bits/8)``, one meta per tile (``scene``, ``window``, ``crs``,
            ``geometry``, ``bands``) and counts (``scenes``, ``tiles``, ``nodata_skipped``,
            ``edge_skipped``).
        """
        opened = [scene_tiles(p, tile=tile, stride=stride, bands=bands, min_valid=min_valid)
                  for p in scenes]
        units = [(s, w) for s, scene in enumerate(opened) for w in range(len(scene.positions))]
        bar = progress_bar(len(units), desc="scene tiles", unit="tile")
        try:
            kept, codes, metas = self.encode_windows(opened, units, bar, batch_size)
        finally:
            bar.close()
        counts = {"scenes": len(opened), "tiles": len(kept),
                  "nodata_skipped": len(units) - len(kept),
                  "edge_skipped": sum(s.edge_skipped for s in opened)}
        return codes, metas, counts

    @property
    def reading_workers(self) -> int:
        """The processes :meth:`encode_windows` reads scene windows in (0: this process):
        ``num_workers`` when set, else none on the CPU and
        :func:`~ahcl.device.default_workers` on an accelerator."""
        if self.num_workers is not None:
            return self.num_workers
        return 0 if self.placement.device.type == "cpu" else default_workers()

    def encode_windows(self, scenes: Sequence[SceneTiles], units: Sequence[tuple[int, int]],
                       bar: Any = None, batch_size: int = 64
                       ) -> tuple[list[int], np.ndarray, list[dict[str, Any]]]:
        """Read and encode windows of tiled scenes: ``units`` as for
        :class:`~ahcl.data.scenes.TileReader`, in order.

        Reading runs in :attr:`reading_workers` data-loading processes while the forward pass
        runs here; ``batch_size`` windows per batch. By default that is this process when the
        network runs on the CPU (the forward pass takes every core, and reading is about a
        tenth of the time: on 2 cores, 2 reading workers made bench_scenes' 10,000² scene 15 %
        slower and its 5,000² one 20 %), and
        :func:`~ahcl.device.default_workers` processes on an accelerator, where reading is what
        the network waits for. A single batch is read here. A window mostly nodata is skipped.
        ``bar``, if given, is advanced by each batch's windows.

        Returns:
            The numbers (positions in ``units``) of the tiles kept, their codes
            ``uint8 (n, n_bits/8)`` and their metas.

        Raises:
            SceneError: a window cannot be read (damage inside a block).
        """
        reader = TileReader(scenes, units)
        # The batches are lists of tiles (PIL images and metadata), not tensors: nothing to pin.
        loader = data_loader(reader, batch_size, self.reading_workers, CPU, collate=list)
        kept: list[int] = []
        codes: list[np.ndarray] = []
        metas: list[dict[str, Any]] = []
        seen = 0
        try:
            for batch in loader:
                tiles = []
                for j, (tile, error) in enumerate(batch):
                    if error is not None:
                        raise error
                    if tile is not None:
                        kept.append(seen + j)
                        tiles.append(tile)
                seen += len(batch)
                if tiles:
                    codes.append(self.encode_images([t.image for t in tiles]))
                    metas.extend(t.meta for t in tiles)
                if bar is not None:
                    bar.update(len(batch))
        finally:
            reader.close()
        out = np.concatenate(codes) if codes else np.zeros((0, self.n_bits // 8), np.uint8)
        return kept, out, metas

    def search_place(self, index: HammingIndex | None = None, *,
                     scene: str | Path | None = None, window: Sequence[int] | None = None,
                     lonlat: Sequence[float] | None = None, bands: Sequence[int] | None = None,
                     k: int = 10) -> tuple[Tile, list[Hit]]:
        """Search by a place instead of an image: a pixel ``window`` ``[col_off, row_off, width,
        height]`` of ``scene``, or the tile around ``lonlat`` = (lon, lat) in EPSG:4326 — in
        ``scene``, or without it in whichever of the scenes of ``index``'s items contains the
        point (:func:`ahcl.data.scenes.place_tile`; the tile is as large as the index's).

        Args:
            index: the index to search (its items give the tile size and the scenes); None:
                this run's own database.
            bands: the 1-based bands read as RGB (those the index was built with).
            k: hits wanted.

        Returns:
            The query :class:`~ahcl.data.scenes.Tile` (image and meta: ``scene``, ``window``,
            ``crs``, ``geometry``) and its hits, ranked as by :meth:`search`.

        Raises:
            PlaceError, SceneError: see :func:`~ahcl.data.scenes.place_tile`.
        """
        tile = place_tile(index_scenes(index), scene=scene, window=window, lonlat=lonlat,
                          bands=bands)
        codes = self.encode_images([tile.image])
        if index is None:
            return tile, self.search_codes(codes, k)[0]
        # k is clamped to the index's size: the answer is the same and nothing is sized by k.
        return tile, search_results(index, codes, min(k, max(len(index), 1)),
                                    classes=self.classes)[0]

    def search_codes(self, query_codes: np.ndarray, k: int = 10) -> list[list[Hit]]:
        """Rank the database for packed query codes (see :meth:`search`)."""
        if self._index is None:
            # ids = database rows, so the index's (key, id) order is (key, row).
            self._index = self.new_index()
            self._index.add(self.db_codes, labels=self.db_labels,
                            meta=[{"path": p} for p in self.db_paths])
        return search_results(self._index, query_codes, min(k, len(self.db_labels)),
                              classes=self.classes)


def index_scenes(index: HammingIndex | None) -> SceneCatalog:
    """The scenes of an index's items, its tile size (:func:`ahcl.data.scenes.scene_catalog`);
    empty for None or an index without tiles of scenes."""
    if index is None or len(index) == 0:
        return SceneCatalog()
    return scene_catalog(index.meta_of(np.sort(np.asarray(index.ids))))


def load_run(path: str | Path, *, device: str | Any = "auto", precision: str = "auto",
             num_workers: int | None = None, compile: bool = False) -> Run:
    """Open a run folder written by ``ahcl train``, on any device (a run trained on a GPU opens
    on a CPU and the other way round).

    Args:
        path: the run folder.
        device: where its network encodes (``auto``, ``cpu``, ``cuda``, ``cuda:N``, ``mps``).
        precision: autocast of the network (``auto``: bf16 on CUDA GPUs that have it, else fp32).
        num_workers: image-decoding processes when encoding (``None``: ``min(cores, 8)``).
        compile: ``torch.compile`` the frozen backbone.

    Raises:
        DeviceError: the device or precision is not available here.
        RunError: missing files, another format version, or codes that do not match the config.
    """
    place = device_placement(device, precision)
    path = Path(path)
    if not path.is_dir():
        raise RunError(f"run folder {path} not found", path=path)
    required = RUN_FILES
    if (path / "config.json").is_file() and _has_code_step(
            _read_json(path / "config.json").get("method")):
        required += ASYMMETRIC_FILES
    missing = [name for name in required if not (path / name).is_file()]
    if missing:
        hint = " (training unfinished? resume with ahcl train --resume)" if "run.json" in missing \
            else ""
        raise RunError(f"{path} is not a complete run: missing {', '.join(missing)}{hint}")
    info = _read_mapping(path / "run.json")
    if info.get("format") != RUN_FORMAT or info.get("version") not in READ_VERSIONS:
        raise RunError(f"{path} is a run of format {info.get('format')!r} version "
                       f"{info.get('version')!r}; this ahcl reads {RUN_FORMAT} version {RUN_VERSION}",
                       path=path)
    _verify_files(path, info)
    instance = _read_instance(path, info)
    config = _read_mapping(path / "config.json")
    db = _read_mapping(path / "db.json")
    try:
        codes = np.load(path / "db_codes.npy", allow_pickle=False)
    except (ValueError, OSError) as exc:
        raise RunError(f"{path / 'db_codes.npy'} is unreadable: {exc}", path=path) from None
    try:
        n_bits = int(info["n_bits"])
        labels = np.asarray(db["labels"], dtype=np.int64)
        classes, paths, root = list(db["classes"]), list(db["paths"]), Path(db["root"])
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise RunError(f"{path}: run.json or db.json lacks or garbles a field ({exc!r})",
                       path=path) from None
    if (codes.dtype != np.uint8 or codes.ndim != 2 or codes.shape[1] * 8 != n_bits
            or config.get("n_bits", -1) != n_bits or len(codes) != len(labels)
            or len(labels) != len(paths)):
        raise RunError(f"{path}: database codes {codes.dtype} {codes.shape} do not match the config "
                       f"({n_bits} bits, {len(labels)} items)", path=path)
    if labels.ndim != 1 or (len(labels) and (labels.min() < 0 or labels.max() >= len(classes))):
        raise RunError(f"{path / 'db.json'}: labels must be class ids in 0..{len(classes) - 1}",
                       path=path / "db.json")
    return Run(path=path, config=config, n_bits=n_bits, classes=list(db["classes"]),
               db_codes=codes, db_labels=labels, db_paths=[str(root / p) for p in paths],
               data_root=root, info=info, placement=place, num_workers=num_workers,
               compile=compile, instance=instance)


def _read_instance(path: Path, info: dict[str, Any]) -> InstanceProjection | None:
    """The run's instance projection (``None`` when run.json gives it no instance bits)."""
    bits = info.get("instance_bits", 0)
    if not isinstance(bits, int) or isinstance(bits, bool) or bits < 0:
        raise RunError(f"{path / 'run.json'}: instance_bits {bits!r} is not a count", path=path)
    if bits == 0:
        return None
    try:
        with np.load(path / INSTANCE, allow_pickle=False) as z:
            projection = InstanceProjection.from_arrays({k: z[k] for k in ("mean", "weights")})
    except (OSError, ValueError, KeyError, EOFError) as exc:
        raise RunError(f"{path / INSTANCE} is unreadable ({exc}): the run is damaged",
                       path=path / INSTANCE) from None
    if projection.n_bits != bits:
        raise RunError(f"{path / INSTANCE} makes {projection.n_bits}-bit instance codes but "
                       f"run.json says {bits}", path=path / INSTANCE)
    return projection


def _read_mapping(path: Path) -> dict[str, Any]:
    obj = _read_json(path)
    if not isinstance(obj, dict):
        raise RunError(f"{path} is not a JSON object: the run is damaged", path=path)
    return obj


def _verify_files(path: Path, info: dict[str, Any]) -> None:
    """Check every file ``run.json`` lists a sha256 for (runs written since 0.2 list them all;
    older ones only ``db_codes_sha256``), each file hashed once."""
    files = info.get("files", {})
    if not isinstance(files, dict):
        raise RunError(f"{path / 'run.json'}: 'files' is not a mapping", path=path)
    files = {**files}
    files.setdefault("db_codes.npy", info.get("db_codes_sha256"))
    for name, digest in files.items():
        target = path / str(name)
        if target.parent != path:
            raise RunError(f"{path / 'run.json'} names a file outside the run: {name!r}",
                           path=path)
        if not target.is_file():
            raise RunError(f"{path} is not a complete run: missing {name}", path=target)
        if sha256_file(target) != digest:
            raise RunError(f"{target} does not match its checksum in run.json (the file was "
                           "changed or damaged)", path=target)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunError(f"{path} is unreadable: {exc}") from None


# ---------------------------------------------------------------------- writing a run folder
# Training (ahcl.training) orchestrates; these functions are the only writers of the format.
def check_target(out: Path, config: dict[str, Any], resume: bool) -> bool:
    """Whether ``out`` can take a run of ``config``; True when it already holds the finished run
    (only with ``resume``: then there is nothing to do but :func:`load_run`).

    Raises:
        RunError: a finished run without ``resume``; a non-empty folder without ``resume``; an
            unfinished run started with another config.
    """
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file: choose a folder for the run", path=out)
    if (out / "run.json").exists():
        if not resume:
            raise RunError(f"{out} already holds a finished run; choose another --out",
                           path=out)
        if _identity(_read_json(out / "config.json")) != _identity(config):
            raise RunError(f"{out} holds a finished run made with another config; --resume only "
                           "continues the same run: choose another --out", path=out)
        return True
    if out.exists() and any(out.iterdir()):
        if not resume:
            raise RunError(f"{out} exists and is not empty; use --resume to continue it "
                           "or choose another --out", path=out)
        if not (out / "config.json").is_file():
            raise RunError(f"cannot resume {out}: it is not an ahcl run folder (no config.json); "
                           "choose another --out", path=out)
        if _identity(_read_json(out / "config.json")) != _identity(config):
            raise RunError(f"cannot resume {out}: it was started with another config", path=out)
    return False


def _identity(config: dict[str, Any]) -> dict[str, Any]:
    """The config minus the runtime settings (device, workers, ...): what a resume must match."""
    return {k: v for k, v in config.items() if k not in RUNTIME_KEYS}


def start_run(out: Path, config: dict[str, Any], split: Split, paths: Sequence[str]) -> None:
    """Create the run folder with its resolved config and split (the first files written).

    When these fail (a full disk), the folders this call made are removed again, so the
    failure leaves nothing that would block a plain rerun.
    """
    made = out
    while not made.parent.exists():
        made = made.parent
    made = None if out.exists() else made
    out.mkdir(parents=True, exist_ok=True)
    try:
        atomic_write_json(out / "config.json", config)
        save_split(split, out / "split.json", paths=paths)
    except BaseException:
        if made is not None:
            shutil.rmtree(made, ignore_errors=True)
        raise


def read_metrics(out: Path) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl`` up to the first unreadable line (a crash mid-write)."""
    path = out / METRICS
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            break
    return rows


def write_metrics(out: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Rewrite ``metrics.jsonl`` (atomically) with one JSON line per iteration."""
    atomic_write_text(out / METRICS, "".join(json.dumps(r) + "\n" for r in rows))


@dataclass
class FinishedRun:
    """Everything :func:`finish_run` writes besides what :func:`start_run` did.

    Attributes:
        method: the method's registered name.
        n_bits: code length.
        net_state: the network's ``state_dict``.
        backbone_state: a random frozen backbone's ``state_dict`` (kept rather than re-seeded),
            else ``None``.
        db_codes: packed uint8 (n, n_bits/8) database codes (semantic, then instance).
        code_state: the code-step statistics (asymmetric methods), else ``None``.
        data_root: the dataset folder.
        classes: class names.
        db_paths: database image paths relative to ``data_root``.
        db_labels: int64 (n,).
        n_query: number of held-out queries.
        timings: seconds spent (features, training, total, ...).
        instance: the instance projection, if the run has instance bits.
    """

    method: str
    n_bits: int
    net_state: dict[str, Any]
    backbone_state: dict[str, Any] | None
    db_codes: np.ndarray
    code_state: CodeState | None
    data_root: Path
    classes: list[str]
    db_paths: list[str]
    db_labels: np.ndarray
    n_query: int
    timings: dict[str, Any]
    instance: InstanceProjection | None = None


def finish_run(out: Path, run: FinishedRun) -> None:
    """Write the model, codes and metadata, then ``run.json`` (the mark of a complete run), and
    remove the checkpoint."""
    blob: dict[str, Any] = {"net": run.net_state}
    if run.backbone_state is not None:
        blob["backbone"] = run.backbone_state
    with atomic_write(out / "model.pt") as f:
        torch.save(blob, f)
    with atomic_write(out / "db_codes.npy") as f:
        np.save(f, run.db_codes, allow_pickle=False)
    if run.code_state is not None:  # the code step for new labelled items needs these
        st = run.code_state
        with atomic_write(out / "code_state.npz") as f:
            np.savez(f, gram_u=st.gram_u, class_sums_u=st.class_sums_u, r=np.float64(st.r),
                     lam=np.float64(st.lam))
    atomic_write_json(out / "db.json", {
        "root": str(run.data_root), "classes": run.classes, "paths": list(run.db_paths),
        "labels": np.asarray(run.db_labels).tolist()})
    atomic_write_json(out / "timings.json", run.timings)
    checked = ["config.json", "split.json", "model.pt", "db_codes.npy", "db.json"]
    if run.code_state is not None:
        checked.append("code_state.npz")
    instance_bits = run.instance.n_bits if run.instance is not None else 0
    if run.instance is not None:
        with atomic_write(out / INSTANCE) as f:
            np.savez(f, **run.instance.to_arrays())
        checked.append(INSTANCE)
    atomic_write_json(out / "run.json", {
        "format": RUN_FORMAT, "version": RUN_VERSION, "ahcl_version": __version__,
        "method": run.method, "n_bits": run.n_bits, "semantic_bits": run.n_bits - instance_bits,
        "instance_bits": instance_bits, "n_db": int(len(run.db_labels)),
        "n_query": int(run.n_query), "n_classes": len(run.classes),
        "db_codes_sha256": sha256_file(out / "db_codes.npy"),
        "files": {name: sha256_file(out / name) for name in checked},
        "torch": torch.__version__})
    (out / CHECKPOINT).unlink(missing_ok=True)


def read_model(path: Path) -> dict[str, Any]:
    """``model.pt`` loaded safely (``weights_only``: tensors and plain containers only).

    Raises:
        RunError: unreadable, or holds something other than tensors.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - unreadable or unsafe file
        # torch's own message suggests weights_only=False; we never unpickle code, so say why.
        raise RunError(f"{path} is unreadable or holds more than tensors "
                       f"({type(exc).__name__}); it is only ever loaded as tensors: retrain or "
                       "restore the run", path=path, reason=type(exc).__name__) from None
