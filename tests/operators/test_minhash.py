"""MinHash signatures: datatrove's normalization, datasketch's permutations and LSH parameters, bit for bit,
on the real corpus (books, CPython code, 75 languages) and on crafted text."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from pathlib import Path

import datasketch
import numpy as np
import pytest
import xxhash
from datasketch.lsh import _optimal_param
from datatrove.utils import text as dt_text

from operators.dedup import minhash as mh
from tests.conftest import CORPUS, ROOT

CRAFTED = [
    "",
    "   \n\t ",
    "!!! ... ---",
    "one",
    "two words",
    "Four words, only four.",
    "exactly five words are here",
    "Hello, World! The 3.14 café's résumé; naïve   test\u00a0of\u2003some\twords 1,000,000 x2y ٣٫١٤ ١٢٣ ١2",
    "ÀÉÎÕÜ ñ ç ø å ß ẞ Σίσυφος ΣΑΣ İstanbul ǅemal ﬁne \u212b \u212a",  # ligature, final sigma, Å, K signs
    "a ≠ b ; c ≮ d ＂quoted＂ 〈x〉 ;greek question; e\u0301 o\u0308 \u0301 x \u0301\u0301 y",
    "Hangul 한국어 텍스트 漢字 かな カタカナ ไทย हिन्दी العربية עברית",
    "tabs\tand\nnewlines\r\nand\x0bvertical\x0cfeed\x1cfile\x1dgroup\x85nel\u2028line\u2029para",
    "emoji 😀🎉 and 𝔘𝔫𝔦𝔠𝔬𝔡𝔢 and a lone surrogate \ud800 here and \udfff there",
    "a" * 40 + " " + "b" * 33 + " " + "é" * 20 + " " + "x1" * 30 + " short",  # words >= 32 bytes
    "1.2.3 4,5,6 7.8e9 0.5. .5 5. 12,34.56",
    "MiXeD CaSe ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz",
    "\x00\x01\x7f\x80\x9f control\x00chars",
    "ascii words, other digits ١٢٣ and ٣٫١٤ and 1٫5 and ١,٢ and ۱۲ end",  # the one-pass path
    "ascii\u00a0words\u2003“curly” ‘quotes’ — dashes – and…dots «guillemets» 【brackets】 end",
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "ΣΟΦΟΣ ΟΔΥΣΣΕΥΣ σοφός Ὀδυσσεύς",  # capital sigma: the slow path
    "Größe ÄÖÜ äöü Straße İI ı ǈ Ǉ ǉ \u2126 Ω \u212b Å ﬀ ＡＢＣ ｆｕｌｌ",  # the one-pass path's folds
]


def _pieces(text: str, size: int = 4500) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


@functools.lru_cache(maxsize=1)
def corpus_docs() -> list[str]:
    """Real documents: book and CPython pieces, a piece of each language of langid, and CRAFTED."""
    docs: list[str] = []
    books = sorted((CORPUS / "books").glob("*.txt"))
    for path in books[::4]:
        docs += _pieces(path.read_text(encoding="utf-8"))[::25]
    code = sorted((CORPUS / "code").glob("python3.*/*.py"))
    for path in code[::12]:
        docs += _pieces(path.read_text(encoding="utf-8", errors="surrogateescape"))[:2]
    for path in sorted((CORPUS / "langid").glob("*.txt")):
        docs.append(path.read_text(encoding="utf-8")[:1500])
    return docs + CRAFTED


def test_corpus_is_varied():
    docs = corpus_docs()
    assert len(docs) > 190
    assert sum(not d.isascii() for d in docs) > 90


def test_punctuation_is_datatrove_s():
    assert mh.PUNCTUATION == dt_text.PUNCTUATION


def test_normalize_equals_datatrove_on_the_corpus():
    docs = corpus_docs()
    for path in sorted((CORPUS / "langid").glob("*.txt")):  # ~50 sentences of every language
        docs = docs + [path.read_text(encoding="utf-8")[1500:8000]]
    for doc in docs:
        assert mh.normalize(doc) == dt_text.simplify_text(doc)


@pytest.mark.parametrize(("text", "expected"), [
    ("Hello WORLD", "hello world"),  # case
    ("Hello, world! (yes) \"quoted\" — dash… «guillemets» end.", "hello world yes quoted dash guillemets end"),
    ("pi is 3.14, e is 2,718 and 1,000,000 and 42", "pi is 0 e is 0 and 0 0 and 0"),  # digits
    ("v2 x86_64 ١٢٣ ٣٫١٤ 1.2.3", "v0 x0 0 0 0 0 0"),  # other scripts' digits and separators
    ("café naïve résumé Ærø ñandú Ångström", "cafe naive resume ærø nandu angstrom"),  # diacritics
    ("  a\t\tb\n\nc \u00a0 d\u2003e\r\n  ", "a b c d e"),  # white space
    ("a ≠ b", "a = b"),  # NFD after punctuation removal: the decomposition's "=" stays
    ("한국", "\u1112\u1161\u11ab\u1100\u116e\u11a8"),  # Hangul decomposes into jamo (no marks)
    ("", ""),
    ("?!...", ""),
])
def test_normalize_examples(text, expected):
    assert mh.normalize(text) == expected
    assert dt_text.simplify_text(text) == expected


def test_shingles_of_short_docs():
    assert mh.shingles([]) == []
    assert mh.shingles(["a"]) == ["a"]
    assert mh.shingles(["a", "b", "c", "d"]) == ["a b c d"]
    assert mh.shingles(list("abcde")) == ["a b c d e"]
    assert mh.shingles(list("abcdef")) == ["a b c d e", "b c d e f"]
    assert mh.shingles(list("abc"), ngram=2) == ["a b", "b c"]
    assert mh.words("  The cat, the HAT!  ") == ["the", "cat", "the", "hat"]


def test_short_and_empty_signatures():
    sig, n = mh.signatures(["", "!!! ...", "one two", "one two.", "ONE, two", "one two three"],
                           return_num_words=True)
    assert n.tolist() == [0, 0, 2, 2, 2, 3]
    assert (sig[0] == mh.EMPTY).all() and (sig[1] == mh.EMPTY).all()
    assert (sig[2] == sig[3]).all() and (sig[2] == sig[4]).all()  # one shingle "one two"
    assert not (sig[2] == sig[5]).all()
    m = datasketch.MinHash(num_perm=112, seed=1, scheme="legacy", hashfunc=mh.shingle_hash)
    m.update_batch(["one two"])
    assert (m.hashvalues == sig[2]).all()
    assert (datasketch.MinHash(num_perm=112, scheme="legacy").hashvalues == sig[0]).all()


def test_word_and_shingle_hash():
    for word in ["", "a", "the", "é", "한국어", "x" * 31, "y" * 32, "z" * 33, "w" * 100, "\ud800"]:
        assert mh.word_hash(word) == xxhash.xxh64_intdigest(word.encode("utf-8", "surrogatepass"))
    h = mh.shingle_hash("a b c d e")
    assert 0 <= h < 2**32 and h == mh.shingle_hash("a b c d e") and h != mh.shingle_hash("a b c d f")
    hashes = np.array([mh.word_hash(w) for w in "a b c d e f g".split()], dtype=np.uint64)
    assert mh.shingle_hashes_np(hashes).tolist() == [mh.shingle_hash(s) for s in mh.shingles(list("abcdefg"))]
    assert mh.shingle_hashes_np(hashes[:3]).tolist() == [mh.shingle_hash("a b c")]


def test_hash_values_are_fixed():
    """The hashes are a stored format (signatures and band keys outlive a run): fixed values."""
    assert mh.shingle_hash("the quick brown fox jumps") == 1091016119
    assert mh.shingle_hash("a") == 1611979406
    doc = ["The quick brown fox jumps over the lazy dog."]
    assert mh.signatures(doc)[0, :4].tolist() == [811283584, 45496368, 795389044, 308618444]
    assert mh.signatures(doc, scheme="affine32")[0, :4].tolist() == [465300461, 255913268, 85772385, 2402514138]


def test_compiled_xxh64_equals_xxhash():
    mh._numba()
    words = [w.encode("utf-8", "surrogatepass") for w in
             ["", "a", "ab", "abc", "abcd", "abcdefg", "abcdefgh", "é", "한국어"]
             + ["".join(chr(97 + (i * 7 + j) % 26) for j in range(i)) for i in range(1, 80)]]
    scratch = np.zeros(256, dtype=np.uint8)
    for w in words:
        scratch[:len(w)] = np.frombuffer(w, dtype=np.uint8)
        assert int(mh._xxh64(scratch, len(w))) == xxhash.xxh64_intdigest(w)


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
@pytest.mark.parametrize(("num_perm", "seed"), [(112, 1), (128, 42), (117, 7), (64, 2**31)])
def test_permutations_equal_datasketch(num_perm, seed, scheme):
    a, b = mh.permutations(num_perm, seed, scheme)
    ref = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme).permutations
    assert np.array_equal(a, np.asarray(ref[0])) and np.array_equal(b, np.asarray(ref[1]))
    assert a.dtype == (np.uint64 if scheme == "legacy" else np.uint32)


@functools.lru_cache(maxsize=1)
def corpus_shingles() -> list[list[str]]:
    return [mh.shingles(mh.words(d)) for d in corpus_docs()]


@pytest.mark.parametrize(("num_perm", "seed", "scheme"), [
    (112, 1, "legacy"), (128, 42, "legacy"), (117, 7, "legacy"), (112, 1, "affine32"), (128, 5, "affine32"),
])
def test_signatures_equal_datasketch(num_perm, seed, scheme):
    """Ours equals datasketch.MinHash(num_perm, seed, scheme, hashfunc=shingle_hash).update_batch(shingles)
    bit for bit, shingles from the reference normalization."""
    docs = corpus_docs()
    sig = mh.signatures(docs, num_perm=num_perm, seed=seed, scheme=scheme)
    assert sig.shape == (len(docs), num_perm) and sig.dtype == np.uint32
    hashfunc = functools.lru_cache(maxsize=None)(mh.shingle_hash)  # the same function, each shingle once
    for row, shingles in zip(sig, corpus_shingles(), strict=True):
        m = datasketch.MinHash(num_perm=num_perm, seed=seed, scheme=scheme, hashfunc=hashfunc)
        m.update_batch(shingles)
        assert np.array_equal(m.hashvalues, row)


def test_fast_and_slow_paths_are_used():
    """The corpus exercises both compiled paths: one pass for most documents, NFD in Python for those
    with a character that cannot be folded alone (Greek capital sigma, ...)."""
    mh._numba()
    tables = mh._tables()
    docs = [d.encode("utf-8", "surrogatepass") for d in corpus_docs()]
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    np.cumsum([len(d) for d in docs], out=offsets[1:])
    longest = int(np.diff(offsets).max())
    slow = np.zeros(len(docs), dtype=np.bool_)
    a, b = (x.astype(np.uint64) for x in mh.permutations(16))
    mh._fast_kernel(np.frombuffer(b"".join(docs), dtype=np.uint8), offsets, tables.table, tables.fold_index,
                    tables.fold_offsets, tables.fold_bytes, 5, a, b, True,
                    np.empty((len(docs), 16), dtype=np.uint32), np.empty(len(docs), dtype=np.int64), slow,
                    np.empty(longest + 1, dtype=np.uint64), np.empty(longest + 1, dtype=np.uint32),
                    np.empty(3 * longest + 4, dtype=np.uint8))
    assert 3 <= slow.sum() < 20
    assert "Σ" in corpus_docs()[int(np.flatnonzero(slow)[0])]


def test_every_special_character():
    """Each character the one-pass kernel folds or leaves to the slow path, and a sample of the others,
    alone in a word: the compiled backend hashes the word as the reference does."""
    tables = mh._tables()
    special = np.flatnonzero(tables.table & (mh._FOLDS | mh._UNSAFE | mh._MN | mh._ND | mh._SEP))
    others = np.random.default_rng(7).integers(0x80, sys.maxunicode + 1, 3000)
    chars = [chr(c) for c in np.unique(np.concatenate([special, others]))]
    docs = [f"q{c}z Q{c}{c}Z" for c in chars]
    fast = mh.MinHasher(8, scheme="affine32", ngram=1, backend="numba").signatures(docs)
    slow = mh.MinHasher(8, scheme="affine32", ngram=1, backend="numpy").signatures(docs)
    bad = [hex(ord(c)) for c, x, y in zip(chars, fast, slow, strict=True) if not np.array_equal(x, y)]
    assert bad == []
    assert len(chars) > 19000


@pytest.mark.parametrize("scheme", ["legacy", "affine32"])
def test_numba_and_numpy_backends_agree(scheme):
    docs = corpus_docs()
    fast = mh.MinHasher(112, seed=3, scheme=scheme, backend="numba")
    fast.max_batch_docs = 37  # several batches
    slow = mh.MinHasher(112, seed=3, scheme=scheme, backend="numpy")
    s1, n1 = fast.signatures(docs, return_num_words=True)
    s2, n2 = slow.signatures(docs, return_num_words=True)
    assert np.array_equal(s1, s2)
    assert np.array_equal(n1, n2)
    assert n1.tolist() == [len(mh.words(d)) for d in docs]


def test_batches_and_none():
    docs = corpus_docs()[:50]
    whole = mh.signatures(docs)
    hasher = mh.MinHasher(112)
    hasher.max_batch_chars = 3000
    assert np.array_equal(hasher.signatures(iter(docs)), whole)
    assert np.array_equal(mh.signatures([None, docs[0]])[0], mh.signatures([""])[0])
    assert mh.signatures([]).shape == (0, 112)
    # ngram changes the shingles
    assert not np.array_equal(mh.signatures(docs[:5], ngram=3), whole[:5])


def test_near_duplicates_look_alike():
    """A sanity check of the estimator: a book piece against itself with one word changed."""
    text = (CORPUS / "books").glob("*.txt").__next__().read_text(encoding="utf-8")[20000:24500]
    words = text.split()
    edited = " ".join(words[:300] + ["CHANGED"] + words[301:])
    other = (CORPUS / "books").glob("*.txt").__next__().read_text(encoding="utf-8")[40000:44500]
    sig = mh.signatures([text, edited, other], num_perm=128)
    assert (sig[0] == sig[1]).mean() > 0.9
    assert (sig[0] == sig[2]).mean() < 0.1


@pytest.mark.parametrize("num_perm", [32, 112, 117, 128])
def test_optimal_param_equals_datasketch(num_perm):
    for threshold in (0.1, 0.3, 0.5, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        assert mh.optimal_param(threshold, num_perm) == _optimal_param(threshold, num_perm, 0.5, 0.5)
    for weights in ((0.3, 0.7), (0.9, 0.1)):
        assert mh.optimal_param(0.8, num_perm, *weights) == _optimal_param(0.8, num_perm, *weights)


def test_optimal_param_fineweb():
    assert mh.optimal_param(0.8, 128) == _optimal_param(0.8, 128, 0.5, 0.5)
    bands, rows = mh.optimal_param(0.75, 112)
    assert bands * rows <= 112


_SAMPLE = "np.random.default_rng(12345).integers(0, 2**32, size=(6, 112), dtype=np.uint64).astype(np.uint32)"


def _sample_signatures() -> np.ndarray:
    return eval(_SAMPLE, {"np": np})


#: band_hashes(_sample_signatures(), 14, 8)[0, :3]: fixed forever (the shuffle keys of stored runs)
GOLDEN = [4243294077667048418, 11618750526095351086, 4698719432475502648]


def test_band_hashes():
    sig = _sample_signatures()
    sig[1, 8:16] = sig[0, 8:16]  # band 1 equal
    sig[2, :8] = sig[0, 8:16]  # the values of band 1, in band 0
    keys = mh.band_hashes(sig, 14, 8)
    assert keys.shape == (6, 14) and keys.dtype == np.uint64
    assert keys[1, 1] == keys[0, 1]
    assert (keys[1, [0, *range(2, 14)]] != keys[0, [0, *range(2, 14)]]).all()
    assert keys[2, 0] != keys[0, 1]  # the band index is part of the key
    assert len(set(keys.ravel().tolist())) == keys.size - 1
    assert np.array_equal(mh.band_hashes(sig.astype(np.uint64), 14, 8), keys)  # datasketch's uint64 values
    assert np.array_equal(mh.band_hashes(sig, 9, 12), mh.band_hashes(sig[:, :108], 9, 12))
    with pytest.raises(ValueError):
        mh.band_hashes(sig, 15, 8)
    with pytest.raises(ValueError):
        mh.band_hashes(sig[0], 14, 8)


def test_band_hashes_are_deterministic():
    keys = mh.band_hashes(_sample_signatures(), 14, 8)
    assert keys[0, :3].tolist() == GOLDEN
    code = ("import json; import numpy as np; from operators.dedup.minhash import band_hashes; "
            f"print(json.dumps(band_hashes({_SAMPLE}, 14, 8).tolist()))")
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        out = subprocess.run([sys.executable, "-c", code], cwd=Path(ROOT), env=env, capture_output=True,
                             text=True, check=True).stdout
        assert json.loads(out) == keys.tolist()


def test_bad_arguments():
    with pytest.raises(ValueError):
        mh.MinHasher(112, scheme="affine64")
    with pytest.raises(ValueError):
        mh.MinHasher(112, backend="gpu")
    with pytest.raises(ValueError):
        mh.MinHasher(0)
    with pytest.raises(ValueError):
        mh.MinHasher(112, ngram=0)
