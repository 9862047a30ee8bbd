"""WARC reader: the HTML responses of (gzipped) WARC files as rows, damage as error entries.

Rows: one per ``response`` record whose HTTP ``Content-Type`` is HTML-like (``text/html``,
``application/xhtml+xml``; without a content type, the payload start is sniffed for ``<html`` /
``<!doctype html``). Columns, in order: ``id`` (a hash of source, input name and the record's byte
offset: the gzip member offset in a gzipped file, as in CommonCrawl's CDX index), ``url``,
``warc_date``, ``warc_record_id``, ``content_type`` (the full HTTP header, charset included) and
``html`` (the HTTP payload with its chunked transfer coding and gzip/deflate/br content coding undone).

Fast path: fastwarc (Rust) iterates the records and parses the HTTP headers; every payload is read
once, as raw bytes, and decoded with zlib/brotli only when the HTTP headers name a coding (CommonCrawl
stores payloads already decoded, so this is rare). warcio is used only for a file fastwarc cannot read
from its very first byte on, such as an ARC file.

Bad input is normal input. Nothing here raises for a damaged file; instead:

- a record cut off by the end of the file keeps what is there (a row if it is HTML) and gets an
  error entry; so does a gzip stream that ends early or is corrupt, at the offset of its member;
- a record whose framing is wrong (bad ``Content-Length``, garbage between records) gets an error
  entry at the byte where the next record should have started, and reading resumes at the next
  record header (or gzip member) found after it, so one bad record never costs the rest of a file;
- a payload whose declared coding does not decode keeps the best bytes available (the decoded part,
  else the raw body) and is counted as ``records_bad_http_encoding``;
- a ``WARC-Target-URI`` in ``<...>`` (wget, WARC/1.0 drafts) is unwrapped and counted; a response
  without one keeps ``url`` null and gets an error entry;
- several records inside one gzip member (a WARC gzipped as a whole) are read; their ids add the
  record's index in the member to the member offset, and the file gets one error entry;
- an ARC file (read by warcio) has no record ids: ``warc_record_id`` is null there, since warcio
  would make up a random one and reruns must give the same rows.

Counters (``ctx.count``): ``records_total``, ``records_<type>`` for every WARC-Type, and for responses
exactly one of ``records_html`` (a row), ``records_non_html``, ``skipped_too_large``,
``records_empty_payload``, ``records_bad_http`` (no HTTP status line), ``records_unreadable`` (the
payload could not be read) or (warcio only) ``records_bad_length``. Besides: ``records_truncated``,
``records_bad_http_encoding``, ``records_bad_target_uri``, ``records_warc_truncated`` (an HTML
payload the crawler cut: ``WARC-Truncated``), ``records_in_shared_gzip_member``, ``resyncs`` and
``files_fastwarc`` / ``files_warcio`` (which library read the file).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import zlib
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
from fastwarc.warc import ArchiveIterator, WarcRecordType
from pydantic import Field

from operators.base import InputFile, Params, Reader, TaskContext, doc_id
from operators.readers.files import list_files

SCHEMA = pa.schema([
    ("id", pa.string()),
    ("url", pa.string()),
    ("warc_date", pa.string()),
    ("warc_record_id", pa.string()),
    ("content_type", pa.string()),
    ("html", pa.binary()),
])

_HTML_TYPES = frozenset({"text/html", "application/xhtml+xml"})
_RESPONSE = int(WarcRecordType.response)
_TYPE_COUNTERS = {int(t): f"records_{t}" for t in (
    WarcRecordType.warcinfo, WarcRecordType.response, WarcRecordType.resource, WarcRecordType.request,
    WarcRecordType.metadata, WarcRecordType.revisit, WarcRecordType.conversion,
    WarcRecordType.continuation, WarcRecordType.unknown)}
#: a batch is cut early once its payloads reach this many bytes (keeps binary offsets far below 2 GiB)
_MAX_BATCH_BYTES = 256 * 2**20
#: how far a damaged file is scanned for the next record header or gzip member, and how often
_SCAN_BLOCK = 2**20
_MAX_RESYNC_ATTEMPTS = 1000
_GZIP_MAGIC = b"\x1f\x8b\x08"
_WARC_MAGIC = b"WARC/"
_CONTENT_LENGTH_RE = re.compile(rb"(?im)^content-length[ \t]*:[ \t]*(\d+)[ \t]*\r?$")
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,16}")
_NO_CODING = frozenset({"", "identity", "none", "binary", "7bit", "8bit", "utf-8", "utf8"})


class WarcParams(Params):
    #: glob(s) of WARC (or ARC) files, ``.gz`` or not; relative paths are resolved against the base dir
    paths: str | list[str]
    #: responses whose payload is larger (before or after decoding) are skipped (``skipped_too_large``)
    max_record_bytes: int = Field(default=10 * 2**20, ge=1)


class WarcReader(Reader):
    """HTML responses of WARC files (CommonCrawl and others), fastwarc first, warcio as the fallback."""

    name = "warc"
    Params = WarcParams
    produces = ("url", "warc_date", "warc_record_id", "content_type", "html")

    def list_inputs(self, base_dir: str = ".") -> list[InputFile]:
        """The files the globs match, sorted by their names relative to each glob's fixed root."""
        return list_files(self.params.paths, base_dir)

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Rows of ``ctx.input`` in batches of at most ``batch_size`` rows; damage goes to ``ctx``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, not {batch_size}")
        file = _WarcFile(ctx, self.params.max_record_bytes, batch_size)
        yield from file.read()


# --------------------------------------------------------------------------------------------------
# One file


class _WarcFile:
    """The reading of one file: the row buffer, the error bookkeeping and both parsing paths."""

    def __init__(self, ctx: TaskContext, max_bytes: int, batch_size: int):
        self.ctx = ctx
        self.path = ctx.input.path
        self.max_bytes = max_bytes
        self.batch_size = batch_size
        self.size = 0
        self.framing: str | None = None  # "gzip", "warc" (uncompressed) or None (another compression)
        self.rows = _Rows()
        self.reported: set[int | None] = set()  # offsets that already have an error entry
        self.truncated_at: set[int] = set()  # records whose payload the end of the input cut off
        self.fd = -1  # for cheap positioned reads (is this offset a gzip member start?)
        self.last_pos = -1  # fastwarc's offset of the previous record
        self.member = 0  # offset of the gzip member the current record starts in
        #: the member of the previous record, to check that it held no other member (None after a resync)
        self.span_from: int | None = None
        self.shared = 0  # index of the current record among the records of ``member``
        self.shared_reported = False
        self.is_arc = False
        self.used_fastwarc = False

    # -- bookkeeping -------------------------------------------------------------------------------

    def error(self, message: str, offset: int | None) -> None:
        """One error entry per offset: the first (most specific) explanation of a damage wins."""
        if offset in self.reported:
            return
        self.reported.add(offset)
        self.ctx.error(message, offset=offset)

    def position(self, pos: int) -> tuple[int, int | str]:
        """(offset, id position) of the record fastwarc reports at ``pos``.

        In a file gzipped record by record (CommonCrawl), ``pos`` is the record's gzip member, and
        both are ``pos``. Inside a gzip member that holds several records fastwarc reports where its
        read buffer was, so such a record is named by its member's offset and its index there.
        """
        if pos != self.last_pos:
            self.last_pos = pos
            if self.framing != "gzip" or os.pread(self.fd, 3, pos) == _GZIP_MAGIC:
                prev = self.span_from
                if self.framing == "gzip" and prev is not None and pos > prev:
                    split = _member_start_between(self.fd, prev, pos)
                    if split is not None:
                        self.ctx.count("records_split_over_gzip_members")
                        self.error(f"the record at byte {prev} spans several gzip members (another "
                                   f"starts at byte {split}): read whole, but the file is not gzipped record "
                                   "by record", prev)
                self.member, self.shared, self.span_from = pos, 0, pos
                return pos, pos
        self.shared += 1
        if not self.shared_reported:
            self.shared_reported = True
            self.ctx.error(f"several records in the gzip member at byte {self.member}: the file is not "
                           "gzipped record by record (readable, but not seekable by record)",
                           offset=self.member)
        self.ctx.count("records_in_shared_gzip_member")
        return self.member, f"{self.member}.{self.shared}"

    def batches(self, final: bool = False) -> Iterator[pa.RecordBatch]:
        """Full batches (or, at the end, the rest) of the row buffer."""
        while self.rows.n and (final or self.rows.n >= self.batch_size or self.rows.nbytes >= _MAX_BATCH_BYTES):
            yield self.rows.take(self.batch_size)

    # -- entry point -------------------------------------------------------------------------------

    def read(self) -> Iterator[pa.RecordBatch]:
        try:
            self.size = os.path.getsize(self.path)
            with open(self.path, "rb") as fh:
                head = fh.read(64)
        except OSError as e:
            self.error(f"cannot open: {_one_line(e)}", None)
            return
        if self.size == 0:
            self.error("empty file: no WARC records", 0)
            return
        if head.startswith(_GZIP_MAGIC):
            self.framing = "gzip"
        elif head.startswith(_WARC_MAGIC):
            self.framing = "warc"
        self.fd = os.open(self.path, os.O_RDONLY)
        try:
            yield from self.read_all(head)
        finally:
            os.close(self.fd)

    def read_all(self, head: bytes) -> Iterator[pa.RecordBatch]:
        """fastwarc; warcio if fastwarc reads nothing; a resync if neither does."""
        fast_failure = yield from self.read_fastwarc(0)
        if fast_failure is not None:  # fastwarc could not read even the first record
            read_any = yield from self.read_warcio()
            if not read_any:
                if self.framing == "gzip":
                    with open(self.path, "rb") as fh:
                        problem = _gzip_member_end(fh, 0)[1]
                    if problem:
                        fast_failure = f"its first gzip member {problem}"
                start = self.stream_head(24) or head[:24]
                resume = self.find_resync(1)
                if resume is None:
                    self.error(f"not a WARC or ARC file ({fast_failure}); it starts with {start!r}", 0)
                else:
                    self.error(f"no WARC or ARC record at the start of the file ({fast_failure}); "
                               f"resumed at byte {resume}", 0)
                if resume is not None:
                    self.ctx.count("resyncs")
                    yield from self.read_fastwarc(resume)
        yield from self.batches(final=True)

    # -- fastwarc path -----------------------------------------------------------------------------

    def read_fastwarc(self, start: int) -> Iterator[pa.RecordBatch]:
        """Read with fastwarc from ``start`` on, resuming after damage.

        Returns why nothing at all could be read from ``start``, else None.
        """
        attempts = 0
        while True:
            first, last, failure = None, None, None
            stream: Any = self.path
            if start:
                stream = open(self.path, "rb")  # noqa: SIM115 - closed below
                stream.seek(start)
            try:
                records = ArchiveIterator(stream, parse_http=False)
                while True:
                    try:
                        rec = next(records)
                    except StopIteration:
                        break
                    except Exception as e:  # noqa: BLE001 - any failure of the parser is damage in the input
                        failure = e
                        break
                    last = rec.stream_pos
                    if first is None:
                        first = last
                    self.fastwarc_record(rec)
                    yield from self.batches()
            except Exception as e:  # noqa: BLE001 - e.g. the iterator refusing the stream outright
                failure = e
            finally:
                if start:
                    stream.close()

            if first is None:
                if start == 0:
                    return _one_line(failure) if failure is not None else "no WARC record found"
                # a resync candidate that was no record after all: try the next one, quietly
                resume = self.find_resync(start + 1)
            else:
                if not self.used_fastwarc:
                    self.used_fastwarc = True
                    self.ctx.count("files_fastwarc")
                damage, why, resume_from = self.locate_damage(last, failure)
                if damage is None:
                    return None
                resume = self.find_resync(resume_from) if resume_from is not None else None
                where = f"resumed at byte {resume}" if resume is not None else "nothing readable after it"
                self.error(f"{why}; {where}", damage)
            attempts += 1
            if resume is None or attempts > _MAX_RESYNC_ATTEMPTS:
                return None
            self.ctx.count("resyncs")
            self.span_from = None
            start = resume

    def fastwarc_record(self, rec: Any) -> None:
        """Count one record; turn an HTML response into a row."""
        ctx = self.ctx
        pos, position = self.position(rec.stream_pos)
        rtype = int(rec.record_type)
        ctx.count("records_total")
        ctx.count(_TYPE_COUNTERS.get(rtype, f"records_type_{rtype}"))
        if rtype != _RESPONSE:
            return
        try:
            content_type = transfer = coding = None
            if rec.is_http:
                rec.parse_http(quirks_mode=True)  # quirks: also accept LF-only HTTP header lines
                http = rec.http_headers
                if http is None or http.status_code is None:
                    ctx.count("records_bad_http")
                    self.error(f"response record at byte {pos} has no valid HTTP status line", pos)
                    return
                content_type = http.get("Content-Type")
                transfer = http.get("Transfer-Encoding")
                coding = http.get("Content-Encoding")
            html_like = _html_like(content_type)
            if html_like is False:
                ctx.count("records_non_html")
                return
            expected = rec.content_length
            if expected > self.max_bytes:
                ctx.count("skipped_too_large")
                return
            body = rec.reader.read()
            headers = rec.headers
            self.response(pos, position, headers.get("WARC-Target-URI"), headers.get("WARC-Date"),
                          headers.get("WARC-Record-ID"), headers.get("WARC-Truncated"), content_type,
                          html_like, transfer, coding, body, expected)
        except Exception as e:  # noqa: BLE001 - one unreadable record must not cost the others
            ctx.count("records_unreadable")
            self.error(f"unreadable response record at byte {pos}: {_one_line(e)}", pos)

    # -- shared by both paths ----------------------------------------------------------------------

    def response(self, pos: int, position: int | str, uri: str | None, date: str | None, record_id: str | None,
                 warc_truncated: str | None, content_type: str | None, html_like: bool | None,
                 transfer: str | None, coding: str | None, body: bytes, expected: int) -> None:
        """A response's payload (raw, as stored) to a row, or to the counter that says why not."""
        ctx = self.ctx
        if len(body) < expected:
            ctx.count("records_truncated")
            self.truncated_at.add(pos)
            self.error(f"record at byte {pos} is truncated: {len(body)} of {expected} payload bytes "
                       "before the input ends", pos)
        if warc_truncated:
            ctx.count("records_warc_truncated")
        if transfer or coding:
            body, ok = _decode_payload(body, transfer, coding, self.max_bytes)
            if body is None:
                ctx.count("skipped_too_large")
                return
            if not ok:
                ctx.count("records_bad_http_encoding")
                self.error(f"record at byte {pos}: its HTTP {transfer or coding} coding does not decode; "
                           "kept the bytes that could be read", pos)
        if not body:
            ctx.count("records_empty_payload")
            return
        if html_like is None and not _sniff_html(body):
            ctx.count("records_non_html")
            return
        url = None
        if uri is not None:
            url = uri.strip()
            if url.startswith("<") and url.endswith(">"):
                url = url[1:-1].strip()
            if url != uri:
                ctx.count("records_bad_target_uri")
                self.error(f"record at byte {pos}: malformed WARC-Target-URI {uri!r}, read as {url!r}", pos)
        if not url:
            url = None
            ctx.count("records_bad_target_uri")
            self.error(f"response record at byte {pos} has no WARC-Target-URI", pos)
        ctx.count("records_html")
        self.rows.add(doc_id(ctx.source, ctx.input.name, position), url, date, record_id, content_type, body)

    # -- damage ------------------------------------------------------------------------------------

    def locate_damage(self, last: int, failure: Exception | None) -> tuple[int | None, str, int | None]:
        """Where reading went wrong after the record at ``last``: (offset, why, where to look on).

        fastwarc either raises (``failure``) or, for some damage, just stops; so in both cases the
        file is checked from the last record on: its gzip member(s) must be complete and end the
        file, or its (uncompressed) record must be complete and followed only by blank space.
        Returns (None, "", None) when the file ended where it should.
        """
        reason = f" ({_one_line(failure)})" if failure is not None else ""
        if self.framing is None:  # zstd, lz4 ...: fastwarc's word is all there is
            if failure is None:
                return None, "", None
            return last, f"unreadable data after the record at byte {last}{reason}", None
        with open(self.path, "rb") as fh:
            if self.framing == "gzip":
                last = pos = self.member
                while True:
                    end, problem = _gzip_member_end(fh, pos)
                    if problem:
                        if pos in self.truncated_at:  # already reported as a truncated record
                            return None, "", None
                        return pos, f"gzip member at byte {pos} {problem}{reason}", pos + 1
                    if failure is not None:
                        # the member of the last good record is fine: the damage is in the next one
                        if end >= self.size:
                            return last, f"invalid WARC data in the gzip member at byte {last}{reason}", last + 1
                        problem = _gzip_member_end(fh, end)[1]
                        what = problem or "holds invalid WARC data"
                        return end, f"gzip member at byte {end} {what}{reason}", end + 1
                    if end >= self.size:
                        return None, "", None
                    fh.seek(end)
                    if fh.read(3) != _GZIP_MAGIC:
                        return end, f"unexpected bytes after the gzip member at byte {pos}", end
                    pos = end
            end, problem = _raw_record_end(fh, last, self.size)
            if problem:
                if last in self.truncated_at:
                    return None, "", None
                return last, f"record at byte {last} {problem}{reason}", last + 1
            fh.seek(end)
            tail = fh.read(64)
            if failure is None and not tail.strip():
                return None, "", None
            if tail.startswith(b"\r\n\r\n" + _WARC_MAGIC):  # framing fine: the next header is bad
                nxt = end + 4
                problem = _raw_record_end(fh, nxt, self.size)[1] or "has an invalid WARC header"
                return nxt, f"record at byte {nxt} {problem}{reason}", nxt + 1
            return end, (f"invalid WARC data at byte {end} after the record at byte {last}"
                         f"{reason or ' (unexpected bytes)'}; that record's Content-Length may be wrong"), end

    def find_resync(self, start: int) -> int | None:
        """The offset of the next plausible record start (gzip member or WARC header) from ``start`` on.

        A file of unknown framing (garbage in front of its first record) is searched for both, and
        takes the framing of what is found first.
        """
        kinds = {"gzip": [_GZIP_MAGIC], "warc": [_WARC_MAGIC], None: [_GZIP_MAGIC, _WARC_MAGIC]}[self.framing]
        with open(self.path, "rb") as fh:
            pos = start
            while pos < self.size:
                fh.seek(pos)
                block = fh.read(_SCAN_BLOCK + 16)
                found = []
                for magic in kinds:
                    i = block.find(magic)
                    # a WARC header starts a line; a gzip member can start anywhere
                    while i >= 0 and magic == _WARC_MAGIC and pos + i > 0 and not _at_line_start(fh, pos + i):
                        i = block.find(magic, i + 1)
                    if i >= 0:
                        found.append((i, magic))
                if found:
                    i, magic = min(found)
                    self.framing = "gzip" if magic == _GZIP_MAGIC else "warc"
                    return pos + i
                pos += _SCAN_BLOCK
        return None

    # -- warcio path -------------------------------------------------------------------------------

    def read_warcio(self) -> Iterator[pa.RecordBatch]:
        """Read with warcio (ARC files, WARC files fastwarc rejects). Returns whether any record came."""
        from warcio.archiveiterator import ArchiveIterator as WarcioIterator

        start = self.stream_head().lstrip()
        if not start.startswith((_WARC_MAGIC, b"filedesc:")):
            return False  # warcio would take any line of five words for an ARC header
        self.is_arc = start.startswith(b"filedesc:")
        count, pos = 0, 0
        warnings = io.StringIO()  # warcio writes its warnings to stderr: they become error entries
        with open(self.path, "rb") as fh:
            records = WarcioIterator(fh, arc2warc=True)
            while True:
                try:
                    with contextlib.redirect_stderr(warnings):
                        rec = next(records, None)
                        if rec is None:
                            break
                        count += 1
                        if count == 1:
                            self.ctx.count("files_warcio")
                        pos = self.warcio_record(records, rec)
                except Exception as e:  # noqa: BLE001 - warcio gives up here: keep what was read
                    if count:
                        self.error(f"unreadable data after the record at byte {pos}: {_one_line(e)}",
                                   records.offset)
                    break
                finally:
                    self.warcio_warnings(warnings)
                yield from self.batches()
        return count > 0

    def warcio_record(self, records: Any, rec: Any) -> int:
        """Count one warcio record; turn an HTML response into a row (same rules as fastwarc's).

        Returns the record's offset (which warcio knows only once the record has been read).
        """
        ctx = self.ctx
        headers = rec.rec_headers
        rtype = rec.rec_type
        ctx.count("records_total")
        ctx.count(f"records_{rtype}")
        length = headers.get_header("Content-Length")
        bad_length = length is None or not length.strip().isdigit()
        body, expected = b"", 0
        if rtype == "response" and not bad_length:
            expected = rec.raw_stream.limit
            if expected <= self.max_bytes:
                body = rec.raw_stream.read()
        pos = records.get_record_offset()
        if bad_length:
            kind = "ARC" if self.is_arc else "WARC"
            self.error(f"{kind} record at byte {pos} has an invalid length {length!r}", pos)
        if rtype != "response":
            return pos
        if bad_length:
            ctx.count("records_bad_length")
            return pos
        content_type = transfer = coding = None
        http = rec.http_headers
        if http is not None and http.protocol:
            content_type = http.get_header("Content-Type")
            transfer = http.get_header("Transfer-Encoding")
            coding = http.get_header("Content-Encoding")
        html_like = _html_like(content_type)
        if html_like is False:
            ctx.count("records_non_html")
        elif expected > self.max_bytes:
            ctx.count("skipped_too_large")
        else:
            # an ARC record has no record id; warcio makes up a random one, which would break reruns
            record_id = None if self.is_arc else headers.get_header("WARC-Record-ID")
            self.response(pos, pos, headers.get_header("WARC-Target-URI"),
                          headers.get_header("WARC-Date"), record_id, headers.get_header("WARC-Truncated"),
                          content_type, html_like, transfer, coding, body, expected)
        return pos

    def stream_head(self, n: int = 64) -> bytes:
        """The first (decompressed) bytes of the file."""
        with open(self.path, "rb") as fh:
            head = fh.read(4096)
        if self.framing == "gzip":
            try:
                return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(head, n)
            except zlib.error:
                return b""
        return head[:n]

    def warcio_warnings(self, warnings: io.StringIO) -> None:
        """warcio's stderr warnings (a record not followed by a blank line) as error entries."""
        text = warnings.getvalue()
        if not text:
            return
        warnings.seek(0)
        warnings.truncate()
        for m in re.finditer(r"WARNING: (.*?)\s+Offset: (\d+)", text, re.S):
            self.error(f"{_one_line(m.group(1))} (at byte {m.group(2)})", int(m.group(2)))


class _Rows:
    """Column buffers for the rows of the next batches."""

    def __init__(self) -> None:
        self.cols: list[list[Any]] = [[] for _ in SCHEMA]
        self.nbytes = 0

    @property
    def n(self) -> int:
        return len(self.cols[0])

    def add(self, *row: Any) -> None:
        for col, value in zip(self.cols, row, strict=True):
            col.append(value)
        self.nbytes += len(row[-1])

    def take(self, limit: int) -> pa.RecordBatch:
        """The first rows (at most ``limit``, and fewer if their payloads are large) as a batch."""
        n, size = 0, 0
        for body in self.cols[-1]:
            if n >= limit or (n and size + len(body) > _MAX_BATCH_BYTES):
                break
            n, size = n + 1, size + len(body)
        arrays = [pa.array(col[:n], type=field.type) for col, field in zip(self.cols, SCHEMA, strict=True)]
        self.cols = [col[n:] for col in self.cols]
        self.nbytes -= size
        return pa.RecordBatch.from_arrays(arrays, schema=SCHEMA)


# --------------------------------------------------------------------------------------------------
# Payloads


def _html_like(content_type: str | None) -> bool | None:
    """True for an HTML media type, False for another one, None when there is none (sniff the body)."""
    if content_type is None:
        return None
    mime = content_type.split(";", 1)[0].strip().lower()
    if not mime:
        return None
    return mime in _HTML_TYPES


def _sniff_html(body: bytes) -> bool:
    """Whether a payload without a content type looks like HTML (in its first KiB)."""
    head = body[:1024].lower()
    return b"<html" in head or b"<!doctype html" in head


def _decode_payload(body: bytes, transfer: str | None, coding: str | None,
                    limit: int) -> tuple[bytes | None, bool]:
    """Undo the transfer codings, then the content codings, the HTTP headers name.

    Returns the best bytes available and whether everything decoded cleanly; ``None`` if the decoded
    payload grows beyond ``limit``. A coding that fails keeps what it decoded before the failure, or,
    if nothing, its input (servers that send plain bytes under ``Content-Encoding: gzip`` exist).
    """
    steps = [c.strip().lower() for c in reversed((transfer or "").split(","))]
    steps += [c.strip().lower() for c in reversed((coding or "").split(","))]
    ok = True
    for step in steps:
        if step in _NO_CODING:
            continue
        if step == "chunked":
            decoded, clean = _dechunk(body)
        elif step in ("gzip", "x-gzip"):
            decoded, clean = _inflate(body, 16 + zlib.MAX_WBITS, limit)
        elif step == "deflate":  # zlib-wrapped as the RFC says, or raw deflate as some servers send
            decoded, clean = _inflate(body, zlib.MAX_WBITS, limit)
            if not decoded:
                decoded, clean = _inflate(body, -zlib.MAX_WBITS, limit)
        elif step == "br":
            decoded, clean = _unbrotli(body, limit)
        else:  # an unknown coding: keep the bytes as they are
            return body, False
        if decoded is None:
            return None, ok
        if not decoded and body:
            return body, False
        body, ok = decoded, ok and clean
        if not ok:
            break
    return body, ok


def _dechunk(body: bytes) -> tuple[bytes, bool]:
    """HTTP chunked transfer coding undone; on bad framing, the chunks so far plus the rest as is."""
    out: list[bytes] = []
    pos, n = 0, len(body)
    while True:
        eol = body.find(b"\n", pos, pos + 4096)
        size_field = body[pos:eol].split(b";", 1)[0].strip() if eol >= 0 else b""
        if eol < 0 or not _HEX_RE.fullmatch(size_field):
            # not chunked after all (crawlers often store the body decoded but keep the header)
            return b"".join(out) + body[pos:], False
        size = int(size_field, 16)
        pos = eol + 1
        if size == 0:
            return b"".join(out), True
        if pos + size > n:
            out.append(body[pos:])  # the body ends inside a chunk
            return b"".join(out), False
        out.append(body[pos:pos + size])
        pos += size
        if body.startswith(b"\r\n", pos):
            pos += 2
        elif body.startswith(b"\n", pos):
            pos += 1
        elif pos < n:
            return b"".join(out) + body[pos:], False
        if pos >= n:  # no final zero-size chunk
            return b"".join(out), False


def _inflate(data: bytes, wbits: int, limit: int) -> tuple[bytes | None, bool]:
    """zlib/gzip/raw deflate, in slices so that a corrupt or cut stream keeps its decoded start."""
    d = zlib.decompressobj(wbits)
    out: list[bytes] = []
    total, pos, step = 0, 0, 2**18
    view = memoryview(data)
    pending: bytes | memoryview = b""
    try:
        while not d.eof:
            if not pending:
                if pos >= len(data):
                    break
                pending, pos = view[pos:pos + step], pos + step
            chunk = d.decompress(pending, limit + 1 - total)
            pending = d.unconsumed_tail
            total += len(chunk)
            if total > limit:
                return None, False
            out.append(chunk)
    except zlib.error:
        return b"".join(out), False
    return b"".join(out), d.eof


def _unbrotli(data: bytes, limit: int) -> tuple[bytes | None, bool]:
    """Brotli, keeping the decoded start of a corrupt stream."""
    try:
        import brotli  # installed with fastwarc
    except ImportError:
        return b"", False
    d = brotli.Decompressor()
    out: list[bytes] = []
    total, step = 0, 2**18
    try:
        for pos in range(0, len(data), step):
            chunk = d.process(data[pos:pos + step])
            total += len(chunk)
            if total > limit:
                return None, False
            out.append(chunk)
    except brotli.error:
        return b"".join(out), False
    return b"".join(out), d.is_finished()


# --------------------------------------------------------------------------------------------------
# Damage


def _gzip_member_end(fh: Any, pos: int) -> tuple[int, str | None]:
    """The offset after the gzip member at ``pos`` and, if it is not complete, what is wrong with it."""
    fh.seek(pos)
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    fed = 0
    try:
        while not d.eof:
            block = fh.read(_SCAN_BLOCK)
            if not block:
                return pos + fed, "is truncated (the file ends inside it)"
            fed += len(block)
            d.decompress(block, 2**20)
            while d.unconsumed_tail and not d.eof:
                d.decompress(d.unconsumed_tail, 2**20)
    except zlib.error as e:
        return pos, f"is corrupt ({e})"
    return pos + fed - len(d.unused_data), None


def _raw_record_end(fh: Any, pos: int, size: int) -> tuple[int, str | None]:
    """The offset after the block of the uncompressed record at ``pos``, and what is wrong with it."""
    fh.seek(pos)
    head = fh.read(64 * 1024)
    if not head.startswith(_WARC_MAGIC):
        return pos, "does not start with 'WARC/'"
    cut = head.find(b"\r\n\r\n")
    if cut < 0:
        return pos, "is cut inside its WARC header (the file ends there)"
    m = _CONTENT_LENGTH_RE.search(head, 0, cut + 2)
    if m is None:
        return pos, "has no Content-Length"
    end = pos + cut + 4 + int(m.group(1))
    if end > size:
        return end, f"is truncated: it needs {end - size} more bytes than the file has"
    return end, None


def _at_line_start(fh: Any, at: int) -> bool:
    """Whether the byte before ``at`` ends a line (a record header starts a line)."""
    here = fh.tell()
    fh.seek(at - 1)
    before = fh.read(1)
    fh.seek(here)
    return before == b"\n"


def _member_start_between(fd: int, start: int, end: int) -> int | None:
    """The offset of a gzip member that starts strictly inside (start, end), if any.

    In a WARC gzipped record by record, the compressed bytes of one record hold no other member. The
    gzip magic can occur by chance inside compressed data, so a candidate counts only if a gzip stream
    really starts there.
    """
    if end - start > 64 * 2**20:
        return None  # a huge record: not worth a second read
    raw = os.pread(fd, end - start - 1, start + 1)
    at = raw.find(_GZIP_MAGIC)
    while at != -1:
        try:
            zlib.decompressobj(31).decompress(raw[at:at + 1024], 64)
            return start + 1 + at
        except zlib.error:
            at = raw.find(_GZIP_MAGIC, at + 1)
    return None


def _one_line(e: BaseException | str | None) -> str:
    """An exception as one short line (warcio's messages span several)."""
    text = " ".join(str(e).split()) if e is not None else ""
    if isinstance(e, BaseException):
        text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= 300 else text[:297] + "..."
