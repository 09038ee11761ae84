"""Writing files: every file novagen writes goes through here, under one policy for every command.

- Only regular files are written.  An output path that exists and is not a regular file (a symbolic
  link, a FIFO, a device, a folder) is refused; novagen never writes through a link.
- An existing regular file is overwritten only when asked (`overwrite=True`, the CLI's `--force`); it
  then keeps its permission bits.  A new file gets the mode the umask gives (0644 under umask 022).
- A file's folder must exist; an output folder (`generate -o DIR`) is created with its parents.
- Each file is written to a temporary file in the same folder and renamed into place, so a failed or
  interrupted command never leaves a partial file; when a command writes several files, all of them are
  checked before the first is written, and the new ones are removed again if a later one fails.
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from novagen.errors import InputError
from novagen.limits import short

TEMPORARIES: set[str] = set()
"""Temporary paths being written right now: an interrupt handler removes them before the process exits."""


def shorten(path: object) -> str:
    """A path for a message: whole unless absurdly long."""
    return short(path, 240)


def _umask() -> int:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def check_target(path: str | Path, overwrite: bool = False) -> Path:
    """The path a file may be written to: its folder exists, and it is absent or (with `overwrite`) a
    regular file; InputError naming the path otherwise."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise InputError(f"cannot write {shorten(path)}: {exc.strerror}") from None
    if st is not None:
        if not stat.S_ISREG(st.st_mode):
            raise InputError(f"{shorten(path)} is {_kind(st.st_mode)}: novagen writes only regular files; "
                             "give another path")
        if not overwrite:
            raise InputError(f"{shorten(path)} exists: pass --force (overwrite=True) to overwrite it")
    parent = path.parent
    if not parent.is_dir():
        raise InputError(f"the folder {shorten(parent)} does not exist: create it first, or write elsewhere")
    return path


def atomic_write(path: str | Path, data: str | bytes, overwrite: bool = False, executable: bool = False) -> Path:
    """Write `data` to `path` under the policy of this module; returns the path."""
    path = check_target(path, overwrite)
    try:
        old_mode = stat.S_IMODE(os.lstat(path).st_mode)
    except FileNotFoundError:
        old_mode = None
    mode = old_mode if old_mode is not None else (0o777 if executable else 0o666) & ~_umask()
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name[:40]}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise InputError(f"cannot write in {shorten(path.parent)}: {exc.strerror}") from None
    TEMPORARIES.add(tmp)
    try:
        with os.fdopen(fd, "wb" if isinstance(data, bytes) else "w") as fh:
            fh.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise InputError(f"cannot write {shorten(path)}: {exc.strerror}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        TEMPORARIES.discard(tmp)
    return path


def output_folder(folder: str | Path) -> Path:
    """An output folder, created with its parents when missing; InputError when it cannot be."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{shorten(folder)} is not a folder: give a folder to write into")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the folder {shorten(folder)}: {exc.strerror}") from None
    return folder


def check_folder(folder: str | Path, names: Sequence[str], overwrite: bool = False) -> None:
    """Check, before any work, that the files `names` may be written into `folder` (see `check_target`)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{shorten(folder)} is not a folder: give a folder to write into")
    for name in names:
        if (folder / name).parent.is_dir():
            check_target(folder / name, overwrite)


def write_files(folder: str | Path, files: Mapping[str, str | bytes], overwrite: bool = False,
                executable: Sequence[str] = ()) -> list[Path]:
    """Write several files into `folder` (created when missing): every target is checked before the first
    is written, and the files this call created are removed again if a later write fails."""
    folder = Path(folder)
    targets = [folder / name for name in files]
    check_folder(folder, list(files), overwrite)
    folder = output_folder(folder)
    created: list[Path] = []
    written: list[Path] = []
    try:
        for target, data in zip(targets, files.values()):
            if target.parent != folder:
                output_folder(target.parent)
            new = not target.exists()
            written.append(atomic_write(target, data, overwrite, target.name in executable))
            if new:
                created.append(target)
    except BaseException:
        for p in created:
            p.unlink(missing_ok=True)
        raise
    return written


@contextmanager
def temporary_folder(inside: str | Path) -> Iterator[Path]:
    """A temporary folder inside `inside` (same file system, so renames out of it are atomic), removed on
    exit and by an interrupt handler."""
    with tempfile.TemporaryDirectory(prefix=".novagen-", dir=inside) as tmp:
        TEMPORARIES.add(tmp)
        try:
            yield Path(tmp)
        finally:
            TEMPORARIES.discard(tmp)
