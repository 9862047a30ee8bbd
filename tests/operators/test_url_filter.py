"""``url_filter``: decisions and reasons equal datatrove's URLFilter on every real WARC URL and on URLs
made from real list entries; user lists; the sorted domain index; the race-free cache; errors."""

from __future__ import annotations

import threading
from unittest import mock

import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators import assets
from operators.base import InputFile, TaskContext
from operators.filters.url import SortedStrings, UrlFilter, UrlFilterParams, default_lists_dir, normalize
from operators.readers.warc import WarcParams, WarcReader
from tests.conftest import WEB

# datatrove reads tldextract's deprecated ``registered_domain`` on every URL
pytestmark = pytest.mark.filterwarnings("ignore:The 'registered_domain' property is deprecated")

REASONS = ("domain", "subdomain", "url", "hard_blacklisted", "soft_blacklisted", "blacklisted_subword")


def offline_tldextract():
    from tldextract import TLDExtract

    return TLDExtract(cache_dir=None, suffix_list_urls=())


def make_datatrove_filter(assets_dir, **kwargs):
    """datatrove's URLFilter with its lists unpacked into ``assets_dir`` and tldextract offline (its
    default fetches the live suffix list and caches it in the home folder)."""
    from datatrove.pipeline.filters.url_filter import URLFilter

    f = URLFilter(**kwargs)
    f.tldextractor = offline_tldextract()
    with mock.patch("datatrove.pipeline.filters.url_filter.cached_assets_path", return_value=str(assets_dir)):
        f.download_data()
    return f


def datatrove_reasons(f, urls):
    from datatrove.data import Document

    out = []
    for url in urls:
        r = f.filter(Document(text="", id="x", metadata={"url": url}))
        out.append(None if r is True else r[1])
    return out


def ctx():
    return TaskContext(source="web", input=InputFile(0, "x", "x"))


def batch_of(urls, reasons=None):
    n = len(urls)
    return pa.RecordBatch.from_pydict({
        "id": [f"{i:05d}" for i in range(n)], "url": pa.array(urls, pa.string()),
        "drop_reason": pa.array(reasons or [None] * n, pa.string()), "drop_step": pa.nulls(n, pa.string())})


def our_reasons(step, urls):
    return step(batch_of(urls), ctx()).column("drop_reason").to_pylist()


@pytest.fixture(scope="module")
def ours():
    step = UrlFilter(UrlFilterParams())
    step.ensure_setup()
    return step


@pytest.fixture(scope="module")
def theirs(tmp_path_factory):
    return make_datatrove_filter(tmp_path_factory.mktemp("datatrove-assets"))


@pytest.fixture(scope="module")
def warc_urls():
    """Every response URL of the real WARC files, damaged ones included, read by our WARC reader."""
    reader = WarcReader(WarcParams(paths=[str(WEB / "*.warc.gz"), str(WEB / "broken" / "*")]))
    urls = []
    for inp in reader.list_inputs():
        for batch in reader.read(TaskContext(source="web", input=inp), 1000):
            urls += [u for u in batch.column("url").to_pylist() if u]
    assert len(urls) > 700
    return urls


@pytest.fixture(scope="module")
def crafted(ours):
    """URLs that hit each rule, made from real entries of datatrove's lists (first ones in sorted order)."""
    tld = offline_tldextract()
    folder = default_lists_dir()
    index = SortedStrings(folder / "domains.bin", folder / "domains.offsets")
    listed_urls = sorted(set((folder / "urls").read_text(encoding="utf-8").split("\n")) - {""})
    urls = []
    first = index[0]
    urls += [f"http://{first}/", f"https://www.{first}/path?q=1", f"http://{index[len(index) // 2]}"]
    subdomains = []
    for i in range(0, len(index), 997):  # hosts listed whose registered domain is not
        entry = index[i]
        info = tld(f"http://{entry}/")
        if info.fqdn == entry and info.top_domain_under_public_suffix not in index:
            subdomains.append(entry)
            if len(subdomains) == 3:
                break
    urls += [f"http://{h}/index.html" for h in subdomains]
    exact = [u for u in listed_urls if u.split("/")[0] not in index
             and tld(f"http://{u}").top_domain_under_public_suffix not in index][:3]
    urls += exact + [f"http://{u}" for u in exact]
    banned = sorted(ours._banned)
    soft = sorted(w for w in ours._soft if w not in ours._banned)
    sub = sorted(ours._subwords.keys())
    urls += [f"http://example.com/{w}/index.html" for w in banned[:3]]
    urls += [f"http://example.com/{banned[0].upper()}/index.html", f"http://example.com/a{banned[0]}b"]
    urls += [f"https://example.org/{soft[0]}-{soft[1]}.html", f"https://example.org/{soft[2]}.html",
             f"https://example.org/?a={soft[3]}&b={soft[4]}&c={soft[5]}"]
    urls += [f"http://example.net/x{w}x" for w in sub[:3]]
    urls += [f"http://example.net/{w.upper()}" for w in sub[3:5]]
    urls += ["http://127.0.0.1:8080/x", "http://localhost/", "http://[::1]/a", "mailto:someone@example.com",
             "https://user:pw@Sub.Example.CO.UK./a", "not a url", "http://xn--bcher-kva.example/",
             "ftp://ftp.example.org/pub", "//cdn.example.com/x.js", "http://example.com:99999/", "http://"]
    return urls


def test_same_decisions_as_datatrove_on_every_real_warc_url(ours, theirs, warc_urls):
    assert our_reasons(ours, warc_urls) == datatrove_reasons(theirs, warc_urls)


def test_same_decisions_as_datatrove_on_urls_made_from_the_lists(ours, theirs, crafted):
    got = our_reasons(ours, crafted)
    want = datatrove_reasons(theirs, crafted)
    for url, g, w in zip(crafted, got, want, strict=True):
        assert g == w, url
    assert set(REASONS) <= set(got)  # every rule fires
    assert got.count(None) >= 5


def test_drop_detail_says_what_matched(ours, crafted):
    out = ours(batch_of(crafted), ctx())
    for url, reason, detail in zip(crafted, out.column("drop_reason").to_pylist(),
                                   out.column("drop_detail").to_pylist(), strict=True):
        if reason in ("domain", "subdomain"):
            assert detail in url
        elif reason in ("hard_blacklisted", "soft_blacklisted"):
            assert all(w in url for w in detail.split(","))
        elif reason == "blacklisted_subword":
            assert detail in normalize(url)
        else:
            assert detail == (url if reason == "url" else None)


def test_rows_without_url_are_kept_and_dropped_rows_skipped(ours, crafted):
    blocked = crafted[0]
    out = ours(batch_of([None, "", blocked, blocked], [None, None, None, "earlier"]), ctx())
    assert out.column("drop_reason").to_pylist() == [None, None, "domain", "earlier"]
    assert out.column("drop_step").to_pylist() == [None, None, "url_filter", None]


def test_user_lists_from_files_and_inline(tmp_path, tmp_path_factory):
    lists = {
        "block_domains": "# my domains\nspam-domain.com\n\n  padded.co.uk  \n",
        "block_urls": "https://ok-site.com/exact/page\n",
        "banned_words": "# words\nCasino\n",
        "banned_subwords": "free money\n",
        "soft_banned_words": "cheap\npills\n",
    }
    files = {}
    for key, text in lists.items():
        files[key] = tmp_path / f"{key}.txt"
        files[key].write_text(text)
    params = UrlFilterParams(use_default_lists=False, **{k: [str(v)] for k, v in files.items()},
                             inline={"block_domains": ["inline-block.org"], "banned_words": ["lottery"]})
    step = UrlFilter(params)
    urls = ["http://spam-domain.com/", "http://www.spam-domain.com/a", "http://padded.co.uk/",
            "http://a.b.inline-block.org/", "https://ok-site.com/exact/page", "https://ok-site.com/exact/page2",
            "https://ok-site.com/casino", "https://ok-site.com/Casino", "https://ok-site.com/lottery-results",
            "https://ok-site.com/cheap-pills", "https://ok-site.com/cheap", "https://ok-site.com/getfreemoneynow",
            "https://ok-site.com/"]
    got = our_reasons(step, urls)
    assert got == ["domain", "domain", "domain", "domain", "url", None, "hard_blacklisted", None,
                   "hard_blacklisted", "soft_blacklisted", None, "blacklisted_subword", None]
    theirs = make_datatrove_filter(
        tmp_path_factory.mktemp("unused"), use_integrated_lists=False,
        extra_domains=["spam-domain.com", "padded.co.uk", "inline-block.org"],
        extra_urls=["https://ok-site.com/exact/page"], banned_words=["Casino", "lottery"],
        banned_subwords=["free money"], soft_banned_words=["cheap", "pills"])
    assert got == datatrove_reasons(theirs, urls)
    # with the default lists too, and a threshold of one soft word
    step = UrlFilter(UrlFilterParams(block_domains=[str(files["block_domains"])], soft_word_threshold=1))
    step.ensure_setup()
    soft = sorted(step._soft - step._banned)[0]
    urls = ["http://padded.co.uk/", f"https://ok-site.com/{soft}", "https://ok-site.com/cheap-pills"]
    assert our_reasons(step, urls) == ["domain", "soft_blacklisted", None]


def test_sorted_strings(tmp_path):
    entries = ["b.example", "a.example", "ü.example", "a.example", "", "zz", "a"]
    SortedStrings.write(entries, tmp_path / "blob", tmp_path / "off")
    idx = SortedStrings(tmp_path / "blob", tmp_path / "off")
    assert [idx[i] for i in range(len(idx))] == sorted(set(entries))
    for e in [*entries, "c", "a.exampl", "a.examplee", "ü", "\ud800", "zzz"]:
        assert (e in idx) == (e in entries), e
    SortedStrings.write([], tmp_path / "blob0", tmp_path / "off0")
    empty = SortedStrings(tmp_path / "blob0", tmp_path / "off0")
    assert len(empty) == 0 and "a" not in empty and "" not in empty


def test_the_cache_is_built_once_even_when_workers_race(tmp_path):
    calls = []
    barrier = threading.Barrier(6)

    def build(folder):
        calls.append(folder)
        (folder / "data").write_text("x" * 100_000)
        barrier.wait(timeout=10)  # every racer has a finished copy before any renames

    results = []
    threads = [threading.Thread(target=lambda: results.append(
        assets.cached_build("ns", "key1", build, root=tmp_path))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 6 and len(set(results)) == 1
    assert (results[0] / "data").read_text() == "x" * 100_000
    assert sorted(p.name for p in (tmp_path / "ns").iterdir()) == ["key1"]  # no temporary folder left
    assets.cached_build("ns", "key1", build, root=tmp_path)
    assert len(calls) == 6


def test_a_failed_build_leaves_nothing(tmp_path):
    def build(folder):
        (folder / "half").write_text("x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        assets.cached_build("ns", "k", build, root=tmp_path)
    assert list((tmp_path / "ns").iterdir()) == []


def test_missing_lists_are_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(ValidationError) as e:
        UrlFilterParams(block_domains=[str(tmp_path / "nope.txt")])
    (err,) = e.value.errors()
    assert err["loc"] == ("block_domains",) and err["msg"] == f"no such list file: {tmp_path / 'nope.txt'}"
    monkeypatch.setattr(assets, "package_dir", lambda package: None)
    with pytest.raises(assets.AssetError) as e2:
        UrlFilter(UrlFilterParams()).setup()
    msg = str(e2.value)
    assert "\n" not in msg and msg.startswith("url_filter: no default block lists: datatrove/assets/")
    assert "pip install datatrove==0.10.1" in msg and "use_default_lists: false" in msg
    UrlFilter(UrlFilterParams(use_default_lists=False)).setup()  # no datatrove needed then


def test_an_unwritable_cache_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(assets.AssetError, match="url_filter: cannot write the cache folder .*SMELTER_CACHE_DIR"):
        default_lists_dir(str(blocker / "cache"))


@pytest.mark.parametrize("params", [
    {"soft_word_threshold": 0}, {"use_integrated_lists": False}, {"inline": {"domains": ["x"]}},
    {"block_domains": 3}, {"extra_domains": ["x.com"]},
])
def test_bad_params_are_rejected(params):
    with pytest.raises(ValidationError):
        UrlFilterParams(**params)
