"""Registered scene datasets: name -> :class:`DatasetInfo`, and :func:`ensure_dataset`.

:func:`ensure_dataset` follows torchgeo's verify ladder, made atomic:

1. ``<root>/<name>/`` holds the completion marker ``.ahcl-complete`` and the expected number
   of images -> use it. (A folder put there by hand with the right image count is accepted and
   marked.)
2. The archive ``<root>/<filename>`` is present -> verify its checksum -> extract. (The same
   name with another archive extension, e.g. ``AID.rar`` for ``AID.zip``, is accepted too and
   then checked by image count only.)
3. Downloads allowed and a URL known -> download (resumable) -> verify -> extract.
4. Otherwise raise a :class:`~ahcl.errors.DatasetError` saying where to get the archive and
   where to put it.

Extraction goes into a hidden temporary sibling folder; the image count is checked, the marker
written, and only then is the folder renamed to ``<root>/<name>``, so a half-extracted folder
is never taken as a dataset.

Checksums: where a checksum is published (by torchgeo / torchvision for their mirrors) it is
checked. Where none is (``md5=None`` and ``sha256=None``: AID, WHU-RS19, RSSCN7), the archive is
verified by the number of images it extracts to only. The URL can be overridden per call
(``url=``) or by the environment variable ``AHCL_DATASET_URL_<NAME>`` (e.g. for a mirror); the
checksum still applies. Default root: ``$AHCL_DATA`` or ``~/.cache/ahcl/datasets``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ahcl._io import atomic_write_json
from ahcl.data.download import download_url, extract_archive, verify_checksum
from ahcl.data.folder import count_images
from ahcl.errors import AhclError, DatasetError

MARKER = ".ahcl-complete"
_ARCHIVE_EXTENSIONS = (".tar.gz", ".tgz", ".tar", ".zip", ".rar")


@dataclass(frozen=True)
class DatasetInfo:
    """What is known about a public scene dataset.

    Attributes:
        name: registry key, e.g. ``"ucmerced"``.
        title: human name.
        url: archive URL, or None when it must be fetched by hand (e.g. from a cloud drive).
        filename: archive file name under the data root.
        md5: md5 of the archive, or None when none is published.
        sha256: sha256 of the archive, or None when none is published.
        classes: class folder names, sorted as :func:`~ahcl.data.folder.read_image_folder`
            sorts them.
        n_images: total number of images.
        image_size: nominal side in pixels.
        license: licence / terms note.
        citation: the paper to cite.
        folder: path inside the archive of the folder holding the class folders ("" = find the
            first folder with more than one sub-folder).
        homepage: where the dataset is described (and can be fetched by hand).
    """

    name: str
    title: str
    url: str | None
    filename: str
    md5: str | None
    sha256: str | None
    classes: tuple[str, ...]
    n_images: int
    image_size: int
    license: str
    citation: str
    folder: str
    homepage: str


_REGISTRY: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add ``info`` to the registry (replacing one of the same name); returns it."""
    _REGISTRY[info.name] = info
    return info


def list_datasets() -> list[DatasetInfo]:
    """All registered datasets, sorted by name."""
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` called ``name``.

    Raises:
        DatasetError: unknown name (the message lists the known ones).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown dataset {name!r}; known: {', '.join(sorted(_REGISTRY))}"
                           ) from None


def default_root() -> Path:
    """``$AHCL_DATA`` or ``~/.cache/ahcl/datasets``."""
    env = os.environ.get("AHCL_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ahcl" / "datasets"


def dataset_url(info: DatasetInfo, url: str | None = None) -> str | None:
    """The URL to download from: ``url``, else ``$AHCL_DATASET_URL_<NAME>``, else ``info.url``."""
    return url or os.environ.get(f"AHCL_DATASET_URL_{info.name.upper()}") or info.url


def local_path(name: str | DatasetInfo, root: str | os.PathLike | None = None) -> Path | None:
    """The class-folder directory if the dataset is present and complete, else None."""
    info = name if isinstance(name, DatasetInfo) else get_dataset(name)
    return _complete_dir(info, Path(root) if root is not None else default_root())


def dataset_root(data: str | os.PathLike | None = None, dataset: str | None = None) -> Path:
    """The one resolver of "a folder or a registered dataset" (``--data`` / ``--dataset``).

    Args:
        data: a folder-per-class dataset folder.
        dataset: a registered dataset name, found in the cache or downloaded
            (:func:`ensure_dataset`).

    Raises:
        AhclError: neither or both given.
        DatasetError: the registered dataset cannot be had (see :func:`ensure_dataset`).
    """
    if (data is None) == (dataset is None):
        raise AhclError("give exactly one of --data DIR or --dataset NAME")
    if data is not None:
        return Path(data).expanduser().resolve()
    return Path(ensure_dataset(dataset))


def ensure_dataset(name: str | DatasetInfo, root: str | os.PathLike | None = None,
                   download: bool = True, url: str | None = None) -> Path:
    """Make the dataset available locally (ladder in the module doc) and return its folder.

    Args:
        name: a registered name, or a :class:`DatasetInfo` (e.g. a private dataset).
        root: the data root; default :func:`default_root`.
        download: allow downloading when neither the folder nor the archive is present.
        url: download from here instead of the registered URL.

    Returns:
        The folder holding the class folders (ready for
        :func:`~ahcl.data.folder.read_image_folder`).

    Raises:
        DatasetError: not found and not downloadable (says how to fix it), download failure,
            wrong image count after extraction.
        ChecksumError: the archive does not match its published checksum.
    """
    info = name if isinstance(name, DatasetInfo) else get_dataset(name)
    root = Path(root) if root is not None else default_root()
    found = _complete_dir(info, root)
    if found is not None:
        return found
    root.mkdir(parents=True, exist_ok=True)
    archive = root / info.filename
    source = dataset_url(info, url)
    other = _other_archive(info, root)
    if not archive.is_file() and other is not None:
        archive = other  # e.g. AID.rar put there by hand: no published checksum, count only
    elif archive.is_file():
        verify_checksum(archive, info.md5, info.sha256)
    elif download and source:
        download_url(source, archive, md5=info.md5, sha256=info.sha256)
    else:
        raise DatasetError(_not_found_message(info, root, source, download))
    return _extract_dataset(info, archive, root)


def _other_archive(info: DatasetInfo, root: Path) -> Path | None:
    """An archive of the same stem but another format (``AID.rar`` for ``AID.zip``), if any."""
    stem = info.filename
    for ext in _ARCHIVE_EXTENSIONS:
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for ext in _ARCHIVE_EXTENSIONS:
        candidate = root / (stem + ext)
        if candidate.name != info.filename and candidate.is_file():
            return candidate
    return None


def _not_found_message(info: DatasetInfo, root: Path, source: str | None, download: bool) -> str:
    where = f"{root / info.filename}"
    if source is None:
        return (f"dataset {info.name!r} is not in {root} and has no direct download: get "
                f"{info.filename} from {info.homepage} and put it at {where} (or extract it to "
                f"{root / info.name}), then run again")
    how = "run again with downloads allowed, or " if not download else ""
    return (f"dataset {info.name!r} is not in {root}: {how}download {source} and put it at "
            f"{where}, then run again")


def _complete_dir(info: DatasetInfo, root: Path) -> Path | None:
    base = root / info.name
    if not base.is_dir():
        return None
    marker = base / MARKER
    if marker.is_file():
        try:
            folder = json.loads(marker.read_text())["folder"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        class_dir = base / folder
        return class_dir if count_images(class_dir) == info.n_images else None
    class_dir = find_class_dir(base, info.folder)  # extracted by hand: accept if complete
    if class_dir is not None and count_images(class_dir) == info.n_images:
        _write_marker(base, class_dir, info)
        return class_dir
    return None


def find_class_dir(base: Path, folder: str = "") -> Path | None:
    """``base / folder`` if it is a directory, else the first directory under ``base`` (going
    down through single sub-folders) with more than one visible sub-folder; None if none."""
    if folder and (base / folder).is_dir():
        return base / folder
    current = base
    while current.is_dir():
        subdirs = [p for p in current.iterdir() if p.is_dir() and not p.name.startswith(".")]
        if len(subdirs) != 1:
            return current if len(subdirs) > 1 else None
        current = subdirs[0]
    return None


def _write_marker(base: Path, class_dir: Path, info: DatasetInfo) -> None:
    atomic_write_json(base / MARKER, {"name": info.name, "n_images": info.n_images,
                                      "folder": class_dir.relative_to(base).as_posix()})


def _extract_dataset(info: DatasetInfo, archive: Path, root: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".extract", dir=root))
    try:
        extract_archive(archive, tmp)
        class_dir = find_class_dir(tmp, info.folder)
        n = count_images(class_dir) if class_dir is not None else 0
        if n != info.n_images:
            raise DatasetError(f"{archive} extracted to {n} images, expected {info.n_images}: "
                               "the archive is incomplete or a different version; delete it "
                               "and download again")
        assert class_dir is not None
        _write_marker(tmp, class_dir, info)
        folder = class_dir.relative_to(tmp)
        final = root / info.name
        if final.exists():  # an incomplete earlier attempt or a stale copy: swap it out
            trash = Path(tempfile.mkdtemp(prefix=f".{info.name}.", suffix=".old", dir=root))
            os.replace(final, trash / "old")
            os.replace(tmp, final)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final / folder


# --- the registered datasets ------------------------------------------------------------------
# url/md5/sha256 of ucmerced, resisc45, patternnet: torchgeo's Hugging Face mirrors (the files
# torchgeo's datasets download); eurosat: torchvision's EuroSAT (RGB JPEG, folder "2750").

register_dataset(DatasetInfo(
    name="ucmerced", title="UC Merced Land Use",
    url="https://hf.co/datasets/torchgeo/ucmerced/resolve/"
        "7c5ef3454d9b1cccfa7ccde0c01fc8f00a45909a/UCMerced_LandUse.zip",
    filename="UCMerced_LandUse.zip", md5="5b7ec56793786b6dc8a908e8854ac0e4",
    sha256="06c539ef28703a58fb07bd2837991ac7c48b813b00bb12ac197efd813a18daeb",
    classes=("agricultural", "airplane", "baseballdiamond", "beach", "buildings", "chaparral",
             "denseresidential", "forest", "freeway", "golfcourse", "harbor", "intersection",
             "mediumresidential", "mobilehomepark", "overpass", "parkinglot", "river", "runway",
             "sparseresidential", "storagetanks", "tenniscourt"),
    n_images=2100, image_size=256,
    license="USGS National Map imagery (public domain); cite the paper",
    citation="Yang & Newsam, Bag-of-visual-words and spatial extensions for land-use "
             "classification, ACM SIGSPATIAL 2010",
    folder="UCMerced_LandUse/Images",
    homepage="http://weegee.vision.ucmerced.edu/datasets/landuse.html"))

register_dataset(DatasetInfo(
    name="aid", title="AID: Aerial Image Dataset", url=None, filename="AID.zip",
    md5=None, sha256=None,
    classes=("Airport", "BareLand", "BaseballField", "Beach", "Bridge", "Center", "Church",
             "Commercial", "DenseResidential", "Desert", "Farmland", "Forest", "Industrial",
             "Meadow", "MediumResidential", "Mountain", "Park", "Parking", "Playground", "Pond",
             "Port", "RailwayStation", "Resort", "River", "School", "SparseResidential",
             "Square", "Stadium", "StorageTanks", "Viaduct"),
    n_images=10000, image_size=600, license="research use (authors' terms); cite the paper",
    citation="Xia et al., AID: A benchmark data set for performance evaluation of aerial scene "
             "classification, IEEE TGRS 2017",
    folder="AID", homepage="https://captain-whu.github.io/AID/"))

register_dataset(DatasetInfo(
    name="resisc45", title="NWPU-RESISC45",
    url="https://hf.co/datasets/torchgeo/resisc45/resolve/"
        "a826b44d938a883185f11ebe3d512d38b464312f/NWPU-RESISC45.zip",
    filename="NWPU-RESISC45.zip", md5="75206b2e16446591afa88e2628744886", sha256=None,
    classes=("airplane", "airport", "baseball_diamond", "basketball_court", "beach", "bridge",
             "chaparral", "church", "circular_farmland", "cloud", "commercial_area",
             "dense_residential", "desert", "forest", "freeway", "golf_course",
             "ground_track_field", "harbor", "industrial_area", "intersection", "island", "lake",
             "meadow", "medium_residential", "mobile_home_park", "mountain", "overpass",
             "palace", "parking_lot", "railway", "railway_station", "rectangular_farmland",
             "river", "roundabout", "runway", "sea_ice", "ship", "snowberg",
             "sparse_residential", "stadium", "storage_tank", "tennis_court", "terrace",
             "thermal_power_station", "wetland"),
    n_images=31500, image_size=256, license="research use (authors' terms); cite the paper",
    citation="Cheng, Han & Lu, Remote sensing image scene classification: benchmark and state "
             "of the art, Proc. IEEE 2017",
    folder="NWPU-RESISC45", homepage="https://doi.org/10.1109/JPROC.2017.2675998"))

register_dataset(DatasetInfo(
    name="whu_rs19", title="WHU-RS19",
    url="https://github.com/CAPTAIN-WHU/BED4RS/raw/main/datasets/WHU-RS19.zip",
    filename="WHU-RS19.zip", md5=None, sha256=None,
    classes=("Airport", "Beach", "Bridge", "Commercial", "Desert", "Farmland", "Forest",
             "Industrial", "Meadow", "Mountain", "Park", "Parking", "Pond", "Port",
             "Residential", "River", "Viaduct", "footballField", "railwayStation"),
    n_images=1005, image_size=600, license="research use (authors' terms); cite the paper",
    citation="Xia et al., Structural high-resolution satellite image indexing, ISPRS TC VII "
             "Symposium 2010",
    folder="WHU-RS19", homepage="https://captain-whu.github.io/BED4RS/"))

register_dataset(DatasetInfo(
    name="rsscn7", title="RSSCN7",
    # A GitHub branch archive: regenerated on demand, so no stable checksum exists.
    url="https://github.com/palewithout/RSSCN7/archive/refs/heads/master.zip",
    filename="RSSCN7-master.zip", md5=None, sha256=None,
    classes=("aGrass", "bField", "cIndustry", "dRiverLake", "eForest", "fResident", "gParking"),
    n_images=2800, image_size=400, license="research use (authors' terms); cite the paper",
    citation="Zou et al., Deep learning based feature selection for remote sensing scene "
             "classification, IEEE GRSL 2015",
    folder="RSSCN7-master", homepage="https://github.com/palewithout/RSSCN7"))

register_dataset(DatasetInfo(
    name="patternnet", title="PatternNet",
    url="https://hf.co/datasets/torchgeo/PatternNet/resolve/"
        "2dbd901b00e301967a5c5146b25454f5d3455ad0/PatternNet.zip",
    filename="PatternNet.zip", md5=None,
    sha256="456dd031950b0429518b8ec7d30a5c4b3f6456261ee1dd573a3eee43efb29958",
    classes=("airplane", "baseball_field", "basketball_court", "beach", "bridge", "cemetery",
             "chaparral", "christmas_tree_farm", "closed_road", "coastal_mansion", "crosswalk",
             "dense_residential", "ferry_terminal", "football_field", "forest", "freeway",
             "golf_course", "harbor", "intersection", "mobile_home_park", "nursing_home",
             "oil_gas_field", "oil_well", "overpass", "parking_lot", "parking_space", "railway",
             "river", "runway", "runway_marking", "shipping_yard", "solar_panel",
             "sparse_residential", "storage_tank", "swimming_pool", "tennis_court",
             "transformer_station", "wastewater_treatment_plant"),
    n_images=30400, image_size=256, license="research use (authors' terms); cite the paper",
    citation="Zhou et al., PatternNet: a benchmark dataset for performance evaluation of "
             "remote sensing image retrieval, ISPRS J. 2018",
    folder="PatternNet/images", homepage="https://sites.google.com/view/zhouwx/dataset"))

register_dataset(DatasetInfo(
    name="eurosat", title="EuroSAT (RGB)",
    url="https://huggingface.co/datasets/torchgeo/eurosat/resolve/"
        "c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip",
    filename="EuroSAT.zip", md5="c8fa014336c82ac7804f0398fcb19387", sha256=None,
    classes=("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
             "PermanentCrop", "Residential", "River", "SeaLake"),
    n_images=27000, image_size=64, license="MIT; contains Copernicus Sentinel-2 data",
    citation="Helber et al., EuroSAT: a novel dataset and deep learning benchmark for land use "
             "and land cover classification, IEEE JSTARS 2019",
    folder="2750", homepage="https://github.com/phelber/EuroSAT"))
