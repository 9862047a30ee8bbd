"""``extract``: encoding detection, parity with trafilatura called directly, drops, the time limit."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest
import trafilatura
from fastwarc.warc import ArchiveIterator, WarcRecordType

from operators.base import InputFile, TaskContext
from operators.extract import Extract, ExtractParams, charset_from_meta, decode_html
from tests.conftest import WEB


@pytest.fixture(scope="module")
def pages():
    """(url, payload) of the first 40 real pages of the trafilatura evaluation set."""
    out = []
    with open(WEB / "eval-pages-00001.warc.gz", "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
            out.append((rec.headers.get("WARC-Target-URI"), rec.reader.read()))
            if len(out) == 40:
                break
    return out


def batch_of(bodies, content_types=None):
    n = len(bodies)
    return pa.RecordBatch.from_pydict({
        "id": [f"{i:04d}" for i in range(n)], "source": ["web"] * n, "url": [f"u{i}" for i in range(n)],
        "content_type": content_types or ["text/html"] * n, "html": pa.array(bodies, pa.binary()),
        "drop_reason": pa.nulls(n, pa.string()), "drop_step": pa.nulls(n, pa.string())})


def ctx():
    return TaskContext(source="web", input=InputFile(0, "x", "x"))


def test_charset_comes_from_the_header_then_meta_then_detection():
    body = "<html><head><meta charset='iso-8859-15'></head><body>Grüße € ß</body></html>".encode("iso-8859-15")
    assert decode_html(body, "text/html; charset=ISO-8859-15")[1:] == ("iso8859-15", "header")
    text, codec, how = decode_html(body, "text/html")
    assert (codec, how) == ("iso8859-15", "meta") and "Grüße €" in text
    meta = b'<meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
    assert charset_from_meta(meta) == "cp1251"
    german = ("<html><body><p>" + "Die Straße über den Fluß führt zu schönen Häusern. " * 20
              + "</p></body></html>").encode("cp1252")
    text, codec, how = decode_html(german, None)
    assert how == "detected" and "Straße über" in text
    utf8 = "<p>Ελληνικά κείμενα και ελληνικές λέξεις</p>".encode()
    assert decode_html(utf8, "text/html; charset=bogus-charset")[0].endswith("λέξεις</p>")
    assert decode_html(b"\xef\xbb\xbf<p>bom</p>", None)[1:] == ("utf-8", "bom")
    # latin-1 labels mean windows-1252, as in browsers
    assert decode_html("<p>“quoted”</p>".encode("cp1252"), "text/html; charset=iso-8859-1")[0] == "<p>“quoted”</p>"


@pytest.mark.parametrize("accelerate", [False, True])
def test_same_text_as_trafilatura_called_directly(pages, accelerate):
    step = Extract(ExtractParams(accelerate=accelerate))
    out = step(batch_of([b for _, b in pages]), ctx())
    assert "html" not in out.schema.names and "content_type" not in out.schema.names
    texts = out.column("text").to_pylist()
    reasons = out.column("drop_reason").to_pylist()
    for (url, body), text, reason in zip(pages, texts, reasons, strict=True):
        html = decode_html(body, "text/html")[0]
        want = trafilatura.extract(html, favor_precision=True, include_comments=False, deduplicate=False)
        if want and want.strip():
            assert text == want, url
        else:
            assert text is None and reason == "extract_empty"


def test_drops_empty_pages_and_skips_rows_already_dropped(pages):
    step = Extract(ExtractParams())
    b = batch_of([b"", b"<html><body><div></div></body></html>", pages[0][1]])
    b = b.set_column(5, "drop_reason", pa.array([None, None, "earlier"], pa.string()))
    b = b.set_column(6, "drop_step", pa.array([None, None, "x"], pa.string()))
    out = step(b, ctx())
    assert out.column("drop_reason").to_pylist() == ["empty_html", "extract_empty", "earlier"]
    assert out.column("drop_step").to_pylist() == ["extract", "extract", "x"]
    assert out.column("text").to_pylist() == [None, None, None]


def test_a_page_that_hangs_becomes_a_timeout_and_the_batch_goes_on(pages):
    step = Extract(ExtractParams(timeout=0.5))
    step.ensure_setup()
    real = step._extract

    def hanging(html):
        if "HANG" in html:
            while True:  # pure Python busy loop, as a pathological page would cause
                time.sleep(0.01)
        if "BOOM" in html:
            raise ValueError("extractor bug")
        return real(html)

    step._extract = hanging
    t0 = time.time()
    out = step(batch_of([pages[0][1], b"<html>HANG</html>", b"<html>BOOM</html>", pages[1][1]]), ctx())
    assert time.time() - t0 < 10
    assert out.column("drop_reason").to_pylist() == [None, "extract_timeout", "extract_error", None]
    assert out.column("text")[0].as_py() and out.column("text")[3].as_py()


def test_resiliparse_engine_extracts_main_text(pages):
    out = Extract(ExtractParams(engine="resiliparse"))(batch_of([b for _, b in pages[:10]]), ctx())
    texts = [t for t in out.column("text").to_pylist() if t]
    assert len(texts) >= 8 and all(len(t) > 100 for t in texts)
