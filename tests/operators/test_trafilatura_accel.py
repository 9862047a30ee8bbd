"""``operators.trafilatura_accel``: byte-identical output on real pages, exact XPath/prune parity,
and a clean uninstall."""

from __future__ import annotations

import logging
from copy import deepcopy

import pytest
import trafilatura
from fastwarc.warc import ArchiveIterator, WarcRecordType
from lxml import html as lxml_html
from lxml.etree import XPath, tostring
from resiliparse.parse.encoding import bytes_to_str, detect_encoding
from trafilatura import core, external, htmlprocessing, main_extractor, metadata, utils, xpaths
from trafilatura.htmlprocessing import convert_tags, tree_cleaning
from trafilatura.settings import Extractor

from operators import trafilatura_accel as accel
from tests.conftest import WEB

WARCS = [*sorted(WEB.glob("eval-pages-*.warc.gz")), WEB / "cc-2020-08-sample.warc.gz"]

FINEWEB = dict(favor_precision=True, include_comments=False, deduplicate=False)
CONFIGS = {
    "fineweb": FINEWEB,
    "fineweb-fast": dict(FINEWEB, fast=True),
    "default": {},
}
# disjoint page subsets (time budget: the original extractor takes ~0.1 s a page): every 3rd page for
# FineWeb's settings (the ones smelter runs), every 6th, from other offsets, for the two others; together
# they cover two thirds of the pages
SUBSETS = {"fineweb": slice(0, None, 3), "fineweb-fast": slice(1, None, 6), "default": slice(2, None, 6)}


@pytest.fixture(scope="module")
def pages() -> list[str]:
    """Every HTML response of the real WARC samples, decoded the way the brief prescribes."""
    out = []
    for path in WARCS:
        with open(path, "rb") as fh:
            for rec in ArchiveIterator(fh, record_types=WarcRecordType.response, parse_http=True):
                body = rec.reader.read()
                out.append(bytes_to_str(body, detect_encoding(body)))
    assert len(out) > 600
    return out


@pytest.fixture
def plain():
    """trafilatura as shipped, whatever state an earlier test left behind."""
    accel.uninstall()
    yield
    accel.uninstall()


@pytest.fixture
def accelerated():
    accel.uninstall()
    assert accel.install()
    yield
    accel.uninstall()


def _extract_all(pages: list[str], kwargs: dict) -> list[str | None]:
    return [trafilatura.extract(page, **kwargs) for page in pages]


def _extract_in_child(job: tuple[bool, list[str], dict]) -> list[str | None]:
    """In a forked worker: the pages through trafilatura as it ships (False) or accelerated (True)."""
    accelerate, pages, kwargs = job
    accel.uninstall()
    if accelerate:
        assert accel.install()
    return _extract_all(pages, kwargs)


@pytest.mark.parametrize("config", list(CONFIGS))
def test_same_output_on_real_pages(pages, config):
    import multiprocessing

    subset = pages[SUBSETS[config]]
    kwargs = CONFIGS[config]
    # the original and the accelerated extractor side by side, one forked process each
    with multiprocessing.get_context("fork").Pool(2) as pool:
        expected, got = pool.map(_extract_in_child, [(False, subset, kwargs), (True, subset, kwargs)],
                                 chunksize=1)
    diff = [i for i, (a, b) in enumerate(zip(expected, got, strict=True)) if a != b]
    assert not diff, f"{config}: {len(diff)} pages differ, e.g. {diff[:5]}"
    assert sum(text is not None for text in expected) > len(subset) // 2


def _replaced() -> list[tuple[str, accel._FastXPath]]:
    out = []
    for name in accel._SPECS:
        list_name, index = name[:-1].split("[")
        fast = getattr(xpaths, list_name)[int(index)]
        assert isinstance(fast, accel._FastXPath), name
        out.append((name, fast))
    return out


def _trees(page: str) -> list:
    """The kinds of trees the expressions see: raw, cleaned + converted, and a subtree."""
    tree = utils.load_html(page)
    if tree is None:
        return []
    options = Extractor(precision=True, comments=False)
    converted = convert_tags(tree_cleaning(deepcopy(tree), options), options)
    body = tree.find("body")
    return [tree, converted] + ([body] if body is not None else [])


SYNTHETIC = """<html><body>
<div class="entry-content" id="cookie-x">a<div class="post">b</div><div class="post">c</div></div>
<section id="x" class="post"><article class="post">d</article></section>
<div id="reply-1" class="hidden comment">e</div><div class="reply-2" id="main-x">f</div>
<div class="Footer" style="display: none" aria-hidden="true">g</div><span role="Navigation">h</span>
<div data-lp-replacement-content="">i</div><div hidden class="">j</div><p class=" ad ">k</p>
<div class="comments-title" id="disqus_thread">l</div><ul id="comment-list"><li>m</li></ul>
<ol class="article-comments"><li>n</li></ol><details id="Comments">o</details>
<div class="mvp-post-add-box">p<h1>q</h1></div><aside class="infinite-scroll">r</aside>
<section class="infinite-scroll"><h1>s</h1></section><div class="elementor-share-buttons">t</div>
<div id="Teaser-1">u</div><span class="x bottom">v</span><div class="link">w</div>
<div style="border:0">x</div><div class="caption">y</div><header>z</header>
<main><div class="main-col">aa</div></main><div id="mainContent" class="FULLTEXT">bb</div>
<div class="story-body" role="article">cc</div><div class="content-main Page-Content">dd</div>
<FORM><INPUT name="q"></FORM><textarea>ee</textarea>
</body></html>"""


def test_xpath_replacements_select_what_libxml2_selects(pages, accelerated):
    replaced = _replaced()
    trees = [t for page in pages[::15] for t in _trees(page)]
    trees += _trees(SYNTHETIC)
    for tree in trees:
        for name, fast in replaced:
            assert fast(tree) == fast.original(tree), name


def test_prune_unwanted_nodes_prunes_what_the_original_prunes(pages, accelerated):
    original = htmlprocessing.prune_unwanted_nodes.__wrapped__
    lists = [
        xpaths.RAW_TREE_PRUNE_XPATH,
        xpaths.REMOVE_COMMENTS_AND_LISTS_XPATH,
        xpaths.REMOVE_COMMENTS_XPATH,
        xpaths.OVERALL_DISCARD_XPATH,
        xpaths.PRECISION_DISCARD_XPATH,
    ]
    for page in [*pages[::30], SYNTHETIC]:
        for tree in _trees(page):
            for nodelist in lists:
                for with_backup in (False, True):
                    slow_tree, fast_tree = deepcopy(tree), deepcopy(tree)
                    originals = [x.original for x in nodelist]
                    original(slow_tree, originals, with_backup)
                    htmlprocessing.prune_unwanted_nodes(fast_tree, nodelist, with_backup)
                    assert tostring(fast_tree) == tostring(slow_tree)


def test_element_classes_unchanged(pages, plain):
    def classes(page):
        tree = utils.load_html(page)
        return [type(e) for e in tree.iter()] if tree is not None else None

    sample = [*pages[::10], SYNTHETIC]
    expected = [classes(page) for page in sample]
    accel.install()
    assert [classes(page) for page in sample] == expected
    tree = lxml_html.fromstring(SYNTHETIC, parser=utils.HTML_PARSER)
    assert type(tree.find(".//form")).__name__ == "FormElement"
    assert type(tree.find(".//input")).__name__ == "InputElement"


@pytest.mark.parametrize(
    "text",
    [
        "plain",
        "tab\tand\nnewline\r",
        "ctl\x00\x08\x0b\x0c\x1f",
        "nonchar \ufffe \uffff",
        "bmp \ufffd\uffef",
        "astral \U0001f600",
        "lone \ud800 surrogate",
        "<!DOCTYPE html/>\n<html/>",
    ],
)
def test_repair_faulty_html(text, accelerated):
    original = utils.repair_faulty_html.__wrapped__
    for beginning in ("<!doctype html>", "<html>"):
        assert utils.repair_faulty_html(text, beginning) == original(text, beginning)


def test_uninstall_restores_the_originals(plain):
    modules = (htmlprocessing, core, main_extractor, external, metadata)
    before_lists = {name: list(getattr(xpaths, name)) for name in dir(xpaths) if name.isupper()}
    before_prune = {m: m.prune_unwanted_nodes for m in modules}
    before = (core._extract_and_compare, utils.repair_faulty_html)
    assert accel.install() and accel.install()  # idempotent
    assert htmlprocessing.prune_unwanted_nodes is not before_prune[htmlprocessing]
    assert core._extract_and_compare is not before[0] and utils.repair_faulty_html is not before[1]
    assert any(isinstance(x, accel._FastXPath) for x in xpaths.OVERALL_DISCARD_XPATH)
    accel.uninstall()
    assert not accel.is_installed()
    for name, items in before_lists.items():
        assert all(a is b for a, b in zip(getattr(xpaths, name), items, strict=True)), name
    for module, function in before_prune.items():
        assert module.prune_unwanted_nodes is function
    assert (core._extract_and_compare, utils.repair_faulty_html) == before
    # the parser's class lookup is lxml.html's Python one again
    calls = []
    lookup = lxml_html.HtmlElementClassLookup.lookup
    try:
        lxml_html.HtmlElementClassLookup.lookup = lambda self, *a: calls.append(a) or lookup(self, *a)
        accel.install()
        accel.uninstall()
        list(lxml_html.fromstring(SYNTHETIC, parser=utils.HTML_PARSER).iter())
    finally:
        lxml_html.HtmlElementClassLookup.lookup = lookup
    assert calls


def test_other_version_or_changed_code_is_left_alone(plain, monkeypatch, caplog):
    monkeypatch.setattr(trafilatura, "__version__", "9.9.9")
    with caplog.at_level(logging.WARNING):
        assert not accel.install()
    assert not accel.is_installed() and "not installed" in caplog.text
    monkeypatch.undo()
    # an expression that is not the one the Python predicate implements keeps libxml2
    original = xpaths.TEASER_DISCARD_XPATH[0]
    changed = XPath(".//*[self::div][contains(@class, 'teaser')]")
    xpaths.TEASER_DISCARD_XPATH[0] = changed
    try:
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert accel.install()
        assert xpaths.TEASER_DISCARD_XPATH[0] is changed and "TEASER_DISCARD_XPATH[0]" in caplog.text
        assert isinstance(xpaths.OVERALL_DISCARD_XPATH[0], accel._FastXPath)
        accel.uninstall()
        assert xpaths.TEASER_DISCARD_XPATH[0] is changed
    finally:
        xpaths.TEASER_DISCARD_XPATH[0] = original
