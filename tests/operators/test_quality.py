"""``quality_classifier`` and its training: ROC AUC against a pairwise count, the step on Arrow batches,
and a classifier trained on the real corpus (books against web pages the heuristic filters drop)."""

from __future__ import annotations

import random
import shutil

import numpy as np
import pyarrow as pa
import pytest

from operators import quality
from operators.base import InputFile, TaskContext
from operators.quality import QualityClassifier, QualityParams, Scorer, holdout_split, roc_auc
from operators.readers.books import TextFilesParams, TextFilesReader
from tests.conftest import CORPUS

#: book chunks about as long as the web pages (their median main text is ~3,500 characters)
CHUNK_CHARS = 4000


def ctx() -> TaskContext:
    return TaskContext(source="web", input=InputFile(0, "x", "x"))


def batch_of(texts, reasons=None, details=None) -> pa.RecordBatch:
    n = len(texts)
    reasons = reasons or [None] * n
    cols = {"id": [f"{i:05d}" for i in range(n)], "source": ["web"] * n, "text": pa.array(texts, pa.string()),
            "drop_reason": pa.array(reasons, pa.string()),
            "drop_step": pa.array([("gopher_quality" if r else None) for r in reasons], pa.string())}
    if details is not None:
        cols["drop_detail"] = pa.array(details, pa.string())
    return pa.RecordBatch.from_pydict(cols)


def book_chunks(max_chars: int = CHUNK_CHARS) -> list[dict]:
    """Every book of the corpus, Gutenberg text stripped, split into pieces of web-page size."""
    reader = TextFilesReader(TextFilesParams(paths=str(CORPUS / "books" / "*.txt"), strip="gutenberg",
                                             max_chars=max_chars))
    rows: list[dict] = []
    for inp in reader.list_inputs():
        for batch in reader.read(TaskContext(source="books", input=inp), 1000):
            rows += batch.select(["path", "title", "text", "chunk"]).to_pylist()
    return rows


def filtered_out(texts: list[str]) -> tuple[list[str], list[str]]:
    """(dropped, kept): the texts the Gopher repetition, Gopher quality, C4 and FineWeb filters drop,
    with their default settings, run in that order on one Arrow batch."""
    from operators.filters.heuristic import (
        C4Quality,
        C4QualityParams,
        FineWebQuality,
        FineWebQualityParams,
        GopherQuality,
        GopherQualityParams,
        GopherRepetition,
        GopherRepetitionParams,
    )

    batch = batch_of(texts)
    for step in (GopherRepetition(GopherRepetitionParams()), GopherQuality(GopherQualityParams()),
                 C4Quality(C4QualityParams()), FineWebQuality(FineWebQualityParams())):
        batch = step(batch, ctx())
    reasons = batch.column("drop_reason").to_pylist()
    return ([t for t, r in zip(texts, reasons, strict=True) if r is not None],
            [t for t, r in zip(texts, reasons, strict=True) if r is None])


# --------------------------------------------------------------------------------------------------
# ROC AUC


def brute_force_auc(labels, scores) -> float:
    pos = [s for y, s in zip(labels, scores, strict=True) if y]
    neg = [s for y, s in zip(labels, scores, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_is_the_pairwise_win_rate_with_ties_as_halves():
    rng = random.Random(7)
    for trial in range(30):
        n = rng.randint(2, 120)
        labels = [rng.random() < 0.3 for _ in range(n)]
        labels[0], labels[1] = True, False
        digits = trial % 3  # 0 and 1 digits: many ties
        scores = [round(rng.random(), digits) for _ in range(n)]
        assert roc_auc(labels, scores) == pytest.approx(brute_force_auc(labels, scores), abs=1e-12)
    assert roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.2, 0.1]) == 1.0
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0
    assert roc_auc([1, 0, 1, 0], [0.5] * 4) == 0.5
    for bad in (([1, 1], [0.1, 0.2]), ([1, 0], [0.1, float("nan")]), ([1, 0], [0.1])):
        with pytest.raises(ValueError):
            roc_auc(*bad)


def test_holdout_keeps_groups_whole_and_near_the_share():
    groups = [f"book{i // 10}" for i in range(200)] + [f"page{i}" for i in range(37)]
    held = holdout_split(groups, 0.1, random.Random(0))
    by_group: dict[str, set[bool]] = {}
    for g, h in zip(groups, held, strict=True):
        by_group.setdefault(g, set()).add(h)
    assert all(len(v) == 1 for v in by_group.values())
    assert 0.07 * len(groups) <= sum(held) <= 0.13 * len(groups)
    assert holdout_split(groups, 0.1, random.Random(0)) == held  # seeded
    with pytest.raises(ValueError, match="need two"):
        holdout_split(["one"] * 5, 0.1, random.Random(0))


def test_preprocessing_folds_white_space_and_bounds_length():
    assert quality.preprocess("  A\tb\n\nC  d\r\n") == "A b C d"
    assert quality.preprocess("Hello World", lowercase=True) == "hello world"
    assert quality.preprocess("x" * 50 + " y", max_chars=10) == "x" * 10


# --------------------------------------------------------------------------------------------------
# The real classifier


@pytest.fixture(scope="module")
def data(web_texts):
    """Positives: the book chunks. Negatives: the web pages the heuristic filters drop (590 of 707;
    most of them fail Gopher's stop-word rule: German pages)."""
    chunks = book_chunks()
    dropped, kept = filtered_out([d["text"] for d in web_texts])
    assert len(chunks) > 2500 and len(dropped) > 400
    return chunks, dropped, kept


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """The classifier, trained as `smelter quality train` does: groups are books (their file), so every
    chunk of a held-out book is held out; the three works that appear under two authors' names have
    identical chunks, which merges their groups, so neither copy can leak into training."""
    chunks, dropped, _ = data
    chunks = chunks[::2]  # every other chunk: half the training time, every book still in
    result = quality.train([c["text"] for c in chunks], dropped, positive_groups=[c["path"] for c in chunks],
                           holdout=0.1, seed=0, epochs=10)
    folder = tmp_path_factory.mktemp("quality")
    path = str(folder / "model.bin")
    result.model.save_model(path)
    import json

    with open(quality.metadata_path(path), "w") as fh:
        json.dump(result.metadata(), fh)
    return result, chunks, path


def test_trained_on_books_against_filtered_web_pages_auc_at_least_0_9(trained):
    result, chunks, _ = trained
    m = result.metrics["heldout"]
    held_books = {c["path"] for c, h in zip(chunks, result.heldout, strict=False) if h}
    train_books = {c["path"] for c, h in zip(chunks, result.heldout, strict=False) if h is False}
    print(f"\nheld out: {m['positive']} chunks of {len(held_books)} books and {m['negative']} web pages: "
          f"accuracy {m['accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f}")
    assert m["roc_auc"] >= 0.9 and m["accuracy"] >= 0.85
    assert m["positive"] >= 100 and m["negative"] >= 40
    # honest split: a book is on one side only, and so are both copies of a duplicated work
    assert held_books and not held_books & train_books
    titles_held = {c["title"] for c in chunks if c["path"] in held_books}
    titles_train = {c["title"] for c in chunks if c["path"] in train_books}
    assert not titles_held & titles_train


def test_training_is_deterministic(data):
    chunks, dropped, _ = data
    pos, neg = [c["text"] for c in chunks[:300]], dropped[:150]
    groups = [c["path"] for c in chunks[:300]]
    a = quality.train(pos, neg, positive_groups=groups, seed=3, epochs=3, dim=20)
    b = quality.train(pos, neg, positive_groups=groups, seed=3, epochs=3, dim=20)
    assert a.heldout == b.heldout and a.metrics["heldout"] == b.metrics["heldout"]
    probe = neg[:20] + pos[:20]
    assert np.array_equal(Scorer(a.model).scores(probe), Scorer(b.model).scores(probe))
    with pytest.raises(ValueError, match="need two"):
        quality.train(pos[:5], neg, positive_groups=["one book"] * 5)
    with pytest.raises(ValueError, match="labels must differ"):
        quality.train(pos, neg, label="__label__x", negative_label="__label__x")


# --------------------------------------------------------------------------------------------------
# The step


def test_step_scores_live_rows_and_drops_below_min_score(trained, data, monkeypatch):
    _, _, path = trained
    chunks, dropped, _ = data
    texts = [c["text"] for c in chunks[1:40:4]] + dropped[:10] + ["   ", None, dropped[10]]
    n = len(texts)
    reasons = [None] * (n - 1) + ["stop_words"]
    details = [None] * (n - 1) + ["earlier detail"]
    scorer = Scorer.load(path)
    expected = scorer.scores([t for t in texts[:20]])

    step = QualityClassifier(QualityParams(model=path))
    calls = []
    out = step(batch_of(texts, reasons, details), ctx())  # loads the model
    predict = step.scorer.model.predict
    monkeypatch.setattr(step.scorer.model, "predict", lambda *a, **k: calls.append(len(a[0])) or predict(*a, **k))
    out = step(batch_of(texts, reasons, details), ctx())
    assert calls == [20]  # one fastText call per batch, for the live non-empty rows
    assert out.schema.field("quality_score").type == pa.float32()
    scores = out.column("quality_score").to_pylist()
    assert np.array_equal(np.array(scores[:20], np.float32), expected) and scores[20:] == [None, None, None]
    assert out.column("drop_reason").to_pylist() == reasons  # min_score 0: scores only
    assert out.column("drop_detail").to_pylist() == details
    assert out.num_rows == n and out.column("id").to_pylist() == batch_of(texts).column("id").to_pylist()
    # the books score high, the dropped pages low
    assert np.mean(scores[:10]) > 0.7 > 0.3 > np.mean(scores[10:20])

    strict = QualityClassifier(QualityParams(model=path, min_score=0.5, column="hq"))
    out = strict(batch_of(texts, reasons, details), ctx())
    hq = out.column("hq").to_pylist()
    got = out.column("drop_reason").to_pylist()
    for i in range(20):
        assert got[i] == (None if hq[i] >= 0.5 else "low_quality")
    assert got[:10].count(None) >= 9 and got[10:20].count("low_quality") >= 8
    assert got[20:] == ["empty", "empty", "stop_words"]
    steps = out.column("drop_step").to_pylist()
    assert steps[-1] == "gopher_quality"
    assert all(s == "quality_classifier" for s, r in zip(steps[:20], got[:20], strict=True) if r == "low_quality")
    det = out.column("drop_detail").to_pylist()
    low = [i for i in range(20) if got[i] == "low_quality"]
    assert det[low[0]] == f"hq {hq[low[0]]:.4f} < 0.5" and det[-1] == "earlier detail"
    assert "quality_score" not in out.schema.names
    assert QualityClassifier.added(QualityParams(model=path, column="hq")) == {"hq": pa.float32()}


def test_preprocessing_and_label_come_from_the_model_metadata(trained, tmp_path):
    _, chunks, path = trained
    texts = [c["text"] for c in chunks[:5]]
    plain = Scorer.load(path)
    assert (plain.label, plain.lowercase, plain.max_chars) == ("__label__hq", False, quality.DEFAULT_MAX_CHARS)
    copy = tmp_path / "lower.bin"
    shutil.copy(path, copy)
    meta = quality.read_metadata(path)
    meta["preprocess"] = {"lowercase": True, "max_chars": 500}
    (tmp_path / "lower.json").write_text(__import__("json").dumps(meta))
    lowered = Scorer.load(str(copy))
    assert lowered.lowercase and lowered.max_chars == 500
    assert np.array_equal(lowered.scores(texts), plain.scores([t[:500].lower() for t in texts]))
    # the YAML wins over the metadata
    assert not Scorer.load(str(copy), lowercase=False).lowercase
    # the score of the other label is one minus this one (two labels, softmax)
    other = Scorer.load(path, label="__label__cc")
    assert np.allclose(other.scores(texts) + plain.scores(texts), 1.0, atol=1e-4)


def test_bad_parameters_are_errors(trained, tmp_path):
    _, _, path = trained
    with pytest.raises(ValueError, match="no model file"):
        QualityParams(model=str(tmp_path / "missing.bin"))
    for bad in ({"min_score": 1.5}, {"column": "text"}, {"column": "a b"}, {"label": "two words"},
                {"unknown": 1}):
        with pytest.raises(ValueError):
            QualityParams(model=path, **bad)
    step = QualityClassifier(QualityParams(model=path, label="__label__nope"))
    with pytest.raises(ValueError, match="not one of the model's labels"):
        step(batch_of(["some text"]), ctx())
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not a model")
    with pytest.raises(FileNotFoundError, match="cannot load"):
        QualityClassifier(QualityParams(model=str(junk)))(batch_of(["x"]), ctx())
