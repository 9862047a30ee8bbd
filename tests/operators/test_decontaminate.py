"""``decontaminate``: n-gram overlap with eval sets, checked against a brute-force reference on real text."""

from __future__ import annotations

import gzip
import json
import os
import random
import unicodedata

import numpy as np
import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators.base import InputFile, TaskContext
from operators.filters import decontaminate as dc
from operators.filters.decontaminate import Decontaminate, DecontaminateParams, normalize_words
from tests.conftest import CORPUS

BOOKS = sorted((CORPUS / "books").glob("*.txt"))
LANGID = CORPUS / "langid"

# 20 words; the test documents copy parts of it with other case, punctuation and white space
QUESTION = ("Which of the following best describes the primary function of mitochondria "
            "in eukaryotic cells during aerobic respiration and growth?")


def lines(lang: str) -> list[str]:
    return (LANGID / f"{lang}.txt").read_text(encoding="utf-8").splitlines()


def batch_of(texts, dropped=None):
    n = len(texts)
    dropped = dropped or [None] * n
    return pa.RecordBatch.from_pydict({
        "id": [f"{i:05d}" for i in range(n)], "source": ["books"] * n, "text": pa.array(texts, pa.string()),
        "drop_reason": pa.array(dropped, pa.string()),
        "drop_step": pa.array([None if d is None else "earlier" for d in dropped], pa.string())})


def ctx():
    return TaskContext(source="books", input=InputFile(0, "x", "x"))


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return str(path)


def step(**params) -> Decontaminate:
    s = Decontaminate(DecontaminateParams(**params))
    s.ensure_setup()
    return s


@pytest.fixture
def trivia(tmp_path):
    return write_jsonl(tmp_path / "trivia.jsonl", [
        {"question": QUESTION, "answer": "Producing ATP"},
        {"id": 2, "prompt": "Name the nine planets of the solar system, in order."},  # 10 words: a short example
        {"question": "What is the capital of France?"},  # 6 words: below min_words, ignored
    ])


# --------------------------------------------------------------------------------------------------
# Reference: the words by a per-character loop, the n-grams as a set of tuples


def reference_words(text: str) -> list[str]:
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] in "PSZ" or cat == "Cc":
            out.append(" ")
        else:
            low = ch.lower()[0]
            out.append("σ" if low == "ς" else low)
    return "".join(out).split()


def reference_index(sets: dict[str, list[str]], ngram: int, min_words: int) -> dict[tuple[str, ...], str]:
    grams: dict[tuple[str, ...], str] = {}
    for name, examples in sets.items():
        for example in examples:
            words = reference_words(example)
            if len(words) >= ngram:
                new = [tuple(words[i:i + ngram]) for i in range(len(words) - ngram + 1)]
            elif len(words) >= min_words:
                new = [tuple(words)]
            else:
                new = []
            for g in new:
                grams.setdefault(g, name)
    return grams


def reference_match(grams: dict[tuple[str, ...], str], text: str) -> str | None:
    """The first shared n-gram in document order (at one start, the longest), as the step's detail."""
    words = reference_words(text)
    lengths = sorted({len(g) for g in grams}, reverse=True)
    for s in range(len(words)):
        for k in lengths:
            g = tuple(words[s:s + k])
            if len(g) == k and g in grams:
                return f"{grams[g]}: {' '.join(g)}"
    return None


# --------------------------------------------------------------------------------------------------


def test_normalization_lowercases_and_splits_on_punctuation_and_white_space():
    assert normalize_words("Don't  STOP-me!\n\tNow…“quoted” (x+y=z) 3.14 €5 — naïve Straße") == [
        "don", "t", "stop", "me", "now", "quoted", "x", "y", "z", "3", "14", "5", "naïve", "straße"]
    assert normalize_words("a\u00a0b\u2003c\x00d\u200be") == ["a", "b", "c", "d\u200be"]  # Cf stays in a word
    # character by character: final sigma folded, Turkish capital dotted I is i
    assert normalize_words("ΟΔΟΣ οδος, İSTANBUL istanbul") == ["οδοσ", "οδοσ", "istanbul", "istanbul"]
    for lang in ("en", "de", "el", "ru", "tr", "hi", "zh", "ar"):
        for line in lines(lang)[:50]:
            assert normalize_words(line) == reference_words(line)


def test_a_copied_13_word_span_is_dropped_with_its_set_and_n_gram(trivia):
    s = step(eval_sets=[trivia])
    words = QUESTION.split()
    copied = "  ".join(w.upper() for w in words[3:16])  # 13 words, other case and spacing
    doc = f"Intro text.\n{copied.replace(' ', ' -- ', 2)}!!! and more text after it."
    out = s(batch_of([doc, "An unrelated document about gardening and roses.", None]), c := ctx())
    assert out.column("drop_reason").to_pylist() == ["contaminated", None, None]
    assert out.column("drop_step").to_pylist() == ["decontaminate", None, None]
    detail = out.column("drop_detail")[0].as_py()
    assert detail == "trivia: " + " ".join(w.lower() for w in words[3:16])
    assert out.column("drop_detail").to_pylist()[1:] == [None, None]
    assert c.counters == {"contaminated": 1, "contaminated_trivia": 1}
    assert "contaminated" not in out.schema.names  # drop mode adds no column
    assert s.added(s.params) == {}


def test_twelve_shared_words_are_not_enough(trivia):
    s = step(eval_sets=[trivia])
    words = QUESTION.split()
    docs = [" ".join(words[i:i + 12]) + " zebra " + " ".join(words[i + 13:i + 25]) for i in range(0, 8)]
    out = s(batch_of(docs), ctx())
    assert out.column("drop_reason").to_pylist() == [None] * len(docs)
    # ngram is a parameter: at 12 the same documents are contaminated
    out = step(eval_sets=[trivia], ngram=12)(batch_of(docs), ctx())
    assert out.column("drop_reason").to_pylist() == ["contaminated"] * len(docs)


def test_mark_mode_keeps_rows_and_adds_columns(trivia):
    s = step(eval_sets=[trivia], mode="mark")
    assert set(s.added(s.params)) == {"contaminated", "contamination"}
    docs = ["It asks: " + QUESTION, "clean text", QUESTION]
    out = s(batch_of(docs, dropped=[None, None, "too_short"]), c := ctx())
    assert out.column("drop_reason").to_pylist() == [None, None, "too_short"]
    assert out.column("contaminated").to_pylist() == [True, False, None]
    assert out.column("contamination").to_pylist() == [
        "trivia: which of the following best describes the primary function of mitochondria in eukaryotic",
        None, None]
    assert out.schema.field("contaminated").type == pa.bool_()
    assert c.counters == {"contaminated": 1, "contaminated_trivia": 1}


def test_short_examples_match_whole_and_very_short_ones_are_ignored(trivia):
    docs = ["Quiz: NAME the nine planets of the Solar System (in order)...",  # all 10 words of the prompt
            "name the nine planets of the solar system",  # only 8 of them
            "Trivia: what is the capital of France? Paris."]  # a 6-word example: under min_words
    out = step(eval_sets=[trivia])(batch_of(docs), ctx())
    assert out.column("drop_detail").to_pylist() == [
        "trivia: name the nine planets of the solar system in order", None, None]
    out = step(eval_sets=[trivia], min_words=2)(batch_of(docs), ctx())
    assert out.column("drop_detail").to_pylist() == [
        "trivia: name the nine planets of the solar system in order", None,
        "trivia: what is the capital of france"]
    # "producing atp" (2 words) now counts too
    out = step(eval_sets=[trivia], min_words=2)(batch_of(["The cell is producing ATP."]), ctx())
    assert out.column("drop_detail").to_pylist() == ["trivia: producing atp"]


def test_the_detail_is_the_first_match_and_there_the_longest(tmp_path):
    words = QUESTION.lower().rstrip("?").split()
    short = write_jsonl(tmp_path / "short.jsonl", [{"text": " ".join(words[2:11])}])  # 9 words
    long_ = write_jsonl(tmp_path / "long.jsonl", [{"text": QUESTION}])
    s = step(eval_sets=[short, long_])
    assert s.check("So: " + QUESTION) == ("long", " ".join(words[:13]))  # starts first
    assert s.check("So: " + " ".join(words[2:])) == ("long", " ".join(words[2:15]))  # same start: longest
    assert s.check("So: " + " ".join(words[2:14])) == ("short", " ".join(words[2:11]))
    assert step(eval_sets=[long_, write_jsonl(tmp_path / "again.jsonl", [{"text": QUESTION}])]).check(
        QUESTION) == ("long", " ".join(words[:13]))  # the same n-gram in two sets: the first listed


def test_fields_txt_sets_and_the_first_set_named(tmp_path):
    sentence = "the quick brown fox jumps over the lazy dog while the farmer sleeps soundly"
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": "unrelated words only here and there, nothing to see at all"},
                                           {"choices": ["nope", sentence.upper()]}])
    b = tmp_path / "b.txt.gz"
    b.write_bytes(gzip.compress(f"first line is short\n{sentence}\n".encode()))
    doc = "Once " + sentence + " again."
    assert step(eval_sets=[a, str(b)])(batch_of([doc]), ctx()).column("drop_detail").to_pylist() == [
        f"a: {sentence[:sentence.index(' soundly')]}"]
    assert step(eval_sets=[str(b), a])(batch_of([doc]), ctx()).column("drop_detail")[0].as_py().startswith("b: ")
    # only the listed fields count
    assert step(eval_sets=[a, str(b)], fields=["text"])(batch_of([doc]), ctx()).column(
        "drop_detail")[0].as_py().startswith("b: ")


def test_bad_eval_sets_are_one_clear_error_at_setup(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(ValueError, match=r"cannot read eval set .*nope\.jsonl"):
        step(eval_sets=[missing])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine but short"}\n{"text": oops}\n')
    with pytest.raises(ValueError, match=r"eval set .*bad\.jsonl, line 2: not valid JSON"):
        step(eval_sets=[str(bad)])
    empty = write_jsonl(tmp_path / "empty.jsonl", [{"label": "a long enough string with many many words in it"}])
    with pytest.raises(ValueError, match=r"eval set .*empty\.jsonl has no example of at least 8 words"):
        step(eval_sets=[empty])
    other = tmp_path / "data.csv"
    other.write_text("a,b\n")
    with pytest.raises(ValueError, match=r"data\.csv: expected a \.jsonl or \.txt"):
        step(eval_sets=[str(other)])
    latin = tmp_path / "latin.txt"
    latin.write_bytes("caf\xe9 ".encode("latin-1") * 20)
    with pytest.raises(ValueError, match=r"latin\.txt: cannot decode"):
        step(eval_sets=[str(latin)])
    with pytest.raises(ValidationError, match="two eval sets are named 'x'"):
        DecontaminateParams(eval_sets=["a/x.jsonl", "b/x.txt"])
    with pytest.raises(ValidationError, match="min_words"):
        DecontaminateParams(eval_sets=[str(latin)], ngram=5, min_words=8)
    with pytest.raises(ValidationError):
        DecontaminateParams(eval_sets=[str(latin)], n_grams=13)  # unknown key


def test_the_index_is_built_once_per_process_and_rebuilt_when_a_file_changes(trivia):
    first = step(eval_sets=[trivia]).index
    assert step(eval_sets=[trivia]).index is first  # another pipeline in the same worker
    assert step(eval_sets=[trivia], ngram=12).index is not first
    st = os.stat(trivia)
    os.utime(trivia, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert step(eval_sets=[trivia]).index is not first


# --------------------------------------------------------------------------------------------------
# Real text: langid sentences as eval sets, Gutenberg books as documents


@pytest.fixture(scope="module")
def real_sets(tmp_path_factory):
    """Eval sets from real sentences: English (.txt), German questions (.jsonl), Greek and Russian choices."""
    d = tmp_path_factory.mktemp("evals")
    (d / "en_news.txt").write_text("\n".join(lines("en")[:200]) + "\n", encoding="utf-8")
    de = write_jsonl(d / "de_quiz.jsonl", [{"question": q, "answer": "ja"} for q in lines("de")[:200]])
    mixed = write_jsonl(d / "el_ru.jsonl",
                        [{"choices": [e, r]} for e, r in zip(lines("el")[:150], lines("ru")[:150], strict=True)])
    sets = {"en_news": lines("en")[:200], "de_quiz": lines("de")[:200],
            "el_ru": [s for pair in zip(lines("el")[:150], lines("ru")[:150], strict=True) for s in pair]}
    return [str(d / "en_news.txt"), de, mixed], sets


def mangle(sentence: str, rng: random.Random) -> str:
    """Same words, other case, punctuation and white space."""
    out = []
    for w in sentence.split():
        w = w.upper() if rng.random() < 0.3 else w
        out.append(w + rng.choice(["", "", ",", " -", "\n", "  ", "!)", "…"]))
    return " ".join(out)


def test_books_are_clean_and_a_book_with_an_eval_sentence_is_caught(real_sets):
    paths, _ = real_sets
    s = step(eval_sets=paths)
    books = [p.read_text(encoding="utf-8", errors="replace") for p in BOOKS]
    out = s(batch_of(books), c := ctx())
    assert out.column("drop_reason").to_pylist() == [None] * len(books)
    assert c.counters == {}
    sentence = lines("en")[17]  # "A disk may contain many directories and directories within directories."
    book = books[5]
    middle = book.index("\n\n", len(book) // 2)
    spliced = book[:middle] + "\n\n" + mangle(sentence, random.Random(1)) + book[middle:]
    out = s(batch_of([spliced]), ctx())
    want = "en_news: " + " ".join(reference_words(sentence))
    assert out.column("drop_detail").to_pylist() == [want]


def test_agrees_with_a_brute_force_reference_on_real_documents(real_sets):
    """Real books and sentences, some with eval text spliced in whole, as 13 words or as only 12."""
    paths, sets = real_sets
    rng = random.Random(5)
    grams = reference_index(sets, 13, 8)
    examples = [(name, e) for name, ex in sets.items() for e in ex]
    docs = [p.read_text(encoding="utf-8", errors="replace")[:40_000] for p in BOOKS[::4]]
    # held-out sentences of the same languages (same sources as the eval sets)
    for lang in ("en", "de", "el", "ru"):
        held = lines(lang)[200:]
        docs += [" ".join(held[i:i + 8]) for i in range(0, len(held), 8)]
    kinds = ["real"] * len(docs)
    for _ in range(160):
        book = BOOKS[rng.randrange(len(BOOKS))].read_text(encoding="utf-8", errors="replace")
        at = rng.randrange(len(book) - 4000)
        piece = book[at:at + 3000]
        name, example = examples[rng.randrange(len(examples))]
        words = reference_words(example)
        kind = rng.choice(["whole", "13", "12", "none"])
        if kind == "none":
            example = ""
        elif kind in ("13", "12") and len(words) >= 14:
            n = int(kind)
            i = rng.randrange(len(words) - n + 1)
            example = " ".join(words[i:i + n])
        else:
            kind = "whole"
        cut = rng.randrange(len(piece))
        # fenced by a word of no eval set, so that the book's words cannot extend a 12-word copy to 13
        docs.append(piece[:cut] + " qzx " + mangle(example, rng) + " qzx " + piece[cut:])
        kinds.append(kind)
    out = step(eval_sets=paths)(batch_of(docs), ctx())
    got = out.column("drop_detail").to_pylist()
    want = [reference_match(grams, d) for d in docs]
    assert got == want
    found = {k: [w is not None for w, kk in zip(want, kinds, strict=True) if kk == k] for k in set(kinds)}
    assert all(found["13"]) and len(found["13"]) > 20  # 13 words copied: always caught
    assert not any(found["12"]) and len(found["12"]) > 20  # 12 words copied: never
    assert sum(found["whole"]) > 30 and not any(found["none"]) and not any(found["real"])
    assert {w.split(":")[0] for w in want if w} == {"en_news", "de_quiz", "el_ru"}


def test_hash_collisions_cannot_drop_a_document(trivia, monkeypatch):
    """With every word hashed alike, all windows of a length collide; the word-by-word check still decides."""
    real = dc._word_hashes

    def alike(text):
        return np.ones_like(real(text))

    monkeypatch.setattr(dc, "_word_hashes", alike)
    dc._INDEXES.clear()
    try:
        s = step(eval_sets=[trivia], mode="mark")
        assert len(np.unique(s.index.hashes)) == len(s.index.ks)
        docs = [" ".join(["zebra"] * 40), "It asks: " + QUESTION, "name the nine planets of the solar system in order",
                "of " * 30, "name the nine planets of the solar system in a row"]
        out = s(batch_of(docs), ctx())
        assert out.column("contaminated").to_pylist() == [False, True, True, False, False]
    finally:
        dc._INDEXES.clear()  # keep the spoiled index out of the cache


def test_long_texts_are_hashed_in_pieces_with_the_same_words(monkeypatch, tmp_path):
    texts = [BOOKS[0].read_text(encoding="utf-8", errors="replace")[:50_000], "x" * 3000 + " tail words",
             "word\n" * 2000, " " * 5000 + "end", "Привет, мир! " * 500]
    whole = [dc._word_hashes(t) for t in texts]
    monkeypatch.setattr(dc, "_PIECE", 257)
    for text, want in zip(texts, whole, strict=True):
        got = dc._word_hashes(text)
        assert np.array_equal(got, want) and len(got) == len(normalize_words(text))
    book = texts[0]
    spliced = book[:30_000] + " " + QUESTION + " " + book[30_000:]
    index = dc.build_index([write_jsonl(tmp_path / "q.jsonl", [{"text": QUESTION}])],
                           ("text",), 13, 8)
    assert index.match(spliced) == ("q", " ".join(reference_words(QUESTION)[:13]))
    assert index.match(book) is None
