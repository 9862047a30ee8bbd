"""Accuracy of ``minhash_dedup`` on real near duplicates, against brute force.

The same ~90 CPython modules in six versions (../shared/corpus/code) and the 40 books (three works
under two names) as one source; ground truth: the exact Jaccard similarity of the 5-gram shingle sets
(the same normalization and shingles the step uses) of every pair. For each threshold t the table
gives recall (pairs with Jaccard >= t that end in one cluster) and, for the documents removed, the
share whose best Jaccard with another member of their cluster is >= t (precision), with and without
``verify``.

    .venv/bin/python bench/dedup_accuracy.py [--workdir /tmp/smelter-dedup-accuracy]
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workdir", default="/tmp/smelter-dedup-accuracy")
    args = ap.parse_args()
    from operators.dedup.minhash import shingles, words
    from pipelines.session import get_session
    from tests.e2e.test_minhash_dedup import clusters_of, corpus_jsonl, run

    base = Path(args.workdir)
    texts = corpus_jsonl(base / "in")
    sets = {k: set(shingles(words(t), 5)) for k, t in texts.items()}
    pairs = {}
    for a, b in itertools.combinations(sorted(sets), 2):
        if sets[a] and sets[b] and not sets[a].isdisjoint(sets[b]):
            pairs[a, b] = len(sets[a] & sets[b]) / len(sets[a] | sets[b])
    os.environ["PYSPARK_PYTHON"] = sys.executable
    spark = get_session("dedup-accuracy", master="local[2]", conf={"spark.sql.shuffle.partitions": "4"})
    results = {}
    for verify in (False, True):
        _, kept, ledger = run(spark, base, f"out-verify-{verify}", verify=str(verify).lower())
        root = clusters_of(kept, ledger)
        members: dict[str, list[str]] = {}
        for p, r in root.items():
            members.setdefault(r, []).append(p)
        best = {p: max((pairs.get((min(p, q), max(p, q)), 0.0) for q in members[root[p]] if q != p), default=0.0)
                for p in ledger.column("path").to_pylist()}
        results[verify] = (root, best, ledger.num_rows)
    print(f"{len(texts)} documents, {len(pairs)} overlapping pairs; removed: "
          f"{results[False][2]} (verify false), {results[True][2]} (verify true)\n")
    print("| Jaccard >= t | pairs | recall | recall (verify) | precision | precision (verify) |")
    print("|---|---|---|---|---|---|")
    for t in (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0):
        hi = [(a, b) for (a, b), j in pairs.items() if j >= t]
        row = f"| {t:.2f} | {len(hi)} |"
        for verify in (False, True):
            root = results[verify][0]
            row += f" {sum(root[a] == root[b] for a, b in hi) / max(1, len(hi)):.3f} |"
        for verify in (False, True):
            best = results[verify][1]
            row += f" {sum(v >= t for v in best.values()) / max(1, len(best)):.3f} |"
        print(row)
    spark.stop()


if __name__ == "__main__":
    main()
