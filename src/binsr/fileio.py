"""Atomic file writes shared by every writer of binsr (images, checkpoints, run logs, exports).

A file is first written to a temporary file in the same folder, flushed to disk, given the usual
permissions (``0666 & ~umask``) and then moved over the target with ``os.replace``: readers see either
the old file or the complete new one, never a partial write, and a crash leaves no damaged output.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from binsr.errors import BinsrError

PathLike = str | os.PathLike[str]


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically: temporary file in the same folder, fsync, ``os.replace``.

    Readers see either the old file or the complete new one, never a partial write. The parent folder
    must exist.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BinsrError(f"cannot write {path}: folder {folder} does not exist")
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o666 & ~_current_umask())  # mkstemp makes 0600; give the usual permissions
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp_name)
        raise
    _fsync_folder(folder)


def _current_umask() -> int:
    """The process umask (read by setting it and restoring it at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_folder(folder: Path) -> None:
    """Persist a rename on POSIX file systems (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
