"""``pii``: the same text as datatrove's PIIFormatter (a fresh one per document) on real and crafted text."""

from __future__ import annotations

import random

import pyarrow as pa
import pytest
from datatrove.pipeline.formatters.pii import PIIFormatter
from fastwarc.warc import ArchiveIterator, WarcRecordType
from pydantic import ValidationError

from operators.base import InputFile, TaskContext
from operators.extract import Extract, ExtractParams, decode_html
from operators.pii import Pii, PiiParams
from operators.readers.warc import WarcParams, WarcReader
from tests.conftest import WEB

CRAFTED = [
    "",
    "no personal data here, version 1.2.3 and 3.14 and 2024.",
    "Contact: john.doe@example.com, (jane@x.org) [bob@y.net] <alice@z.io> {eve@w.de} 'q@r.st' \"s@t.uv\"",
    "mailto:info@firma.de?subject=hi and http://user:pass@host.example.com/path and @handle and foo@ and @bar.com",
    "a@b.com,c@d.com;e@f.com a@b.com@c.com x@y first.last+tag@sub.domain.co.uk. a..b@c.com .a@b.com a.@b.com",
    "émile@example.com Zoë.x@example.com ÿ_ok@example.com 名字@example.com user@exämple.com user@xn--exmple-cua.com",
    "under_score@host_name.com -dash@x-y.org x@-bad.com x@bad-.com 1@2.3 a@1.2.3.4 b@[1.2.3.4] c@[8.8.8.8] "
    "d@[IPv6:2001:db8::1] e@[300.1.1.1] f@[tag:]",
    "dns 8.8.8.8, 1.1.1.1; lan 10.0.0.1 192.168.0.1 172.16.5.4 127.0.0.1 0.0.0.0 255.255.255.255 224.0.0.1 "
    "100.64.1.1 169.254.1.1 192.0.2.1 198.51.100.7 203.0.113.9 240.0.0.1",
    "256.1.1.1 999.8.8.8 1.2.3.4.5 01.02.03.04 8.8.8.08 v1.2.3.4 8.8.8.8:53 8.8.8.8/24 [8.8.8.8] 8.8.8.8.8.8.8.8 "
    "18.104.22.168 1.1.1.1a a1.1.1.1 123.123.123.1234 2001:db8::1 ::ffff:8.8.8.8",
    "full-width １.２.３.４ and arabic-indic ٨.٨.٨.٨ digits, and 8.8.8.8\u00a0nbsp",
    "base64 QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo" + "x" * 400 + "@" + "y" * 400 + ".com tail@end.org",
    "repeated: " + " ".join(f"user{i}@mail{i}.com 45.{i}.7.{i}" for i in range(9)),
    "@@@ a@@b.com a@b..com a@.b.com a@b.c-om ab@cd.e-f.gh",
]

OPTIONS = [
    {},
    {"only_public_ips": False},
    {"emails": False},
    {"ips": False},
    {"email_replacement": "[email]", "ip_replacement": ["<ip-a>", "<ip-b>", "<ip-c>"]},
    # a replacement that is itself an e-mail with a public IP: the IP pass must see it (prefilter re-check)
    {"email_replacement": ["x@[8.8.8.8]", "y@z.com"]},
]


def reference(text: str, options: dict) -> str:
    """datatrove's PIIFormatter, fresh for the document (its round-robin turn starts at the first)."""
    kwargs = {"remove_emails": options.get("emails", True), "remove_ips": options.get("ips", True),
              "only_remove_public_ips": options.get("only_public_ips", True)}
    for ours, theirs in (("email_replacement", "email_replacement"), ("ip_replacement", "ip_replacement")):
        if ours in options:
            value = options[ours]
            kwargs[theirs] = value if isinstance(value, str) else tuple(value)
    return PIIFormatter(**kwargs).format(text)


def batch_of(texts, dropped=None):
    n = len(texts)
    return pa.RecordBatch.from_pydict({
        "id": [f"{i:05d}" for i in range(n)], "source": ["web"] * n, "text": pa.array(texts, pa.string()),
        "drop_reason": pa.array(dropped or [None] * n, pa.string()),
        "drop_step": pa.array([None if d is None else "earlier" for d in (dropped or [None] * n)], pa.string())})


def ctx():
    return TaskContext(source="web", input=InputFile(0, "x", "x"))


@pytest.fixture(scope="module")
def web_texts():
    """Main text of every real page of the web corpus (read by the warc reader, extracted by ``extract``)."""
    reader = WarcReader(WarcParams(paths=str(WEB / "*.warc.gz")))
    step = Extract(ExtractParams(engine="resiliparse"))
    texts = []
    for inp in reader.list_inputs():
        c = TaskContext("web", inp)
        for b in reader.read(c, 256):
            b = b.append_column("drop_reason", pa.nulls(b.num_rows, pa.string()))
            b = b.append_column("drop_step", pa.nulls(b.num_rows, pa.string()))
            texts += [t for t in step(b, c).column("text").to_pylist() if t]
    assert len(texts) > 600
    return texts


@pytest.fixture(scope="module")
def html_texts():
    """Decoded raw HTML of real pages that contain an '@' (mailto links, scripts: many more matches)."""
    out = []
    with open(WEB / "eval-pages-00002.warc.gz", "rb") as fh:
        for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
            html = decode_html(rec.reader.read(), "text/html")[0]
            if "@" in html and len(html) < 60_000:
                out.append(html)
            if len(out) == 30:
                break
    return out


def run(texts, options, dropped=None):
    c = ctx()
    out = Pii(PiiParams(**options))(batch_of(texts, dropped), c)
    return out, c


def test_same_text_as_datatrove_on_every_real_page(web_texts, html_texts):
    out, c = run(web_texts, {})
    got = out.column("text").to_pylist()
    changed = 0
    for text, mine in zip(web_texts, got, strict=True):
        assert mine == reference(text, {})
        changed += mine != text
    assert changed >= 20 and c.counters["emails"] >= 100  # real pages do carry addresses
    assert sum(out.column("pii_replacements").to_pylist()) == c.counters["emails"] + c.counters["ips"]
    for options in ({}, {"only_public_ips": False}):
        out, c = run(html_texts, options)
        for text, mine in zip(html_texts, out.column("text").to_pylist(), strict=True):
            assert mine == reference(text, options)
        assert c.counters["emails"] > 10 and c.counters["ips"] > 0


@pytest.mark.parametrize("options", OPTIONS, ids=lambda o: ",".join(o) or "defaults")
def test_same_text_as_datatrove_on_crafted_cases(options):
    out, c = run(CRAFTED, options)
    for text, mine in zip(CRAFTED, out.column("text").to_pylist(), strict=True):
        assert mine == reference(text, options), text
    counts = out.column("pii_replacements").to_pylist()
    assert sum(counts) == c.counters["emails"] + c.counters["ips"]
    assert c.counters["docs_with_pii"] == sum(1 for n in counts if n)


def test_same_text_as_datatrove_on_random_strings():
    """Dense random strings of address characters: the run-limited e-mail scan finds what a full scan finds."""
    rng = random.Random(7)
    alphabet = "ab9Z0.12.5.@@[]:-_+'é名 \n.8.8.8.8.@.x.com"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 80))) for _ in range(3000)]
    texts += [f"{rng.randrange(300)}.{rng.randrange(300)}.{rng.randrange(300)}.{rng.randrange(300)}"
              f"{rng.choice(['', '.', '0', ' ', '@a.b'])}" for _ in range(2000)]
    for options in ({}, {"only_public_ips": False}):
        out, _ = run(texts, options)
        for text, mine in zip(texts, out.column("text").to_pylist(), strict=True):
            assert mine == reference(text, options), repr(text)


def test_replacements_go_round_robin_and_restart_in_every_document():
    doc = "a@b.com c@d.com e@f.com, 8.8.8.8 9.9.9.9 10.1.1.1 1.1.1.1"
    out, c = run([doc, doc], {})
    want = ("email@example.com firstname.lastname@example.org email@example.com, "
            "22.214.171.124 126.96.36.199 10.1.1.1 188.8.131.52")
    assert out.column("text").to_pylist() == [want, want]
    assert out.column("pii_replacements").to_pylist() == [6, 6]
    assert c.counters == {"emails": 6, "ips": 6, "docs_with_pii": 2}


def test_skips_dropped_rows_and_null_text_and_never_drops():
    out, c = run(["x@y.com", None, "x@y.com 8.8.8.8", "plain"], {}, dropped=[None, None, "too_short", None])
    assert out.column("text").to_pylist() == ["email@example.com", None, "x@y.com 8.8.8.8", "plain"]
    assert out.column("pii_replacements").to_pylist() == [1, 0, None, 0]
    assert out.column("pii_replacements").type == pa.int32()
    assert out.column("drop_reason").to_pylist() == [None, None, "too_short", None]
    assert c.counters == {"emails": 1, "ips": 0, "docs_with_pii": 1}
    plain = batch_of(["nothing", "here 1.2"])
    assert Pii(PiiParams())(plain, ctx()).column("text").equals(plain.column("text"))


def test_params_are_checked():
    with pytest.raises(ValidationError):
        PiiParams(email_replacement=[])
    with pytest.raises(ValidationError):
        PiiParams(remove_emails=True)  # datatrove's name, not ours: unknown keys are errors
