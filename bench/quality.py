"""The quality classifier on the real corpus: books against the web pages the heuristic filters drop.

Positives: the 40 books of ../shared/corpus/books, Gutenberg header/footer/licence stripped
(``text_files``), split into documents of at most 4,000 characters (the extracted web pages have a
median of ~3,500). Negatives: the main text of every web page of ../shared/corpus/web (trafilatura,
cached in ``<workdir>/docs.arrow``) that Gopher repetition, Gopher quality, C4 or FineWeb drops with
their default settings.

1. ``train`` exactly as ``smelter quality train`` does it: 10% held out by group (a book's chunks stay
   together; the three works present under two names merge into one group), default fastText settings.
2. A 5-fold cross-validation by the same groups, so every document gets a score from a model that never
   saw it or its book: the pooled ROC AUC, and two harder views of it. Most dropped pages fail Gopher's
   English stop-word rule because they are German, so the classifier can lean on the language: the
   AUC against the *English* dropped pages only (fastText lid.176 says ``en``) shows what is left
   without that help.

    .venv/bin/python bench/quality.py [--workdir /tmp/smelter-bench-quality] [--folds 5]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators import quality  # noqa: E402
from operators.writers import read_arrow, write_arrow  # noqa: E402

CHUNK_CHARS = 4000


def web_pages(workdir: Path) -> list[str]:
    cache = workdir / "docs.arrow"
    if not cache.exists():
        from tests.conftest import WEB, extract_texts

        docs = extract_texts(str(WEB / "*.warc.gz"))
        workdir.mkdir(parents=True, exist_ok=True)
        write_arrow(str(cache), pa.table({"text": [d["text"] for d in docs]}), "zstd")
    return read_arrow(str(cache)).column("text").to_pylist()


def english(texts: list[str]) -> list[bool]:
    from operators.langid import LangId, LangIdParams

    step = LangId(LangIdParams(languages=["en"], min_score=0.5))
    step.ensure_setup()
    labels, _ = step.predict(texts)
    return [bool(len(lab)) and lab[0] == "__label__en" for lab in labels]


def folds_by_group(groups: list[str], k: int, seed: int) -> list[int]:
    """A fold number for every document; documents of one group share a fold."""
    names = sorted(set(groups))
    random.Random(seed).shuffle(names)
    fold = {g: i % k for i, g in enumerate(names)}
    return [fold[g] for g in groups]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/smelter-bench-quality"))
    ap.add_argument("--folds", type=int, default=5)
    args = ap.parse_args()

    from tests.operators.test_quality import book_chunks, filtered_out

    t0 = time.time()
    chunks = book_chunks(CHUNK_CHARS)
    pages = web_pages(args.workdir)
    dropped, kept = filtered_out(pages)
    print(f"data: {len(chunks)} chunks of {len({c['path'] for c in chunks})} books (<= {CHUNK_CHARS} chars); "
          f"{len(pages)} web pages, {len(dropped)} dropped by the filters, {len(kept)} kept "
          f"({time.time() - t0:.0f} s)")

    # 1. as `smelter quality train` does it
    t = time.time()
    result = quality.train([c["text"] for c in chunks], dropped, positive_groups=[c["path"] for c in chunks],
                           holdout=0.1, seed=0)
    m = result.metrics["heldout"]
    held_books = {c["path"] for c, h in zip(chunks, result.heldout, strict=False) if h}
    print(f"train (10% held out by book, seed 0): {result.metrics['train']['positive']} + "
          f"{result.metrics['train']['negative']} training documents; held out {m['positive']} chunks of "
          f"{len(held_books)} books + {m['negative']} pages")
    print(f"  held-out accuracy {m['accuracy']:.4f}  ROC AUC {m['roc_auc']:.4f}  ({time.time() - t:.1f} s)")

    # 2. cross-validation by group
    texts = [quality.preprocess(c["text"]) for c in chunks] + [quality.preprocess(p) for p in dropped]
    is_pos = [True] * len(chunks) + [False] * len(dropped)
    groups = quality.merge_duplicate_groups(
        texts, [f"book:{c['path']}" for c in chunks] + [f"page:{i}" for i in range(len(dropped))])
    fold = folds_by_group(groups, args.folds, seed=1)
    scores = np.zeros(len(texts), np.float32)
    t = time.time()
    for k in range(args.folds):
        train_idx = [i for i in range(len(texts)) if fold[i] != k]
        test_idx = [i for i in range(len(texts)) if fold[i] == k]
        model = quality.fit([texts[i] for i in train_idx], [is_pos[i] for i in train_idx], seed=k)
        scores[test_idx] = quality.Scorer(model, max_chars=None).scores([texts[i] for i in test_idx])
    y = np.array(is_pos)
    acc = float(((scores >= 0.5) == y).mean())
    print(f"{args.folds}-fold cross-validation by book/page ({time.time() - t:.0f} s): accuracy {acc:.4f}  "
          f"ROC AUC {quality.roc_auc(y, scores):.4f}")
    en = np.array([True] * len(chunks) + english(dropped))
    neg_en = (~y) & en
    print(f"  books vs the {int(neg_en.sum())} English dropped pages only: ROC AUC "
          f"{quality.roc_auc(y[y | neg_en], scores[y | neg_en]):.4f}; "
          f"{float((scores[neg_en] >= 0.5).mean()):.0%} of them score >= 0.5 (non-English dropped pages: "
          f"{float((scores[(~y) & ~en] >= 0.5).mean()):.0%})")
    kept_scores = quality.Scorer(result.model).scores(kept)
    kept_en = np.array(english(kept))
    print(f"  for reference, the {len(kept)} pages the filters keep ({int(kept_en.sum())} English) score "
          f"{float(kept_scores.mean()):.3f} on average with the model of 1. (books {float(scores[y].mean()):.3f}, "
          f"dropped pages {float(scores[~y].mean()):.3f} out of fold)")
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
