"""Input listing shared by the file readers: globs to sorted files with stable relative names."""

from __future__ import annotations

import glob
import os

from operators.base import InputFile

_WILDCARDS = set("*?[")


def glob_root(pattern: str) -> str:
    """The directory part of ``pattern`` before its first wildcard."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if _WILDCARDS & set(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) if fixed else "."


def list_files(patterns: str | list[str], base_dir: str = ".") -> list[InputFile]:
    """Expand globs (``**`` allowed) into sorted, de-duplicated files.

    An input's ``name`` is its path relative to the non-wildcard root of the glob that found it, so
    document ids do not change when the data moves. A pattern that matches nothing is an error.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found: dict[str, str] = {}
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.normpath(os.path.join(base_dir, pattern))
        root = glob_root(full) if (_WILDCARDS & set(full)) else os.path.dirname(full)
        matches = [m for m in glob.glob(full, recursive=True) if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"no input file matches '{pattern}'")
        for m in matches:
            found.setdefault(os.path.abspath(m), os.path.relpath(m, root or "."))
    ordered = sorted(found.items(), key=lambda kv: (kv[1], kv[0]))
    return [InputFile(index=i, path=path, name=name) for i, (path, name) in enumerate(ordered)]
