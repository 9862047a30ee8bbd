"""The WARC reader on the real corpus, on the broken files of warcio/resiliparse, and on files it cuts.

Every number asserted for a broken file was observed, and is cross-checked against warcio's own
``ArchiveIterator`` on the same file where warcio can read it.
"""

from __future__ import annotations

import collections
import gzip
import json
import shutil
import zlib

import brotli
import pyarrow as pa
import pytest
from warcio.archiveiterator import ArchiveIterator as WarcioIterator
from warcio.exceptions import ArchiveLoadFailed

import operators.readers.warc as warc_mod
from operators.base import InputFile, TaskContext, doc_id
from operators.readers.warc import SCHEMA, WarcParams, WarcReader
from tests.conftest import EVAL_GLOB, GOLD, WEB

BROKEN = WEB / "broken"
EVAL_FILES = sorted(WEB.glob("eval-pages-*.warc.gz"))
CC_SAMPLE = WEB / "cc-2020-08-sample.warc.gz"


def read(path, batch_size: int = 1000, name: str | None = None, **params):
    """Read one file with the reader: (table, ctx, batches)."""
    reader = WarcReader(WarcParams(paths=str(path), **params))
    ctx = TaskContext(source="web", input=InputFile(index=0, path=str(path), name=name or path.name))
    batches = list(reader.read(ctx, batch_size))
    for b in batches:
        assert b.schema == SCHEMA
        assert 0 < b.num_rows <= batch_size
    table = pa.Table.from_batches(batches, schema=SCHEMA)
    return table, ctx, batches


def warcio_records(path):
    """warcio's view of a file: [(offset, type, target uri, http content type, raw payload)], error."""
    out, error = [], None
    with open(path, "rb") as fh:
        it = WarcioIterator(fh)
        try:
            for rec in it:
                body = rec.raw_stream.read() if rec.rec_type == "response" else b""
                ctype = rec.http_headers.get_header("Content-Type") if rec.http_headers else None
                out.append((it.get_record_offset(), rec.rec_type,
                            rec.rec_headers.get_header("WARC-Target-URI"), ctype, body))
        except Exception as e:  # noqa: BLE001 - what warcio raises is part of what is compared
            error = e
    return out, error


def warcio_html(path):
    """The HTML responses warcio sees: {offset: (uri, raw payload)}."""
    records, _ = warcio_records(path)
    return {off: (uri, body) for off, typ, uri, ctype, body in records
            if typ == "response" and ctype and ctype.split(";")[0].strip().lower() == "text/html"}


def errors_at(ctx):
    return [e["offset"] for e in ctx.errors]


def assert_responses_accounted(ctx):
    """Every response lands in exactly one outcome counter."""
    c = ctx.counters
    outcomes = ("records_html", "records_non_html", "skipped_too_large", "records_empty_payload",
                "records_bad_http", "records_unreadable", "records_bad_length")
    assert c.get("records_response", 0) == sum(c.get(k, 0) for k in outcomes)


# --------------------------------------------------------------------------------------------------
# The real corpus


@pytest.fixture(scope="module")
def eval_reads():
    return {p.name: read(p) for p in EVAL_FILES}


def test_eval_pages_give_the_693_gold_pages(eval_reads):
    per_file = {name: t.num_rows for name, (t, _, _) in eval_reads.items()}
    assert per_file == {"eval-pages-00000.warc.gz": 174, "eval-pages-00001.warc.gz": 173,
                        "eval-pages-00002.warc.gz": 173, "eval-pages-00003.warc.gz": 173}
    assert sum(per_file.values()) == 693
    urls = [u for t, _, _ in eval_reads.values() for u in t.column("url").to_pylist()]
    gold = {json.loads(line)["url"] for line in GOLD.read_text().splitlines() if line.strip()}
    assert len(urls) == len(set(urls)) == 693
    assert set(urls) == gold
    for table, ctx, _ in eval_reads.values():
        assert ctx.errors == []
        assert ctx.counters["files_fastwarc"] == 1 and "files_warcio" not in ctx.counters
        assert ctx.counters["records_html"] == table.num_rows
        assert ctx.counters["records_request"] == table.num_rows
        assert ctx.counters["records_warcinfo"] == 1
        assert_responses_accounted(ctx)
        assert set(table.column("content_type").to_pylist()) == {"text/html"}
        assert all(r.startswith("<urn:uuid:") for r in table.column("warc_record_id").to_pylist())


def test_eval_pages_match_warcio_byte_for_byte(eval_reads):
    """Same records, same offsets, same payload bytes as warcio (these payloads carry no coding)."""
    for path in EVAL_FILES:
        table, _, _ = eval_reads[path.name]
        theirs = warcio_html(path)
        assert len(theirs) == table.num_rows
        ours = dict(zip(table.column("url").to_pylist(), table.column("html").to_pylist(), strict=True))
        assert ours == {uri: body for uri, body in theirs.values()}


def test_ids_are_stable_and_unique(eval_reads):
    ids = [i for t, _, _ in eval_reads.values() for i in t.column("id").to_pylist()]
    assert len(ids) == len(set(ids)) == 693
    again, _, _ = read(EVAL_FILES[0])
    assert again.column("id").to_pylist() == eval_reads[EVAL_FILES[0].name][0].column("id").to_pylist()
    # the id hashes the relative name, not where the file lies
    moved, _, _ = read(EVAL_FILES[0], name="elsewhere/" + EVAL_FILES[0].name)
    assert set(moved.column("id").to_pylist()).isdisjoint(again.column("id").to_pylist())


def test_batch_size_is_respected(eval_reads):
    table, _, batches = read(EVAL_FILES[0], batch_size=7)
    assert [b.num_rows for b in batches] == [7] * 24 + [6]
    assert table.equals(eval_reads[EVAL_FILES[0].name][0])
    _, _, one = read(BROKEN / "example-wget-bad-target-uri.warc.gz", batch_size=1)
    assert [b.num_rows for b in one] == [1]


def test_cc_sample_gives_its_html_responses():
    table, ctx, _ = read(CC_SAMPLE)
    theirs = warcio_html(CC_SAMPLE)
    assert table.num_rows == len(theirs) == 16
    assert table.column("url").to_pylist() == [uri for uri, _ in theirs.values()]
    assert table.column("html").to_pylist() == [body for _, body in theirs.values()]
    assert ctx.errors == []
    assert {k: v for k, v in ctx.counters.items() if k.startswith("records_")} == {
        "records_total": 50, "records_warcinfo": 1, "records_request": 17, "records_response": 16,
        "records_metadata": 16, "records_html": 16}
    assert "text/html; charset=windows-1251" in table.column("content_type").to_pylist()
    assert table.column("warc_date").to_pylist()[0] == "2020-08-08T17:27:41Z"
    again, _, _ = read(CC_SAMPLE)
    assert again.equals(table)


def test_fast_path_is_fastwarc(monkeypatch):
    """The eval files never touch warcio, and every record comes through fastwarc's iterator."""
    seen = collections.Counter()
    real = warc_mod.ArchiveIterator

    def counting(*args, **kwargs):
        seen["iterators"] += 1
        for rec in real(*args, **kwargs):
            seen["records"] += 1
            yield rec

    def no_warcio(*args, **kwargs):
        raise AssertionError("warcio used on a file fastwarc reads")

    monkeypatch.setattr(warc_mod, "ArchiveIterator", counting)
    monkeypatch.setattr("warcio.archiveiterator.ArchiveIterator", no_warcio)
    table, ctx, _ = read(EVAL_FILES[0])
    assert table.num_rows == 174
    assert seen["iterators"] == 1
    assert seen["records"] == ctx.counters["records_total"] == 349


@pytest.mark.parametrize("path", [EVAL_FILES[0], CC_SAMPLE], ids=lambda p: p.name)
def test_warcio_fallback_gives_the_same_rows(monkeypatch, path):
    """When fastwarc cannot read a file from its start, warcio reads it, to the same rows."""
    fast, _, _ = read(path)

    def refuse(*args, **kwargs):
        raise OSError("Invalid WARC header")

    monkeypatch.setattr(warc_mod, "ArchiveIterator", refuse)
    slow, ctx, _ = read(path)
    assert ctx.counters["files_warcio"] == 1 and "files_fastwarc" not in ctx.counters
    assert ctx.errors == []
    assert slow.equals(fast)


# --------------------------------------------------------------------------------------------------
# The broken files of warcio and resiliparse


def test_arc_file_with_bad_lengths():
    table, ctx, _ = read(BROKEN / "bad.arc")
    assert table.num_rows == 0
    assert ctx.counters == {"files_warcio": 1, "records_total": 4, "records_warcinfo": 1, "records_response": 3,
                            "records_bad_length": 2, "records_empty_payload": 1}
    assert_responses_accounted(ctx)
    assert errors_at(ctx) == [0, 134, 262]
    assert [e["error"] for e in ctx.errors][1:] == ["ARC record at byte 134 has an invalid length '-1'",
                                                   "ARC record at byte 262 has an invalid length 'abc'"]
    # warcio finds the same four records (it reads the bad lengths as empty records)
    with open(BROKEN / "bad.arc", "rb") as fh:
        it = WarcioIterator(fh, arc2warc=True)
        assert [(it.get_record_offset(), r.rec_type) for r in it] == [
            (0, "warcinfo"), (134, "response"), (202, "response"), (262, "response")]


def test_clipped_gzip_keeps_the_cut_record():
    path = BROKEN / "clipped.warc.gz"
    table, ctx, _ = read(path)
    assert table.num_rows == 1
    html = table.column("html")[0].as_py()
    assert len(html) == 74970 and html.startswith(b"<!DOCTYPE html>")
    assert ctx.counters["records_truncated"] == 1 and ctx.counters["records_html"] == 1
    assert errors_at(ctx) == [0]
    assert "74970 of 88038 payload bytes" in ctx.errors[0]["error"]
    # warcio: one record, whose payload also stops after 74970 of its 88038 bytes, without an error
    records, error = warcio_records(path)
    assert error is None and [(off, typ) for off, typ, *_ in records] == [(0, "response")]
    assert records[0][4] == html


def test_non_chunked_gzip_is_read_whole():
    """One gzip member around five records: warcio refuses it, we read all six records."""
    path = BROKEN / "example-bad-non-chunked.warc.gz"
    table, ctx, _ = read(path)
    assert table.num_rows == 1
    assert table.column("url").to_pylist() == ["http://example.com/"]
    html = table.column("html")[0].as_py()  # Content-Encoding: gzip, decoded
    assert html.startswith(b"<!doctype html>") and html.rstrip().endswith(b"</html>") and len(html) == 1270
    assert ctx.counters == {"files_fastwarc": 1, "records_total": 6, "records_warcinfo": 2, "records_response": 1,
                            "records_request": 2, "records_revisit": 1, "records_html": 1,
                            "records_in_shared_gzip_member": 5}
    assert errors_at(ctx) == [0] and "several records in the gzip member" in ctx.errors[0]["error"]
    records, error = warcio_records(path)
    assert isinstance(error, ArchiveLoadFailed) and "non-chunked" in str(error)
    assert [typ for _, typ, *_ in records] == ["warcinfo"]
    # the response is the second record of the member at byte 0
    assert table.column("id")[0].as_py() == doc_id("web", path.name, "0.2")


def test_wrong_content_length_resumes_at_the_next_record(capsys):
    """example-trunc.warc: the response's Content-Length is 2 bytes short, so its gzip payload is cut
    and garbage stands where the next record should start."""
    path = BROKEN / "example-trunc.warc"
    table, ctx, _ = read(path)
    assert table.num_rows == 1
    html = table.column("html")[0].as_py()
    assert html.startswith(b"<!doctype html>") and len(html) == 1270  # decoded despite the cut trailer
    assert ctx.counters == {"files_fastwarc": 1, "records_total": 4, "records_warcinfo": 2, "records_response": 1,
                            "records_request": 1, "records_html": 1, "records_bad_http_encoding": 1,
                            "resyncs": 1}
    assert errors_at(ctx) == [1197, 2560]  # the response's cut gzip payload, then the bad framing
    assert "HTTP gzip coding does not decode" in ctx.errors[0]["error"]
    assert "Content-Length may be wrong" in ctx.errors[1]["error"]
    assert "resumed at byte 2566" in ctx.errors[1]["error"]
    # warcio: the same four records, and a warning about byte 2560 on stderr
    records, error = warcio_records(path)
    assert error is None
    assert [(off, typ) for off, typ, *_ in records] == [(0, "warcinfo"), (488, "warcinfo"), (1197, "response"),
                                                        (2566, "request")]
    assert "Offset: 2560" in capsys.readouterr().err


def test_bad_target_uri_keeps_the_record():
    path = BROKEN / "example-wget-bad-target-uri.warc.gz"
    table, ctx, _ = read(path)
    assert table.column("url").to_pylist() == ["http://example.com/"]  # "<http://example.com/>" unwrapped
    assert errors_at(ctx) == [824]
    assert "malformed WARC-Target-URI '<http://example.com/>'" in ctx.errors[0]["error"]
    assert ctx.counters["records_bad_target_uri"] == 1
    assert ctx.counters["records_total"] == 6 and ctx.counters["records_resource"] == 2
    records, error = warcio_records(path)
    assert error is None and len(records) == 6
    assert {uri: body for _, typ, uri, _, body in records if typ == "response"} == dict(
        zip(table.column("url").to_pylist(), table.column("html").to_pylist(), strict=True))


def test_record_split_over_gzip_members_is_read_whole():
    """example-wrong-chunks: the response's head and body sit in two gzip members. warcio gives up
    after the first member; fastwarc reads the members as one stream and gets the whole page."""
    path = BROKEN / "example-wrong-chunks.warc.gz"
    table, ctx, _ = read(path)
    assert errors_at(ctx) == [0]  # nothing lost, but the framing is reported
    assert "spans several gzip members (another starts at byte 516)" in ctx.errors[0]["error"]
    assert ctx.counters["records_total"] == 2 and ctx.counters["records_request"] == 1
    html = table.column("html")[0].as_py()
    assert len(html) == 1270 and html.startswith(b"<!doctype html>") and html.endswith(b"</html>\n")
    records, error = warcio_records(path)
    assert isinstance(error, ArchiveLoadFailed)
    assert [(off, typ) for off, typ, *_ in records] == [(0, "response")]


# --------------------------------------------------------------------------------------------------
# Files cut or damaged here


@pytest.fixture(scope="module")
def eval0_offsets():
    """warcio's record offsets and types of the first eval file."""
    records, error = warcio_records(EVAL_FILES[0])
    assert error is None
    return [(off, typ) for off, typ, *_ in records]


def middle_response(offsets):
    k = len(offsets) // 2
    while offsets[k][1] != "response":
        k += 1
    return k


def test_gzip_cut_inside_a_payload(tmp_path, eval0_offsets, eval_reads):
    full = eval_reads[EVAL_FILES[0].name][0]
    k = middle_response(eval0_offsets)
    start, nxt = eval0_offsets[k][0], eval0_offsets[k + 1][0]
    cut = tmp_path / EVAL_FILES[0].name
    cut.write_bytes(EVAL_FILES[0].read_bytes()[:start + (nxt - start) // 2])
    table, ctx, _ = read(cut)
    before = sum(1 for off, typ in eval0_offsets[:k + 1] if typ == "response")
    assert table.num_rows == before == 87
    # every row before the cut is the same row as in the whole file; the cut one is a prefix of it
    assert table.column("id").to_pylist() == full.column("id").to_pylist()[:before]
    assert table.column("html").to_pylist()[:-1] == full.column("html").to_pylist()[:before - 1]
    cut_html, whole_html = table.column("html")[before - 1].as_py(), full.column("html")[before - 1].as_py()
    assert 0 < len(cut_html) < len(whole_html) and whole_html.startswith(cut_html)
    assert errors_at(ctx) == [start] and "truncated" in ctx.errors[0]["error"]
    assert ctx.counters["records_truncated"] == 1
    records, error = warcio_records(cut)
    assert error is None and [off for off, *_ in records] == [off for off, _ in eval0_offsets[:k + 1]]
    assert records[-1][4] == cut_html


def test_gzip_cut_inside_a_member_header(tmp_path, eval0_offsets, eval_reads):
    k = middle_response(eval0_offsets)
    start = eval0_offsets[k][0]
    cut = tmp_path / EVAL_FILES[0].name
    cut.write_bytes(EVAL_FILES[0].read_bytes()[:start + 10])
    table, ctx, _ = read(cut)
    assert table.num_rows == 86  # the responses before the cut member
    assert table.column("id").to_pylist() == eval_reads[EVAL_FILES[0].name][0].column("id").to_pylist()[:86]
    assert errors_at(ctx) == [start]
    assert ctx.errors[0]["error"].startswith(f"gzip member at byte {start} is truncated")
    records, error = warcio_records(cut)  # warcio stops quietly before the cut member
    assert error is None and len(records) == k


def test_uncompressed_cut_inside_a_payload(tmp_path):
    raw = tmp_path / "eval.warc"
    raw.write_bytes(gzip.decompress(EVAL_FILES[0].read_bytes()))
    records, _ = warcio_records(raw)
    offsets = [(off, typ) for off, typ, *_ in records]
    k = middle_response(offsets)
    start, nxt = offsets[k][0], offsets[k + 1][0]
    whole, _, _ = read(raw)
    assert whole.num_rows == 174
    data = raw.read_bytes()
    raw.write_bytes(data[:start + (nxt - start) // 2])
    table, ctx, _ = read(raw)
    assert table.num_rows == 87  # 86 whole responses and the cut one
    assert table.column("id").to_pylist() == whole.column("id").to_pylist()[:87]
    assert errors_at(ctx) == [start] and ctx.counters["records_truncated"] == 1


def test_corrupt_gzip_member_costs_only_its_record(tmp_path, eval0_offsets):
    k = middle_response(eval0_offsets)
    start = eval0_offsets[k][0]
    data = bytearray(EVAL_FILES[0].read_bytes())
    for i in range(start + 200, start + 260):
        data[i] ^= 0xFF
    bad = tmp_path / EVAL_FILES[0].name
    bad.write_bytes(bytes(data))
    table, ctx, _ = read(bad)
    assert table.num_rows == 173  # all but the corrupt one: reading resumes at the next member
    assert errors_at(ctx) == [start]
    assert "is corrupt" in ctx.errors[0]["error"]
    assert f"resumed at byte {eval0_offsets[k + 1][0]}" in ctx.errors[0]["error"]
    assert ctx.counters["resyncs"] == 1
    records, error = warcio_records(bad)  # warcio stops at the corrupt member, losing the 174 after it
    assert len(records) == k == 174 and isinstance(error, ArchiveLoadFailed)


def test_garbage_before_the_first_record(tmp_path):
    bad = tmp_path / "prefixed.warc.gz"
    bad.write_bytes(b"junk" + CC_SAMPLE.read_bytes())
    table, ctx, _ = read(bad)
    assert table.num_rows == 16
    assert errors_at(ctx) == [0] and "resumed at byte 4" in ctx.errors[0]["error"]


def test_empty_and_non_warc_files(tmp_path):
    empty = tmp_path / "empty.warc.gz"
    empty.write_bytes(b"")
    table, ctx, _ = read(empty)
    assert table.num_rows == 0 and errors_at(ctx) == [0] and "empty" in ctx.errors[0]["error"]

    text = tmp_path / "notes.txt"
    text.write_text("these are five words\nand not a WARC file at all\n")
    table, ctx, _ = read(text)
    assert table.num_rows == 0 and errors_at(ctx) == [0]
    assert ctx.errors[0]["error"].startswith("not a WARC or ARC file")
    assert "\n" not in ctx.errors[0]["error"]

    gz = tmp_path / "notes.txt.gz"
    gz.write_bytes(gzip.compress(b"hello, not a warc\n"))
    table, ctx, _ = read(gz)
    assert table.num_rows == 0 and errors_at(ctx) == [0] and "hello, not a warc" in ctx.errors[0]["error"]

    broken_gz = tmp_path / "broken.warc.gz"
    broken_gz.write_bytes(b"\x1f\x8b\x08\x00garbage")
    table, ctx, _ = read(broken_gz)
    assert table.num_rows == 0 and errors_at(ctx) == [0] and "gzip" in ctx.errors[0]["error"]


# --------------------------------------------------------------------------------------------------
# HTTP payloads, on records written here

PAGE = b"<!doctype html><html><body>" + b"hello world " * 50 + b"</body></html>"
HTML = [(b"Content-Type", b"text/html; charset=utf-8")]


def http(headers, body, status=b"HTTP/1.1 200 OK"):
    return status + b"\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in headers) + b"\r\n" + body


def chunked(body, size=100):
    parts = [body[i:i + size] for i in range(0, len(body), size)]
    return b"".join(b"%x\r\n" % len(p) + p + b"\r\n" for p in parts) + b"0\r\n\r\n"


def warc_record(block, uri="http://example.org/", n=0, rtype="response",
                content_type="application/http; msgtype=response"):
    head = f"WARC/1.0\r\nWARC-Type: {rtype}\r\n"
    if uri is not None:
        head += f"WARC-Target-URI: {uri}\r\n"
    head += (f"WARC-Date: 2024-05-01T00:00:{n:02d}Z\r\n"
             f"WARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-{n:012d}>\r\n"
             f"Content-Type: {content_type}\r\nContent-Length: {len(block)}\r\n\r\n")
    return head.encode() + block + b"\r\n\r\n"


def raw_deflate(data):
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    return c.compress(data) + c.flush()


#: name -> (HTTP block, expected html or None for no row)
CASES = {
    "plain": (http(HTML, PAGE), PAGE),
    "chunked": (http(HTML + [(b"Transfer-Encoding", b"chunked")], chunked(PAGE)), PAGE),
    "chunked_but_not": (http(HTML + [(b"Transfer-Encoding", b"chunked")], PAGE), PAGE),
    # two whole chunks of 100 bytes (106 bytes each, framed) and 34 bytes of the third
    "chunked_cut": (http(HTML + [(b"Transfer-Encoding", b"chunked")], chunked(PAGE)[:250]), PAGE[:234]),
    "gzip": (http(HTML + [(b"Content-Encoding", b"gzip")], gzip.compress(PAGE)), PAGE),
    "gzip_chunked": (http(HTML + [(b"Content-Encoding", b"gzip"), (b"Transfer-Encoding", b"chunked")],
                          chunked(gzip.compress(PAGE), 20)), PAGE),
    "deflate_zlib": (http(HTML + [(b"Content-Encoding", b"deflate")], zlib.compress(PAGE)), PAGE),
    "deflate_raw": (http(HTML + [(b"Content-Encoding", b"deflate")], raw_deflate(PAGE)), PAGE),
    "br": (http(HTML + [(b"Content-Encoding", b"br")], brotli.compress(PAGE)), PAGE),
    "gzip_but_plain": (http(HTML + [(b"Content-Encoding", b"gzip")], PAGE), PAGE),
    "png": (http([(b"Content-Type", b"image/png")], b"\x89PNG\r\n"), None),
    "no_type_html": (http([], b"\n  " + PAGE), b"\n  " + PAGE),
    "no_type_text": (http([], b"just some text"), None),
    "xhtml": (http([(b"content-type", b"application/xhtml+xml")], PAGE), PAGE),
    "lf_only_headers": (b"HTTP/1.1 200 OK\nContent-Type: text/html\n\n" + PAGE, PAGE),
    "empty": (http(HTML, b""), None),
    "too_large": (http(HTML, PAGE * 100), None),
    "gzip_bomb": (http(HTML + [(b"Content-Encoding", b"gzip")], gzip.compress(b" " * 10**6)), None),
    "no_status_line": (b"\x00\x01garbage\r\n\r\n" + PAGE, None),
}


def crafted_warc(tmp_path, gzipped: bool):
    parts = [warc_record(b"software: test\r\n", uri=None, rtype="warcinfo", content_type="application/warc-fields")]
    for n, (name, (block, _)) in enumerate(CASES.items(), 1):
        parts.append(warc_record(block, uri=f"http://example.org/{name}", n=n))
    parts.append(warc_record(http(HTML, PAGE), uri=None, n=90))
    parts.append(warc_record(http(HTML, PAGE), uri="  <http://example.org/wrapped>  ", n=91))
    path = tmp_path / ("crafted.warc.gz" if gzipped else "crafted.warc")
    path.write_bytes(b"".join(gzip.compress(p) for p in parts) if gzipped else b"".join(parts))
    return path


@pytest.mark.parametrize("gzipped", [False, True], ids=["warc", "warc.gz"])
def test_http_payload_decoding(tmp_path, gzipped):
    table, ctx, _ = read(crafted_warc(tmp_path, gzipped), max_record_bytes=30_000)
    rows = table.to_pylist()
    got = {r["url"]: r["html"] for r in rows}
    expected = {f"http://example.org/{name}": html for name, (_, html) in CASES.items() if html is not None}
    expected[None] = PAGE  # no WARC-Target-URI: kept, with an error entry
    expected["http://example.org/wrapped"] = PAGE
    assert got == expected
    assert len({r["id"] for r in rows}) == len(rows)
    types = {r["url"]: r["content_type"] for r in rows}
    assert types["http://example.org/xhtml"] == "application/xhtml+xml"
    assert types["http://example.org/no_type_html"] is None
    c = ctx.counters
    assert c["records_total"] == len(CASES) + 3 and c["records_response"] == len(CASES) + 2
    assert c["records_html"] == len(expected)
    assert c["records_bad_http_encoding"] == 3  # chunked_but_not, chunked_cut, gzip_but_plain
    assert c["records_non_html"] == 2 and c["records_empty_payload"] == 1
    assert c["skipped_too_large"] == 2 and c["records_bad_http"] == 1
    assert c["records_bad_target_uri"] == 2  # the missing and the wrapped one
    assert_responses_accounted(ctx)
    messages = [e["error"] for e in ctx.errors]
    assert len(messages) == 6  # 3 undecodable codings, a bad status line, a missing and a wrapped URI
    assert sum("does not decode" in m for m in messages) == 3
    assert sum("no valid HTTP status line" in m for m in messages) == 1
    assert sum("no WARC-Target-URI" in m for m in messages) == 1
    assert sum("malformed WARC-Target-URI" in m for m in messages) == 1


# --------------------------------------------------------------------------------------------------
# Listing inputs


def test_list_inputs_relative_names(tmp_path):
    for rel in ("a/x.warc.gz", "a/sub/y.warc.gz", "b/z.warc.gz", "b/skip.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(BROKEN / "example-wrong-chunks.warc.gz", tmp_path / rel)
    reader = WarcReader(WarcParams(paths=["a/**/*.warc.gz", "b/*.warc.gz", "a/x.warc.gz"]))
    inputs = reader.list_inputs(str(tmp_path))
    # names are relative to the folder the globs share
    assert [(i.index, i.name) for i in inputs] == [(0, "a/sub/y.warc.gz"), (1, "a/x.warc.gz"), (2, "b/z.warc.gz")]
    assert inputs[1].path == str(tmp_path / "a" / "x.warc.gz")
    # moving the data keeps the names, hence the ids
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "a", moved / "a")
    shutil.copytree(tmp_path / "b", moved / "b")
    assert [i.name for i in reader.list_inputs(str(moved))] == [i.name for i in inputs]

    real = WarcReader(WarcParams(paths=EVAL_GLOB)).list_inputs()
    assert [i.name for i in real] == [p.name for p in EVAL_FILES]


def test_list_inputs_without_match_names_the_pattern(tmp_path):
    reader = WarcReader(WarcParams(paths=["nope/*.warc.gz"]))
    with pytest.raises(FileNotFoundError, match=r"nope/\*\.warc\.gz") as info:
        reader.list_inputs(str(tmp_path))
    assert "\n" not in str(info.value)


def test_params_reject_unknown_keys():
    with pytest.raises(ValueError):
        WarcParams(paths="x", max_bytes=3)
