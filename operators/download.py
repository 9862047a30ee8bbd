"""A robust file downloader for crawl ingestion: retries, Range resume, validation, atomic placement.

:func:`fetch` copies one remote file (``http://``, ``https://``, ``file://``, ``s3://`` / ``s3a://``) into a
local path, and guarantees that the path either does not exist or holds the whole, validated file:

- the bytes go to ``<dest>.part``; only a file that passed validation is renamed (``os.replace``) to
  ``dest``, so a reader never sees half a file;
- a cut connection resumes where the ``.part`` file ends with an HTTP ``Range`` request. The reply is
  trusted only if it is a ``206`` whose ``Content-Range`` starts exactly there; a ``200`` (a server that
  ignores ``Range``, or an ``If-Range`` validator that no longer matches because the file changed)
  restarts the file from byte 0. The ETag (else Last-Modified) of the first reply is kept beside the
  part file (``<dest>.part.meta``) and sent as ``If-Range``, so a resume never glues two versions;
- every failed attempt is retried after an exponential backoff with jitter (``backoff_s * 2**k``, at most
  ``max_backoff_s``, times a random factor in [0.5, 1]); a ``Retry-After`` of a 429/503 is honoured up to
  the same bound. A stalled transfer ends after ``timeout_s`` without a byte (the socket's read timeout);
- validation: the size must equal the ``Content-Length`` (or the total of ``Content-Range``), and a gzip
  file (gzip magic, or a name ending in ``.gz``) must decompress completely: every member, CRC and
  length checked by zlib, nothing after the last member. A file that fails is deleted and fetched again
  from scratch (one more retry). A file that is not gzip is checked by its size only;
- ``404``/``410``, other ``4xx`` and a missing local file are permanent: no retry;
- concurrent fetches of one ``dest`` on one machine (two Spark tasks) take turns on ``<dest>.lock``
  (``flock``): the second finds the first's file and counts a cache hit. A ``dest`` that exists is a
  cache hit: no request at all (it can only have got there validated).

Counters (:class:`FetchStats`): ``downloads`` (files fetched), ``bytes`` (received over all attempts),
``retries``, ``resumes`` (attempts that continued a partial file), ``restarts`` (partial files thrown
away), ``cache_hits``, and ``failures`` by reason: ``http_<status>``, ``connect`` (no reply),
``timeout`` (a stall), ``cut`` (the body ended early or the connection broke), ``size_mismatch``,
``bad_content_range``, ``bad_gzip``, ``not_gzip``, ``io`` (a local file error), ``s3``.

Only the standard library is used for HTTP (through the proxy that ``http_proxy`` / ``https_proxy`` name,
except for ``no_proxy`` hosts and loopback addresses); S3 goes through ``pyarrow.fs.S3FileSystem`` (endpoint and
region from the arguments, else ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` /
``AWS_DEFAULT_REGION``; credentials from the usual AWS chain, or none with ``anonymous``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import email.utils
import http.client
import json
import logging
import os
import random
import re
import shutil
import ssl
import time
import urllib.parse
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from typing import Any

log = logging.getLogger(__name__)

SCHEMES = ("http", "https", "file", "s3", "s3a")
_CHUNK = 2**20
_MAX_REDIRECTS = 5
_GZIP_MAGIC = b"\x1f\x8b"
_CONTENT_RANGE_RE = re.compile(r"^\s*bytes\s+(\d+)-(\d+)/(\d+|\*)\s*$", re.I)
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})  # never through a proxy
_USER_AGENT = "smelter-downloader/1 (+https://commoncrawl.org/terms-of-use)"


class DownloadError(OSError):
    """A file that could not be fetched; ``str(error)`` is one line naming the URL and why."""

    def __init__(self, url: str, message: str, reason: str):
        super().__init__(f"{url}: {message}")
        self.url = url
        self.reason = reason


@dataclasses.dataclass
class FetchStats:
    """What fetching cost; one object may collect several fetches (see :meth:`counters`)."""

    downloads: int = 0
    bytes: int = 0
    retries: int = 0
    resumes: int = 0
    restarts: int = 0
    cache_hits: int = 0
    failures: dict[str, int] = dataclasses.field(default_factory=dict)

    def fail(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1

    def counters(self, prefix: str = "download_") -> dict[str, int]:
        """Flat, non-zero counters: ``{prefix}files``, ``{prefix}bytes`` ... ``{prefix}failed_<reason>``."""
        out = {"files": self.downloads, "bytes": self.bytes, "retries": self.retries,
               "resumes": self.resumes, "restarts": self.restarts, "cache_hits": self.cache_hits}
        out.update({f"failed_{k}": v for k, v in self.failures.items()})
        return {prefix + k: v for k, v in out.items() if v}


@dataclasses.dataclass(frozen=True)
class S3Options:
    """How to reach S3 (all optional: the AWS environment variables fill in what is missing)."""

    endpoint: str | None = None  # e.g. "http://127.0.0.1:9000" or "s3.us-east-1.amazonaws.com"
    region: str | None = None
    anonymous: bool = False


class _Retry(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, reason: str, detail: str, discard: bool = False, wait: float = 0.0):
        super().__init__(detail)
        self.reason = reason
        self.discard = discard  # the partial file is worthless: start the next attempt from byte 0
        self.wait = wait  # at least this long before the next attempt (Retry-After)


class _Permanent(Exception):
    """An attempt failed in a way no retry fixes (404, a missing local file, a full disk)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


# --------------------------------------------------------------------------------------------------
# Entry point


def fetch(url: str, dest: str | os.PathLike[str], *, retries: int = 8, timeout_s: float = 60.0,
          backoff_s: float = 2.0, max_backoff_s: float = 60.0, s3: S3Options | None = None,
          stats: FetchStats | None = None, sleep: Callable[[float], None] = time.sleep) -> FetchStats:
    """Make ``dest`` hold the whole, validated content of ``url``; return the counters.

    Raises :class:`DownloadError` (one line) when the file cannot be fetched: at once for a permanent
    failure, else after ``retries`` retries. ``dest`` is then absent; a partial ``<dest>.part`` may stay
    for a later call to resume.
    """
    stats = stats if stats is not None else FetchStats()
    dest = os.fspath(dest)
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise DownloadError(url, f"unsupported URL scheme '{scheme}' (use one of {', '.join(SCHEMES)})",
                            "bad_url")
    if os.path.isfile(dest):
        stats.cache_hits += 1
        return stats
    try:
        os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    except OSError as e:
        raise DownloadError(url, f"cannot create the cache folder of {dest}: {e.strerror or e}", "io") from None
    with _locked(dest):
        if os.path.isfile(dest):  # another task on this machine fetched it while we waited
            stats.cache_hits += 1
            return stats
        _fetch_locked(url, scheme, dest, retries, timeout_s, backoff_s, max_backoff_s, s3, stats, sleep)
    return stats


def _fetch_locked(url: str, scheme: str, dest: str, retries: int, timeout_s: float, backoff_s: float,
                  max_backoff_s: float, s3: S3Options | None, stats: FetchStats,
                  sleep: Callable[[float], None]) -> None:
    part = dest + ".part"
    want_gzip = dest.endswith(".gz")
    attempt = 0
    failures: dict[str, int] = {}  # this fetch's (``stats`` may collect several)
    while True:
        try:
            if scheme in ("http", "https"):
                expected = _http_attempt(url, part, timeout_s, stats)
            elif scheme == "file":
                expected = _file_attempt(url, part, stats)
            else:
                expected = _s3_attempt(url, part, timeout_s, s3 or S3Options(), stats)
            _validate(part, expected, want_gzip)
            os.replace(part, dest)
            _remove(part + ".meta")
            stats.downloads += 1
            return
        except _Permanent as e:
            stats.fail(e.reason)
            raise DownloadError(url, str(e), e.reason) from None
        except _Retry as e:
            stats.fail(e.reason)
            failures[e.reason] = failures.get(e.reason, 0) + 1
            if e.discard:
                _remove(part)
                _remove(part + ".meta")
                stats.restarts += 1
            if attempt >= retries:
                summary = ", ".join(f"{k} x{v}" for k, v in sorted(failures.items()))
                raise DownloadError(url, f"{e} (gave up after {attempt + 1} attempts; failures: {summary})",
                                    e.reason) from None
            attempt += 1
            stats.retries += 1
            delay = max(backoff_delay(attempt, backoff_s, max_backoff_s), min(e.wait, max_backoff_s))
            log.warning("%s: %s; retry %d of %d in %.2f s", url, e, attempt, retries, delay)
            sleep(delay)


def backoff_delay(attempt: int, base_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """The pause before retry number ``attempt`` (1-based): ``base * 2**(attempt-1)``, capped, jittered."""
    full = min(max_s, base_s * 2 ** (attempt - 1))
    return full * (rng or random).uniform(0.5, 1.0)


@contextlib.contextmanager
def _locked(dest: str) -> Iterator[None]:
    """Hold ``<dest>.lock`` exclusively (processes and threads of this machine take turns)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock; the part file is still renamed atomically
        yield
        return
    fd = os.open(dest + ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def _remove(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except FileNotFoundError:
        return 0


# --------------------------------------------------------------------------------------------------
# HTTP(S)


def _http_attempt(url: str, part: str, timeout_s: float, stats: FetchStats) -> int | None:
    """One GET into ``part`` (resuming it when it has bytes); returns the expected total size, if known."""
    have = _size(part)
    meta_path = part + ".meta"
    validator = _read_meta(meta_path).get("validator") if have else None
    headers = {"User-Agent": _USER_AGENT, "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
        if validator:
            headers["If-Range"] = validator
    conn, resp = _http_get(url, headers, timeout_s)
    try:
        status = resp.status
        if status == 416 and have:
            total = _content_range_total(resp.getheader("Content-Range"))
            if total == have:  # a whole file whose validation or rename was interrupted
                return total
            raise _Retry("http_416", f"HTTP 416: the partial file ({have} bytes) does not fit the remote "
                         f"file ({total if total is not None else 'unknown'} bytes)", discard=True)
        if status in (408, 429) or status >= 500:
            wait = _retry_after(resp.getheader("Retry-After"))
            raise _Retry(f"http_{status}", f"HTTP {status} {resp.reason}".strip(), wait=wait)
        if status in (404, 410):
            raise _Permanent(f"http_{status}", f"not found (HTTP {status})")
        if status == 206:
            crange = resp.getheader("Content-Range") or ""
            m = _CONTENT_RANGE_RE.match(crange)
            if not have or m is None or int(m.group(1)) != have:
                raise _Retry("bad_content_range", f"HTTP 206 with Content-Range '{crange}' for a request "
                             f"from byte {have}", discard=True)
            total = int(m.group(3)) if m.group(3) != "*" else None
            stats.resumes += 1
            mode = "ab"
        elif status == 200:
            if have:  # the server ignored Range, or the file changed (If-Range): start over
                stats.restarts += 1
                log.info("%s: the server sent the whole file instead of bytes %d-: restarting", url, have)
            total = _int_header(resp.getheader("Content-Length"))
            etag = resp.getheader("ETag")
            # If-Range needs a strong validator: a weak ETag would make every resume a restart
            new_validator = etag if etag and not etag.startswith("W/") else resp.getheader("Last-Modified")
            _write_meta(meta_path, {"validator": new_validator} if new_validator else {})
            have, mode = 0, "wb"
        else:
            raise _Permanent(f"http_{status}", f"HTTP {status} {resp.reason}".strip())
        _copy_body(resp, part, mode, stats)
    finally:
        conn.close()
    got = _size(part)
    if total is not None and got < total:
        raise _Retry("cut", f"the transfer ended at byte {got} of {total}")
    if total is not None and got > total:
        raise _Retry("size_mismatch", f"received {got} bytes, but the server announced {total}", discard=True)
    return total


def _http_get(url: str, headers: dict[str, str], timeout_s: float) -> tuple[http.client.HTTPConnection, Any]:
    """Send a GET, following redirects; returns the open connection and its response."""
    for _ in range(_MAX_REDIRECTS + 1):
        conn, target, extra = _connection(url, timeout_s)
        try:
            conn.request("GET", target, headers={**headers, **extra})
            resp = conn.getresponse()
        except TimeoutError as e:
            conn.close()
            raise _Retry("timeout", f"no reply within {timeout_s:g} s ({e or 'timed out'})") from None
        except ssl.SSLCertVerificationError as e:
            conn.close()
            raise _Permanent("tls", f"TLS certificate not accepted: {e.verify_message or e}") from None
        except (OSError, http.client.HTTPException) as e:
            conn.close()
            raise _Retry("connect", f"no reply: {type(e).__name__}: {e}") from None
        if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
            url = urllib.parse.urljoin(url, resp.getheader("Location"))
            conn.close()
            continue
        return conn, resp
    raise _Permanent("redirects", f"more than {_MAX_REDIRECTS} redirects")


def _connection(url: str, timeout_s: float) -> tuple[http.client.HTTPConnection, str, dict[str, str]]:
    """(connection, request target, extra headers) for ``url``, through the proxy the environment names.

    ``http_proxy`` / ``https_proxy`` / ``no_proxy`` are honoured as urllib reads them: an http URL is
    requested from the proxy by its absolute form, an https URL through a CONNECT tunnel.
    """
    parts = urllib.parse.urlsplit(url)
    https = parts.scheme == "https"
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and (parts.hostname in _LOOPBACK or urllib.request.proxy_bypass(parts.hostname or "")):
        proxy = None
    if not proxy:
        cls = http.client.HTTPSConnection if https else http.client.HTTPConnection
        return cls(parts.hostname or "", parts.port, timeout=timeout_s), target, {}
    pp = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    auth = {}
    if pp.username:
        token = base64.b64encode(f"{urllib.parse.unquote(pp.username)}:"
                                 f"{urllib.parse.unquote(pp.password or '')}".encode()).decode()
        auth = {"Proxy-Authorization": f"Basic {token}"}
    proxy_cls = http.client.HTTPSConnection if pp.scheme == "https" else http.client.HTTPConnection
    if https:
        conn = http.client.HTTPSConnection(pp.hostname or "", pp.port or 3128, timeout=timeout_s)
        conn.set_tunnel(parts.hostname or "", parts.port or 443, headers=auth)
        return conn, target, {}
    conn = proxy_cls(pp.hostname or "", pp.port or 3128, timeout=timeout_s)
    return conn, url, auth


def _copy_body(resp: Any, part: str, mode: str, stats: FetchStats) -> None:
    """Stream the response body onto ``part``; a stall or a broken connection is a retryable cut."""
    try:
        out = open(part, mode)  # noqa: SIM115 - closed below, after the network errors are sorted out
    except OSError as e:
        raise _Permanent("io", f"cannot write {part}: {e.strerror or e}") from None
    with out:
        while True:
            try:
                block = resp.read1(_CHUNK)  # what has arrived: a stall keeps the bytes before it
            except TimeoutError:
                out.flush()
                raise _Retry("timeout", f"the transfer stalled at byte {out.tell()}") from None
            except (OSError, http.client.HTTPException) as e:
                out.flush()
                raise _Retry("cut", f"the connection broke at byte {out.tell()}: {type(e).__name__}") from None
            if not block:
                break
            stats.bytes += len(block)
            try:
                out.write(block)
            except OSError as e:
                raise _Permanent("io", f"cannot write {part}: {e.strerror or e}") from None
        out.flush()
        os.fsync(out.fileno())


def _int_header(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def _content_range_total(value: str | None) -> int | None:
    """The total of a ``Content-Range: bytes */N`` (a 416 reply) or ``bytes a-b/N``."""
    if not value:
        return None
    m = re.match(r"^\s*bytes\s+(?:\*|\d+-\d+)/(\d+)\s*$", value, re.I)
    return int(m.group(1)) if m else None


def _retry_after(value: str | None) -> float:
    """Seconds a ``Retry-After`` header asks for (a number or an HTTP date); 0 if absent or odd."""
    if not value:
        return 0.0
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return 0.0
    return max(0.0, when.timestamp() - time.time())


def _read_meta(path: str) -> dict[str, Any]:
    try:
        with open(path) as fh:
            meta = json.load(fh)
        return meta if isinstance(meta, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_meta(path: str, meta: dict[str, Any]) -> None:
    try:
        with open(path, "w") as fh:
            json.dump(meta, fh)
    except OSError as e:
        raise _Permanent("io", f"cannot write {path}: {e.strerror or e}") from None


# --------------------------------------------------------------------------------------------------
# file:// and s3://


def _file_attempt(url: str, part: str, stats: FetchStats) -> int:
    """Copy a local file (the whole file each time: a local copy is cheap and needs no validator)."""
    src = urllib.request.url2pathname(urllib.parse.urlsplit(url).path)
    try:
        size = os.path.getsize(src)
        with open(src, "rb") as fin:
            try:
                with open(part, "wb") as fout:
                    shutil.copyfileobj(fin, fout, _CHUNK)
            except OSError as e:
                raise _Permanent("io", f"cannot write {part}: {e.strerror or e}") from None
    except FileNotFoundError:
        raise _Permanent("not_found", f"not found ({src})") from None
    except OSError as e:
        raise _Retry("io", f"cannot read {src}: {e.strerror or e}") from None
    stats.bytes += _size(part)
    return size


_s3_filesystems: dict[tuple[Any, ...], Any] = {}


def s3_filesystem(options: S3Options, timeout_s: float = 60.0) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` for these options (one per process and option set)."""
    endpoint = options.endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = options.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    key = (endpoint, region, options.anonymous, timeout_s)
    if key not in _s3_filesystems:
        from pyarrow import fs as pafs

        kwargs: dict[str, Any] = {"anonymous": options.anonymous, "connect_timeout": timeout_s,
                                  "request_timeout": timeout_s,
                                  # our own loop retries (with resume): one try per request here
                                  "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=1)}
        if region:
            kwargs["region"] = region
        if endpoint:
            parts = urllib.parse.urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = parts.netloc
            kwargs["scheme"] = parts.scheme or "https"
        _s3_filesystems[key] = pafs.S3FileSystem(**kwargs)
    return _s3_filesystems[key]


def _s3_attempt(url: str, part: str, timeout_s: float, options: S3Options, stats: FetchStats) -> int:
    """Read an S3 object into ``part``, resuming at its end when the object's mtime is unchanged."""
    parts = urllib.parse.urlsplit(url)
    path = parts.netloc + parts.path
    try:
        fs = s3_filesystem(options, timeout_s)
        info = fs.get_file_info(path)
    except OSError as e:
        raise _Retry("s3", f"S3: {_one_line(e)}") from None
    from pyarrow import fs as pafs

    if info.type == pafs.FileType.NotFound:
        raise _Permanent("not_found", "not found (S3)")
    total = info.size
    validator = str(info.mtime_ns) if info.mtime_ns is not None else None
    meta_path = part + ".meta"
    have = _size(part)
    if have and (validator is None or _read_meta(meta_path).get("validator") != validator or have > total):
        stats.restarts += 1
        have = 0
    if have == 0:
        _write_meta(meta_path, {"validator": validator} if validator else {})
    else:
        stats.resumes += 1
    try:
        out = open(part, "ab" if have else "wb")  # noqa: SIM115 - closed below
    except OSError as e:
        raise _Permanent("io", f"cannot write {part}: {e.strerror or e}") from None
    with out:
        try:
            with fs.open_input_file(path) as fin:
                fin.seek(have)
                while block := fin.read(_CHUNK):
                    stats.bytes += len(block)
                    out.write(block)
        except OSError as e:
            out.flush()
            raise _Retry("s3", f"S3 read broke at byte {out.tell()}: {_one_line(e)}") from None
        out.flush()
        os.fsync(out.fileno())
    got = _size(part)
    if got != total:
        raise _Retry("cut" if got < total else "size_mismatch", f"read {got} of {total} bytes",
                     discard=got > total)
    return total


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= 200 else text[:197] + "..."


# --------------------------------------------------------------------------------------------------
# Validation


def _validate(path: str, expected: int | None, want_gzip: bool) -> None:
    """Size against what the server announced; a gzip stream decompressed to its very end."""
    size = _size(path)
    if expected is not None and size != expected:
        raise _Retry("size_mismatch", f"the file has {size} bytes, the server announced {expected}",
                     discard=size > expected)
    with open(path, "rb") as fh:
        head = fh.read(2)
    if head == _GZIP_MAGIC:
        problem = gzip_problem(path)
        if problem:
            raise _Retry("bad_gzip", f"corrupt gzip: {problem}", discard=True)
    elif want_gzip:
        raise _Retry("not_gzip", f"not a gzip file (it starts with {head!r})", discard=True)


def gzip_problem(path: str | os.PathLike[str], block: int = _CHUNK) -> str | None:
    """What is wrong with a (multi-member) gzip file, or None when every member decompresses whole.

    zlib checks each member's CRC-32 and length; the file must end exactly after a member (trailing
    bytes that do not start a valid member, zero padding included, are garbage).
    """
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    member, member_at, pos = 1, 0, 0  # pos: file offset of the next byte fed to ``d``
    fed_any = False
    with open(path, "rb") as fh:
        while True:
            data = fh.read(block)
            if not data:
                break
            while data:
                if d.eof:  # ``data`` starts the next member
                    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
                    member, member_at, fed_any = member + 1, pos, False
                    if not data.startswith(_GZIP_MAGIC[: len(data)]):
                        return f"{_size(str(path)) - pos} bytes of garbage after gzip member {member - 1} " \
                               f"(at byte {pos})"
                try:
                    d.decompress(data, 2**23)
                    while d.unconsumed_tail and not d.eof:
                        d.decompress(d.unconsumed_tail, 2**23)
                except zlib.error as e:
                    return f"gzip member {member} (at byte {member_at}): {e}"
                fed_any = True
                used = len(data) - len(d.unused_data) if d.eof else len(data)
                pos += used
                data = d.unused_data if d.eof else b""
    if not fed_any and member == 1:
        return "empty file"
    if not d.eof:
        return f"truncated: the file ends inside gzip member {member} (at byte {member_at})"
    return None

