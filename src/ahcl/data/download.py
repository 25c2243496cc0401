"""Downloading (stdlib ``urllib`` only), checksum verification and safe archive extraction.

* :func:`download_url` streams to ``<file>.part`` with a progress bar on stderr, resumes an
  existing ``.part`` with an HTTP ``Range`` request (restarting from zero when the server
  ignores it), verifies md5/sha256 and only then renames the file into place. A cut-off
  transfer keeps the ``.part`` and raises, so running again resumes; a checksum mismatch
  deletes it.
* :func:`extract_archive` unpacks zip, tar (plain, gz, bz2, xz) and rar (with the optional
  ``rarfile`` package and an ``unrar``/``unar``/``bsdtar`` tool), refusing archives with
  absolute member paths, ``..`` components, links or device files (path traversal).
"""

from __future__ import annotations

import http.client
import os
import re
import tarfile
import zipfile
from pathlib import Path, PurePosixPath
from typing import Iterable
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from ahcl._version import __version__
from ahcl._io import file_digest  # re-exported: ahcl.data.download.file_digest
from ahcl._progress import progress_bar
from ahcl.errors import ChecksumError, DatasetError

_CHUNK = 1 << 20  # bytes per read of a download
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")


def verify_checksum(path: str | os.PathLike, md5: str | None = None,
                    sha256: str | None = None, source: str | None = None) -> None:
    """Check ``path`` against the given digests (sha256 preferred when both are given).

    Raises:
        ChecksumError: the digest differs; the message names the file, both digests and, if
            given, where it came from (fields ``path``, ``algorithm``, ``actual``, ``expected``,
            ``source``).
    """
    for algorithm, expected in (("sha256", sha256), ("md5", md5)):
        if expected:
            actual = file_digest(path, algorithm)
            if actual.lower() != expected.lower():
                origin = f" (from {source})" if source else ""
                raise ChecksumError(
                    f"{path}{origin} has {algorithm} {actual}, expected {expected}: the file is "
                    "corrupt, incomplete or a different version; delete it and download again",
                    path=os.fspath(path), algorithm=algorithm, actual=actual, expected=expected,
                    source=source)
            return


def download_url(url: str, dest: str | os.PathLike, md5: str | None = None,
                 sha256: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` via ``dest.part``, resuming, verifying, then renaming.

    Args:
        url: http(s) or file URL.
        dest: final file path; its folder is created.
        md5: expected md5 hex digest, or None.
        sha256: expected sha256 hex digest, or None (without any digest only the length the
            server announced is checked).
        timeout: socket timeout in seconds.

    Returns:
        ``dest`` as a Path.

    Raises:
        DatasetError: unreachable URL, HTTP error, or a transfer cut off (run again to resume).
        ChecksumError: the completed file does not match (the ``.part`` is deleted).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    for attempt in range(2):
        complete = _fetch(url, part, timeout)
        try:
            verify_checksum(part, md5, sha256, source=url)
        except ChecksumError:
            part.unlink(missing_ok=True)
            if complete == "assumed" and attempt == 0:
                continue  # a stale .part the server would not extend: start over once
            raise
        os.replace(part, dest)
        return dest
    raise AssertionError("unreachable")  # pragma: no cover


def _fetch(url: str, part: Path, timeout: float) -> str:
    """Bring ``part`` to the full length; "fetched", or "assumed" when the server said 416."""
    start = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": f"ahcl/{__version__}"}
    if start:
        headers["Range"] = f"bytes={start}-"
    try:
        response = urlopen(Request(url, headers=headers), timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and start:  # nothing left past our length: the .part is complete
            return "assumed"
        raise DatasetError(f"download of {url} failed: HTTP {exc.code} {exc.reason}; check the "
                           "URL (or a mirror) or download the file by hand") from None
    except (URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DatasetError(f"cannot download {url}: {reason}; check the network, or download "
                           f"the file by hand and put it at {part.with_suffix('')}") from None
    with response:
        status = getattr(response, "status", 200)
        resumed = start and status == 206 and _range_start(response) == start
        if not resumed:
            start = 0  # the server ignored Range (or answered oddly): restart from zero
        length = response.headers.get("Content-Length")
        total = start + int(length) if length and length.isdigit() else None
        _stream(response, part, "ab" if resumed else "wb", start, total, url)
    return "fetched"


def _range_start(response: http.client.HTTPResponse) -> int | None:
    match = _CONTENT_RANGE.match(response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def _stream(response: http.client.HTTPResponse, part: Path, mode: str, start: int,
            total: int | None, url: str) -> None:
    done = start
    bar = progress_bar(total, desc=part.name.removesuffix(".part"), unit="B", unit_scale=True)
    bar.update(start)
    cut = False
    try:
        with open(part, mode) as f:
            while not cut:
                try:
                    block = response.read(_CHUNK)
                except http.client.IncompleteRead as exc:  # connection closed before the end
                    block, cut = exc.partial, True
                except OSError:  # reset or timed out mid-transfer
                    block, cut = b"", True
                if not block:
                    break
                f.write(block)
                done += len(block)
                bar.update(len(block))
            f.flush()
            os.fsync(f.fileno())
    finally:
        bar.close()
    if cut or (total is not None and done != total):
        of_total = f" of {total}" if total is not None else ""
        raise DatasetError(f"download of {url} was cut off after {done}{of_total} bytes; run "
                           f"the same command again to resume ({part} is kept)")


# --- extraction --------------------------------------------------------------------------------

def archive_kind(path: str | os.PathLike) -> str:
    """``"zip"``, ``"tar"`` or ``"rar"`` from the file name (then the content), else raise."""
    name = Path(path).name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(".rar"):
        return "rar"
    if re.search(r"\.(tar|tgz|tar\.gz|tbz2|tar\.bz2|txz|tar\.xz)$", name):
        return "tar"
    if zipfile.is_zipfile(path):
        return "zip"
    if tarfile.is_tarfile(path):
        return "tar"
    raise DatasetError(f"{path} is not a zip, tar or rar archive: download the archive again")


def _check_member(archive: Path, name: str) -> None:
    parts = PurePosixPath(name.replace("\\", "/")).parts
    if (name.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0])):
        raise DatasetError(f"{archive} has an unsafe member path {name!r} (absolute or with "
                           "'..'): refusing to extract it; get the archive from a trusted source")


def _check_members(archive: Path, names: Iterable[str]) -> None:
    for name in names:
        _check_member(archive, name)


def extract_archive(archive: str | os.PathLike, dest: str | os.PathLike) -> None:
    """Extract ``archive`` into the existing folder ``dest``, after checking every member path.

    Raises:
        DatasetError: unknown or corrupt archive, unsafe member, or rar support missing (the
            message says what to install).
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            with zipfile.ZipFile(archive) as zf:
                _check_members(archive, zf.namelist())
                zf.extractall(dest)
        elif kind == "tar":
            with tarfile.open(archive) as tf:
                members = tf.getmembers()
                for m in members:
                    _check_member(archive, m.name)
                    if not (m.isfile() or m.isdir()):
                        raise DatasetError(f"{archive} has a link or special file {m.name!r}: "
                                           "refusing to extract it")
                if hasattr(tarfile, "data_filter"):
                    tf.extractall(dest, members=members, filter="data")
                else:  # pragma: no cover - Python < 3.11.4; members were checked above
                    tf.extractall(dest, members=members)
        else:
            _extract_rar(archive, dest)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        raise DatasetError(f"cannot extract {archive}: {exc}; the archive is corrupt or "
                           "incomplete, delete it and download again") from None


def _extract_rar(archive: Path, dest: Path) -> None:
    hint = ("install rar support: `pip install rarfile` and an extractor (`apt-get install "
            "unrar` or `unar`, `brew install unar`), or extract the archive by hand")
    try:
        import rarfile  # type: ignore[import-not-found]
    except ImportError:
        raise DatasetError(f"{archive} is a rar archive and the rarfile package is missing: "
                           f"{hint}") from None
    try:
        rarfile.tool_setup()
    except rarfile.RarCannotExec:
        raise DatasetError(f"{archive} is a rar archive and no unrar/unar/bsdtar tool was "
                           f"found: {hint}") from None
    try:
        with rarfile.RarFile(archive) as rf:
            _check_members(archive, rf.namelist())
            rf.extractall(dest)
    except rarfile.Error as exc:
        raise DatasetError(f"cannot extract {archive}: {exc}; delete it and download "
                           "again") from None
