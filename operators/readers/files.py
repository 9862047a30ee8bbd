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

    An input's ``name`` is its path relative to the non-wildcard root of the globs (the folder they
    share, when there are several), so document ids do not change when the data moves. A pattern
    that matches nothing is an error.
    """
    if isinstance(patterns, str):
        patterns = [patterns]
    found: list[str] = []
    roots: list[str] = []
    for pattern in patterns:
        full = pattern if os.path.isabs(pattern) else os.path.normpath(os.path.join(base_dir, pattern))
        roots.append(os.path.abspath(glob_root(full) if (_WILDCARDS & set(full)) else os.path.dirname(full)))
        matches = [m for m in glob.glob(full, recursive=True) if os.path.isfile(m)]
        if not matches:
            raise FileNotFoundError(f"no input file matches '{pattern}'")
        found += [os.path.abspath(m) for m in matches]
    # names are relative to the root all patterns share, so two patterns never give two files one name
    root = os.path.commonpath(roots)
    named = sorted({(os.path.relpath(path, root), path) for path in found})
    return [InputFile(index=i, path=path, name=name) for i, (name, path) in enumerate(named)]
