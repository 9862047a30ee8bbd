"""CommonCrawl reader: picks WARC files from a crawl's ``warc.paths.gz``, downloads them, reads them.

    read:
      commoncrawl:
        crawl: CC-MAIN-2024-22
        max_files: 10

The driver (:meth:`CommonCrawlReader.list_inputs`) reads the crawl's listing, one path per line relative
to the bucket root (``crawl-data/CC-MAIN-2024-22/segments/.../warc/CC-MAIN-...-00000.warc.gz``),
gzipped or not, from ``paths_file`` (a local path or a URL; by default
``<base_url>crawl-data/<crawl>/warc.paths.gz``, downloaded into the cache). It picks files with
``files`` and ``max_files`` and makes one input per WARC: ``path`` is the full URL
(``<base_url><listed path>``), ``name`` the path as listed, so the document ids do not depend on the
mirror. Each executor task then fetches its WARC into the local cache with :func:`operators.download.fetch`
(retries with backoff, Range resume, gzip validation, atomic placement; see that module) and reads the
cached copy with the ``warc`` reader, so rows and ids equal the ``warc`` reader's on the same file with
the same name.

Selection: ``files`` is a list whose entries each pick from the listing by
- an integer: the 0-based line number in the listing (``files: [0, 17]``);
- a string with ``*``, ``?`` or ``[``: an fnmatch glob over the whole listed path (``*`` also crosses
  ``/``), e.g. ``"*/CC-MAIN-20240518*-0000?.warc.gz"``;
- any other string: one listed path, exactly.
Every entry must pick at least one file (a typo is an error that names the entry). The picked files keep
the listing's order; ``max_files`` then keeps the first N (without ``files``: the first N of the crawl).

Mirrors: ``base_url`` may be ``https://data.commoncrawl.org/`` (the default), any ``http(s)://`` mirror,
``file:///some/folder/`` (or a plain folder path) or ``s3://commoncrawl/`` (``s3a://`` too; endpoint and
region from ``s3_endpoint`` / ``s3_region`` or the AWS environment variables).

Cache: ``cache_dir`` (default ``$SMELTER_CACHE_DIR/commoncrawl``, see :func:`operators.assets.cache_root`)
holds each WARC under its listed path; a file there is reused without a request (``keep_files: false``
deletes each WARC once read, for runs larger than the disk). Listings fetched from a URL are cached
under ``_listings/`` (a crawl's listing never changes).

Counters (``ctx.count``): the ``warc`` reader's, plus ``download_files``, ``download_bytes``,
``download_retries``, ``download_resumes``, ``download_restarts``, ``download_cache_hits`` and
``download_failed_<reason>`` (one per failed attempt; reasons in :mod:`operators.download`). A WARC that
cannot be fetched after all retries yields no rows, one error entry and ``download_given_up``; the run
goes on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import fnmatch
import gzip
import hashlib
import logging
import os
import posixpath
import re
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field, field_validator

from operators.assets import cache_root
from operators.base import InputFile, Params, Reader, TaskContext
from operators.download import SCHEMES, DownloadError, FetchStats, S3Options, fetch
from operators.readers.warc import WarcParams, WarcReader

log = logging.getLogger(__name__)

_CRAWL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
_WILDCARDS = set("*?[")
_WARC_SUFFIXES = (".warc.gz", ".warc", ".arc.gz", ".arc")


class SelectionError(FileNotFoundError):
    """A picked file is not in the crawl, or the listing cannot be had: ``"<key>: <why>"``, one line.

    ``key`` is the parameter at fault (``files[2]``, ``paths_file``), so the runner can name it.
    """

    def __init__(self, key: str, message: str):
        super().__init__(f"{key}: {message}")
        self.key = key


class CommonCrawlParams(Params):
    #: the crawl's name, e.g. CC-MAIN-2024-22 (names the default listing)
    crawl: str
    #: where the listed paths live: http(s)://, file:// (or a plain folder), s3:// or s3a://
    base_url: str = "https://data.commoncrawl.org/"
    #: the listing: a local path or a URL (default: <base_url>crawl-data/<crawl>/warc.paths.gz)
    paths_file: str | None = None
    #: keep the first N picked files
    max_files: int | None = Field(default=None, ge=1)
    #: pick files: listing line numbers (0-based), exact listed paths, or fnmatch globs
    files: list[int | str] | None = Field(default=None, min_length=1)
    #: local cache of downloaded files (default: $SMELTER_CACHE_DIR/commoncrawl, else ~/.cache/smelter/...)
    cache_dir: str | None = None
    #: retries per file after the first attempt
    retries: int = Field(default=8, ge=0, le=100)
    #: seconds without a byte before an attempt counts as stalled
    timeout_s: float = Field(default=60.0, gt=0)
    #: first backoff pause (doubles per retry, jittered, at most max_backoff_s)
    backoff_s: float = Field(default=2.0, ge=0)
    max_backoff_s: float = Field(default=60.0, ge=0)
    #: S3 endpoint (e.g. http://minio:9000) and region; default from the AWS environment variables
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_anonymous: bool = False
    #: false: delete each WARC from the cache once it has been read whole (crawl-scale runs)
    keep_files: bool = True
    #: as in the warc reader: responses whose payload is larger are skipped
    max_record_bytes: int = Field(default=WarcParams.model_fields["max_record_bytes"].default, ge=1)

    @field_validator("crawl")
    @classmethod
    def _crawl_name(cls, v: str) -> str:
        if not _CRAWL_RE.match(v):
            raise ValueError(f"'{v}' is not a crawl name like CC-MAIN-2024-22")
        return v

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, v: str) -> str:
        scheme = urllib.parse.urlsplit(v).scheme.lower()
        if "://" in v and scheme not in SCHEMES:
            raise ValueError(f"unsupported scheme '{scheme}' (use one of {', '.join(SCHEMES)} or a folder path)")
        return v if v.endswith("/") else v + "/"

    @field_validator("files")
    @classmethod
    def _files(cls, v: list[int | str] | None) -> list[int | str] | None:
        for entry in v or ():
            if isinstance(entry, int) and entry < 0:
                raise ValueError(f"a line number must be 0 or more, not {entry}")
            if isinstance(entry, str) and not entry.strip():
                raise ValueError("an empty file entry")
        return v


class _UrlContext(TaskContext):
    """The reader's view of a task: reads the cached file, reports errors under the file's URL."""

    def __init__(self, ctx: TaskContext, local_path: str):
        super().__init__(source=ctx.source, input=dataclasses.replace(ctx.input, path=local_path),
                         counters=ctx.counters, errors=ctx.errors)
        self.url = ctx.input.path

    def error(self, message: str, offset: int | None = None, **extra: Any) -> None:
        self.errors.append({"file": self.url, "offset": offset, "error": message, **extra})


class CommonCrawlReader(Reader):
    """WARC files of a CommonCrawl crawl (or a mirror of one), downloaded robustly, read as ``warc``."""

    name = "commoncrawl"
    Params = CommonCrawlParams
    produces = WarcReader.produces

    # -- driver ----------------------------------------------------------------------------------------

    def list_inputs(self, base_dir: str = ".") -> list[InputFile]:
        """One input per picked WARC: ``path`` its URL, ``name`` its path as the listing gives it."""
        p: CommonCrawlParams = self.params
        base = self.base_url(base_dir)
        listing_source, listing = self.listing(base_dir)
        picked = select(listing, p.files, p.max_files, f"the crawl {p.crawl} (listing {listing_source})")
        if picked and not any(listing[i].endswith(_WARC_SUFFIXES) for i in picked):
            log.warning("%s: the picked entries (e.g. %s) do not look like WARC files", listing_source,
                        listing[picked[0]])
        return [InputFile(index=k, path=join_url(base, listing[i]), name=listing[i]) for k, i in enumerate(picked)]

    def base_url(self, base_dir: str = ".") -> str:
        """``base_url`` with a plain folder turned into a ``file://`` URL (resolved against ``base_dir``)."""
        base = self.params.base_url
        if "://" in base:
            return base
        folder = os.path.abspath(os.path.join(base_dir, base))
        return Path(folder).as_uri() + "/"

    def listing(self, base_dir: str = ".") -> tuple[str, list[str]]:
        """(where it came from, the listed paths in order), fetching a remote listing into the cache."""
        p: CommonCrawlParams = self.params
        source = p.paths_file or join_url(self.base_url(base_dir), f"crawl-data/{p.crawl}/warc.paths.gz")
        if "://" in source and not source.startswith("file://"):
            digest = hashlib.sha256(source.encode()).hexdigest()[:16]
            local = self.cache_dir() / "_listings" / digest / posixpath.basename(urllib.parse.urlsplit(source).path)
            try:
                fetch(source, local, **self.fetch_options())
            except DownloadError as e:
                raise SelectionError("paths_file", f"cannot fetch the listing of {p.crawl}: {e}") from None
        elif source.startswith("file://"):
            local = Path(urllib.request.url2pathname(urllib.parse.urlsplit(source).path))
        else:
            local = Path(source if os.path.isabs(source) else os.path.join(base_dir, source))
        try:
            return source, read_listing(local)
        except FileNotFoundError:
            raise SelectionError("paths_file", f"the listing of {p.crawl} does not exist: {local}") from None
        except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
            raise SelectionError("paths_file", f"cannot read the listing {local}: {e}") from None

    # -- executor --------------------------------------------------------------------------------------

    def cache_dir(self) -> Path:
        return Path(self.params.cache_dir) if self.params.cache_dir else cache_root() / "commoncrawl"

    def cache_path(self, name: str) -> Path:
        """Where the file listed as ``name`` is kept (its listed path under the cache folder)."""
        return self.cache_dir().joinpath(*safe_parts(name))

    def fetch_options(self) -> dict[str, Any]:
        p: CommonCrawlParams = self.params
        return {"retries": p.retries, "timeout_s": p.timeout_s, "backoff_s": p.backoff_s,
                "max_backoff_s": p.max_backoff_s,
                "s3": S3Options(endpoint=p.s3_endpoint, region=p.s3_region, anonymous=p.s3_anonymous)}

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Fetch ``ctx.input`` into the cache, then read it as the ``warc`` reader does."""
        stats = FetchStats()
        local = self.cache_path(ctx.input.name)
        try:
            fetch(ctx.input.path, local, stats=stats, **self.fetch_options())
        except DownloadError as e:
            ctx.error(f"download failed: {e}")
            ctx.count("download_given_up")
            return
        finally:
            for key, n in stats.counters().items():
                ctx.count(key, n)
        warc = WarcReader(WarcParams(paths=str(local), max_record_bytes=self.params.max_record_bytes))
        yield from warc.read(_UrlContext(ctx, str(local)), batch_size)
        if not self.params.keep_files:  # reached only when every row was taken
            with contextlib.suppress(OSError):
                os.remove(local)


# --------------------------------------------------------------------------------------------------
# Listing and selection


def read_listing(path: str | os.PathLike[str]) -> list[str]:
    """The non-empty lines of a (gzipped or plain) listing, duplicates dropped, order kept.

    A line must be a relative path without ``..`` (it becomes a URL and a path in the cache).
    """
    with open(path, "rb") as fh:
        gzipped = fh.read(2) == b"\x1f\x8b"
    opener = gzip.open if gzipped else open
    out: dict[str, None] = {}
    with opener(path, "rt", encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            entry = line.strip()
            if not entry:
                continue
            try:
                safe_parts(entry)
            except ValueError as e:
                raise ValueError(f"line {lineno}: {e}") from None
            out.setdefault(entry, None)
    return list(out)


def safe_parts(name: str) -> list[str]:
    """The components of a listed path; a path that could leave the cache folder is an error."""
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"'{name}' is not a relative path without '.' or '..' parts")
    return parts


def select(listing: list[str], files: list[int | str] | None, max_files: int | None, where: str) -> list[int]:
    """The listing positions ``files`` picks (in listing order), the first ``max_files`` of them."""
    if files is None:
        picked = list(range(len(listing)))
    else:
        chosen: set[int] = set()
        position = {entry: i for i, entry in enumerate(listing)}
        for k, entry in enumerate(files):
            if isinstance(entry, int):
                if entry >= len(listing):
                    raise SelectionError(f"files[{k}]", f"line {entry} is past the end of {where} "
                                         f"({len(listing)} files, numbered from 0)")
                chosen.add(entry)
            elif _WILDCARDS & set(entry):
                hits = [i for i, name in enumerate(listing) if fnmatch.fnmatchcase(name, entry)]
                if not hits:
                    raise SelectionError(f"files[{k}]", f"no file of {where} matches '{entry}'")
                chosen.update(hits)
            elif entry in position:
                chosen.add(position[entry])
            else:
                raise SelectionError(f"files[{k}]", f"'{entry}' is not in {where}{_suggest(entry, listing)}")
        picked = sorted(chosen)
    return picked[:max_files] if max_files is not None else picked


def _suggest(entry: str, listing: list[str]) -> str:
    """``; did you mean '...'?`` for a near miss (the same file name, or a close spelling)."""
    base = posixpath.basename(entry)
    same_name = [name for name in listing if posixpath.basename(name) == base]
    if same_name:
        return f"; did you mean '{same_name[0]}'?"
    close = difflib.get_close_matches(entry, listing[:100_000], n=1, cutoff=0.85)
    return f"; did you mean '{close[0]}'?" if close else ""


def join_url(base: str, name: str) -> str:
    """``base`` (ending in ``/``) and a listed path; the path is percent-quoted for http(s) and file."""
    scheme = urllib.parse.urlsplit(base).scheme.lower()
    if scheme in ("s3", "s3a"):
        return base + name
    return base + urllib.parse.quote(name, safe="/:@-._~!$&'()+,;=")
