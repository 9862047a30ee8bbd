"""``minhash_dedup`` on real near duplicates: the same ~90 CPython modules in six versions, and the
books, against ground truth by brute force (exact Jaccard of the same shingle sets for every pair, the
intersections counted all at once as a sparse matrix product)."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from scipy import sparse

from operators.dedup.minhash import shingles, words
from operators.writers import read_arrow
from pipelines import runner
from pipelines import spec as specmod
from tests.conftest import CORPUS


def corpus_jsonl(folder) -> dict[str, str]:
    """One JSONL file per CPython version (path + text) and one of books; returns path -> text."""
    folder.mkdir(parents=True, exist_ok=True)
    texts = {}
    for version in sorted((CORPUS / "code").iterdir()):
        with open(folder / f"{version.name}.jsonl", "w") as fh:
            for f in sorted(version.glob("*.py")):
                rel = f"{version.name}/{f.name}"
                texts[rel] = f.read_text(encoding="utf-8", errors="replace")
                fh.write(json.dumps({"text": texts[rel], "path": rel}) + "\n")
    with open(folder / "books.jsonl", "w") as fh:
        for f in sorted((CORPUS / "books").glob("*.txt")):
            rel = f"books/{f.name}"
            texts[rel] = f.read_text(encoding="utf-8", errors="replace")
            fh.write(json.dumps({"text": texts[rel], "path": rel}) + "\n")
    return texts


def pipeline(folder, out, **params):
    args = ", ".join(f"{k}: {v}" for k, v in params.items())
    return specmod.load_text(textwrap.dedent(f"""\
        name: near-dups
        sources:
          docs:
            read: {{jsonl: {{paths: "{folder}/*.jsonl"}}}}
        steps:
          - minhash_dedup: {{{args}}}
        output: {{path: {out}}}
    """), "near.yaml")


@pytest.fixture(scope="module")
def truth(tmp_path_factory):
    """Exact Jaccard of the 5-gram shingle sets of every pair with any overlap."""
    base = tmp_path_factory.mktemp("near")
    texts = corpus_jsonl(base / "in")
    sets = {k: set(shingles(words(t), 5)) for k, t in texts.items()}
    # |A & B| for every pair at once: a documents x shingles 0/1 matrix times its transpose
    names = sorted(sets)
    vocab: dict = {}
    rows, cols = [], []
    for i, name in enumerate(names):
        ids = [vocab.setdefault(s, len(vocab)) for s in sets[name]]
        rows.append(np.full(len(ids), i, np.int64))
        cols.append(np.asarray(ids, np.int64))
    rows_, cols_ = np.concatenate(rows), np.concatenate(cols)
    a = sparse.csr_matrix((np.ones(len(rows_), np.int64), (rows_, cols_)), shape=(len(names), len(vocab)))
    inter = sparse.triu(a @ a.T, k=1).tocoo()
    size = [len(sets[n]) for n in names]
    pairs = {(names[i], names[j]): int(n) / (size[i] + size[j] - int(n))
             for i, j, n in zip(inter.row, inter.col, inter.data, strict=True)}
    return base, texts, pairs


def run(spark, base, name, **params):
    out = base / name
    stats = runner.run(pipeline(base / "in", out, **params), str(out), spark=spark, progress=False)
    manifest = json.loads((out / "manifest.json").read_text())
    kept = pa.concat_tables([read_arrow(str(out / s["path"])) for s in manifest["shards"]])
    ledger = pa.concat_tables([read_arrow(str(out / s["path"])) for s in manifest["ledger"]])
    return stats, kept, ledger


def clusters_of(kept, ledger):
    """path -> the path of the document it was merged into (itself when kept)."""
    path_of = dict(zip(kept.column("id").to_pylist(), kept.column("path").to_pylist(), strict=True))
    path_of.update(zip(ledger.column("id").to_pylist(), ledger.column("path").to_pylist(), strict=True))
    root = {p: p for p in kept.column("path").to_pylist()}
    for row in ledger.to_pylist():
        root[row["path"]] = path_of[row["dup_of"]]
    return root


def test_recall_and_precision_against_brute_force(spark, truth):
    base, texts, pairs = truth
    stats, kept, ledger = run(spark, base, "out", verify="true")
    assert stats["rows_read"] == len(texts) == kept.num_rows + ledger.num_rows
    root = clusters_of(kept, ledger)
    # every exact duplicate removed (the books that appear under two names)
    exact = [(a, b) for (a, b), j in pairs.items() if j == 1.0]
    assert exact and all(root[a] == root[b] for a, b in exact)
    # recall of pairs at Jaccard >= 0.85: both in one cluster
    high = [(a, b) for (a, b), j in pairs.items() if j >= 0.85]
    recall = sum(root[a] == root[b] for a, b in high) / len(high)
    assert len(high) > 100 and recall >= 0.95, recall
    # precision with verify: a removed document has Jaccard >= 0.6 with some other member of its cluster
    members: dict[str, list[str]] = {}
    for p, r in root.items():
        members.setdefault(r, []).append(p)
    def best(p):  # noqa: E306
        return max((pairs.get((min(p, q), max(p, q)), 0.0) for q in members[root[p]] if q != p), default=0.0)
    removed = ledger.column("path").to_pylist()
    good = sum(best(p) >= 0.6 for p in removed) / len(removed)
    assert good >= 0.99, good
    g = stats["global_steps"][0]
    assert g["bands"] == 14 and g["rows"] == 8 and g["components"] > 50
    assert g["largest"][0]["members"] and g["drops"]["docs"]["near_duplicate"] == ledger.num_rows
