"""Reading a scene dataset laid out as one folder per class.

The layout of UC Merced, AID, NWPU-RESISC45, WHU-RS19, RSSCN7, PatternNet and EuroSAT once
extracted::

    root/
      classA/ img001.jpg img002.jpg ...
      classB/ ...

Rules (so that two readers of the same folder always agree):

* Classes are the direct sub-folders of ``root``, sorted by name (Python string order); files
  are the direct children of each class folder with an image extension, sorted by name. Names
  starting with ``.`` are ignored (hidden files, our own markers and temporary folders), and
  so are files directly in ``root`` (e.g. a ``SHA256SUMS``) and files with other extensions.
* Every file is read once: its sha256 is taken and, unless ``check_images=False``, it is fully
  decoded with :func:`ahcl.data.images.load_rgb`, which catches truncated files (a header-only
  ``verify()`` does not). On RSSCN7 (2,100 JPEGs of 256x256) the full check costs about one
  second on one core.
* Unreadable files are skipped with one warning (count and first names), or raise with
  ``strict=True``.
* Files with identical bytes are duplicates: the **first occurrence in the order above is kept**
  and later copies are skipped (warned, or an error with ``strict=True``), so a model never trains
  on the same scene twice and a query never finds its own copy in the database. A duplicate in
  another class is reported the same way (its label is ambiguous; the first class wins).
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from ahcl._progress import progress
from ahcl.data.images import IMAGE_EXTENSIONS, ImageReadError, load_rgb
from ahcl.errors import DatasetError, DatasetNotFoundError

_WARN_NAMES = 5  # how many file names a warning lists


@dataclass
class SceneFolder:
    """A folder-per-class scene dataset, read.

    Attributes:
        root: the folder holding the class folders.
        paths: image paths relative to ``root``, POSIX style (``"class/file.jpg"``), in the
            stable order (classes by name, files by name).
        labels: ``int64 (n,)``, index into ``classes`` for each path.
        classes: class folder names, sorted.
        skipped: ``(relative path, reason)`` for every unreadable or duplicate file left out.
    """

    root: Path
    paths: list[str]
    labels: np.ndarray
    classes: list[str]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def absolute_paths(self) -> list[Path]:
        """``root / path`` for every image, in order."""
        return [self.root / p for p in self.paths]

    def class_counts(self) -> dict[str, int]:
        """Number of images per class, in class order."""
        counts = np.bincount(self.labels, minlength=len(self.classes))
        return {c: int(n) for c, n in zip(self.classes, counts)}


def list_class_files(root: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS
                     ) -> dict[str, list[str]]:
    """Class folder name -> sorted image file names, by the rules of the module doc.

    Raises:
        DatasetError: ``root`` is missing or not a directory.
    """
    if not root.exists():
        raise DatasetError(f"dataset folder {root} does not exist: pass the folder that holds "
                           "one sub-folder per class")
    if not root.is_dir():
        raise DatasetError(f"{root} is not a directory: pass the folder that holds one "
                           "sub-folder per class")
    exts = _suffixes(extensions)
    out: dict[str, list[str]] = {}
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith(".") or not entry.is_dir():
            continue
        out[entry.name] = sorted(f.name for f in os.scandir(entry.path)
                                 if _is_image_name(f.name, exts) and _is_file(f))
    return out


def list_image_files(root: str | os.PathLike, extensions: Iterable[str] = IMAGE_EXTENSIONS
                     ) -> list[str]:
    """Absolute paths of the image files anywhere under ``root`` (any depth, no class folders
    needed), sorted; hidden names are skipped as in the module doc's rules.

    Raises:
        DatasetNotFoundError: ``root`` is not a folder.
        DatasetError: it holds no images.
    """
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetNotFoundError(f"{root} is not a folder: pass the folder of images to encode",
                                   path=root)
    exts = _suffixes(extensions)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += [os.path.join(folder, f) for f in files if _is_image_name(f, exts)]
    if not found:
        raise DatasetError(f"no image files under {root} (extensions: {', '.join(exts)})",
                           path=root)
    return sorted(found)


def _is_file(entry: os.DirEntry) -> bool:
    """A regular file, or a link that cannot be followed (a loop, a dangling link): those are
    listed so that reading them reports them as unreadable instead of dropping them silently."""
    try:
        return entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))
    except OSError:
        return True


def _suffixes(extensions: Iterable[str]) -> tuple[str, ...]:
    return tuple(e.lower() for e in extensions)


def _is_image_name(name: str, suffixes: tuple[str, ...]) -> bool:
    return not name.startswith(".") and name.lower().endswith(suffixes)


def count_images(root: Path, extensions: Iterable[str] = IMAGE_EXTENSIONS) -> int:
    """Number of image files in the class folders of ``root`` (no decoding); 0 if missing."""
    if not root.is_dir():
        return 0
    return sum(len(v) for v in list_class_files(root, extensions).values())


def read_image_folder(root: str | os.PathLike, strict: bool = False,
                      extensions: Iterable[str] = IMAGE_EXTENSIONS,
                      check_images: bool = True, min_classes: int = 2) -> SceneFolder:
    """Read a folder-per-class dataset (rules in the module doc).

    Args:
        root: the folder holding one sub-folder per class.
        strict: raise on the first unreadable or duplicate file instead of skipping it.
        extensions: file endings counted as images (case-insensitive).
        check_images: fully decode every image to catch truncated files (about 0.5 ms per
            256x256 JPEG); False only hashes the files.
        min_classes: fewest class folders accepted (2 for a training set; a set of labelled
            queries may hold one class).

    Returns:
        The :class:`SceneFolder`.

    Raises:
        DatasetError: missing folder, not a directory, no class folders, fewer than 2 classes,
            a class folder with no (readable) image; with ``strict``, an unreadable or duplicate
            file (named).
    """
    root = Path(root)
    files = list_class_files(root, extensions)
    if not files:
        raise DatasetError(f"no class folders in {root}: expected one sub-folder per class, "
                           "each holding that class's images")
    if len(files) < min_classes:
        raise DatasetError(f"only one class folder ({next(iter(files))!r}) in {root}: retrieval "
                           "needs at least 2 classes")
    for cls, names in files.items():
        if not names:
            raise DatasetError(f"class folder {cls!r} in {root} has no image files "
                               f"({', '.join(extensions)}): remove it or add its images")
    paths: list[str] = []
    labels: list[int] = []
    skipped: list[tuple[str, str]] = []
    first_seen: dict[bytes, str] = {}
    todo = [(label, cls, name) for label, (cls, names) in enumerate(files.items())
            for name in names]
    for label, cls, name in progress(todo, total=len(todo), desc=f"reading {root.name}",
                                     unit="img"):
        rel = f"{cls}/{name}"
        reason = _check_file(root / cls / name, rel, check_images, first_seen)
        if reason is None:
            paths.append(rel)
            labels.append(label)
            continue
        if strict:
            raise DatasetError(f"{root / cls / name}: {reason} (strict mode; fix or remove "
                               "the file, or read without --strict to skip it)")
        skipped.append((rel, reason))
    classes = list(files)
    label_array = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(label_array, minlength=len(classes))
    for cls, n in zip(classes, counts):
        if n == 0:
            raise DatasetError(f"class folder {cls!r} in {root} has no readable image "
                               "(all were skipped): fix or remove it")
    _warn_skipped(root, skipped)
    return SceneFolder(root=root, paths=paths, labels=label_array, classes=classes,
                       skipped=skipped)


def _check_file(path: Path, rel: str, check_images: bool,
                first_seen: dict[bytes, str]) -> str | None:
    """None if ``path`` is a readable, new image; else why it is left out."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"cannot read: {exc.strerror or exc}"
    digest = hashlib.sha256(data).digest()
    if digest in first_seen:
        return f"duplicate of {first_seen[digest]} (identical bytes)"
    if check_images:
        try:
            load_rgb(path, data=data)
        except ImageReadError as exc:
            return str(exc).removeprefix(f"cannot read image {path}: ")
    first_seen[digest] = rel
    return None


def _warn_skipped(root: Path, skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    n_dup = sum(1 for _, r in skipped if r.startswith("duplicate of"))
    n_bad = len(skipped) - n_dup
    names = ", ".join(p for p, _ in skipped[:_WARN_NAMES])
    more = f" and {len(skipped) - _WARN_NAMES} more" if len(skipped) > _WARN_NAMES else ""
    message = (f"{root}: skipped {len(skipped)} file(s) ({n_bad} unreadable, {n_dup} duplicate): "
               f"{names}{more}")
    warnings.warn(message, stacklevel=3)
