"""A full disk during an atomic write: one clear error, the old file kept, no temp file left."""

from __future__ import annotations

import errno

import numpy as np
import pytest
import torch

from ahcl._io import atomic_write
from ahcl.errors import DiskFullError


class _FullFile:
    """Accepts ``limit`` bytes, then fails as a full disk does."""

    def __init__(self, f, limit: int, exc: BaseException) -> None:
        self.f, self.left, self.exc = f, limit, exc

    def write(self, data) -> int:
        data = bytes(data)
        if len(data) > self.left:
            raise self.exc
        self.left -= len(data)
        return self.f.write(data)

    def __getattr__(self, name):
        return getattr(self.f, name)


@pytest.mark.parametrize("exc", [OSError(errno.ENOSPC, "No space left on device"),
                                 OSError(errno.EDQUOT, "Disk quota exceeded")])
def test_enospc_is_one_clear_error_and_keeps_the_old_file(tmp_path, exc):
    target = tmp_path / "codes.npy"
    target.write_bytes(b"old")
    with pytest.raises(DiskFullError, match="no space left") as info:
        with atomic_write(target) as f:
            np.save(_FullFile(f, 64, exc), np.zeros(1000))
    assert info.value.path == str(target)
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["codes.npy"]


def test_torch_save_write_failure_is_a_disk_full_error(tmp_path):
    """torch.save reports a failed write as a RuntimeError without the errno."""
    target = tmp_path / "model.pt"
    with pytest.raises(DiskFullError, match="model.pt"):
        with atomic_write(target) as f:
            torch.save({"w": torch.zeros(10000)}, _FullFile(f, 100, OSError(errno.ENOSPC, "full")))
    assert not target.exists() and not list(tmp_path.iterdir())


def test_other_errors_pass_through(tmp_path):
    with pytest.raises(RuntimeError, match="something else"):
        with atomic_write(tmp_path / "x") as f:
            raise RuntimeError("something else")
    with pytest.raises(PermissionError):
        with atomic_write(tmp_path / "y") as f:
            raise PermissionError(errno.EACCES, "denied")
    assert not list(tmp_path.iterdir())


def test_atomic_writes_get_ordinary_permissions(tmp_path) -> None:
    """A new file gets 0666 minus the umask (not mkstemp's 0600), so an index built by one user
    can be served by another; a replaced file keeps the mode it had."""
    import stat

    from ahcl._io import atomic_write_bytes

    umask = 0o022
    with open("/proc/self/status", encoding="ascii") as f:  # the umask, without changing it
        umask = next((int(line.split()[1], 8) for line in f if line.startswith("Umask:")), umask)
    new = tmp_path / "new.bin"
    atomic_write_bytes(new, b"x")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~umask
    kept = tmp_path / "kept.bin"
    kept.write_bytes(b"old")
    kept.chmod(0o640)
    atomic_write_bytes(kept, b"new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o640 and kept.read_bytes() == b"new"
