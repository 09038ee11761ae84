"""Package resources: the data folders that ship with novagen (verify/, search/, templates/) and the
Jinja environment of a target's kernel templates.

In an installed wheel the folders live under `novagen/_data/`; in a source checkout they sit beside the
package.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from novagen.errors import CatalogError

PACKAGE_DIR = Path(__file__).resolve().parent
DATA_KINDS = ("verify", "search", "templates")


def data_dir(kind: str) -> Path:
    """A data folder (verify, search, templates): inside the installed wheel, else the source tree."""
    for candidate in (PACKAGE_DIR / "_data" / kind, PACKAGE_DIR.parent / kind):
        if candidate.is_dir():
            return candidate
    raise CatalogError(f"novagen's '{kind}' data is missing from {PACKAGE_DIR}: reinstall novagen")


@lru_cache(maxsize=16)
def templates(target: str) -> Any:
    """The Jinja environment of one target's templates (templates/<target>/): undefined names are errors,
    trailing newlines kept."""
    import jinja2

    folder = data_dir("templates") / target
    if not folder.is_dir():
        raise CatalogError(f"novagen's templates for '{target}' are missing from {folder}: reinstall novagen")
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(folder)), undefined=jinja2.StrictUndefined,
                              keep_trailing_newline=True)
