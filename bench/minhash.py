"""MinHash signatures per second on one core: smelter's batches beside datasketch and datatrove.

The documents: the 40 books of ../shared/corpus cut into 4,500-character pieces, and the CPython modules
of ``code/python3.*`` cut the same way (a module shorter than that is one document); ``--web`` adds the
main text of the corpus's ~700 web pages (mostly German and English; extracted once with trafilatura
and cached in ``<workdir>/docs.arrow``). 112 permutations (FineWeb's 14 bands x 8 rows), seed 1,
word 5-grams.

* smelter: ``MinHasher(112).signatures(texts)`` on batches of 1,000 raw texts: normalization, words,
  hashes, permutations, everything (numba backend, compiled before timing), for both of datasketch's
  32-bit permutation schemes.
* datasketch 2.0.0: per document ``MinHash(num_perm=112, permutations=<shared>, scheme=...)`` and
  ``update_batch`` over the document's shingles as UTF-8 bytes with its default SHA-1 hash. The
  shingles come from smelter's normalization, made before the clock starts, and the permutations are
  drawn once and shared (creating them costs datasketch ~0.5 ms per ``MinHash`` in the legacy
  scheme), so only ``update_batch`` and the constructor are timed: the most favourable way to run it.
* datatrove 0.10.1: ``MinhashDedupSignature``'s per-document code path, ``get_signature(
  get_shingles(text))`` (its normalization, spaCy word tokenization, xxhash64 per shingle, numpy
  permutations), FineWeb's configuration (14 x 8, 64-bit hashes), end to end from the raw text. Its
  module is loaded from its file: the package ``datatrove.pipeline.dedup`` imports ``tokenizers``.

First smelter alone on every document, set by set. Then the comparison on an evenly spread sample of
``--sample`` documents (default 1,500; datatrove, at ~100 documents a second, on ``--datatrove`` of
them, default 300): ``--repeats`` rounds (default 3), each running every implementation once, so that
noise from other processes hits all of them alike; each one's best round counts. The load average is
printed before and after, and ~200 signatures of the sample are checked against datasketch first.

    .venv/bin/python bench/minhash.py [--web] [--repeats 3] [--sample 1500] [--workdir /tmp/smelter-bench-minhash]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.dedup import minhash  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus"
PIECE = 4500
NUM_PERM, BANDS, ROWS, SEED = 112, 14, 8, 1


def pieces(text: str) -> list[str]:
    return [text[i:i + PIECE] for i in range(0, len(text), PIECE)]


def documents(web: bool, workdir: Path) -> dict[str, list[str]]:
    sets = {
        "books": [p for f in sorted((CORPUS / "books").glob("*.txt")) for p in pieces(f.read_text(encoding="utf-8"))],
        "code": [p for f in sorted((CORPUS / "code").glob("python3.*/*.py"))
                 for p in pieces(f.read_text(encoding="utf-8", errors="replace"))],
    }
    if web:
        import pyarrow as pa

        from operators.writers import read_arrow, write_arrow

        cache = workdir / "docs.arrow"
        if not cache.exists():
            from tests.conftest import WEB, extract_texts

            workdir.mkdir(parents=True, exist_ok=True)
            write_arrow(str(cache), pa.table({"text": [d["text"] for d in extract_texts(str(WEB / "*.warc.gz"))]}),
                        "zstd")
        sets["web"] = read_arrow(str(cache)).column("text").to_pylist()
    return sets


def ours(scheme: str):
    hasher = minhash.MinHasher(NUM_PERM, seed=SEED, scheme=scheme, backend="numba")
    hasher.signatures(["warm up: compile or load the kernels, build the tables"])

    def run(docs: list[str]) -> None:
        for i in range(0, len(docs), 1000):
            hasher.signatures(docs[i:i + 1000])

    return run


def datasketch_run(scheme: str):
    from datasketch import MinHash

    perms = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=scheme).permutations

    def run(shingles: list[list[bytes]]) -> None:
        for doc in shingles:
            m = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=perms, scheme=scheme)
            m.update_batch(doc)

    return run


def datatrove_run(tmp: str):
    import importlib.util

    import datatrove
    from datatrove.utils.hashing import HashConfig

    # datatrove.pipeline.dedup's __init__ imports its exact-substring steps, which need the `tokenizers`
    # package; the MinHash module itself does not, so load just that file
    path = Path(datatrove.__file__).parent / "pipeline" / "dedup" / "minhash.py"
    spec = importlib.util.spec_from_file_location("datatrove_dedup_minhash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.MinhashConfig(n_grams=5, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=SEED,
                                  hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    step = module.MinhashDedupSignature(output_folder=tmp, config=config)
    step.get_signature(step.get_shingles("warm up: load spaCy's tokenizer"))

    def run(docs: list[str]) -> None:
        for text in docs:
            shingles = step.get_shingles(text)
            if shingles.size:
                step.get_signature(shingles)

    return run


def timed(run, data) -> float:
    t = time.perf_counter()
    run(data)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--web", action="store_true", help="add the corpus's extracted web pages")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1500, help="documents of the comparison")
    ap.add_argument("--datatrove", type=int, default=300, help="documents of the sample for datatrove")
    ap.add_argument("--workdir", default="/tmp/smelter-bench-minhash")
    args = ap.parse_args()

    sets = documents(args.web, Path(args.workdir))
    docs = [d for s in sets.values() for d in s]
    step = max(1, len(docs) // args.sample)
    sample = docs[::step][:args.sample]
    dt_sample = sample[::max(1, len(sample) // args.datatrove)][:args.datatrove]
    for name, s in sets.items():
        print(f"{name}: {len(s)} documents, mean {np.mean([len(d) for d in s]):.0f} characters")
    print(f"all: {len(docs)} documents, mean {np.mean([len(d) for d in docs]):.0f} characters, "
          f"mean {np.mean([len(d.encode('utf-8', 'surrogatepass')) for d in docs]):.0f} bytes; "
          f"the comparison's sample: {len(sample)} documents, mean {np.mean([len(d) for d in sample]):.0f} "
          f"characters (datatrove: {len(dt_sample)}, mean {np.mean([len(d) for d in dt_sample]):.0f})")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cpus: {os.cpu_count()})", flush=True)

    shingles = [[s.encode("utf-8") for s in minhash.shingles(minhash.words(d))] for d in sample]
    # a correctness check on ~200 documents of the sample: ours == datasketch with our shingle hash
    from datasketch import MinHash

    check = sample[::max(1, len(sample) // 200)]
    sig = minhash.signatures(check, NUM_PERM, SEED)
    for row, doc in zip(sig, check, strict=True):
        m = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="legacy", hashfunc=minhash.shingle_hash)
        m.update_batch(minhash.shingles(minhash.words(doc)))
        assert np.array_equal(m.hashvalues, row)

    # smelter alone, per set, all documents
    print("\nsmelter per set (all documents, best of --repeats):\n")
    print("| set | documents | legacy docs/s | affine32 docs/s |")
    print("|---|---:|---:|---:|")
    runs = {scheme: ours(scheme) for scheme in ("legacy", "affine32")}
    for name, s in sets.items():
        rates = [len(s) / min(timed(runs[scheme], s) for _ in range(args.repeats)) for scheme in runs]
        print(f"| {name} | {len(s)} | {rates[0]:,.0f} | {rates[1]:,.0f} |")

    # the comparison on the sample, interleaved round by round so that noise hits every implementation
    with tempfile.TemporaryDirectory() as tmp:
        contenders = [
            ("smelter `legacy` (numba, batches of 1000)", runs["legacy"], sample),
            ("smelter `affine32` (numba, batches of 1000)", runs["affine32"], sample),
            ("datasketch `legacy` update_batch, sha1", datasketch_run("legacy"), shingles),
            ("datasketch `affine32` (its default) update_batch, sha1", datasketch_run("affine32"), shingles),
            ("datatrove MinhashDedupSignature (spaCy, xxhash64)", datatrove_run(tmp), dt_sample),
        ]
        best = [float("inf")] * len(contenders)
        for _ in range(args.repeats):
            for i, (_, run, data) in enumerate(contenders):
                best[i] = min(best[i], timed(run, data) / len(data))
    print(f"\nload average after: {os.getloadavg()[0]:.2f}\n")

    legacy, affine = best[0], best[1]
    print(f"{NUM_PERM} permutations ({BANDS} x {ROWS}), word 5-grams, one core, {len(sample)} documents "
          f"({len(dt_sample)} for datatrove)\n")
    print("| implementation | docs/s | µs/doc | smelter legacy is ... faster | smelter affine32 is ... faster |")
    print("|---|---:|---:|---:|---:|")
    for (name, _, _), t in zip(contenders, best, strict=True):
        print(f"| {name} | {1 / t:,.0f} | {t * 1e6:,.0f} | {t / legacy:.1f}x | {t / affine:.1f}x |")

if __name__ == "__main__":
    main()
