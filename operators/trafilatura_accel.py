"""Byte-identical speed-ups for ``trafilatura.extract`` (trafilatura 2.3.1, CPython 3.11).

``install()`` swaps a few trafilatura internals for cheaper equivalents; ``uninstall()`` puts the
originals back. What trafilatura returns does not change: every replacement computes exactly what
the original computed (same elements, same document order, same tree mutations, same strings),
with less work. Each replacement documents what the original did and why it is equivalent; the
tests (tests/operators/test_trafilatura_accel.py) compare both on the real pages.

Where the time went (709 real pages, FineWeb settings: favor_precision=True,
include_comments=False, deduplicate=False; cProfile and per-stage timers) and what is replaced:

1. XPath pruning and body selection, ~40%. The discard and body XPaths of ``trafilatura.xpaths``
   run in libxml2 over every element, and every ``re:test()`` in them calls back into Python
   (lxml's EXSLT regexp is Python's ``re``), building a smart string and element proxies for its
   arguments. Those XPath objects are replaced, inside the lists every module iterates, by
   ``_FastXPath``: the same elements walked with lxml's C tag filter, the same predicate in
   Python on the attributes, the same regexes (memoised per string). Only when the XPath source
   matches the structure implemented here (``_SPECS``, checked with the regexes cut out, which are
   then taken from the live source).
2. ``htmlprocessing.prune_unwanted_nodes``: the expressions of one list evaluated in a single tree
   walk (``_Group``), and the "outermost match" test of its backup mode memoised instead of
   walking every match's ancestors with a fresh proxy each.
3. lxml.html's element class lookup (a Python method called for every element proxy lxml creates,
   i.e. for every element any code walks) replaced on trafilatura's parser by lxml's C lookup
   configured to give the very same classes (``_c_class_lookup``).
4. ``core._extract_and_compare``: the raw tree is no longer copied for readability in precision
   mode when called from ``bare_extraction``, where nothing reads it afterwards.
5. ``utils.repair_faulty_html``: the regex scan for invalid XML characters is skipped when a
   byte-level test proves there are none.

The main remaining costs, left as they are: HTML parsing, readability and justext, tree copies,
trafilatura's own Python tree walks (tree_cleaning, link density, conversion).

Guards: nothing is installed unless ``trafilatura.__version__ == "2.3.1"``; replaced or relied-on
functions must have the bytecode fingerprint they had when this was written (``_FINGERPRINTS``),
XPaths the expected source; each mismatch logs a warning and leaves that part to trafilatura.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

from lxml.etree import Element, XPath, _Element

LOGGER = logging.getLogger(__name__)

SUPPORTED_VERSION = "2.3.1"

# cap on each memo table (string -> regex verdict); emptied when full
_CACHE_LIMIT = 20_000


# ---------------------------------------------------------------------------------------------
# XPath source check: the structure (regex literals cut out) must be the one implemented here
# ---------------------------------------------------------------------------------------------

_RE_TEST_LITERAL = re.compile(r"(re:test\([^,()']+, )'([^']*)'")


def _skeleton(path: str) -> tuple[str, list[str]]:
    """Cut the regex literals (2nd argument of re:test) out of an XPath source and normalise the
    whitespace outside string literals. Returns the skeleton and the regexes, in source order."""
    literals: list[str] = []

    def cut(match: re.Match[str]) -> str:
        literals.append(match.group(2))
        return f"{match.group(1)}'{{{len(literals) - 1}}}'"

    parts = _RE_TEST_LITERAL.sub(cut, path).split("'")
    # odd parts are the contents of string literals: kept verbatim
    return "'".join(p if i % 2 else " ".join(p.split()) for i, p in enumerate(parts)), literals


def _first(items: Sequence[tuple[str, str]], name1: str, name2: str) -> str:
    """XPath string value of ``@name1|@name2``: the node-set is in document order, which for the
    attributes of one element is their order in the source, and string() takes its first node;
    an empty node-set gives ''. lxml's re:test() does the same (``_ExsltRegExp._make_string``)."""
    for key, value in items:
        if key == name1 or key == name2:
            return value
    return ""


# XPath -> Python correspondences used by the predicates below. ``a`` is ``dict(elem.items())``
# and ``items`` the list itself (attributes in source order). HTML trees have no namespaces and
# no repeated attributes (libxml2's HTML parser drops repeats); for XML trees, lxml's tag filter
# and attribute names treat namespaces exactly as XPath name tests do.
#   self::div or self::p ...      lxml's C tag filter iterdescendants("div", "p", ...)
#   .//*                          iterdescendants(Element): descendants, elements only, doc order
#   @x (existence)                "x" in a
#   @x='v'                        a.get("x") == "v" (absent: empty node-set, false)
#   contains(@x, 'v')             "v" in a.get("x", "")
#   starts-with(@x, 'v')          a.get("x", "").startswith("v")
#   translate(@x, 'N', 'n')       a.get("x", "").replace("N", "n")
#   re:test(@x, 'r'[, 'i'])       re.compile(r[, re.I]).search(a.get("x", "")) -- lxml's EXSLT
#                                 regexp is Python's re with these flags (see _rx)
#   @x|@y as a string             _first(items, "x", "y")
#   not(.//h1)                    next(elem.iterdescendants("h1"), None) is None
#
# A predicate returns False (no match), True (match) or a callable ``check(elem) -> bool`` for
# the part that depends on the element itself (its tag, its descendants). It may only read the
# attributes listed for it in _SPECS: elements carrying none of them get the verdict of an
# element without attributes, computed once.

Attrs = dict[str, str]
Items = Sequence[tuple[str, str]]
Verdict = Any  # bool | Callable[[_Element], bool]
Predicate = Callable[[Attrs, Items], Verdict]


_REGEX_SYNTAX = frozenset("\\.^$*+?{}[]()")  # regex metacharacters but "|"


def _rx(pattern: str, flags: int = 0) -> Callable[[str], bool]:
    """Truth value of ``re.compile(pattern, flags).search(s)`` -- what lxml's re:test computes.

    A pattern made of one or two plain text alternatives ("a" or "a|b": no other metacharacter,
    no flag) matches iff one of them occurs in ``s``: tested with ``in``. Other patterns run as
    regexes, memoised per string (class strings recur all over a page and across pages)."""
    if not flags and _REGEX_SYNTAX.isdisjoint(pattern):
        alternatives = pattern.split("|")
        if len(alternatives) == 1:
            return lambda s: pattern in s
        if len(alternatives) == 2:
            first, second = alternatives
            return lambda s: first in s or second in s
    search = re.compile(pattern, flags).search
    table: dict[str, bool] = {}

    def test(s: str) -> bool:
        value = table.get(s)
        if value is None:
            if len(table) >= _CACHE_LIMIT:
                table.clear()
            value = table[s] = search(s) is not None
        return value

    return test


def _no_h1_inside(elem: _Element) -> bool:
    "not(.//h1)"
    return next(elem.iterdescendants("h1"), None) is None


def _not_ol_ul(elem: _Element) -> bool:
    "not(self::ol or self::ul)"
    return elem.tag not in ("ol", "ul")


def _spec_raw_tree_prune_0(lit: list[str]) -> Predicate:
    # [re:test(@id, r0) or re:test(@class, r1)][not(.//h1) or re:test(@id, r2) or re:test(@class, r3)]
    r0, r1, r2, r3 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        ident, cls = a.get("id", ""), a.get("class", "")
        if not (r0(ident) or r1(cls)):
            return False
        return True if (r2(ident) or r3(cls)) else _no_h1_inside

    return pred


def _spec_raw_tree_prune_1(lit: list[str]) -> Predicate:
    def pred(a: Attrs, items: Items) -> Verdict:
        return "elementor-share-buttons" in a.get("class", "")

    return pred


def _spec_remove_comments(lit: list[str]) -> Predicate:
    r0, r1 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        return r0(a.get("id", "")) or r1(a.get("class", ""))

    return pred


def _spec_remove_comments_and_lists(lit: list[str]) -> Predicate:
    # [re:test(@id, r0) or re:test(@class, r1)][not(self::ol or self::ul) or re:test(@id, r2) or re:test(@class, r3)]
    r0, r1, r2, r3 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        ident, cls = a.get("id", ""), a.get("class", "")
        if not (r0(ident) or r1(cls)):
            return False
        return True if (r2(ident) or r3(cls)) else _not_ol_ul

    return pred


def _spec_overall_discard_0(lit: list[str]) -> Predicate:
    r0, r1, r2 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        return (
            "data-lp-replacement-content" in a
            or "nav" in a.get("role", "").replace("N", "n")
            or "MostPopularStories" in a.get("data-component", "")
            or r0(_first(items, "id", "class"))
            or r1(a.get("id", ""))
            or r2(a.get("class", ""))
        )

    return pred


def _spec_overall_discard_1(lit: list[str]) -> Predicate:
    r0, r1, r2 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        style = a.get("style", "")
        return (
            a.get("class") == "comments-title"
            or _first(items, "id", "class").startswith("reply-")
            or r0(_first(items, "id", "style"))
            or "display:none" in style
            or "display: none" in style
            or r1(a.get("id", ""))
            or r2(a.get("class", ""))
            or a.get("aria-hidden") == "true"
        )

    return pred


def _spec_teaser_discard(lit: list[str]) -> Predicate:
    def pred(a: Attrs, items: Items) -> Verdict:
        return "teaser" in a.get("id", "").replace("T", "t") or "teaser" in a.get("class", "").replace(
            "T", "t"
        )

    return pred


def _spec_precision_discard_1(lit: list[str]) -> Predicate:
    r0, r1 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        first = _first(items, "id", "class")
        return r0(first) or r1(first) or "border" in a.get("style", "")

    return pred


def _spec_discard_image(lit: list[str]) -> Predicate:
    def pred(a: Attrs, items: Items) -> Verdict:
        return "caption" in a.get("id", "") or "caption" in a.get("class", "")

    return pred


def _spec_body_0(lit: list[str]) -> Predicate:
    r0, r1 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        cls, ident = a.get("class"), a.get("id")
        return (
            cls == "post"
            or cls == "entry"
            or a.get("itemprop") == "articleBody"
            or ident == "articleContent"
            or r0(ident or "")
            or r1(cls or "")
        )

    return pred


def _spec_body_2(lit: list[str]) -> Predicate:
    r0, r1, r2 = _rx(lit[0]), _rx(lit[1], re.IGNORECASE), _rx(lit[2])

    def pred(a: Attrs, items: Items) -> Verdict:
        cls, ident = a.get("class"), a.get("id")
        return (
            a.get("role") == "article"
            or ident == "article"
            or ident == "story"
            or cls in ("postarea", "art-postcontent", "text", "cell", "story")
            or r0(ident or "")
            or r1(cls or "")
            or r2(cls or "")
        )

    return pred


def _spec_body_3(lit: list[str]) -> Predicate:
    r0, r1 = (_rx(p) for p in lit)

    def pred(a: Attrs, items: Items) -> Verdict:
        cls, ident = a.get("class", ""), a.get("id", "")
        return (
            a.get("id") == "content"
            or a.get("class") == "content"
            or r0(ident)
            or r1(cls)
            # translate(x, 'CM', 'cm') maps both characters at once; 'c'/'m' are not sources
            or "main-content" in ident.replace("C", "c").replace("M", "m")
            or "main-content" in cls.replace("C", "c").replace("M", "m")
            or "page-content" in cls.replace("C", "c").replace("P", "p")
        )

    return pred


def _spec_body_4(lit: list[str]) -> Predicate:
    def pred(a: Attrs, items: Items) -> Verdict:
        return (
            a.get("class", "").startswith("main")
            or a.get("id", "").startswith("main")
            or a.get("role", "").startswith("main")
        )

    return pred


_BLOCKS = ("div", "item", "list", "p", "section", "span")
_CONTAINERS = ("article", "div", "main", "section")
_ID_CLASS = frozenset({"id", "class"})


class _Spec(NamedTuple):
    skeleton: str  # expected XPath source, regex literals cut out (see _skeleton)
    tags: tuple[str, ...] | None  # name tests; None: the XPath ``*`` (any element)
    mode: str  # how the node-set is formed, see _FastXPath.__call__
    factory: Callable[[list[str]], Predicate] | None  # regex literals -> predicate
    attrs: frozenset[str]  # every attribute the predicate reads
    fusable: bool = True  # verdict depends on attributes and tag only (not on other nodes)


_SPECS: dict[str, _Spec] = {
    "RAW_TREE_PRUNE_XPATH[0]": _Spec(
        ".//*[self::div or self::section or self::aside][ re:test(@id,'{0}') or re:test(@class,'{1}')]"
        "[ not(.//h1) or re:test(@id,'{2}') or re:test(@class,'{3}')]",
        ("div", "section", "aside"),
        "all",
        _spec_raw_tree_prune_0,
        _ID_CLASS,
        fusable=False,  # not(.//h1): depends on the descendants
    ),
    "RAW_TREE_PRUNE_XPATH[1]": _Spec(
        ".//*[self::div or self::section or self::aside][contains(@class,'elementor-share-buttons')]",
        ("div", "section", "aside"),
        "all",
        _spec_raw_tree_prune_1,
        frozenset({"class"}),
    ),
    "REMOVE_COMMENTS_XPATH[0]": _Spec(
        ".//*[self::div or self::list or self::section or self::details][ re:test(@id,'{0}') or re:test(@class,'{1}')]",
        ("div", "list", "section", "details"),
        "all",
        _spec_remove_comments,
        _ID_CLASS,
    ),
    "REMOVE_COMMENTS_AND_LISTS_XPATH[0]": _Spec(
        ".//*[self::div or self::list or self::section or self::details or self::ol or self::ul]"
        "[ re:test(@id,'{0}') or re:test(@class,'{1}')]"
        "[ not(self::ol or self::ul) or re:test(@id,'{2}') or re:test(@class,'{3}')]",
        ("div", "list", "section", "details", "ol", "ul"),
        "all",
        _spec_remove_comments_and_lists,
        _ID_CLASS,
    ),
    "OVERALL_DISCARD_XPATH[0]": _Spec(
        ".//*[self::div or self::item or self::list or self::p or self::section or self::span]"
        "[ @data-lp-replacement-content or contains(translate(@role,'N','n'),'nav') or "
        "contains(@data-component,'MostPopularStories') or re:test(@id|@class,'{0}') or "
        "re:test(@id,'{1}') or re:test(@class,'{2}')]",
        _BLOCKS,
        "all",
        _spec_overall_discard_0,
        frozenset({"data-lp-replacement-content", "role", "data-component", "id", "class"}),
    ),
    "OVERALL_DISCARD_XPATH[1]": _Spec(
        ".//*[@class='comments-title'or starts-with(@id|@class,'reply-') or re:test(@id|@style,'{0}') or "
        "contains(@style,'display:none') or contains(@style,'display: none') or re:test(@id,'{1}') or "
        "re:test(@class,'{2}') or @aria-hidden='true']",
        None,
        "all",
        _spec_overall_discard_1,
        frozenset({"class", "id", "style", "aria-hidden"}),
    ),
    "TEASER_DISCARD_XPATH[0]": _Spec(
        ".//*[self::div or self::item or self::list or self::p or self::section or self::span]"
        "[ contains(translate(@id,'T','t'),'teaser') or contains(translate(@class,'T','t'),'teaser')]",
        _BLOCKS,
        "all",
        _spec_teaser_discard,
        _ID_CLASS,
    ),
    "PRECISION_DISCARD_XPATH[0]": _Spec(".//header", ("header",), "tag", None, frozenset()),
    "PRECISION_DISCARD_XPATH[1]": _Spec(
        ".//*[self::div or self::item or self::list or self::p or self::section or self::span]"
        "[ re:test(@id|@class,'{0}') or re:test(@id|@class,'{1}') or contains(@style,'border')]",
        _BLOCKS,
        "all",
        _spec_precision_discard_1,
        frozenset({"id", "class", "style"}),
    ),
    "DISCARD_IMAGE_ELEMENTS[0]": _Spec(
        ".//*[self::div or self::item or self::list or self::p or self::section or self::span]"
        "[ contains(@id,'caption') or contains(@class,'caption')]",
        _BLOCKS,
        "all",
        _spec_discard_image,
        _ID_CLASS,
    ),
    "BODY_XPATH[0]": _Spec(
        ".//*[self::article or self::div or self::main or self::section][ @class='post'or @class='entry'or "
        "@itemprop='articleBody'or @id='articleContent'or re:test(@id,'{0}') or re:test(@class,'{1}') ][1]",
        _CONTAINERS,
        "first-per-parent",
        _spec_body_0,
        frozenset({"class", "id", "itemprop"}),
    ),
    "BODY_XPATH[1]": _Spec("(.//article)[1]", ("article",), "first-tag", None, frozenset()),
    "BODY_XPATH[2]": _Spec(
        "(.//*[self::article or self::div or self::main or self::section][ @role='article'or @id='article'or "
        "@id='story'or @class='postarea'or @class='art-postcontent'or @class='text'or @class='cell'or "
        "@class='story'or re:test(@id,'{0}') or re:test(@class,'{1}','i') or re:test(@class,'{2}') ])[1]",
        _CONTAINERS,
        "first",
        _spec_body_2,
        frozenset({"role", "id", "class"}),
    ),
    "BODY_XPATH[3]": _Spec(
        "(.//*[self::article or self::div or self::main or self::section][ @id='content'or @class='content'or "
        "re:test(@id,'{0}') or re:test(@class,'{1}') or contains(translate(@id,'CM','cm'),'main-content') or "
        "contains(translate(@class,'CM','cm'),'main-content') or contains(translate(@class,'CP','cp'),'page-content') ])[1]",
        _CONTAINERS,
        "first",
        _spec_body_3,
        _ID_CLASS,
    ),
    "BODY_XPATH[4]": _Spec(
        "(.//*[self::article or self::div or self::section][ starts-with(@class,'main') or starts-with(@id,'main') "
        "or starts-with(@role,'main')])[1]|(.//main)[1]",
        ("article", "div", "section", "main"),
        "body4",
        _spec_body_4,
        frozenset({"class", "id", "role"}),
    ),
}


class _FastXPath:
    """Drop-in for one of trafilatura's compiled ``lxml.etree.XPath`` objects.

    Original: libxml2 walks ``.//*`` (all descendants of the context element, in document order),
    applies the name tests and evaluates the predicate, calling back into Python for every
    ``re:test()`` (building smart strings and element proxies for its arguments). Replacement:
    ``iterdescendants`` with the same names (lxml's C tag matcher; for ``*``, ``Element`` =
    element nodes only, as in XPath) and the same predicate in Python on the element's
    attributes. The result is the same list of the same elements in the same order. A context
    that is not an element (e.g. an ElementTree), or XPath variables, go to the original object.
    """

    __slots__ = ("original", "name", "spec", "pred", "attrs", "empty", "_tags", "_mode")

    def __init__(self, original: Any, name: str, spec: _Spec, pred: Predicate | None):
        self.original = original
        self.name = name
        self.spec = spec
        self.pred = pred
        self.attrs = spec.attrs
        self._tags = spec.tags
        self._mode = spec.mode
        # verdict for an element carrying none of the attributes the predicate reads
        self.empty = pred({}, []) if pred is not None else False

    @property
    def path(self) -> str:
        return self.original.path

    def __str__(self) -> str:
        return str(self.original)

    def __repr__(self) -> str:
        return f"<_FastXPath {self.name}>"

    def test(self, elem: _Element) -> bool:
        "Whether ``elem`` passes the predicate (name tests not checked)."
        items = elem.items()
        if not items:
            value = self.empty
        else:
            a = dict(items)
            value = self.empty if self.attrs.isdisjoint(a) else self.pred(a, items)  # type: ignore[misc]
        return value is True or (value is not False and value(elem))

    def __call__(self, _etree_or_element: Any, **_variables: Any) -> Any:
        tree = _etree_or_element
        if _variables or not isinstance(tree, _Element) or not isinstance(tree.tag, str):
            return self.original(_etree_or_element, **_variables)
        mode = self._mode
        if mode == "all":
            return list(self._matches(tree))
        if mode == "tag":  # .//name
            return list(tree.iterdescendants(*self._tags))  # type: ignore[misc]
        if mode == "first-tag":  # (.//name)[1]
            first = next(tree.iterdescendants(*self._tags), None)  # type: ignore[misc]
            return [] if first is None else [first]
        if mode == "first":  # (.//*[...])[1]
            first = next(self._matches(tree), None)
            return [] if first is None else [first]
        if mode == "first-per-parent":
            # .//*[pred][1] = descendant-or-self::node()/child::*[pred][1]: the position applies
            # per parent, so the result is, per parent, its first child passing the predicate
            seen: set[Any] = set()
            out = []
            for elem in self._matches(tree):
                parent = elem.getparent()
                if parent not in seen:
                    seen.add(parent)
                    out.append(elem)
            return out
        # body4: (.//*[self::article|div|section][pred])[1] | (.//main)[1]; the union of the two
        # (at most one each, never the same node) is in document order
        out, found_block, found_main = [], False, False
        for elem in tree.iterdescendants(*self._tags):  # type: ignore[misc]
            if elem.tag == "main":
                if not found_main:
                    found_main = True
                    out.append(elem)
            elif not found_block and self.test(elem):
                found_block = True
                out.append(elem)
            if found_block and found_main:
                break
        return out

    def _matches(self, tree: _Element) -> Iterator[_Element]:
        tags, pred, attrs, empty = self._tags, self.pred, self.attrs, self.empty
        for elem in tree.iterdescendants(*tags) if tags is not None else tree.iterdescendants(Element):
            items = elem.items()
            if not items:
                value = empty
            else:
                a = dict(items)
                value = empty if attrs.isdisjoint(a) else pred(a, items)  # type: ignore[misc]
            if value is True or (value is not False and value(elem)):
                yield elem


class _Group:
    """The expressions of one ``prune_unwanted_nodes`` list, evaluated in one tree walk.

    Each member's list is exactly what its own walk (``_FastXPath._matches``) would return on
    the same, unmodified tree: same elements, same order."""

    __slots__ = ("members", "tags", "tagsets", "preds", "attrs", "member_attrs", "empties")

    def __init__(self, members: tuple[_FastXPath, ...]):
        self.members = members
        if any(m._tags is None for m in members):
            self.tags: tuple[str, ...] | None = None
        else:
            self.tags = tuple(sorted({t for m in members for t in m._tags}))  # type: ignore[union-attr]
        self.tagsets = tuple(None if m._tags is None else frozenset(m._tags) for m in members)
        self.preds = tuple(m.pred for m in members)
        self.member_attrs = tuple(m.attrs for m in members)
        self.attrs = frozenset().union(*self.member_attrs)
        self.empties = tuple(m.empty for m in members)

    def run(self, tree: _Element) -> list[list[_Element]]:
        tagsets, preds, member_attrs, empties = self.tagsets, self.preds, self.member_attrs, self.empties
        outs: list[list[_Element]] = [[] for _ in self.members]
        indexes = range(len(self.members))
        tags, attrs = self.tags, self.attrs
        only_attrs = not any(v is not False for v in empties)  # no member matches attribute-less elements
        for elem in tree.iterdescendants(*tags) if tags is not None else tree.iterdescendants(Element):
            items = elem.items()
            if items:
                a = dict(items)
                if only_attrs and attrs.isdisjoint(a):
                    continue
            elif only_attrs:
                continue
            else:
                a = {}
            tag = elem.tag
            for k in indexes:
                tagset = tagsets[k]
                if tagset is not None and tag not in tagset:
                    continue
                value = empties[k] if member_attrs[k].isdisjoint(a) else preds[k](a, items)  # type: ignore[misc]
                if value is True or (value is not False and value(elem)):
                    outs[k].append(elem)
        return outs


_groups: dict[tuple[int, ...], _Group] = {}


def _group_for(nodelist: Any) -> _Group | None:
    """A _Group for a list made of _FastXPath "all"-mode expressions only, where only the first
    one may look beyond attributes and tag (its verdicts are taken before any deletion)."""
    if type(nodelist) is not list or not nodelist:
        return None
    for k, expression in enumerate(nodelist):
        if type(expression) is not _FastXPath or expression._mode != "all":
            return None
        if k and not expression.spec.fusable:
            return None
    key = tuple(map(id, nodelist))
    group = _groups.get(key)
    if group is None or any(a is not b for a, b in zip(group.members, nodelist, strict=True)):
        group = _groups[key] = _Group(tuple(nodelist))
    return group


def _still_attached(found: list[_Element], deleted: set[_Element]) -> list[_Element]:
    """The elements of ``found`` (in order) with no ancestor-or-self in ``deleted``, i.e. the
    ones still in the tree once the ``deleted`` subtrees have been removed."""
    memo: dict[_Element, bool] = {}
    kept = []
    for elem in found:
        path = []
        node: _Element | None = elem
        gone = False
        while node is not None:
            known = memo.get(node)
            if known is not None:
                gone = known
                break
            if node in deleted:
                gone = True
                break
            path.append(node)
            node = node.getparent()
        for visited in path:
            memo[visited] = gone
        if not gone:
            kept.append(elem)
    return kept


# ---------------------------------------------------------------------------------------------
# prune_unwanted_nodes
# ---------------------------------------------------------------------------------------------


def _make_prune_unwanted_nodes(delete_element: Callable[..., Any]) -> Callable[..., Any]:
    def prune_unwanted_nodes(tree: Any, nodelist: list[Any], with_backup: bool = False) -> Any:
        """Replacement for ``trafilatura.htmlprocessing.prune_unwanted_nodes``.

        Original::

            if not with_backup:
                for expression in nodelist:
                    for subtree in expression(tree):
                        delete_element(subtree)
                return tree
            matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))
            outer = [elem for elem in matches if not any(a in matches for a in elem.iterancestors())]
            ... (text-length guard, then delete_element(elem) for elem in outer)

        Changes, both with the same deletions in the same order:

        1. When the list is made of our _FastXPath expressions, they are all evaluated in one
           tree walk (_Group) instead of one walk each. With backup they were evaluated on the
           same tree anyway. Without backup, expression k ran on the tree left by the deletions
           of expressions < k: deletions only detach subtrees (delete_element moves tail text,
           never touches attributes or tags), and the verdicts of expressions k > 0 depend on
           attributes and tag only (``_Spec.fusable``), so its result on the pruned tree is its
           result on the unpruned tree minus the elements inside a deleted subtree
           (_still_attached), in the same document order.
        2. ``outer``: the original walked each match's whole ancestor chain, creating a fresh
           proxy per ancestor per match. Here the walk is memoised: ``inside(x)`` = x or one of
           its ancestors is a match, stored for every element met (the memo keeps their proxies
           alive, so getparent() returns the same objects and identity-based membership holds).
           ``e`` is outer iff not inside(parent of e): the original condition, in the same order.
        """
        group = _group_for(nodelist) if isinstance(tree, _Element) and isinstance(tree.tag, str) else None
        if not with_backup:
            if group is None:
                for expression in nodelist:
                    for subtree in expression(tree):
                        delete_element(subtree)  # the tail text is preserved
                return tree
            deleted: set[Any] = set()
            for k, found in enumerate(group.run(tree)):
                if k and deleted:
                    found = _still_attached(found, deleted)
                for subtree in found:
                    delete_element(subtree)  # the tail text is preserved
                deleted.update(found)
            return tree
        # guard: prune nothing if it would remove too much text, the tree keeps its elements
        if group is None:
            matches = dict.fromkeys(elem for expression in nodelist for elem in expression(tree))
        else:
            matches = dict.fromkeys(elem for found in group.run(tree) for elem in found)
        memo: dict[Any, bool] = {}

        def inside(node: Any) -> bool:
            path = []
            result = False
            while node is not None:
                known = memo.get(node)
                if known is not None:
                    result = known
                    break
                if node in matches:
                    result = True
                    break
                path.append(node)
                node = node.getparent()
            for visited in path:
                memo[visited] = result
            return result

        outer = [elem for elem in matches if not inside(elem.getparent())]
        old_len = len(tree.text_content())
        # todo: adjust for recall and precision settings
        if old_len - sum(len(elem.text_content()) for elem in outer) > old_len / 7:
            for elem in outer:
                delete_element(elem)
        return tree

    return prune_unwanted_nodes


# ---------------------------------------------------------------------------------------------
# element class lookup of trafilatura's HTML parser
# ---------------------------------------------------------------------------------------------


def _c_class_lookup() -> Any:
    """An element class lookup answering exactly what ``lxml.html.HtmlElementClassLookup`` does
    for the trees trafilatura parses, without calling into Python.

    Original: lxml.html's parser resolves the Python class of every element proxy lxml creates
    (each element met by iter(), find(), xpath(), getparent()...) through
    ``HtmlElementClassLookup.lookup``, a Python method: ``element`` -> ``classes.get(name.lower(),
    HtmlElement)`` (classes: form, input, label, select, textarea), comment -> HtmlComment,
    PI -> HtmlProcessingInstruction, entity -> HtmlEntity. That method call is a large share of
    the cost of walking a tree from Python.
    Replacement: lxml's C-level ``ElementNamespaceClassLookup``: the same classes registered for
    no-namespace names -- under every upper/lower-case spelling, which is what ``name.lower()``
    matched -- and a default lookup giving HtmlElement / HtmlComment / HtmlProcessingInstruction /
    HtmlEntity for everything else. Identical classes for every node of a tree from an HTML
    parser (which creates no namespaced nodes: libxml2's HTML parser has no namespace support).
    """
    from itertools import product

    from lxml.etree import ElementDefaultClassLookup, ElementNamespaceClassLookup
    from lxml.html import (
        HtmlComment,
        HtmlElement,
        HtmlElementClassLookup,
        HtmlEntity,
        HtmlProcessingInstruction,
    )

    lookup = ElementNamespaceClassLookup(
        ElementDefaultClassLookup(
            element=HtmlElement, comment=HtmlComment, pi=HtmlProcessingInstruction, entity=HtmlEntity
        )
    )
    registry = lookup.get_namespace(None)
    for name, cls in HtmlElementClassLookup()._element_classes.items():
        for spelling in product(*((c.lower(), c.upper()) for c in name)):
            registry["".join(spelling)] = cls
    return lookup


# ---------------------------------------------------------------------------------------------
# core._extract_and_compare
# ---------------------------------------------------------------------------------------------


def _make_extract_and_compare(core: Any) -> Callable[..., Any]:
    sequence_code = core.trafilatura_sequence.__code__
    bare_code = core.bare_extraction.__code__

    def _extract_and_compare(
        cleaned_tree: Any, cleaned_tree_backup: Any, tree: Any, options: Any
    ) -> tuple[_Element, str]:
        """Replacement for ``trafilatura.core._extract_and_compare``.

        Original: ``extract_content(cleaned_tree)``, then, unless fast, ``compare_extraction(
        cleaned_tree_backup, copy(tree), ...)``: the raw tree is copied because readability and
        the precision pre-pruning mutate their input. The copy is skipped when nobody can see
        the raw tree afterwards: focus "precision" (never set by _recall_retry, which runs in
        recall mode), called by ``trafilatura_sequence`` itself called by ``bare_extraction``
        (checked on the call stack). There ``tree`` is bare_extraction's own tree (a fresh parse,
        or a copy of the caller's), unused once trafilatura_sequence returns; and in precision
        mode trafilatura_sequence does not read it after this call (the baseline rescue needs
        focus != precision, the recall escalation focus == balanced). compare_extraction
        returns readability's output re-parsed from a string, or justext's, never nodes of the
        raw tree. So the copy only served to protect a tree that is then dropped; readability
        sees the same elements either way (a copy of a root element has the same subtree).
        """
        postbody, temp_text = core.extract_content(cleaned_tree, options)
        if not options.fast:
            raw = tree
            if options.focus != "precision":
                raw = core.copy(tree)
            else:
                caller = sys._getframe(1)
                outer = caller.f_back
                if caller.f_code is not sequence_code or outer is None or outer.f_code is not bare_code:
                    raw = core.copy(tree)
            postbody, temp_text = core.compare_extraction(
                cleaned_tree_backup, raw, postbody, temp_text, options
            )
        return postbody, temp_text

    return _extract_and_compare


# ---------------------------------------------------------------------------------------------
# utils.repair_faulty_html
# ---------------------------------------------------------------------------------------------

# the characters of trafilatura.utils.INVALID_XML_CHARS ([\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff])
_CONTROL_BYTES = bytes([*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])
_UFFFE, _UFFFF = "\ufffe".encode(), "\uffff".encode()


def _may_hold_invalid_xml_chars(text: str) -> bool:
    """False only if ``text`` holds none of INVALID_XML_CHARS' characters. In UTF-8 the control
    characters are single bytes < 0x80, which never occur inside the encoding of another
    character, and U+FFFE/U+FFFF are the only characters encoded EF BF BE / EF BF BF (a lead byte
    always starts a character), so byte tests on the encoding are exact. Strings that cannot be
    encoded (lone surrogates) answer True and take the regex path. Much cheaper than the regex
    scan, which tests a character class at every position of a ~100 kB page."""
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return len(data.translate(None, _CONTROL_BYTES)) != len(data) or _UFFFE in data or _UFFFF in data


def _make_repair_faulty_html(utils: Any) -> Callable[[str, str], str]:
    def repair_faulty_html(htmlstring: str, beginning: str) -> str:
        """Replacement for ``trafilatura.utils.repair_faulty_html``, identical but for its first
        step: ``INVALID_XML_CHARS.sub("", htmlstring)`` is skipped when the string holds none of
        those characters (the substitution would return an equal string). The rest is the
        original's code."""
        if _may_hold_invalid_xml_chars(htmlstring):
            htmlstring = utils.INVALID_XML_CHARS.sub("", htmlstring)
        # libxml2/LXML issue: https://bugs.launchpad.net/lxml/+bug/1955915
        if "doctype" in beginning:
            firstline, _, rest = htmlstring.partition("\n")
            htmlstring = utils.DOCTYPE_TAG.sub("", firstline, count=1) + "\n" + rest
        # self-closing <html/> in the first lines
        for line in htmlstring[:4096].splitlines()[:4]:
            if "<html" in line and line.endswith("/>"):
                htmlstring = utils.FAULTY_HTML.sub(r"\1>", htmlstring, count=1)
                break
        return htmlstring

    return repair_faulty_html


# ---------------------------------------------------------------------------------------------
# fingerprints of the trafilatura functions replaced, or whose code the replacements rely on
# ---------------------------------------------------------------------------------------------


def _code_fingerprint(code: Any) -> str:
    "A digest of a code object's bytecode, constants (nested code included) and names."
    import hashlib

    def const(k: Any) -> Any:
        if hasattr(k, "co_code"):
            return describe(k)
        if isinstance(k, frozenset):  # iteration order varies with string hashing
            return ("frozenset", sorted(map(repr, k)))
        return repr(k)

    def describe(c: Any) -> Any:
        return (c.co_code.hex(), tuple(map(const, c.co_consts)), c.co_names, c.co_varnames, c.co_freevars)

    return hashlib.sha256(repr(describe(code)).encode()).hexdigest()[:16]


# "module.function" -> fingerprint of its __code__ in trafilatura 2.3.1 (CPython 3.11 bytecode)
_FINGERPRINTS = {
    "htmlprocessing.prune_unwanted_nodes": "a7f0f5c0e7030195",
    "core._extract_and_compare": "41468ef36c87ba05",
    "core.trafilatura_sequence": "3ae52dae72d0dcb8",
    "core.bare_extraction": "2f60c7a5941844ca",
    "external.compare_extraction": "1ab87bae030c6e9b",
    "external.try_readability": "91b23b190f60a5b8",
    "utils.repair_faulty_html": "0b939b4c75d553f7",
}


def _unchanged(*names: str) -> bool:
    """Whether these trafilatura functions are the ones the replacements were written against;
    logs a warning otherwise (the replacement depending on them is then not installed)."""
    import importlib

    for name in names:
        module_name, attr = name.split(".")
        function = getattr(importlib.import_module(f"trafilatura.{module_name}"), attr, None)
        code = getattr(function, "__code__", None)
        if code is None or _code_fingerprint(code) != _FINGERPRINTS[name]:
            LOGGER.warning("trafilatura.%s differs from the expected code: not accelerated", name)
            return False
    return True


# ---------------------------------------------------------------------------------------------
# install / uninstall
# ---------------------------------------------------------------------------------------------

# restore actions, in install order
_installed: list[Callable[[], None]] = []


def _set(owner: Any, key: Any, value: Any) -> None:
    if isinstance(owner, list):
        previous = owner[key]
        owner[key] = value

        def restore() -> None:
            owner[key] = previous

    else:
        previous = getattr(owner, key)
        setattr(owner, key, value)

        def restore() -> None:
            setattr(owner, key, previous)

    _installed.append(restore)


def is_installed() -> bool:
    return bool(_installed)


def install() -> bool:
    """Install the replacements; returns whether they are active. No-op (with a warning) on a
    trafilatura version other than 2.3.1. Idempotent."""
    if _installed:
        return True
    import trafilatura
    from lxml.html import HtmlElementClassLookup
    from trafilatura import core, external, htmlprocessing, main_extractor, metadata, utils, xpaths

    if trafilatura.__version__ != SUPPORTED_VERSION:
        LOGGER.warning(
            "trafilatura %s is not %s: accelerations not installed",
            trafilatura.__version__,
            SUPPORTED_VERSION,
        )
        return False

    # 1. XPath objects, replaced inside the shared lists every module iterates
    for name, spec in _SPECS.items():
        list_name, index = name[:-1].split("[")
        owner = getattr(xpaths, list_name)
        original = owner[int(index)]
        skeleton, literals = _skeleton(getattr(original, "path", ""))
        if type(original) is not XPath or skeleton != spec.skeleton:
            LOGGER.warning("trafilatura %s differs from the expected expression: not accelerated", name)
            continue
        pred = spec.factory(literals) if spec.factory is not None else None
        _set(owner, int(index), _FastXPath(original, name, spec, pred))

    # 2. prune_unwanted_nodes, in every module that imported it by name
    if _unchanged("htmlprocessing.prune_unwanted_nodes"):
        original_prune = htmlprocessing.prune_unwanted_nodes
        fast_prune = _make_prune_unwanted_nodes(htmlprocessing.delete_element)
        fast_prune.__wrapped__ = original_prune  # type: ignore[attr-defined]
        for module in (htmlprocessing, core, main_extractor, external, metadata):
            if getattr(module, "prune_unwanted_nodes", None) is original_prune:
                _set(module, "prune_unwanted_nodes", fast_prune)

    # 3. the raw-tree copy for the external comparison, where nothing can see the raw tree later
    if _unchanged(
        "core._extract_and_compare",
        "core.trafilatura_sequence",
        "core.bare_extraction",
        "external.compare_extraction",
        "external.try_readability",
    ):
        extract_and_compare = _make_extract_and_compare(core)
        extract_and_compare.__wrapped__ = core._extract_and_compare  # type: ignore[attr-defined]
        _set(core, "_extract_and_compare", extract_and_compare)

    # 4. the invalid-character scan of the page before parsing
    if _unchanged("utils.repair_faulty_html"):
        repair_faulty_html = _make_repair_faulty_html(utils)
        repair_faulty_html.__wrapped__ = utils.repair_faulty_html  # type: ignore[attr-defined]
        _set(utils, "repair_faulty_html", repair_faulty_html)

    # 5. C-level element class lookup for trafilatura's parser (restored with a fresh default
    # lookup, which is what lxml.html.HTMLParser() installs)
    try:
        lookup = _c_class_lookup()
    except (AttributeError, TypeError) as err:  # lxml internals moved: keep the Python lookup
        LOGGER.warning("lxml.html class lookup not reproducible (%s): not accelerated", err)
    else:
        parser = utils.HTML_PARSER
        parser.set_element_class_lookup(lookup)
        _installed.append(lambda: parser.set_element_class_lookup(HtmlElementClassLookup()))
    return True


def uninstall() -> None:
    """Restore every replaced internal, in reverse order."""
    _groups.clear()
    while _installed:
        _installed.pop()()
