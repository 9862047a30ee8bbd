"""``url_filter``: block lists on the document URL, with datatrove's ``URLFilter`` decisions.

Each live row's ``url`` is checked in this order; the first rule that fires is the drop reason
(datatrove 0.10.1's names):

1. ``domain``: the registered domain (tldextract's ``top_domain_under_public_suffix``, e.g.
   ``bbc.co.uk``) is a listed domain;
2. ``subdomain``: the full host name (``fqdn``, e.g. ``forums.bbc.co.uk``) is a listed domain;
3. ``url``: the URL, exactly as written, is a listed URL;
4. ``hard_blacklisted``: a banned word is one of the URL's words (the URL split on
   ``[^a-zA-Z0-9]+``, case kept; list entries are lower-cased and stripped of non-alphanumerics);
5. ``soft_blacklisted``: at least ``soft_word_threshold`` (default 2) soft-banned words are URL words;
6. ``blacklisted_subword``: a banned sub-word occurs anywhere in the URL lower-cased with every
   non-alphanumeric character removed (Aho-Corasick).

``drop_detail`` names what matched (the domain, host, word(s) or sub-word). Matching is
case-sensitive as in datatrove; crawlers write host names lower-case. Rows with a null or empty
``url`` are kept: a source without URLs (books, code) passes untouched.

Lists: ``use_default_lists`` (default true) takes datatrove's: ~4.56M domains and ~19.6K URLs
(``url_filterblacklistsv0_3_0.tar.gz``) and its banned word, sub-word and soft word lists, read from the
installed datatrove package (never imported). Users add entries from files (``block_domains``,
``block_urls``, ``banned_words``, ``banned_subwords``, ``soft_banned_words``: lists of paths, one entry a
line, ``#`` starts a comment line, blank lines are skipped) and inline (``inline: {block_domains: [...],
...}``).

The default domain list is unpacked once per machine into smelter's cache
(``~/.cache/smelter/url_filter/<sha256 of the archive>/``, see :mod:`operators.assets`; built in a
temporary folder and renamed, so workers starting together do not race) as a sorted index: the
UTF-8 entries back to back (119 MB) plus their offsets (36 MB). Workers memory-map it and
binary-search it (about 23 probes), so the 4.56M domains cost a worker no private memory: the
operating system shares those pages between all workers of a machine. Measured here: the first
build takes about 6 s and 1 GB of memory for that moment; after it a worker's setup takes ~0.3 s
(hashing the 18 MB archive, tldextract's suffix list) and ~20 MB, and it checks ~27K URLs/s on one
core. (datatrove loads the lists into Python sets: ~3 s and ~490 MB per worker.) URLs, words and user
lists are ordinary Python sets.

tldextract runs offline on its bundled Public Suffix List snapshot (``suffix_list_urls=()``, no disk
cache): no worker ever touches the network. datatrove's own ``URLFilter`` fetches the live list when it
can, so a suffix added to the list since the snapshot can change a registered domain there.
"""

from __future__ import annotations

import logging
import mmap
import os
import re
import tarfile
import time
from array import array
from pathlib import Path

import pyarrow as pa
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from operators.assets import AssetError, cached_build, file_sha256, require_package_file
from operators.base import Params, RowStep, TaskContext, alive, update_batch

log = logging.getLogger(__name__)

_SPLIT = re.compile(r"[^a-zA-Z0-9]+")
DEFAULT_TAR = ("datatrove", "assets", "url_filterblacklistsv0_3_0.tar.gz")
DEFAULT_WORDS = {"banned_words": "banned_words.txt", "banned_subwords": "banned_subwords.txt",
                 "soft_banned_words": "soft_banned_words.txt"}
_HOW = "they ship in the datatrove wheel (pip install datatrove==0.10.1), or set use_default_lists: false"
_INDEX_BLOB, _INDEX_OFFSETS, _URLS = "domains.bin", "domains.offsets", "urls"
_WORD_LISTS = ("banned_words", "banned_subwords", "soft_banned_words")


def normalize(text: str) -> str:
    """Lower-case, every non-alphanumeric character removed (datatrove's ``normalize``)."""
    return _SPLIT.sub("", text).lower()


# --------------------------------------------------------------------------------------------------
# The default lists: unpacked once per machine into a sorted, memory-mapped domain index


class SortedStrings:
    """Membership in a sorted list of UTF-8 strings stored back to back, memory-mapped.

    ``<blob>`` holds the entries, ``<offsets>`` n+1 native int64 start offsets. Lookups binary-search
    (about 23 probes for 4.5M entries); nothing is copied into the process.
    """

    def __init__(self, blob: str | os.PathLike[str], offsets: str | os.PathLike[str]):
        self._maps = []
        self._blob = self._map(blob) if os.path.getsize(blob) else b""
        off = self._map(offsets) if os.path.getsize(offsets) else b""
        self._off = memoryview(off).cast("q") if off else memoryview(array("q", [0]))
        self._n = len(self._off) - 1

    def _map(self, path: str | os.PathLike[str]) -> mmap.mmap:
        with open(path, "rb") as fh:
            m = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        self._maps.append(m)
        return m

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> str:
        if not 0 <= i < self._n:
            raise IndexError(i)
        return bytes(self._blob[self._off[i]:self._off[i + 1]]).decode("utf-8", "surrogatepass")

    def __contains__(self, s: str) -> bool:
        key = s.encode("utf-8", "surrogatepass")
        blob, off = self._blob, self._off
        lo, hi = 0, self._n
        while lo < hi:
            mid = (lo + hi) >> 1
            if blob[off[mid]:off[mid + 1]] < key:
                lo = mid + 1
            else:
                hi = mid
        return lo < self._n and blob[off[lo]:off[lo + 1]] == key

    @staticmethod
    def write(entries: list[str], blob: str | os.PathLike[str], offsets: str | os.PathLike[str]) -> None:
        """Write ``entries`` sorted and de-duplicated (Arrow sorts by bytes: code-point order)."""
        import numpy as np
        import pyarrow.compute as pc

        arr = pa.array(entries, pa.large_string())
        arr = arr.take(pc.array_sort_indices(arr))
        if len(arr) > 1:
            differs = pc.not_equal(arr.slice(1), arr.slice(0, len(arr) - 1))
            arr = arr.filter(pa.concat_arrays([pa.array([True]), differs.combine_chunks()
                                               if isinstance(differs, pa.ChunkedArray) else differs]))
        if len(arr) == 0:
            off, data = np.zeros(1, np.int64), b""
        else:
            buffers = arr.buffers()
            off = np.frombuffer(buffers[1], np.int64, count=len(arr) + 1, offset=arr.offset * 8)
            data = memoryview(buffers[2])[off[0]:off[-1]]
            off = off - off[0]
        with open(blob, "wb") as out:
            out.write(data)
        with open(offsets, "wb") as out:
            out.write(off.astype(np.int64).tobytes())


def _build_default_lists(tar_path: str, folder: Path) -> None:
    t0 = time.time()
    with tarfile.open(tar_path, "r:gz") as tar:
        names = set(tar.getnames())
        if not {"domains", "urls"} <= names:
            raise AssetError(f"url_filter: {tar_path} has no 'domains' and 'urls' members (it has "
                             f"{sorted(names)}); reinstall datatrove==0.10.1")
        for name in ("urls", "domains"):
            # read as datatrove does (text mode: universal newlines; '#' lines skipped; entries stripped)
            text = tar.extractfile(name).read().decode("utf-8").replace("\r\n", "\n").replace("\r", "\n")
            lines = text.split("\n")
            del text
            if lines and lines[-1] == "":  # the file ends with a newline: no line after it
                lines.pop()
            entries = [x.strip() for x in lines if not x.startswith("#")]
            del lines
            if name == "urls":
                (folder / _URLS).write_text("".join(e + "\n" for e in sorted(set(entries))), encoding="utf-8")
            else:
                SortedStrings.write(entries, folder / _INDEX_BLOB, folder / _INDEX_OFFSETS)
            del entries
    log.info("url_filter: built the default block lists in %s (%.1f s)", folder, time.time() - t0)


def default_lists_dir(cache_dir: str | None = None) -> Path:
    """The folder with datatrove's domains index and URL list, built on first use on this machine."""
    tar = require_package_file(*DEFAULT_TAR, what="url_filter: no default block lists", how=_HOW)
    key = file_sha256(tar)[:16]
    return cached_build("url_filter", key, lambda tmp: _build_default_lists(tar, tmp), root=cache_dir,
                        what="url_filter")


def default_word_file(which: str) -> str:
    return require_package_file("datatrove", "assets", DEFAULT_WORDS[which],
                                what="url_filter: no default word lists", how=_HOW)


# --------------------------------------------------------------------------------------------------
# Parameters


def read_list(path: str) -> list[str]:
    """Entries of a user list file: one a line, stripped; blank lines and ``#`` lines skipped."""
    with open(path, encoding="utf-8") as fh:
        return [x for x in (line.strip() for line in fh) if x and not x.startswith("#")]


def _datatrove_word_list(path: str) -> set[str]:
    """A datatrove word list as datatrove reads it: ``#`` lines skipped, the others normalized."""
    with open(path, encoding="utf-8") as fh:
        return {normalize(x) for x in fh if x[0] != "#"}


class UrlLists(Params):
    """Inline list entries (the same lists as the file parameters)."""

    block_domains: list[str] = []
    block_urls: list[str] = []
    banned_words: list[str] = []
    banned_subwords: list[str] = []
    soft_banned_words: list[str] = []


class UrlFilterParams(Params):
    #: datatrove's lists (4.56M domains, 19.6K URLs, banned/soft words and sub-words)
    use_default_lists: bool = True
    #: files with more entries: one a line, '#' comment lines and blank lines skipped
    block_domains: list[str] = []
    block_urls: list[str] = []
    banned_words: list[str] = []
    banned_subwords: list[str] = []
    soft_banned_words: list[str] = []
    #: entries written in the YAML: {block_domains: [...], banned_words: [...], ...}
    inline: UrlLists = UrlLists()
    #: this many soft-banned URL words drop a row
    soft_word_threshold: int = Field(default=2, ge=1)
    #: where the default lists are unpacked (default: $SMELTER_CACHE_DIR, else ~/.cache/smelter)
    cache_dir: str | None = None

    @field_validator("block_domains", "block_urls", "banned_words", "banned_subwords", "soft_banned_words",
                     mode="before")
    @classmethod
    def _one_file(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("block_domains", "block_urls", "banned_words", "banned_subwords", "soft_banned_words")
    @classmethod
    def _files_exist(cls, v: list[str]) -> list[str]:
        for path in v:
            if not os.path.isfile(path):
                raise PydanticCustomError("list_file", "no such list file: {path}", {"path": path})
        return v


# --------------------------------------------------------------------------------------------------
# The step


class UrlFilter(RowStep):
    """Block lists on ``url``: drops ``domain``, ``subdomain``, ``url``, ``hard_blacklisted``,
    ``soft_blacklisted``, ``blacklisted_subword`` with datatrove's ``URLFilter`` decisions; rows
    without a URL are kept."""

    name = "url_filter"
    Params = UrlFilterParams
    reads = ("url",)
    adds = {}

    def setup(self) -> None:
        import ahocorasick
        from tldextract import TLDExtract

        p: UrlFilterParams = self.params
        t0 = time.time()
        self._tld = TLDExtract(cache_dir=None, suffix_list_urls=(), fallback_to_snapshot=True)
        self._index: SortedStrings | None = None
        domains: set[str] = set()
        urls: set[str] = set()
        words: dict[str, set[str]] = {k: set() for k in _WORD_LISTS}
        if p.use_default_lists:
            folder = default_lists_dir(p.cache_dir)
            self._index = SortedStrings(folder / _INDEX_BLOB, folder / _INDEX_OFFSETS)
            urls |= set((folder / _URLS).read_text(encoding="utf-8").split("\n")) - {""}
            for k in _WORD_LISTS:
                words[k] |= _datatrove_word_list(default_word_file(k))
        for path in p.block_domains:
            domains.update(read_list(path))
        domains.update(x.strip() for x in p.inline.block_domains if x.strip())
        for path in p.block_urls:
            urls.update(read_list(path))
        urls.update(x.strip() for x in p.inline.block_urls if x.strip())
        for k in _WORD_LISTS:
            extra = [x for path in getattr(p, k) for x in read_list(path)] + list(getattr(p.inline, k))
            words[k].update(w for w in map(normalize, extra) if w)
        self._domains = domains
        self._urls = urls
        self._banned = frozenset(words["banned_words"])
        self._soft = frozenset(words["soft_banned_words"])
        self._subwords = ahocorasick.Automaton(ahocorasick.STORE_ANY)
        for w in sorted(words["banned_subwords"]):
            self._subwords.add_word(w, w)
        self._has_subwords = len(self._subwords) > 0
        if self._has_subwords:
            self._subwords.make_automaton()
        self._tld("http://example.com/")  # builds tldextract's suffix trie now, not on the first row
        log.info("url_filter: lists ready in %.2f s (%s indexed domains, %d more domains, %d urls, "
                 "%d/%d/%d banned/soft/sub words)", time.time() - t0, len(self._index) if self._index else 0,
                 len(domains), len(urls), len(self._banned), len(self._soft), len(words["banned_subwords"]))

    def _listed_domain(self, name: str) -> bool:
        return name in self._domains or (self._index is not None and name in self._index)

    def check(self, url: str) -> tuple[str, str] | None:
        """``(reason, detail)`` when ``url`` is blocked, else None (datatrove's rule order)."""
        try:
            info = self._tld(url)
            registered, fqdn = info.top_domain_under_public_suffix, info.fqdn
        except Exception:  # a URL tldextract cannot parse: the word rules still apply
            registered = fqdn = None
        if registered is not None:
            if self._listed_domain(registered):
                return "domain", registered
            if fqdn != registered and self._listed_domain(fqdn):
                return "subdomain", fqdn
        if url in self._urls:
            return "url", url
        url_words = set(_SPLIT.split(url))
        hard = self._banned.intersection(url_words)
        if hard:
            return "hard_blacklisted", ",".join(sorted(hard))
        soft = self._soft.intersection(url_words)
        if len(soft) >= self.params.soft_word_threshold:
            return "soft_blacklisted", ",".join(sorted(soft))
        if self._has_subwords:
            for _, word in self._subwords.iter(normalize(url)):
                return "blacklisted_subword", word
        return None

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        n = batch.num_rows
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        for i, (ok, url) in enumerate(zip(alive(batch), batch.column("url").to_pylist(), strict=True)):
            if ok and url:
                hit = self.check(url)
                if hit is not None:
                    reasons[i], details[i] = hit
        return update_batch(batch, self.name, reasons=reasons, details=details)
