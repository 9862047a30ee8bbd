"""``decontaminate``: drop (or mark) documents that share an n-gram with an evaluation set.

The 13-gram overlap test of GPT-3 (appendix C) and of datatrove's ``NGramsDecontFilter``: a document
is contaminated when some run of ``ngram`` consecutive words (default 13) also occurs in an example of
an eval set. Both sides are normalized the same way, character by character (``normalize_words``):

1. a character in the Unicode categories P* (punctuation), S* (symbols), Z* (separators) or Cc
   (controls; so all white space) becomes a space;
2. any other character becomes its lowercase (``str.lower`` of that character alone; the one
   character whose lowercase is two, "İ", becomes "i"), and final "ς" becomes "σ" so that "ΟΔΟΣ" and
   "οδος" agree; letters, digits, marks and format characters stay;
3. words are the runs of characters between spaces: punctuation and white space of any kind and length
   only separate words. ``"Don't  STOP-me!"`` is ``don t stop me``.

Unlike datatrove, numbers, diacritics and Unicode forms are not normalized and there is no
language-specific word tokenizer (a script written without spaces gives long "words").

An eval example (one string) with fewer than ``ngram`` words is one shorter n-gram, all of it, so a
short question is still caught when it appears verbatim; examples with fewer than ``min_words`` words
(default 8) are ignored, since a one-word answer like "Paris" would flag every page that mentions
Paris. N-grams never span two examples (a question and its answer are separate examples).

Eval sets (``eval_sets``, file paths; a set is named by its file name without ``.gz`` and ``.jsonl``
or ``.txt``): in ``.jsonl`` / ``.jsonl.gz`` files every string under each key of ``fields`` that a
record has is an example (a list of strings, e.g. ``choices``, gives one example per string); in
``.txt`` / ``.txt.gz`` files every line is one. A file that is missing, not UTF-8, not JSON Lines, or
that yields no example of ``min_words`` words is one ``ValueError`` naming the file, raised when the
step sets up.

``mode: drop`` (default) sets ``drop_reason`` to ``contaminated`` and ``drop_detail`` (the ledger's
``detail``) to ``"<set>: <the shared n-gram, normalized>"``: the first match in the document (smallest
start; there, the longest n-gram; of equal n-grams, the first set listed). ``mode: mark`` keeps the row
and adds ``contaminated`` (bool) and ``contamination`` (the same detail; null when clean); rows an
earlier step dropped get nulls. Counters: ``contaminated`` and ``contaminated_<set>`` (documents).

How it is fast and exact: a word hashes to 64 bits (a polynomial in per-character random values), an
n-gram to a polynomial in its word hashes, all modulo 2**64 and all windows of a document at once from
segment and prefix sums in numpy. A document is probed with its windows of the shortest n-gram length
``m`` against the hashes of the first ``m`` words of every eval n-gram (a bit array, then a sorted
array); only where such a prefix occurs are the n-grams of every length looked up, and a hit counts
only if the words themselves are equal, so a hash collision can never drop a document. A 5 KB page
takes about 0.15 ms whether the eval sets hold three thousand n-grams or a few hundred thousand.

Where the index is built: in ``setup()``, once per Python worker, lazily on its first batch. The
runner builds steps on the executors from the pipeline spec, so nothing large is pickled or broadcast;
the index (a few bytes per eval n-gram plus the vocabulary) is cached at module level under the files'
paths, modification times and sizes and the parameters, so more pipelines in the same process (a
reused Spark worker, tests) do not rebuild it; a worker also builds two per-code-point tables (17 MB,
about a second) once. On a cluster every executor must be able to read the eval files at the given
path (a shared file system); relative paths resolve against the worker's working directory, so prefer
absolute paths there. Each file's blake2b digest is logged with the set's size.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import sys
import threading
import unicodedata
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator, model_validator

from operators.base import Params, RowStep, TaskContext, alive, update_batch

log = logging.getLogger(__name__)

DEFAULT_FIELDS = ("text", "question", "prompt", "query", "input", "context", "passage", "answer", "choices")
_SUFFIXES = (".jsonl", ".txt")

# --------------------------------------------------------------------------------------------------
# Normalization: punctuation/symbols/separators/controls to spaces, lowercase, split on spaces

_lut: np.ndarray | None = None  # code point -> normalized code point (32 for a separator)
_val: np.ndarray | None = None  # code point -> random uint64 of its normalized form (0 for a separator)
_lock = threading.Lock()


def _tables() -> tuple[np.ndarray, np.ndarray]:
    """The two per-code-point tables (17 MB), built once per process (~1 s)."""
    global _lut, _val
    if _val is None:
        with _lock:
            if _val is None:
                lut = np.arange(sys.maxunicode + 1, dtype=np.uint32)
                for cp in range(sys.maxunicode + 1):
                    ch = chr(cp)
                    cat = unicodedata.category(ch)
                    if cat[0] in "PSZ" or cat == "Cc":
                        lut[cp] = 32
                    else:
                        low = ch.lower()  # one character, except U+0130 "İ" -> "i" + U+0307
                        lut[cp] = ord(low[0])
                lut[0x3C2] = 0x3C3  # final sigma: "ΟΔΟΣ".lower() and "οδος" must agree
                rand = np.random.default_rng(0x5EED).integers(1, 2**64, size=len(lut), dtype=np.uint64)
                rand[32] = 0
                _lut, _val = lut, rand[lut]
    return _lut, _val


def _raw(text: str) -> np.ndarray:
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def normalize_words(text: str) -> list[str]:
    """The words of ``text`` as both sides of the overlap test see them (see the module docstring)."""
    return _tables()[0].take(_raw(text)).tobytes().decode("utf-32-le", "surrogatepass").split()


# --------------------------------------------------------------------------------------------------
# Hashing, all modulo 2**64 with numpy's wrapping uint64 arithmetic. A word hashes to a polynomial in
# the random values of its normalized characters (base Q) passed through a mixer, an n-gram to a
# polynomial in its word hashes (base P). Segment sums and prefix sums give every word and every window
# of a text in a few vectorized passes. Equal hashes are only candidates: a match is confirmed on the
# words themselves, so a collision costs time, never a document.

_MASK = 2**64 - 1
_P = 0x9E3779B97F4A7C15  # odd, hence invertible modulo 2**64
_Q = 0xC2B2AE3D27D4EB4F
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_BIT = np.array([1 << i for i in range(8)], dtype=np.uint8)
_powers_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _powers(base: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """base**i and base**-i (mod 2**64) for i < n (at least); grown by doubling."""
    cached = _powers_cache.get(base)
    if cached is None or len(cached[0]) < n:
        size = max(n, 2 * len(cached[0]) if cached else 0, 4096)
        p = np.full(size, base, dtype=np.uint64)
        q = np.full(size, pow(base, -1, 2**64), dtype=np.uint64)
        p[0] = q[0] = 1
        cached = _powers_cache[base] = (np.cumprod(p), np.cumprod(q))
    return cached


def _prefix(values: np.ndarray) -> np.ndarray:
    """``h[i]`` = hash of ``values[:i]``, so the window [s, s+k) hashes to h[s+k] - h[s] * P**k."""
    n = len(values)
    pw, ipw = _powers(_P, n + 1)
    h = np.zeros(n + 1, dtype=np.uint64)
    h[1:] = np.cumsum(values * ipw[:n]) * pw[:n]  # sum_{j<=e} v_j P**(e-j) = P**e * sum_{j<=e} v_j P**-j
    return h


def _windows(h: np.ndarray, k: int, starts: np.ndarray | None = None) -> np.ndarray:
    """Hashes of the k-word windows at ``starts`` (default: every start) from prefix hashes ``h``."""
    pk = np.uint64(pow(_P, k, 2**64))
    if starts is None:
        return h[k:] - h[:len(h) - k] * pk
    return h[starts + k] - h[starts] * pk


#: texts are hashed in pieces of about this many characters (cut at white space), to bound memory
_PIECE = 1 << 18


def _word_hashes(text: str) -> np.ndarray:
    """The hash of every word of ``text``, in order (the words ``normalize_words`` gives)."""
    if len(text) <= _PIECE:
        return _piece_hashes(text)
    # a word never spans white space and its hash does not depend on where it is: cut there
    pieces, a = [], 0
    while a < len(text):
        b = a + _PIECE
        if b < len(text):
            cut = max(text.rfind(" ", a, b), text.rfind("\n", a, b))
            if cut <= a:
                cut = min((i for i in (text.find(" ", b), text.find("\n", b)) if i != -1), default=len(text))
            b = cut + 1
        pieces.append(_piece_hashes(text[a:b]))
        a = b
    return np.concatenate(pieces)


def _piece_hashes(text: str) -> np.ndarray:
    vals = _tables()[1].take(_raw(text))
    n = len(vals)
    inword = np.empty(n + 1, dtype=bool)
    inword[0] = False
    np.not_equal(vals, 0, out=inword[1:])
    starts = np.flatnonzero(inword[1:] > inword[:-1])
    if not len(starts):
        return np.zeros(0, np.uint64)
    pw, ipw = _powers(_Q, n + 1)
    # sum over a word (separators are 0) of v_i Q**i, shifted to the word's start: Q**-start
    wh = np.add.reduceat(vals * pw[:n], starts) * ipw[starts]
    wh ^= wh >> np.uint64(30)  # splitmix64's finalizer
    wh *= _M1
    wh ^= wh >> np.uint64(27)
    wh *= _M2
    wh ^= wh >> np.uint64(31)
    return wh


def _bits_for(hashes: np.ndarray) -> tuple[np.ndarray, int]:
    """A bit per hash prefix (about 64 bits per hash, 2**20..2**28): a window whose bit is 0 is no n-gram."""
    log2 = min(max(int(len(hashes) * 64).bit_length(), 20), 28)
    bits = np.zeros(2 ** log2 // 8, dtype=np.uint8)
    top = hashes >> np.uint64(64 - log2)
    np.bitwise_or.at(bits, top >> np.uint64(3), _BIT[top & np.uint64(7)])
    return bits, 64 - log2


@dataclass
class EvalIndex:
    """The n-grams of some eval sets, probed by hash and confirmed word by word.

    A document is probed with the windows of ``m`` words, ``m`` the shortest n-gram length, against the
    hashes of the first ``m`` words of every n-gram (a bit array, then the sorted hashes); only where
    that prefix occurs are the full n-grams of every length looked up and compared word by word.
    """

    names: list[str]
    words: list[str] = field(default_factory=lambda: [""])  # id -> word (id 0 unused)
    flat: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))  # example word ids, back to back
    #: every n-gram, sorted by hash and then by position (= set order): hash, start in ``flat``, length, set
    hashes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))
    starts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    lengths: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    sets: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    ks: list[int] = field(default_factory=list)  # the n-gram lengths present, longest first
    m: int = 0  # probe length: the shortest n-gram
    probes: np.ndarray = field(default_factory=lambda: np.zeros(0, np.uint64))  # sorted distinct prefix hashes
    bits: np.ndarray = field(default_factory=lambda: np.zeros(1, np.uint8))
    shift: int = 64
    digests: dict[str, str] = field(default_factory=dict)  # set -> blake2b of the file's bytes
    examples: dict[str, int] = field(default_factory=dict)  # set -> examples used
    ngrams: dict[str, int] = field(default_factory=dict)  # set -> n-grams (with repeats)

    def finish(self, word_hashes: np.ndarray, starts: np.ndarray, lengths: np.ndarray, sets: np.ndarray) -> None:
        """Index the n-grams at ``starts`` (positions in ``flat``, whose words hash to ``word_hashes``)."""
        h = _prefix(word_hashes)
        full = np.empty(len(starts), dtype=np.uint64)
        for k in np.unique(lengths).tolist():
            sel = lengths == k
            full[sel] = _windows(h, k, starts[sel])
        order = np.lexsort((starts, full))
        self.hashes, self.starts = full[order], starts[order]
        self.lengths, self.sets = lengths[order].astype(np.int32), sets[order].astype(np.int32)
        self.ks = sorted(np.unique(lengths).tolist(), reverse=True)
        self.m = self.ks[-1]
        self.probes = np.unique(_windows(h, self.m, starts))
        self.bits, self.shift = _bits_for(self.probes)

    def match(self, text: str) -> tuple[str, str] | None:
        """(set name, n-gram text) of the first shared n-gram in document order, or None.

        First means the smallest start; at one start, the longest n-gram; among equal n-grams, the
        first set.
        """
        wh = _word_hashes(text)
        n = len(wh)
        if n < self.m:
            return None
        h = _prefix(wh)
        probe = _windows(h, self.m)
        top = probe >> np.uint64(self.shift)
        cand = np.flatnonzero(self.bits[top >> np.uint64(3)] & _BIT[top & np.uint64(7)])
        if not cand.size:
            return None
        at = np.minimum(np.searchsorted(self.probes, probe[cand]), len(self.probes) - 1)
        cand = cand[self.probes[at] == probe[cand]]
        if not cand.size:
            return None
        words = normalize_words(text)
        for s in cand.tolist():
            for k in self.ks:
                if s + k > n:
                    continue
                hk = (int(h[s + k]) - int(h[s]) * pow(_P, k, 2**64)) & _MASK
                j = int(np.searchsorted(self.hashes, np.uint64(hk)))
                while j < len(self.hashes) and int(self.hashes[j]) == hk:
                    p = int(self.starts[j])
                    ids = self.flat[p:p + k].tolist()
                    if self.lengths[j] == k and words[s:s + k] == [self.words[w] for w in ids]:
                        return self.names[int(self.sets[j])], " ".join(self.words[w] for w in ids)
                    j += 1
        return None


# --------------------------------------------------------------------------------------------------
# Reading eval sets


def set_name(path: str) -> str:
    """``evals/mmlu.test.jsonl.gz`` -> ``mmlu.test``."""
    name = os.path.basename(path)
    name = name.removesuffix(".gz")
    for suffix in _SUFFIXES:
        name = name.removesuffix(suffix)
    return name


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def read_examples(path: str, fields: tuple[str, ...]) -> tuple[list[str], str]:
    """The example strings of one eval file and the blake2b digest of its bytes; ValueError if unusable."""
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise ValueError(f"decontaminate: cannot read eval set {path}: {e.strerror or e}") from None
    digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
    base = path.removesuffix(".gz")
    if not base.endswith(_SUFFIXES):
        raise ValueError(f"decontaminate: eval set {path}: expected a .jsonl or .txt file (optionally .gz)")
    try:
        data = gzip.decompress(raw) if path.endswith(".gz") else raw
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ValueError(f"decontaminate: eval set {path}: cannot decode ({e})") from None
    if base.endswith(".txt"):
        return text.splitlines(), digest
    examples: list[str] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError(f"decontaminate: eval set {path}, line {lineno}: not valid JSON ({e})") from None
        if not isinstance(record, dict):
            raise ValueError(f"decontaminate: eval set {path}, line {lineno}: expected a JSON object")
        for key in fields:
            examples += _strings(record.get(key))
    return examples, digest


def build_index(paths: list[str], fields: tuple[str, ...], ngram: int, min_words: int) -> EvalIndex:
    index = EvalIndex(names=[set_name(p) for p in paths])
    vocab: dict[str, int] = {}
    words = index.words
    chunks: list[list[int]] = []
    used_texts: list[str] = []
    spans: list[tuple[int, int, int]] = []  # (set, offset in flat, length) per example used
    offset = 0
    for set_index, path in enumerate(paths):
        name = index.names[set_index]
        examples, digest = read_examples(path, fields)
        index.digests[name] = digest
        used = 0
        for example in examples:
            ex_words = normalize_words(example)
            if len(ex_words) < min_words:
                continue
            ids = []
            for w in ex_words:
                i = vocab.get(w)
                if i is None:
                    i = vocab[w] = len(words)
                    words.append(w)
                ids.append(i)
            chunks.append(ids)
            used_texts.append(example)
            spans.append((set_index, offset, len(ids)))
            offset += len(ids)
            used += 1
        if not used:
            what = f"fields {list(fields)}" if path.removesuffix(".gz").endswith(".jsonl") else "lines"
            raise ValueError(f"decontaminate: eval set {path} has no example of at least {min_words} words "
                             f"in its {what}")
        index.examples[name] = used
    index.flat = np.fromiter((i for ids in chunks for i in ids), dtype=np.int32, count=offset)
    # the examples' word hashes, exactly as a document's (a newline separates examples' words)
    word_hashes = _word_hashes("\n".join(used_texts))
    assert len(word_hashes) == offset
    span = np.array(spans, dtype=np.int64)
    sets, offs, lens = span[:, 0], span[:, 1], span[:, 2]
    long_ = lens >= ngram
    count = lens[long_] - ngram + 1  # every window of every long example; short examples whole
    within = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)
    starts = np.concatenate([np.repeat(offs[long_], count) + within, offs[~long_]])
    lengths = np.concatenate([np.full(int(count.sum()), ngram), lens[~long_]])
    owners = np.concatenate([np.repeat(sets[long_], count), sets[~long_]])
    index.finish(word_hashes, starts, lengths, owners)
    for i, name in enumerate(index.names):
        index.ngrams[name] = int((index.sets == i).sum())
    return index


#: built indexes, keyed by the files (path, mtime, size) and the parameters; a few at most
_INDEXES: dict[tuple, EvalIndex] = {}
_MAX_INDEXES = 4


def load_index(paths: list[str], fields: tuple[str, ...], ngram: int, min_words: int) -> EvalIndex:
    """The index of these eval sets, from the module cache when the files have not changed."""
    full = [os.path.abspath(p) for p in paths]
    stamp = []
    for p in full:
        try:
            st = os.stat(p)
        except OSError as e:
            raise ValueError(f"decontaminate: cannot read eval set {p}: {e.strerror or e}") from None
        stamp.append((p, st.st_mtime_ns, st.st_size))
    key = (tuple(stamp), tuple(fields), ngram, min_words)
    index = _INDEXES.get(key)
    if index is None:
        index = build_index(full, fields, ngram, min_words)
        while len(_INDEXES) >= _MAX_INDEXES:
            _INDEXES.pop(next(iter(_INDEXES)))
        _INDEXES[key] = index
        log.info("decontaminate: %s", ", ".join(
            f"{n} ({index.examples[n]} examples, {index.ngrams[n]} n-grams, blake2b {index.digests[n]})"
            for n in index.names))
    return index


# --------------------------------------------------------------------------------------------------
# The step


class DecontaminateParams(Params):
    #: eval files: .jsonl / .jsonl.gz (strings under ``fields``) or .txt / .txt.gz (one example a line)
    eval_sets: list[str] = Field(min_length=1)
    #: JSONL keys whose string values (or lists of strings) are examples; each is an example of its own
    fields: list[str] = Field(default=list(DEFAULT_FIELDS), min_length=1)
    #: words per n-gram (13: GPT-3)
    ngram: int = Field(default=13, ge=1)
    #: examples with fewer words are ignored; examples with min_words..ngram-1 words match whole
    min_words: int = Field(default=8, ge=1)
    #: drop: drop_reason "contaminated"; mark: keep, add ``contaminated`` and ``contamination``
    mode: Literal["drop", "mark"] = "drop"

    @field_validator("eval_sets", mode="before")
    @classmethod
    def _one_or_more(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    @field_validator("eval_sets")
    @classmethod
    def _distinct_names(cls, v: list[str]) -> list[str]:
        names = [set_name(p) for p in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"two eval sets are named '{twice[0]}' (a set is named by its file name)")
        missing = [p for p in v if not os.path.isfile(p)]
        if missing:  # checked when the pipeline is validated, before Spark starts
            raise ValueError(f"cannot read eval set {missing[0]}: no such file")
        return v

    @model_validator(mode="after")
    def _min_words_fits(self) -> DecontaminateParams:
        if self.min_words > self.ngram:
            raise ValueError(f"min_words ({self.min_words}) must not exceed ngram ({self.ngram})")
        return self


class Decontaminate(RowStep):
    """Drops (or marks) rows whose ``text`` shares an n-gram with an eval set."""

    name = "decontaminate"
    Params = DecontaminateParams
    reads = ("text",)
    #: in mark mode only (drop mode adds nothing)
    adds = {"contaminated": pa.bool_(), "contamination": pa.string()}

    @classmethod
    def added(cls, params: DecontaminateParams) -> dict[str, pa.DataType]:
        return cls.adds if params.mode == "mark" else {}

    def setup(self) -> None:
        p: DecontaminateParams = self.params
        self.index = load_index(p.eval_sets, tuple(p.fields), p.ngram, p.min_words)

    def check(self, text: str | None) -> tuple[str, str] | None:
        """(set name, shared n-gram) for a contaminated text, else None."""
        return self.index.match(text) if text else None

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        p: DecontaminateParams = self.params
        live = alive(batch)
        texts = batch.column("text").to_pylist()
        details: list[str | None] = []
        for ok, text in zip(live, texts, strict=True):
            found = self.check(text) if ok else None
            details.append(None if found is None else f"{found[0]}: {found[1]}")
            if found is not None:
                ctx.count("contaminated")
                ctx.count(f"contaminated_{found[0]}")
        if p.mode == "drop":
            reasons = [None if d is None else "contaminated" for d in details]
            return update_batch(batch, self.name, reasons=reasons, details=details)
        flags = [(d is not None) if ok else None for ok, d in zip(live, details, strict=True)]
        return update_batch(batch, self.name, {"contaminated": pa.array(flags, pa.bool_()),
                                               "contamination": pa.array(details, pa.string())})
