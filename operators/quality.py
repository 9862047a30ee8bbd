"""``quality_classifier``: a fastText classifier's probability that a document is high quality.

The step adds ``quality_score`` (float32; ``column`` renames it): the probability the model gives the
high-quality label (``label``; default ``__label__hq``, the label of DCLM's published classifier, whose
other label is ``__label__cc``), whatever that label's rank. With ``min_score > 0`` a live row scoring
below it drops with reason ``low_quality`` (the score in the detail), and a live row with no text with
reason ``empty``; with the default ``min_score: 0`` it only scores. Rows an earlier step dropped get a
null score and keep their reason.

Any fastText supervised model works (``.bin`` or ``.ftz``): DCLM's, or one ``smelter quality train``
makes. Preprocessing is the same for training and scoring: the text cut to ``max_chars`` characters,
its white space (line ends included) folded to single spaces, optionally lower-cased. DCLM's own scoring
joins the lines of a text with spaces and does not lower-case, which is what the defaults do (fastText
splits words on white space, so folding runs of it changes no token). A model trained here records its
preprocessing and labels in ``<model>.json`` beside it; the step uses them unless the YAML sets them.

The model loads once per Python worker (:meth:`QualityClassifier.setup`; sources that name the same
file share one copy) and runs once per batch, on the list of live texts, asking for every label
(``k=-1``).

Training (:func:`train`) writes the labelled, preprocessed documents to a temporary file in a seeded
random order and runs fastText on one thread with a fixed seed, so the same data gives the same model.
One catch, measured: fastText (the fasttext-numpy2-wheel build) reads memory it never initialised
while training. Its random initialisation of the input matrix fills one tenth of it per thread, so with
one thread nine tenths keep whatever ``malloc`` returns (and zeroing only the large blocks was not
enough: some smaller buffer is read uninitialised too). In a fresh process that memory is mostly zeros; after an earlier model was freed it holds old weights,
and the same training then gave other models or diverged ("Encountered NaN"). On glibc, :func:`train`
therefore has ``malloc`` zero every block it hands out while fastText trains (``mallopt(M_PERTURB)``,
switched off again afterwards): the same data and seed give the same model in any process.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import json
import os
import random
import tempfile
import time
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from operators.assets import AssetError
from operators.base import Params, RowStep, TaskContext, alive, update_batch

DEFAULT_LABEL = "__label__hq"
DEFAULT_NEGATIVE_LABEL = "__label__cc"
#: documents are cut to this many characters before scoring or training
DEFAULT_MAX_CHARS = 100_000
METADATA_FORMAT = "smelter-quality-classifier/1"
#: fastText training defaults (``smelter quality train`` options change them)
TRAIN_DEFAULTS: dict[str, Any] = {"epochs": 10, "lr": 0.5, "word_ngrams": 2, "dim": 100, "min_count": 2,
                                  "bucket": 200_000}
_RESERVED = {"id", "source", "text", "url", "path", "drop_reason", "drop_step", "drop_detail"}


# --------------------------------------------------------------------------------------------------
# Preprocessing and scoring


def preprocess(text: str, lowercase: bool = False, max_chars: int | None = DEFAULT_MAX_CHARS) -> str:
    """What fastText sees: ``text`` cut to ``max_chars``, white space folded, optionally lower-cased."""
    if max_chars is not None and len(text) > max_chars:
        text = text[:max_chars]
    text = " ".join(text.split())
    return text.lower() if lowercase else text


def metadata_path(model_path: str) -> str:
    """``model.bin`` -> ``model.json``: where ``smelter quality train`` writes what it knows of a model."""
    return os.path.splitext(model_path)[0] + ".json"


def read_metadata(model_path: str) -> dict[str, Any]:
    """The metadata ``smelter quality train`` wrote beside ``model_path`` ({} when there is none)."""
    try:
        with open(metadata_path(model_path)) as fh:
            meta = json.load(fh)
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) and meta.get("format") == METADATA_FORMAT else {}


#: models loaded in this process, by (path, size, mtime): sources that name one model share it
_models: dict[tuple[str, int, float], Any] = {}


def _load_fasttext(path: str):
    import fasttext

    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime)
    if key not in _models:
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # older fastText warns about load_model
                _models[key] = fasttext.load_model(path)
        except (ValueError, RuntimeError, MemoryError) as e:
            raise AssetError(f"quality_classifier: cannot load fastText model {path}: {e}") from None
    return _models[key]


@dataclasses.dataclass
class Scorer:
    """A fastText model and the preprocessing it was trained with; scores lists of texts."""

    model: Any
    label: str = DEFAULT_LABEL
    lowercase: bool = False
    max_chars: int | None = DEFAULT_MAX_CHARS

    @classmethod
    def load(cls, path: str, label: str | None = None, lowercase: bool | None = None,
             max_chars: int | None = None) -> Scorer:
        """Load a model; unset options come from its metadata file, else DCLM's conventions.

        :class:`AssetError` when the file is missing or not a fastText model, ``ValueError`` when
        ``label`` is not one of its labels.
        """
        if not os.path.isfile(path):
            raise AssetError(f"quality_classifier: no model file: {path} does not exist")
        meta = read_metadata(path)
        prep = meta.get("preprocess", {})
        scorer = cls(_load_fasttext(path),
                     label=label or meta.get("label") or DEFAULT_LABEL,
                     lowercase=prep.get("lowercase", False) if lowercase is None else lowercase,
                     max_chars=prep.get("max_chars", DEFAULT_MAX_CHARS) if max_chars is None else max_chars)
        labels = scorer.model.get_labels()
        if scorer.label not in labels:
            raise ValueError(f"label {scorer.label} is not one of the model's labels "
                             f"({', '.join(labels[:6])}); set label:")
        return scorer

    def scores(self, texts: list[str]) -> np.ndarray:
        """The probability of ``label`` for each text (float32), from one ``predict`` call."""
        if not texts:
            return np.zeros(0, np.float32)
        prepped = [preprocess(t, self.lowercase, self.max_chars) for t in texts]
        all_labels, all_probs = self.model.predict(prepped, k=-1, threshold=0.0)
        out = np.zeros(len(texts), np.float32)
        for i, (labels, probs) in enumerate(zip(all_labels, all_probs, strict=True)):
            for lab, p in zip(labels, probs, strict=True):
                if lab == self.label:
                    out[i] = min(float(p), 1.0)  # fastText's smoothing can give 1.00001
                    break
        return out


# --------------------------------------------------------------------------------------------------
# Metrics


def roc_auc(labels: Any, scores: Any) -> float:
    """Area under the ROC curve: the chance that a random positive outscores a random negative, ties
    counting one half (Mann-Whitney U from average ranks). ``ValueError`` without both classes."""
    y = np.asarray(labels, dtype=bool)
    s = np.asarray(scores, dtype=np.float64)
    if y.shape != s.shape or y.ndim != 1:
        raise ValueError("labels and scores must be two lists of the same length")
    if np.isnan(s).any():
        raise ValueError("a score is NaN")
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC AUC needs positive and negative examples")
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)  # 1-based rank of the last member of each tie group
    average_rank = ends - (counts - 1) / 2.0
    rank_sum = average_rank[inverse][y].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def evaluate(scorer: Scorer, positives: list[str], negatives: list[str]) -> dict[str, Any]:
    """Accuracy (score >= 0.5 means positive) and ROC AUC of ``scorer`` on labelled texts."""
    s = scorer.scores(list(positives) + list(negatives))
    y = np.array([True] * len(positives) + [False] * len(negatives))
    return {"positive": len(positives), "negative": len(negatives),
            "accuracy": float(((s >= 0.5) == y).mean()), "roc_auc": roc_auc(y, s)}


# --------------------------------------------------------------------------------------------------
# Training


def holdout_split(groups: list[str], share: float, rng: random.Random) -> list[bool]:
    """Which documents to hold out: whole groups, in a random order, until ``share`` of the documents.

    At least one group is held out and one kept; ``ValueError`` with fewer than two groups.
    """
    sizes: dict[str, int] = {}
    for g in groups:
        sizes[g] = sizes.get(g, 0) + 1
    if len(sizes) < 2:
        raise ValueError(f"only {len(sizes)} group(s) of documents: need two to hold one out "
                         "(documents of one book or one input are one group)")
    order = sorted(sizes)
    rng.shuffle(order)
    target = share * len(groups)
    held: set[str] = set()
    count = 0
    for g in order[:-1]:  # never hold out every group
        if held and count + sizes[g] / 2 > target:
            continue  # this group would overshoot by more than it helps; try a smaller one
        held.add(g)
        count += sizes[g]
        if count >= target:
            break
    return [g in held for g in groups]


def merge_duplicate_groups(texts: list[str], groups: list[str]) -> list[str]:
    """Groups joined when they share an identical document, so a duplicate never spans the split."""
    parent: dict[str, str] = {}

    def find(g: str) -> str:
        while parent.get(g, g) != g:
            parent[g] = parent.get(parent[g], parent[g])
            g = parent[g]
        return g

    first: dict[bytes, str] = {}
    for text, g in zip(texts, groups, strict=True):
        key = hashlib.blake2b(text.encode(), digest_size=16).digest()
        if key in first:
            a, b = find(first[key]), find(g)
            if a != b:
                parent[max(a, b)] = min(a, b)
        else:
            first[key] = g
    return [find(g) for g in groups]


_M_PERTURB = -6


@contextlib.contextmanager
def _zeroed_allocations():
    """glibc: every ``malloc`` inside the block returns zeroed memory (see the module docstring).

    ``M_PERTURB`` with byte 0xFF makes glibc fill new blocks with 0xFF ^ 0xFF = 0 (and freed ones
    with 0xFF); 0 switches it off. Elsewhere nothing is done.
    """
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        on = bool(libc.mallopt(_M_PERTURB, 0xFF))
    except (OSError, AttributeError):
        libc, on = None, False
    try:
        yield on
    finally:
        if on:
            libc.mallopt(_M_PERTURB, 0)


@dataclasses.dataclass
class TrainResult:
    model: Any
    metrics: dict[str, Any]
    params: dict[str, Any]
    #: for each input document (positives, then negatives): held out or not; None: empty, not used
    heldout: list[bool | None] = dataclasses.field(default_factory=list)

    def metadata(self) -> dict[str, Any]:
        """What ``<model>.json`` holds: format, labels, preprocessing, fastText parameters, metrics."""
        p = self.params
        return {"format": METADATA_FORMAT, "label": p["label"], "negative_label": p["negative_label"],
                "preprocess": {"lowercase": p["lowercase"], "max_chars": p["max_chars"],
                               "whitespace": "folded"},
                "fasttext": {k: p[k] for k in ("epochs", "lr", "word_ngrams", "dim", "min_count", "bucket",
                                               "seed", "threads")},
                "holdout": p["holdout"], "metrics": self.metrics}


def fit(texts: list[str], is_positive: list[bool], *, seed: int = 0, epochs: int = TRAIN_DEFAULTS["epochs"],
        lr: float = TRAIN_DEFAULTS["lr"], word_ngrams: int = TRAIN_DEFAULTS["word_ngrams"],
        dim: int = TRAIN_DEFAULTS["dim"], min_count: int = TRAIN_DEFAULTS["min_count"],
        bucket: int = TRAIN_DEFAULTS["bucket"], label: str = DEFAULT_LABEL,
        negative_label: str = DEFAULT_NEGATIVE_LABEL, threads: int = 1) -> Any:
    """A fastText model trained on already preprocessed ``texts`` (no split, no metrics).

    The documents go to fastText in a seeded random order; ``ValueError`` when training diverges.
    """
    import fasttext

    order = list(range(len(texts)))
    random.Random(seed).shuffle(order)
    with tempfile.TemporaryDirectory(prefix="smelter-quality-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as fh:
            for i in order:
                fh.write(f"{label if is_positive[i] else negative_label} {texts[i]}\n")
        try:
            with _zeroed_allocations():
                return fasttext.train_supervised(input=path, epoch=epochs, lr=lr, wordNgrams=word_ngrams,
                                                 dim=dim, minCount=min_count, bucket=bucket, thread=threads,
                                                 seed=seed, loss="softmax", verbose=0)
        except RuntimeError as e:
            raise ValueError(f"fastText: {e} (training diverged: try a lower learning rate)") from None


def train(positives: list[str], negatives: list[str], *, positive_groups: list[str] | None = None,
          negative_groups: list[str] | None = None, holdout: float = 0.1, seed: int = 0,
          epochs: int = TRAIN_DEFAULTS["epochs"], lr: float = TRAIN_DEFAULTS["lr"],
          word_ngrams: int = TRAIN_DEFAULTS["word_ngrams"], dim: int = TRAIN_DEFAULTS["dim"],
          min_count: int = TRAIN_DEFAULTS["min_count"], bucket: int = TRAIN_DEFAULTS["bucket"],
          max_chars: int | None = DEFAULT_MAX_CHARS, lowercase: bool = False, label: str = DEFAULT_LABEL,
          negative_label: str = DEFAULT_NEGATIVE_LABEL, threads: int = 1) -> TrainResult:
    """Train a two-label fastText classifier on ``positives`` against ``negatives``.

    ``holdout`` of each class is held out by group (``*_groups[i]`` names the group of document ``i``;
    default: each document its own group; identical documents are merged into one group) and scored
    after training. ``ValueError`` for unusable inputs (a class with fewer than two groups, bad labels).
    """
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"holdout {holdout}: must be between 0 and 1")
    for name in (label, negative_label):
        if not name.startswith("__label__") or len(name.split()) != 1:
            raise ValueError(f"label {name!r}: fastText labels look like __label__name")
    if label == negative_label:
        raise ValueError("the positive and negative labels must differ")
    t0 = time.time()
    texts = [preprocess(t, lowercase, max_chars) for t in list(positives) + list(negatives)]
    is_pos = [True] * len(positives) + [False] * len(negatives)
    groups = ([f"p:{g}" for g in positive_groups] if positive_groups is not None
              else [f"p:#{i}" for i in range(len(positives))])
    groups += ([f"n:{g}" for g in negative_groups] if negative_groups is not None
               else [f"n:#{i}" for i in range(len(negatives))])
    if len(groups) != len(texts):
        raise ValueError("one group per document, please")
    n_inputs = len(texts)
    keep = [i for i, t in enumerate(texts) if t]
    texts, is_pos, groups = [texts[i] for i in keep], [is_pos[i] for i in keep], [groups[i] for i in keep]
    groups = merge_duplicate_groups(texts, groups)
    rng = random.Random(seed)
    held = [False] * len(texts)
    for cls in (True, False):
        idx = [i for i, p in enumerate(is_pos) if p == cls]
        if not idx:
            raise ValueError(f"no non-empty {'positive' if cls else 'negative'} document")
        try:
            for i, h in zip(idx, holdout_split([groups[i] for i in idx], holdout, rng), strict=True):
                held[i] = h
        except ValueError as e:
            raise ValueError(f"{'positives' if cls else 'negatives'}: {e}") from None
    train_idx = [i for i in range(len(texts)) if not held[i]]
    test_idx = [i for i in range(len(texts)) if held[i]]
    model = fit([texts[i] for i in train_idx], [is_pos[i] for i in train_idx], seed=seed, epochs=epochs,
                lr=lr, word_ngrams=word_ngrams, dim=dim, min_count=min_count, bucket=bucket, label=label,
                negative_label=negative_label, threads=threads)
    # the texts are preprocessed already: score them as they are
    scorer = Scorer(model, label=label, lowercase=False, max_chars=None)
    metrics: dict[str, Any] = {}
    for name, idx in (("train", train_idx), ("heldout", test_idx)):
        m = evaluate(scorer, [texts[i] for i in idx if is_pos[i]], [texts[i] for i in idx if not is_pos[i]])
        m["groups"] = len({groups[i] for i in idx})
        metrics[name] = m
    metrics["seconds"] = round(time.time() - t0, 2)
    params = {"holdout": holdout, "seed": seed, "epochs": epochs, "lr": lr, "word_ngrams": word_ngrams,
              "dim": dim, "min_count": min_count, "bucket": bucket, "max_chars": max_chars,
              "lowercase": lowercase, "label": label, "negative_label": negative_label, "threads": threads}
    heldout: list[bool | None] = [None] * n_inputs
    for i, h in zip(keep, held, strict=True):
        heldout[i] = h
    return TrainResult(model, metrics, params, heldout)


# --------------------------------------------------------------------------------------------------
# The step


class QualityParams(Params):
    #: a fastText supervised model (.bin or .ftz); a relative path is relative to the working directory
    model: str
    #: the high-quality label; null: the one recorded beside the model, else ``__label__hq`` (DCLM's)
    label: str | None = None
    #: live rows scoring below this drop (``low_quality``); 0: only score
    min_score: float = Field(default=0.0, ge=0.0, le=1.0)
    #: the float32 column the score goes to
    column: str = "quality_score"
    #: cut texts to this many characters before scoring; null: as recorded beside the model, else 100000
    max_chars: int | None = Field(default=None, ge=1)
    #: lower-case before scoring; null: as recorded beside the model, else false (DCLM's)
    lowercase: bool | None = None

    @field_validator("model")
    @classmethod
    def _model_exists(cls, v: str) -> str:
        if not os.path.isfile(v):
            raise PydanticCustomError("model_file", f"quality_classifier: no model file: {v} does not exist "
                                                    "(train one with `smelter quality train`, or use any "
                                                    "fastText classifier such as DCLM's)")
        return v

    @field_validator("column")
    @classmethod
    def _column_name(cls, v: str) -> str:
        if not v.isidentifier() or v in _RESERVED:
            raise PydanticCustomError("column", f"column '{v}': must be a new identifier-like column name")
        return v

    @field_validator("label")
    @classmethod
    def _label_form(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v.split()) != 1):
            raise PydanticCustomError("label", f"label '{v}': one word, such as __label__hq")
        return v


class QualityClassifier(RowStep):
    """fastText quality score of ``text`` into ``quality_score``; drops ``low_quality`` below
    ``min_score`` (and ``empty`` texts when ``min_score`` > 0)."""

    name = "quality_classifier"
    Params = QualityParams
    reads = ("text",)
    adds = {"quality_score": pa.float32()}

    @classmethod
    def added(cls, params: QualityParams) -> dict[str, pa.DataType]:
        return {params.column: pa.float32()}

    def setup(self) -> None:
        p: QualityParams = self.params
        self.scorer = Scorer.load(os.path.abspath(p.model), label=p.label, lowercase=p.lowercase,
                                  max_chars=p.max_chars)

    def __call__(self, batch: pa.RecordBatch, ctx: TaskContext) -> pa.RecordBatch:
        self.ensure_setup()
        p: QualityParams = self.params
        n = batch.num_rows
        live = alive(batch)
        texts = batch.column("text").to_pylist()
        todo: list[int] = []
        reasons: list[str | None] = [None] * n
        details: list[str | None] = [None] * n
        for i, (ok, text) in enumerate(zip(live, texts, strict=True)):
            if not ok:
                continue
            if text and not text.isspace():
                todo.append(i)
            elif p.min_score > 0:
                reasons[i] = "empty"
        scored = self.scorer.scores([texts[i] for i in todo])
        ctx.count("scored", len(todo))
        column: list[float | None] = [None] * n
        for i, s in zip(todo, scored.tolist(), strict=True):
            column[i] = s
            if s < p.min_score:
                reasons[i] = "low_quality"
                details[i] = f"{p.column} {s:.4f} < {p.min_score:g}"
        return update_batch(batch, self.name, {p.column: pa.array(column, pa.float32())},
                            reasons if any(r is not None for r in reasons) else None, details=details)
