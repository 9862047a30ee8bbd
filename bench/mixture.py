"""How long a 10-million-sample training plan takes to build, beside Megatron-core's index builders.

The input is a synthetic tokenized corpus of realistic shape (the planner reads only the ``.idx`` token
counts and the shards' id / url / quality_score columns, so the ``.bin`` files are sparse):

    web    3,000,000 documents, ~700 tokens each (log-normal)
    code     500,000 documents, ~1,500 tokens
    books     20,000 documents, ~100,000 tokens

A two-phase curriculum (an annealing phase restricted to quality_score >= 0.5) over 10,000,000 samples
of 1,024 + 1 tokens. smelter's figure is the whole ``smelter mix`` (reading the inputs, checking caps,
all index arrays, the document tables, the manifest; no report). Megatron-core's figure is its C++ and
numpy builders (``build_blending_indices``, ``_build_document_index``, ``build_sample_idx``,
``_build_shuffle_index``) on the same per-source document lists and sample counts, without reading
or writing anything: a lower bound for Megatron's BlendedMegatronDatasetBuilder.

    .venv/bin/python bench/mixture.py [--samples 10000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import sys
import tempfile
import time
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SOURCES = {"web": (3_000_000, 700), "code": (500_000, 1_500), "books": (20_000, 100_000)}
SHARDS = 16
SEQ_LEN = 1024

MIXTURE = """\
name: bench
tokens: {tokens}
seq_len: {seq_len}
budget_tokens: {budget}
seed: 1
max_epochs: 8
phases:
  - name: main
    share: 0.85
    weights: {{web: 0.6, code: 0.2, books: 0.2}}
  - name: anneal
    share: 0.15
    where: quality_score >= 0.5
    weights: {{web: 0.4, code: 0.2, books: 0.4}}
"""


def write_idx(path: str, lengths: np.ndarray) -> None:
    """A Megatron ``.idx`` (uint16 ids, one sequence per document) for these lengths."""
    n = len(lengths)
    pointers = np.zeros(n, np.int64)
    np.cumsum(lengths[:-1].astype(np.int64) * 2, out=pointers[1:])
    with open(path, "wb") as fh:
        fh.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + bytes([8]) + struct.pack("<QQ", n, n + 1))
        fh.write(lengths.astype("<i4").tobytes())
        fh.write(pointers.astype("<i8").tobytes())
        fh.write(np.arange(n + 1, dtype="<i8").tobytes())


def make_corpus(root: str) -> tuple[str, dict[str, int]]:
    rng = np.random.default_rng(0)
    run, toks = os.path.join(root, "run"), os.path.join(root, "tokens")
    shards, totals = [], {}
    for source, (docs, mean) in SOURCES.items():
        sigma = 1.0
        lengths = np.maximum(1, rng.lognormal(np.log(mean) - sigma**2 / 2, sigma, docs)).astype(np.int32)
        totals[source] = int(lengths.sum())
        quality = rng.beta(2, 2, docs).astype(np.float32)
        for part, idx in enumerate(np.array_split(np.arange(docs), SHARDS)):
            rel = f"{source}/part-{part:05d}"
            os.makedirs(os.path.join(run, "shards", source), exist_ok=True)
            os.makedirs(os.path.join(toks, source), exist_ok=True)
            ids = pa.array([f"{source[0]}{i:015x}" for i in idx])
            loc = pa.array([f"https://example.com/{source}/{i}" for i in idx])
            table = pa.table({"id": ids, "url": loc, "quality_score": quality[idx], "text": pa.nulls(len(idx), pa.string())})
            with ipc.new_file(os.path.join(run, "shards", rel + ".arrow"), table.schema) as w:
                w.write_table(table)
            write_idx(os.path.join(toks, rel + ".idx"), lengths[idx])
            with open(os.path.join(toks, rel + ".bin"), "wb") as fh:
                fh.truncate(int(lengths[idx].sum()) * 2)  # sparse: the planner never reads token ids
            shards.append({"source": source, "part": part, "input": f"shards/{rel}.arrow", "documents": len(idx),
                           "tokens": int(lengths[idx].sum()), "bin": rel + ".bin", "idx": rel + ".idx",
                           "bin_sha256": "-", "idx_sha256": "-", "input_sha256": "-", "bin_bytes": 0})
    with open(os.path.join(toks, "tokenizer.json"), "w") as fh:
        fh.write("{}")
    manifest = {"schema_version": 1, "run": {"path": run, "pipeline": "bench", "config_hash": "-"},
                "tokenizer": {"path": "tokenizer.json", "sha256": "-", "vocab_size": 50257, "eod_id": 50256,
                              "dtype": "uint16"},
                "format": {"kind": "megatron-indexed-dataset", "version": 1, "dtype": "uint16"},
                "shards": shards, "totals": {}}
    with open(os.path.join(toks, "tokens.json"), "w") as fh:
        json.dump(manifest, fh)
    return os.path.join(toks, "tokens.json"), totals


def megatron_builders(plan_dir: str) -> float | None:
    """Megatron-core's builders on the plan's own per-source documents and sample counts (no I/O)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from megatron.core.datasets import helpers
            from megatron.core.datasets.gpt_dataset import _build_document_index, _build_shuffle_index
    except ImportError:
        return None
    from mixtures.reader import TrainingPlan

    plan = TrainingPlan(plan_dir)
    work = []
    for phase in plan.phases:
        names = phase["blend"]["sources"]
        weights = np.array([phase["sources"][s]["weight"] for s in names])
        for s in names:
            info = phase["sources"][s]
            docs = np.unique(np.asarray(plan.array(info["document_index"])))  # the pool
            work.append((plan.sources[s].sizes.astype(np.int32), docs.astype(np.int32), info))
        work.append((weights, phase["samples"], None))
    t0 = time.time()
    for a, b, info in work:
        if info is None:
            index, sample = np.zeros(b, np.int16), np.zeros(b, np.int64)
            helpers.build_blending_indices(index, sample, a, len(a), b, False)
            continue
        rng = np.random.RandomState(info["seed"])
        doc_index = _build_document_index(b, info["num_epochs"], rng, info["separate_final_epoch"])
        tokens = int(a[b].sum())
        sample_index = helpers.build_sample_idx(a, doc_index, SEQ_LEN, info["num_epochs"], tokens, True, True)
        total = sample_index.shape[0] - 1
        first = ((info["num_epochs"] - 1) * tokens - 1) // SEQ_LEN if info["separate_final_epoch"] else total
        _build_shuffle_index(first, total, rng)
    return time.time() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--samples", type=int, default=10_000_000)
    ap.add_argument("--keep", metavar="DIR", help="build the corpus and plan here and keep them")
    args = ap.parse_args()
    root = args.keep or tempfile.mkdtemp(prefix="smelter-bench-mix-")
    try:
        t0 = time.time()
        tokens, totals = make_corpus(root)
        print(f"synthetic corpus: {sum(SOURCES[s][0] for s in SOURCES):,} documents, "
              f"{sum(totals.values()):,} tokens ({time.time() - t0:.1f}s to make)")
        mixture = os.path.join(root, "bench.yaml")
        with open(mixture, "w") as fh:
            fh.write(MIXTURE.format(tokens=tokens, seq_len=SEQ_LEN, budget=args.samples * SEQ_LEN))
        from mixtures import plan, spec

        t0 = time.time()
        manifest = plan.build(spec.load(mixture), os.path.join(root, "plan"))
        smelter_s = time.time() - t0
        assert manifest["samples"] == args.samples
        mega_s = megatron_builders(os.path.join(root, "plan"))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(root, "plan")) for f in fs)
        print("\n| builder | samples | seconds | samples/s |\n|---|---:|---:|---:|")
        print(f"| smelter mix (read inputs, check caps, all arrays, document tables, write) | {args.samples:,} | "
              f"{smelter_s:.1f} | {args.samples / smelter_s:,.0f} |")
        if mega_s is not None:
            print(f"| Megatron-core builders only (same arrays, in memory, no I/O) | {args.samples:,} | "
                  f"{mega_s:.1f} | {args.samples / mega_s:,.0f} |")
        print(f"\nplan folder: {size / 1e6:,.0f} MB; epochs: "
              + ", ".join(f"{k} {v['epochs']:.2f}" for k, v in manifest["sources"].items()))
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
