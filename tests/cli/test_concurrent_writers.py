"""Writers of one index file in separate processes: serialised by the lock, no id handed out
twice, nothing lost (issue #14, first part)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ahcl
from ahcl.cli import main
from ahcl.index import HammingIndex
from ahcl.index.lock import IndexLockedError, lock_timeout, remove_stale_temps, writing


def _add(index: Path, run: Path, image: str, **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "ahcl", "index", "add", str(index), image,
                             "--run", str(run), "--workers", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **env})


@pytest.fixture
def index_file(tiny_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "a.index"
    assert main(["index", "build", str(tiny_run), "--out", str(out)]) == 0
    return out


def test_two_cli_writers_at_once_lose_nothing(tiny_run, index_file, capsys):
    capsys.readouterr()
    run = ahcl.load_run(tiny_run)
    n = len(HammingIndex.load(index_file))
    procs = [_add(index_file, tiny_run, run.db_paths[i]) for i in (0, 1)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    ids = sorted(json.loads(o[0])["ids"][0] for o in outs)
    assert ids == [n, n + 1]  # one each, never the same
    final = HammingIndex.load(index_file, verify=True)
    assert len(final) == n + 2 and set(ids) <= set(final.ids.tolist())


def test_cli_writer_beside_a_server_archive(tiny_run, index_file, tmp_path):
    from ahcl.serve.store import Archive
    from ahcl.serve.uploads import decode_upload

    run = ahcl.load_run(tiny_run)
    archive = Archive.open(index_file, tiny_run)
    n = len(archive)
    image = Path(run.db_paths[3]).read_bytes()
    first = archive.add([decode_upload(image, 10**7)])[0]["id"]
    proc = _add(index_file, tiny_run, run.db_paths[4])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    cli_id = json.loads(out)["ids"][0]
    second = archive.add([decode_upload(Path(run.db_paths[5]).read_bytes(), 10**7)])[0]["id"]
    assert [first, cli_id, second] == [n, n + 1, n + 2]
    final = HammingIndex.load(index_file, verify=True)
    assert len(final) == n + 3 and {first, cli_id, second} <= set(final.ids.tolist())
    assert len(archive) == n + 3  # the server sees the CLI's item too
    archive.delete(cli_id)
    assert len(HammingIndex.load(index_file)) == n + 2


def test_a_writer_that_cannot_get_the_lock_stops_with_one_line(tiny_run, index_file):
    before = index_file.read_bytes()
    with writing(index_file):
        proc = _add(index_file, tiny_run, ahcl.load_run(tiny_run).db_paths[0],
                    AHCL_LOCK_TIMEOUT="0.5")
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ahcl: error:")
    assert "being written by another process" in lines[0]
    assert index_file.read_bytes() == before


def test_lock_timeout_in_process_and_stale_temps(tmp_path, monkeypatch):
    target = tmp_path / "b.index"
    stale = [tmp_path / ".b.index.abc123.tmp", tmp_path / ".b.index.zz.tmp"]
    for p in stale:
        p.write_bytes(b"half a save")
    other = tmp_path / ".c.index.abc.tmp"
    other.write_bytes(b"another file's")
    with writing(target, timeout=0):
        assert not any(p.exists() for p in stale) and other.exists()
        with pytest.raises(IndexLockedError, match="held for over 0.1 s"):
            with writing(target, timeout=0.1):
                pass
    with writing(target, timeout=0):  # released
        assert remove_stale_temps(target) == []
    monkeypatch.setenv("AHCL_LOCK_TIMEOUT", "2.5")
    assert lock_timeout() == 2.5
    monkeypatch.setenv("AHCL_LOCK_TIMEOUT", "soon")
    with pytest.raises(ahcl.AhclError, match="AHCL_LOCK_TIMEOUT"):
        lock_timeout()
    np.testing.assert_equal(sorted(p.name for p in tmp_path.iterdir()),
                            [".c.index.abc.tmp", "b.index.lock"])


def test_server_never_resaves_an_unverified_damaged_file(tiny_run, index_file, monkeypatch):
    """A file over VERIFY_LIMIT opens memory-mapped without its CRCs; a flipped byte in it must
    be found before the server's first save, and the file left as it was (not re-saved with fresh
    CRCs that would make the damage permanent)."""
    from ahcl.errors import IndexFileError
    from ahcl.index import format as fmt
    from ahcl.serve.store import Archive
    from ahcl.serve.uploads import decode_upload

    monkeypatch.setattr(fmt, "VERIFY_LIMIT", 1024)  # the test file counts as "large"
    header = fmt.read_header(index_file)
    offset = header["sections"]["codes"]["offset"] + 5
    data = bytearray(index_file.read_bytes())
    data[offset] ^= 0x10
    index_file.write_bytes(bytes(data))
    archive = Archive.open(index_file, tiny_run)  # opens: CRCs skipped over the limit
    image = Path(ahcl.load_run(tiny_run).db_paths[0]).read_bytes()
    with pytest.raises(IndexFileError, match="codes"):
        archive.add([decode_upload(image, 10**7)])
    assert index_file.read_bytes() == bytes(data)
    with pytest.raises(IndexFileError):
        HammingIndex.load(index_file, verify=True)


def test_add_appends_to_the_log_and_compact_folds_it(tiny_run, index_file, capsys):
    run = ahcl.load_run(tiny_run)
    before = index_file.read_bytes()
    n = len(HammingIndex.load(index_file))
    assert main(["index", "add", str(index_file), run.db_paths[0], "--run", str(tiny_run),
                 "--workers", "0"]) == 0
    assert index_file.read_bytes() == before  # one log record; the file is not rewritten
    capsys.readouterr()
    assert main(["index", "info", str(index_file), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == n + 1 and info["log_records"] == 1 and info["next_id"] == n + 1
    assert main(["index", "compact", str(index_file), "--json"]) == 0
    folded = json.loads(capsys.readouterr().out)
    assert folded["n"] == n + 1 and folded["log_records"] == 1
    assert not index_file.with_name(index_file.name + ".wal").exists()
    assert main(["index", "verify", str(index_file)]) == 0
    assert f"ok, {n + 1} items, 0 log records" in capsys.readouterr().out
    assert len(HammingIndex.load(index_file, verify=True)) == n + 1


def test_verify_names_damage_in_one_line(tiny_run, index_file, capsys):
    run = ahcl.load_run(tiny_run)
    for path in run.db_paths[:2]:
        assert main(["index", "add", str(index_file), path, "--run", str(tiny_run),
                     "--workers", "0"]) == 0
    log = index_file.with_name(index_file.name + ".wal")
    data = bytearray(log.read_bytes())
    data[60] ^= 0xFF  # inside the first of two records
    log.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["index", "verify", str(index_file)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "log record at byte 40 is damaged" in err[0]
    assert main(["index", "compact", str(index_file)]) == 1  # never folds a damaged log
    assert log.read_bytes() == bytes(data)
