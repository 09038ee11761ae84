"""Writing files: every file novagen writes goes through here, so that a failed write never leaves a
partial file behind."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from novagen.errors import InputError


def atomic_write(path: str | Path, data: str | bytes) -> Path:
    """Write `data` to `path` via a temporary file and a rename; parent folders are created."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {path.parent}: {exc.strerror}") from None
    if path.is_dir():
        raise InputError(f"{path} is a folder; give a file name to write")
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
