"""MinHash signatures for near-duplicate detection, FineWeb style, in batches and without Spark.

A document becomes a set of word 5-grams ("shingles") of its normalized text; each of ``num_perm``
random permutations maps every shingle's 32-bit hash to a new value and keeps the minimum over the
document; LSH then cuts the ``num_perm`` minima into ``bands`` bands of ``rows`` values and calls two
documents candidates when any band is equal. This module computes the first part for a list of texts at
a time and knows nothing about Spark; the global dedup step shuffles on :func:`band_hashes`.

**Normalization** (:func:`normalize`) is datatrove's ``simplify_text`` with its default
``TextNormConfig`` (what FineWeb's ``MinhashDedupSignature`` uses), step by step and in its order:

1. lowercase (``str.lower``);
2. numbers to ``0``: a run of decimal digits of any script (the ``regex`` module's ``\\p{Nd}``),
   optionally followed by one decimal separator out of ``.,،٫⎖⎗⎘`` and more digits, becomes one ``0``
   (``3.14`` -> ``0``, ``1,000,000`` -> ``0 0`` once the commas are gone);
3. punctuation to spaces: the characters of :data:`PUNCTUATION` (ASCII and CJK punctuation, quotes,
   dashes, the C0/C1 control characters except tab and newline) become a space each;
4. white space normalized: stripped at both ends, every run of white space (``\\s``) one space;
5. diacritics removed: Unicode NFD, then every nonspacing mark (general category ``Mn``, Python's
   ``unicodedata``) dropped (``é`` -> ``e``, ``ñ`` -> ``n``; Hangul syllables decompose to jamo);
6. stripped again.

Because NFD runs after punctuation removal, the few characters whose canonical decomposition is
punctuation survive as that punctuation (``≠`` -> ``=``, Greek question mark -> ``;``), as in datatrove.

**Words and shingles.** The words are ``normalize(text).split()``: white-space separated, unlike
datatrove, which runs spaCy's English tokenizer over the normalized text (the two agree except for
spaCy's special cases such as ``cannot`` -> ``can not``; nothing else is left to split once punctuation
is gone). A shingle is ``ngram`` (default 5) consecutive words. A document with at least one but fewer
than ``ngram`` words has exactly one shingle, all its words; an empty document (no words after
normalization) has none, and its signature is all :data:`EMPTY` (``2**32 - 1``), which is also what
``datasketch.MinHash`` holds before any update. datatrove has no signature at all for a document with
fewer than ``ngram`` tokens; callers that want that behaviour ask for the word counts
(``return_num_words=True``) and leave those documents out of LSH. Repeated shingles count once (a
minimum does not see repetitions).

**Shingle hash** (:func:`shingle_hash`, 32 bits): each word is hashed with XXH64 (seed 0) of its UTF-8
bytes (lone surrogates encoded as their three bytes, "surrogatepass"); the ``k`` word hashes
``w_1..w_k`` of a shingle are folded as ``h = h * K + w_i`` modulo 2**64 from ``h = 0``
(``K = 0x9E3779B97F4A7C15``, odd, so each step is a bijection in ``w_i``), then MurmurHash3's 64-bit
finalizer mixes ``h`` and its high 32 bits are the shingle hash. Hashing words rather than shingle
strings lets every word be hashed once, and the fold is cheap enough to do per shingle.

**Permutations** are datasketch's (2.0.0), bit for bit, for its two 32-bit schemes:

* ``"legacy"`` (the default; datasketch's only scheme before 2.0.0 and the one FineWeb/datatrove
  use with different parameter draws): ``np.random.RandomState(seed)`` draws ``(a, b)`` pairs, ``a``
  in ``[1, p)``, ``b`` in ``[0, p)`` with ``p = 2**61 - 1``, one pair per permutation; a shingle hash
  ``hv`` maps to ``((hv * a + b) mod 2**64) mod p`` truncated to its low 32 bits. The products wrap
  around at 2**64 exactly as datasketch's uint64 numpy arithmetic does; ``x mod p`` is computed as
  ``(x & p) + (x >> 61)`` minus ``p`` if that is ``>= p`` (``2**61 = 1 mod p``).
* ``"affine32"`` (datasketch 2.0.0's default): ``hv`` is pre-mixed with MurmurHash3's 32-bit finalizer,
  then ``a * hv + b mod 2**32`` with odd ``a``; collision-free and cheaper.

``datasketch.MinHash(num_perm, seed=seed, scheme=scheme, hashfunc=shingle_hash)`` fed the shingle
strings of :func:`shingles` with ``update_batch`` holds exactly ``signatures(...)``'s row in its
``hashvalues`` (``tests/operators/test_minhash.py`` checks that on the real corpus).

**Speed.** With numba (the default backend) one compiled pass over a batch's UTF-8 does everything
for a document: steps 2-4 on the original characters, each word character lowercased, decomposed and
stripped of marks on its own through a table built from ``str.lower`` and ``unicodedata`` (ASCII
letters inline), the word split, XXH64 of every word, the shingle fold and the permutation minima. The
few documents with a character that cannot be handled alone (Greek capital sigma, whose lowercase
depends on its neighbours, and a few dozen rare others) take a slow path: ``str.lower`` and NFD in Python around
two compiled passes. No Python runs per word or per shingle, and nothing runs in threads (Spark runs
one task per core). Without numba the ``"numpy"`` backend computes the same signatures from the
reference :func:`normalize`, a cache of word hashes (the ``xxhash`` package) and vectorized numpy,
about 20 times slower. The kernels compile on first use (a few seconds) and numba caches them on disk;
the character tables take ~0.3 s once per process.
"""

from __future__ import annotations

import functools
import itertools
import re
import sys
import threading
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Literal

import numpy as np
import regex

Scheme = Literal["legacy", "affine32"]
Backend = Literal["auto", "numba", "numpy"]

#: Shingle length in words (FineWeb: 5).
NGRAM = 5
#: The signature value of a document without words (and datasketch's initial hash value).
EMPTY = (1 << 32) - 1
MERSENNE_PRIME = (1 << 61) - 1

#: datatrove's punctuation (``datatrove.utils.text.PUNCTUATION``): each becomes a space.
PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    chr(x) for lo, hi in ((0, 9), (11, 13), (13, 32), (127, 160)) for x in range(lo, hi)
)
_PUNCT_TRANS = str.maketrans(PUNCTUATION, " " * len(PUNCTUATION))
#: Step 2: digits of any script (the ``regex`` module's Unicode tables, as datatrove), one decimal part.
_NUMBERS = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]{1}\p{Nd}+)?")
_DECIMAL_SEPARATORS = ".,،٫⎖⎗⎘"
_WHITESPACE = re.compile(r"\s+")

# 64-bit constants (Python ints; the numba kernels and numpy code use them as np.uint64)
_M64 = (1 << 64) - 1
_SHINGLE_MUL = 0x9E3779B97F4A7C15  # shingle fold multiplier
_BAND_SEED = 0x2545F4914F6CDD1D  # band key start value
_FMIX64_1, _FMIX64_2 = 0xFF51AFD7ED558CCD, 0xC4CEB9FE1A85EC53
_FMIX32_1, _FMIX32_2 = 0x85EBCA6B, 0xC2B2AE35


# --------------------------------------------------------------------------------------------------
# Normalization, words, shingles, hashes: the Python reference


def normalize(text: str) -> str:
    """datatrove's ``simplify_text(text)`` with the default ``TextNormConfig`` (see the module doc)."""
    text = text.lower()  # 1. lowercase
    text = _NUMBERS.sub("0", text)  # 2. numbers -> 0
    text = text.translate(_PUNCT_TRANS)  # 3. punctuation -> space
    text = _WHITESPACE.sub(" ", text.strip())  # 4. white space runs -> one space, stripped
    if not text.isascii():  # 5. NFD, nonspacing marks dropped (ASCII text has neither)
        text = _tables().mn_regex.sub("", unicodedata.normalize("NFD", text))
    return text.strip()  # 6.


def words(text: str) -> list[str]:
    """The words of a document: its normalized text split at white space."""
    return normalize(text).split()


def shingles(doc_words: Sequence[str], ngram: int = NGRAM) -> list[str]:
    """Each run of ``ngram`` consecutive words joined by one space; one shingle of all the words when
    there are fewer (but some), none for no words."""
    n = len(doc_words)
    if n == 0:
        return []
    if n < ngram:
        return [" ".join(doc_words)]
    return [" ".join(doc_words[i:i + ngram]) for i in range(n - ngram + 1)]


def word_hash(word: str) -> int:
    """XXH64 (seed 0) of the word's UTF-8 bytes (lone surrogates as their 3-byte form)."""
    import xxhash

    return xxhash.xxh64_intdigest(word.encode("utf-8", "surrogatepass"))


def _fmix64_int(h: int) -> int:
    h ^= h >> 33
    h = (h * _FMIX64_1) & _M64
    h ^= h >> 33
    h = (h * _FMIX64_2) & _M64
    return h ^ (h >> 33)


def shingle_hash(shingle: str) -> int:
    """The 32-bit hash of a shingle (its words joined by single spaces); the ``hashfunc`` that makes
    ``datasketch.MinHash`` agree with :func:`signatures`."""
    h = 0
    for w in shingle.split(" "):
        h = (h * _SHINGLE_MUL + word_hash(w)) & _M64
    return _fmix64_int(h) >> 32


@functools.lru_cache(maxsize=64)
def permutations(num_perm: int, seed: int = 1, scheme: Scheme = "legacy") -> tuple[np.ndarray, np.ndarray]:
    """The permutation parameters ``(a, b)`` of ``datasketch.MinHash(num_perm, seed, scheme=scheme)``:
    uint64 arrays for ``"legacy"``, uint32 for ``"affine32"`` (read-only; cached)."""
    if num_perm < 1:
        raise ValueError("num_perm must be positive")
    gen = np.random.RandomState(seed)
    if scheme == "legacy":  # one (a, b) pair per permutation, drawn in that order
        pairs = np.array([(gen.randint(1, MERSENNE_PRIME, dtype=np.uint64),
                           gen.randint(0, MERSENNE_PRIME, dtype=np.uint64)) for _ in range(num_perm)],
                         dtype=np.uint64)
        a, b = pairs[:, 0].copy(), pairs[:, 1].copy()
    elif scheme == "affine32":  # all a (odd), then all b
        a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
        b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    else:
        raise ValueError(f"unknown scheme {scheme!r} (legacy, affine32)")
    a.setflags(write=False)
    b.setflags(write=False)
    return a, b


# --------------------------------------------------------------------------------------------------
# Character tables (built once per process, ~0.3 s)

# flag bits of the code-point table
_ND = 1  # decimal digit (regex's \p{Nd})
_DECSEP = 2  # one of the decimal separators of step 2
_SEP = 4  # punctuation or white space: becomes (part of) one space in steps 3-4
_WS = 8  # white space (re's \s == str.isspace): splits words
_MN = 16  # nonspacing mark (unicodedata's category Mn): dropped in step 5
_FOLDS = 32  # a word character whose lowercase NFD without marks is not itself: see _Tables
_UNSAFE = 64  # a word character the one-pass kernel cannot fold: the document takes the slow path


class _Tables:
    """What the kernels know about each code point, from this Python's ``unicodedata`` and ``str.lower``
    (and ``regex``'s digits), built once per process (~0.3 s).

    ``fold`` is the one-pass kernel's version of steps 1, 5 and 6 for one word character ``c``: the
    characters of ``NFD(c.lower())`` that are not nonspacing marks, as UTF-8 (``fold_index[c]`` is the
    entry, 0 for "``c`` itself"). That equals what steps 1-6 make of ``c`` inside a word because
    ``str.lower`` maps characters one by one except capital sigma (context: final or not), no digit,
    separator or white space changes under it, NFD decomposes characters one by one and reorders only
    runs of combining characters, which are all nonspacing marks (dropped) but for 25 spacing ones with
    a nonzero combining class (Unicode 14). A character for which one of these does not hold (capital
    sigma, those 25 and the characters that decompose into them, a lowercase that holds a digit,
    separator or space) is ``_UNSAFE``."""

    def __init__(self) -> None:
        n = sys.maxunicode + 1
        every = np.arange(n, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
        table = np.zeros(n, dtype=np.uint8)
        table[[m.start() for m in regex.finditer(r"\p{Nd}", every)]] |= _ND
        table[[ord(c) for c in _DECIMAL_SEPARATORS]] |= _DECSEP
        white = [m.start() for m in re.finditer(r"\s", every)]
        table[white] |= _SEP | _WS
        table[[ord(c) for c in PUNCTUATION]] |= _SEP
        codes = {"Mn": 1, "Mc": 2}
        category = np.fromiter(map(codes.get, map(unicodedata.category, every), itertools.repeat(0)),
                               dtype=np.uint8, count=n)
        mn = np.flatnonzero(category == 1).tolist()
        table[mn] |= _MN
        ranges, start = [], mn[0]
        for prev, cur in zip(mn, mn[1:] + [-1], strict=True):
            if cur != prev + 1:
                ranges.append(re.escape(chr(start)) + ("" if prev == start else "-" + re.escape(chr(prev))))
                start = cur
        self.mn_regex = re.compile("[" + "".join(ranges) + "]+")

        # folds: the characters that lowercasing or NFD change (found 256 at a time) and the marks
        spacing_combining = {i for i in np.flatnonzero(category == 2).tolist() if unicodedata.combining(every[i])}
        candidates = set(mn) | spacing_combining
        for lo in range(0, n, 256):
            block = every[lo:lo + 256]
            if block.lower() != block or not unicodedata.is_normalized("NFD", block):
                candidates.update(i for i in range(lo, lo + len(block))
                                  if every[i].lower() != every[i] or not unicodedata.is_normalized("NFD", every[i]))
        fold_index = np.zeros(n, dtype=np.uint16)
        folds: list[bytes] = [b""]  # entry 0: unused
        expansion = 1.0
        for i in sorted(candidates):
            if table[i] & (_ND | _SEP):  # the kernels handle these before folding
                continue
            char = every[i]
            lowered = char.lower()
            nfd = unicodedata.normalize("NFD", lowered)
            if (i == 0x3A3 or any(table[ord(x)] & (_ND | _DECSEP | _SEP | _WS) for x in lowered)
                    or any(ord(x) in spacing_combining or x.isspace() for x in nfd)):
                table[i] |= _UNSAFE
                continue
            fold = "".join(x for x in nfd if not table[ord(x)] & _MN)
            if fold != char:
                table[i] |= _FOLDS
                fold_index[i] = len(folds)
                folds.append(fold.encode("utf-8", "surrogatepass"))
                expansion = max(expansion, len(folds[-1]) / len(char.encode("utf-8", "surrogatepass")))
        assert len(folds) < 1 << 16
        self.fold_index = fold_index
        self.fold_offsets = np.cumsum([0] + [len(f) for f in folds], dtype=np.int64)
        self.fold_bytes = np.frombuffer(b"".join(folds), dtype=np.uint8)
        #: the most UTF-8 bytes a folded word has per byte of the original (Hangul: 3)
        self.expansion = int(np.ceil(expansion))
        for array in (table, fold_index, self.fold_offsets):
            array.setflags(write=False)
        self.table = table


_TABLES: _Tables | None = None
_LOCK = threading.Lock()


def _tables() -> _Tables:
    global _TABLES
    if _TABLES is None:
        with _LOCK:
            if _TABLES is None:
                _TABLES = _Tables()
    return _TABLES


# --------------------------------------------------------------------------------------------------
# numba kernels. Written as plain module-level functions; _numba() replaces them in this module's
# globals with their jitted versions on first use (so importing this module does not import numba), and
# the kernels then call each other's jitted versions. Every constant is an np.uint64 so that numba never
# mixes signed and unsigned integers (which it would do in float64).

_U0, _U11, _U13, _U16 = np.uint64(0), np.uint64(11), np.uint64(13), np.uint64(16)
_U23, _U27, _U29, _U31, _U32, _U33, _U61 = (np.uint64(x) for x in (23, 27, 29, 31, 32, 33, 61))
_P64_1, _P64_2, _P64_3 = np.uint64(0x9E3779B185EBCA87), np.uint64(0xC2B2AE3D27D4EB4F), np.uint64(0x165667B19E3779F9)
_P64_4, _P64_5 = np.uint64(0x85EBCA77C2B2AE63), np.uint64(0x27D4EB2F165667C5)
_XXH_V1 = np.uint64((0x9E3779B185EBCA87 + 0xC2B2AE3D27D4EB4F) & _M64)
_XXH_V4 = np.uint64((-0x9E3779B185EBCA87) & _M64)
_USHINGLE_MUL, _UFM1, _UFM2 = np.uint64(_SHINGLE_MUL), np.uint64(_FMIX64_1), np.uint64(_FMIX64_2)
_UFM32_1, _UFM32_2 = np.uint64(_FMIX32_1), np.uint64(_FMIX32_2)
_UPRIME, _UMAX32 = np.uint64(MERSENNE_PRIME), np.uint64(EMPTY)


def _rotl(x, r):
    return (x << r) | (x >> (np.uint64(64) - r))


def _read64(buf, p):
    v = _U0
    for i in range(8):
        v |= np.uint64(buf[p + i]) << np.uint64(8 * i)
    return v


def _read32(buf, p):
    v = _U0
    for i in range(4):
        v |= np.uint64(buf[p + i]) << np.uint64(8 * i)
    return v


def _xxh_round(acc, lane):
    return _rotl(acc + lane * _P64_2, _U31) * _P64_1


def _xxh64(buf, n):
    """XXH64 with seed 0 of buf[:n] (uint8)."""
    p = 0
    if n >= 32:
        v1, v2, v3, v4 = _XXH_V1, _P64_2, _U0, _XXH_V4
        while p + 32 <= n:
            v1 = _xxh_round(v1, _read64(buf, p))
            v2 = _xxh_round(v2, _read64(buf, p + 8))
            v3 = _xxh_round(v3, _read64(buf, p + 16))
            v4 = _xxh_round(v4, _read64(buf, p + 24))
            p += 32
        h = _rotl(v1, np.uint64(1)) + _rotl(v2, np.uint64(7)) + _rotl(v3, np.uint64(12)) + _rotl(v4, np.uint64(18))
        h = (h ^ _xxh_round(_U0, v1)) * _P64_1 + _P64_4
        h = (h ^ _xxh_round(_U0, v2)) * _P64_1 + _P64_4
        h = (h ^ _xxh_round(_U0, v3)) * _P64_1 + _P64_4
        h = (h ^ _xxh_round(_U0, v4)) * _P64_1 + _P64_4
    else:
        h = _P64_5
    h += np.uint64(n)
    while p + 8 <= n:
        h ^= _xxh_round(_U0, _read64(buf, p))
        h = _rotl(h, _U27) * _P64_1 + _P64_4
        p += 8
    if p + 4 <= n:
        h ^= _read32(buf, p) * _P64_1
        h = _rotl(h, _U23) * _P64_2 + _P64_3
        p += 4
    while p < n:
        h ^= np.uint64(buf[p]) * _P64_5
        h = _rotl(h, _U11) * _P64_1
        p += 1
    h ^= h >> _U33
    h *= _P64_2
    h ^= h >> _U29
    h *= _P64_3
    h ^= h >> _U32
    return h


def _fmix64(h):
    h ^= h >> _U33
    h *= _UFM1
    h ^= h >> _U33
    h *= _UFM2
    return h ^ (h >> _U33)


def _decode(buf, i):
    """The code point starting at ``buf[i]`` (UTF-8, surrogates allowed) and its length in bytes."""
    c = np.int64(buf[i])
    if c < 0x80:
        return c, 1
    if c < 0xE0:
        return ((c & 0x1F) << 6) | (np.int64(buf[i + 1]) & 0x3F), 2
    if c < 0xF0:
        return (((c & 0x0F) << 12) | ((np.int64(buf[i + 1]) & 0x3F) << 6)
                | (np.int64(buf[i + 2]) & 0x3F)), 3
    return (((c & 0x07) << 18) | ((np.int64(buf[i + 1]) & 0x3F) << 12)
            | ((np.int64(buf[i + 2]) & 0x3F) << 6) | (np.int64(buf[i + 3]) & 0x3F)), 4


def _number_end(buf, i, end, table):
    """Step 2 at a digit starting at ``buf[i]``: the end of ``\\p{Nd}+([.,،٫⎖⎗⎘]\\p{Nd}+)?`` there (greedy,
    as ``regex.sub`` matches it left to right)."""
    c, n = _decode(buf, i)
    j = i + n
    while j < end:
        c, n = _decode(buf, j)
        if not table[c] & 1:  # _ND
            break
        j += n
    if j < end:
        c, n = _decode(buf, j)
        if table[c] & 2 and j + n < end:  # _DECSEP, then a digit?
            c2, n2 = _decode(buf, j + n)
            if table[c2] & 1:
                j += n + n2
                while j < end:
                    c, n = _decode(buf, j)
                    if not table[c] & 1:
                        break
                    j += n
    return j


def _finish(wh, nw, ngram, a, b, legacy, sig, row, sh):
    """Shingle hashes of the word hashes ``wh[:nw]`` and the minima of the permutations into
    ``sig[row]``."""
    num_perm = a.shape[0]
    if nw == 0:
        for k in range(num_perm):
            sig[row, k] = 0xFFFFFFFF
        return
    width = ngram if nw >= ngram else nw
    ns = nw - width + 1
    for s in range(ns):
        h = _U0
        for j in range(width):
            h = h * _USHINGLE_MUL + wh[s + j]
        h = _fmix64(h) >> _U32
        if not legacy:  # affine32: MurmurHash3's 32-bit finalizer first
            h ^= h >> _U16
            h = (h * _UFM32_1) & _UMAX32
            h ^= h >> _U13
            h = (h * _UFM32_2) & _UMAX32
            h ^= h >> _U16
        sh[s] = h
    # (sh is uint32: knowing the high half of the product's factor is zero saves a multiplication, and
    # minima in 32-bit lanes pack twice as many per vector)
    if legacy:
        for k in range(num_perm):
            ak = a[k]
            bk = b[k]
            m = np.uint32(0xFFFFFFFF)
            for s in range(ns):
                x = np.uint64(sh[s]) * ak + bk  # wraps at 2**64, as datasketch's numpy uint64
                y = (x & _UPRIME) + (x >> _U61)  # x mod p, up to one subtraction
                if y >= _UPRIME:
                    y -= _UPRIME
                v = np.uint32(y & _UMAX32)
                if v < m:
                    m = v
            sig[row, k] = m
    else:
        for k in range(num_perm):
            ak = a[k]
            bk = b[k]
            m = np.uint32(0xFFFFFFFF)
            for s in range(ns):
                v = np.uint32((np.uint64(sh[s]) * ak + bk) & _UMAX32)
                if v < m:
                    m = v
            sig[row, k] = m


def _fast_kernel(buf, offsets, table, fold_index, fold_offsets, fold_bytes, ngram, a, b, legacy, sig,
                 num_words, slow, wh, sh, scratch):
    """Everything in one pass for each document of ``buf`` (UTF-8 of the original texts): steps 2-4 on
    the original characters (no digit, separator or white space changes when lowercased), and each
    word character lowercased, decomposed and stripped of marks on its own (ASCII: A-Z to a-z;
    otherwise its fold, see _Tables); then words, hashes, minima. A document with an ``_UNSAFE``
    character is left to the slow path: ``slow[d] = True``."""
    for d in range(offsets.shape[0] - 1):
        end = offsets[d + 1]
        i = offsets[d]
        nw = 0
        blen = 0
        aborted = False
        while i < end:
            c = np.int64(buf[i])
            n = 1
            if c >= 0x80:
                c, n = _decode(buf, i)
            f = table[c]
            if f & 1:  # _ND: a number becomes "0" inside the current word
                i = _number_end(buf, i, end, table)
                scratch[blen] = 48
                blen += 1
                continue
            i += n
            if f & 4:  # _SEP: ends a word
                if blen > 0:
                    wh[nw] = _xxh64(scratch, blen)
                    nw += 1
                    blen = 0
                continue
            if c < 0x80:
                if 65 <= c <= 90:  # A-Z
                    c += 32
                scratch[blen] = c
                blen += 1
            elif f & 64:  # _UNSAFE
                aborted = True
                break
            elif f & 32:  # _FOLDS: the character's lowercase NFD without marks (maybe nothing)
                e = fold_index[c]
                for k in range(fold_offsets[e], fold_offsets[e + 1]):
                    scratch[blen] = fold_bytes[k]
                    blen += 1
            else:  # the character itself
                for k in range(i - n, i):
                    scratch[blen] = buf[k]
                    blen += 1
        if aborted:
            slow[d] = True
            continue
        if blen > 0:
            wh[nw] = _xxh64(scratch, blen)
            nw += 1
        num_words[d] = nw
        _finish(wh, nw, ngram, a, b, legacy, sig, d, sh)


def _normalize_kernel(buf, offsets, table, out, out_offsets):
    """Steps 2-4 of the normalization of each document ``buf[offsets[d]:offsets[d+1]]`` (UTF-8 of the
    lowercased text) into ``out[out_offsets[d]:out_offsets[d+1]]`` (UTF-8)."""
    o = 0
    for d in range(offsets.shape[0] - 1):
        out_offsets[d] = o
        start_o = o
        pending = False  # a separator was seen since the last character written
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            c, n = _decode(buf, i)
            if table[c] & 1:  # _ND
                j = _number_end(buf, i, end, table)
                if pending and o > start_o:
                    out[o] = 32
                    o += 1
                pending = False
                out[o] = 48
                o += 1
                i = j
                continue
            if table[c] & 4:  # _SEP
                pending = True
            else:
                if pending and o > start_o:
                    out[o] = 32
                    o += 1
                pending = False
                for k in range(n):
                    out[o + k] = buf[i + k]
                o += n
            i += n
    out_offsets[offsets.shape[0] - 1] = o


def _words_kernel(buf, offsets, rows, table, ngram, a, b, legacy, sig, num_words, wh, sh, scratch):
    """Steps 5-6 (nonspacing marks dropped; NFD was applied before), the word split, hashes and minima
    of each document ``buf[offsets[d]:offsets[d+1]]`` (UTF-8) into ``sig[rows[d]]``."""
    for d in range(offsets.shape[0] - 1):
        row = rows[d]
        nw = 0
        blen = 0
        i = offsets[d]
        end = offsets[d + 1]
        while i < end:
            c, n = _decode(buf, i)
            f = table[c]
            if f & 8:  # _WS: ends a word
                if blen > 0:
                    wh[nw] = _xxh64(scratch, blen)
                    nw += 1
                    blen = 0
            elif not f & 16:  # not _MN: the character's bytes join the word
                for k in range(n):
                    scratch[blen + k] = buf[i + k]
                blen += n
            i += n
        if blen > 0:
            wh[nw] = _xxh64(scratch, blen)
            nw += 1
        num_words[row] = nw
        _finish(wh, nw, ngram, a, b, legacy, sig, row, sh)


_JITTED = False


def _numba() -> None:
    """Compile (or load from numba's cache) the kernels; raises ImportError without numba."""
    global _JITTED
    if _JITTED:
        return
    import numba

    with _LOCK:
        if not _JITTED:
            g = globals()

            def jit(f):
                try:
                    return numba.njit(cache=True, nogil=True, boundscheck=False)(f)
                except RuntimeError:  # no writable cache directory: compile in every process
                    return numba.njit(nogil=True, boundscheck=False)(f)

            for name in ("_rotl", "_read64", "_read32", "_xxh_round", "_xxh64", "_fmix64", "_decode",
                         "_number_end", "_finish", "_fast_kernel", "_normalize_kernel", "_words_kernel"):
                g[name] = jit(g[name])
            _JITTED = True


def numba_available() -> bool:
    try:
        _numba()
    except ImportError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# Batches


class MinHasher:
    """Signatures of ``num_perm`` permutations (seed ``seed``, datasketch's ``scheme``) of word
    ``ngram``-grams, for lists of texts. ``backend``: ``"numba"``, ``"numpy"`` or ``"auto"`` (numba
    when it can be imported)."""

    #: documents and characters per compiled call (bounds the memory one call takes)
    max_batch_docs = 4096
    max_batch_chars = 1 << 22

    def __init__(self, num_perm: int = 112, seed: int = 1, ngram: int = NGRAM, scheme: Scheme = "legacy",
                 backend: Backend = "auto"):
        if ngram < 1:
            raise ValueError("ngram must be positive")
        self.num_perm, self.seed, self.ngram, self.scheme = num_perm, seed, ngram, scheme
        self.a, self.b = permutations(num_perm, seed, scheme)
        self._a64, self._b64 = self.a.astype(np.uint64), self.b.astype(np.uint64)
        if backend == "auto":
            backend = "numba" if numba_available() else "numpy"
        elif backend == "numba":
            _numba()
        elif backend != "numpy":
            raise ValueError(f"unknown backend {backend!r} (auto, numba, numpy)")
        self.backend = backend
        self._word_cache: dict[str, int] = {}

    def signatures(self, texts: Iterable[str | None], return_num_words: bool = False):
        """uint32 array ``[len(texts), num_perm]``; with ``return_num_words`` also the int64 word count of
        each document. ``None`` counts as an empty text."""
        texts = ["" if t is None else t for t in texts]
        n = len(texts)
        sig = np.empty((n, self.num_perm), dtype=np.uint32)
        counts = np.empty(n, dtype=np.int64)
        run = self._batch_numba if self.backend == "numba" else self._batch_numpy
        start = 0
        while start < n:
            stop, chars = start, 0
            while stop < n and stop - start < self.max_batch_docs and (
                    stop == start or chars + len(texts[stop]) <= self.max_batch_chars):
                chars += len(texts[stop])
                stop += 1
            run(texts[start:stop], sig[start:stop], counts[start:stop])
            start = stop
        return (sig, counts) if return_num_words else sig

    # -- numba -------------------------------------------------------------------------------------

    def _batch_numba(self, texts: list[str], sig: np.ndarray, counts: np.ndarray) -> None:
        tables = _tables()
        table = tables.table
        legacy = self.scheme == "legacy"
        encoded = [t.encode("utf-8", "surrogatepass") for t in texts]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded)), out=offsets[1:])
        buf = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        longest = int(np.diff(offsets).max())
        wh = np.empty(longest // 2 + 2, dtype=np.uint64)  # a word is a byte or more, then a separator
        sh = np.empty(longest // 2 + 2, dtype=np.uint32)
        scratch = np.empty(tables.expansion * longest + 4, dtype=np.uint8)  # the UTF-8 of one word
        slow = np.zeros(len(encoded), dtype=np.bool_)
        _fast_kernel(buf, offsets, table, tables.fold_index, tables.fold_offsets, tables.fold_bytes,
                     self.ngram, self._a64, self._b64, legacy, sig, counts, slow, wh, sh, scratch)
        rows = np.flatnonzero(slow)
        if len(rows) == 0:
            return
        # the slow path: 1. in Python, 2.-4. compiled, 5. NFD in Python, then marks, words, minima
        lowered = [texts[r].lower().encode("utf-8", "surrogatepass") for r in rows]
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, lowered), dtype=np.int64, count=len(rows)), out=offsets[1:])
        buf = np.frombuffer(b"".join(lowered), dtype=np.uint8)
        out = np.empty(max(len(buf), 1), dtype=np.uint8)
        out_offsets = np.empty_like(offsets)
        _normalize_kernel(buf, offsets, table, out, out_offsets)
        nfd = [unicodedata.normalize("NFD", out[out_offsets[k]:out_offsets[k + 1]].tobytes()
                                     .decode("utf-8", "surrogatepass")).encode("utf-8", "surrogatepass")
               for k in range(len(rows))]
        np.cumsum(np.fromiter(map(len, nfd), dtype=np.int64, count=len(rows)), out=offsets[1:])
        longest = int(np.diff(offsets).max())
        if longest // 2 + 2 > len(wh):
            wh = np.empty(longest // 2 + 2, dtype=np.uint64)
            sh = np.empty(longest // 2 + 2, dtype=np.uint32)
        if longest + 4 > len(scratch):
            scratch = np.empty(longest + 4, dtype=np.uint8)
        _words_kernel(np.frombuffer(b"".join(nfd), dtype=np.uint8), offsets, rows, table, self.ngram,
                      self._a64, self._b64, legacy, sig, counts, wh, sh, scratch)

    # -- numpy -------------------------------------------------------------------------------------

    def _word_hashes(self, doc_words: list[str]) -> np.ndarray:
        cache = self._word_cache
        if len(cache) > 1 << 20:
            cache.clear()
        missing = [w for w in doc_words if w not in cache]
        if missing:
            import xxhash

            for w in missing:
                cache[w] = xxhash.xxh64_intdigest(w.encode("utf-8", "surrogatepass"))
        return np.fromiter(map(cache.__getitem__, doc_words), dtype=np.uint64, count=len(doc_words))

    def _batch_numpy(self, texts: list[str], sig: np.ndarray, counts: np.ndarray) -> None:
        a, b = self._a64[None, :], self._b64[None, :]
        for d, text in enumerate(texts):
            doc_words = words(text)
            counts[d] = len(doc_words)
            if not doc_words:
                sig[d] = EMPTY
                continue
            hv = shingle_hashes_np(self._word_hashes(doc_words), self.ngram)
            if self.scheme != "legacy":
                hv = _fmix32_np(hv)
            best = np.full(self.num_perm, EMPTY, dtype=np.uint64)
            for lo in range(0, len(hv), 4096):
                x = hv[lo:lo + 4096, None] * a + b  # uint64, wraps at 2**64
                if self.scheme == "legacy":
                    x = (x % np.uint64(MERSENNE_PRIME)) & np.uint64(EMPTY)
                else:
                    x &= np.uint64(EMPTY)
                np.minimum(best, x.min(axis=0), out=best)
            sig[d] = best


def _fmix64_np(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(_FMIX64_1)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(_FMIX64_2)
    return h ^ (h >> np.uint64(33))


def _fmix32_np(h: np.ndarray) -> np.ndarray:
    """MurmurHash3's 32-bit finalizer of values below 2**32 held in uint64."""
    m = np.uint64(EMPTY)
    h = h ^ (h >> np.uint64(16))
    h = (h * np.uint64(_FMIX32_1)) & m
    h = h ^ (h >> np.uint64(13))
    h = (h * np.uint64(_FMIX32_2)) & m
    return h ^ (h >> np.uint64(16))


def shingle_hashes_np(word_hashes: np.ndarray, ngram: int = NGRAM) -> np.ndarray:
    """The :func:`shingle_hash` of every shingle of a document from its words' XXH64 hashes (uint64)."""
    n = len(word_hashes)
    if n == 0:
        return np.empty(0, dtype=np.uint64)
    width = min(ngram, n)
    count = n - width + 1
    h = np.zeros(count, dtype=np.uint64)
    for j in range(width):
        h = h * np.uint64(_SHINGLE_MUL) + word_hashes[j:j + count]
    return _fmix64_np(h) >> np.uint64(32)


def signatures(texts: Iterable[str | None], num_perm: int = 112, seed: int = 1, ngram: int = NGRAM,
               scheme: Scheme = "legacy", backend: Backend = "auto", return_num_words: bool = False):
    """``MinHasher(num_perm, seed, ngram, scheme, backend).signatures(texts, return_num_words)``."""
    return _hasher(num_perm, seed, ngram, scheme, backend).signatures(texts, return_num_words)


@functools.lru_cache(maxsize=16)
def _hasher(num_perm: int, seed: int, ngram: int, scheme: Scheme, backend: Backend) -> MinHasher:
    return MinHasher(num_perm, seed, ngram, scheme, backend)


# --------------------------------------------------------------------------------------------------
# LSH


@functools.lru_cache(maxsize=256)
def optimal_param(threshold: float, num_perm: int, false_positive_weight: float = 0.5,
                  false_negative_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands * rows <= num_perm`` minimizing the weighted sum of the false
    positive and false negative probabilities at a Jaccard ``threshold``: datasketch's
    ``lsh._optimal_param``. The two probabilities are integrals of polynomials of degree
    ``bands * rows <= num_perm``, which Gauss-Legendre quadrature with ``num_perm // 2 + 1`` nodes
    computes exactly (up to rounding), where datasketch calls scipy's adaptive ``quad``; the same
    candidates are tried in the same order with the same strict comparison."""
    if num_perm < 1:
        raise ValueError("num_perm must be positive")
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bs = np.array([p[0] for p in pairs], dtype=np.float64)[:, None]
    rs = np.array([p[1] for p in pairs], dtype=np.float64)[:, None]
    x, w = np.polynomial.legendre.leggauss(num_perm // 2 + 1)

    def integral(lo: float, hi: float, false_positive: bool) -> np.ndarray:
        s = lo + (hi - lo) * (x + 1) / 2
        if false_positive:  # P(candidate) below the threshold
            f = 1 - (1 - s ** rs) ** bs
        else:  # P(not candidate) above it
            f = 1 - (1 - (1 - s ** rs) ** bs)
        return (f * w).sum(axis=1) * (hi - lo) / 2

    error = (integral(0.0, threshold, True) * false_positive_weight
             + integral(threshold, 1.0, False) * false_negative_weight)
    min_error, opt = float("inf"), (0, 0)
    for e, pair in zip(error.tolist(), pairs, strict=True):
        if e < min_error:
            min_error, opt = e, pair
    return opt


def band_hashes(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """uint64 array ``[n_docs, bands]``: for band ``i``, a 64-bit hash of ``i`` and the ``rows`` values
    ``signatures[:, i*rows:(i+1)*rows]`` (datasketch's band ranges; values beyond ``bands * rows`` are
    unused). Two documents share a bucket of band ``i`` exactly when their keys in column ``i`` are equal,
    up to 64-bit collisions (about ``n**2 / 2**65`` expected false matches among ``n`` keys); including
    ``i`` in the hash keeps keys of different bands apart, so one column of (key, doc) pairs can be
    grouped on the key alone. Pure integer arithmetic: the same on every machine and run (no Python
    ``hash()``). Signatures stored as uint64 (datasketch's legacy ``hashvalues``) give the same keys as
    the same values in uint32. For Spark's LongType take ``.view(np.int64)``."""
    sig = np.asarray(signatures)
    if sig.ndim != 2:
        raise ValueError("signatures must be a 2-d array [n_docs, num_perm]")
    if bands < 1 or rows < 1 or bands * rows > sig.shape[1]:
        raise ValueError(f"{bands} bands x {rows} rows do not fit {sig.shape[1]} hash values")
    values = sig[:, :bands * rows].astype(np.uint64).reshape(sig.shape[0], bands, rows)
    h = np.broadcast_to(_fmix64_np(np.arange(bands, dtype=np.uint64) + np.uint64(_BAND_SEED)),
                        (sig.shape[0], bands))
    for j in range(rows):
        h = _fmix64_np(h * np.uint64(_SHINGLE_MUL) + values[:, :, j])
    return np.ascontiguousarray(h, dtype=np.uint64)
