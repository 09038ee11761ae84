"""Compilers and the cache of built kernels, shared by the targets that build shared libraries.

A built library lives in `$NOVAGEN_CACHE_DIR/<kind>/<key>/` (default `~/.cache/novagen`) with a
`key.json` recording the full sha256 key of (algorithm hash, sources, compiler identity, flags); an entry
is used only when the key it records matches.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from novagen.errors import NovagenError
from novagen.files import temporary_folder


class BuildError(NovagenError):
    """No compiler, or the compiler rejected the generated source: not the user's input, so the CLI exits
    with its own status, 3."""

    exit_code = 3


def find_tool(env: str, names: Sequence[str], what: str) -> str:
    """$<env> (a command, possibly with arguments: its first word), else the first of `names` on PATH."""
    value = os.environ.get(env)
    for c in ([value] if value else list(names)):
        path = shutil.which(shlex.split(c)[0]) if c else None
        if path:
            return path
    raise BuildError(f"no {what} found: install one ({', '.join(names)}), or set {env} to it")


def find_compiler() -> str:
    """$CC, else cc, gcc or clang on PATH."""
    return find_tool("CC", ("cc", "gcc", "clang"), "C compiler")


@functools.lru_cache(maxsize=8)
def tool_identity(tool: str, pick: Callable[[str], bool] | None = None) -> str:
    """The line of `tool --version` that names the release (the first, or the first `pick` accepts): part
    of every cache key."""
    try:
        out = subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BuildError(f"cannot run {tool}: {getattr(exc, 'strerror', None) or exc}") from None
    lines = out.splitlines() or ["unknown"]
    return next((ln for ln in lines if pick is None or pick(ln)), lines[0])


def cache_dir() -> Path:
    """$NOVAGEN_CACHE_DIR, else $XDG_CACHE_HOME/novagen, else ~/.cache/novagen."""
    root = os.environ.get("NOVAGEN_CACHE_DIR")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "novagen"


def first_error(stderr: str) -> str:
    """The first line of a compiler's messages that says 'error' (else the start of them)."""
    return next((ln for ln in stderr.splitlines() if "error" in ln), stderr.strip()[:300])


@dataclass(frozen=True)
class Library:
    """A built shared library: where it is, its cache key, whether it came from the cache, and what the
    build recorded beside it (compiler, flags, and the target's own figures)."""

    path: Path
    key: str
    cached: bool
    record: dict[str, Any] = field(default_factory=dict)


def build_library(kind: str, key_parts: Sequence[str], sources: Mapping[str, str],
                  command: Callable[[Path, Path], list[str]], what: str, record: Mapping[str, Any],
                  from_stderr: Callable[[str], dict[str, Any]] | None = None) -> Library:
    """Build `sources` into a shared library with `command(source_dir, output)`, or take it from the cache.

    `key_parts` (the algorithm hash, compiler identity, flags...) and the sources make the key; `record`
    and what `from_stderr` reads off the compiler's messages are stored in key.json and returned."""
    h = hashlib.sha256()
    for part in (*key_parts, *(sources[k] for k in sorted(sources))):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()
    folder = cache_dir() / kind / key[:32]
    lib, meta = folder / "kernel.so", folder / "key.json"
    if lib.is_file() and meta.is_file():
        try:
            doc = json.loads(meta.read_text())
            if doc.get("key") == key:
                return Library(lib, key, True, doc)
        except (OSError, ValueError):
            pass
    folder.mkdir(parents=True, exist_ok=True)
    with temporary_folder(folder) as tmp:
        for name, text in sources.items():
            (Path(tmp) / name).write_text(text)
        out = Path(tmp) / "kernel.so"
        proc = subprocess.run(command(Path(tmp), out), capture_output=True, text=True, cwd=tmp)
        if proc.returncode != 0:
            raise BuildError(f"the compiler failed on {what}: {first_error(proc.stderr)}")
        doc = {"key": key, **record, **(from_stderr(proc.stderr) if from_stderr else {})}
        os.replace(out, lib)
        for name, text in sources.items():
            (folder / name).write_text(text)
        meta.write_text(json.dumps(doc))
    return Library(lib, key, False, doc)
