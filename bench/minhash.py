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

Each implementation runs ``--repeats`` times (default 3) over the same documents (datasketch and
datatrove over an evenly spread sample of ``--sample`` documents, default 1,500); the best run counts,
so that noise from other processes hurts less. The load average is printed before and after.

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

from operators import minhash  # noqa: E402

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


def best_of(repeats: int, run) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return min(times)


def ours(docs: list[str], scheme: str, repeats: int) -> float:
    hasher = minhash.MinHasher(NUM_PERM, seed=SEED, scheme=scheme, backend="numba")
    hasher.signatures(docs[:50])  # compile / load the kernels

    def run():
        for i in range(0, len(docs), 1000):
            hasher.signatures(docs[i:i + 1000])

    return best_of(repeats, run)


def datasketch_time(shingles: list[list[bytes]], scheme: str, repeats: int) -> float:
    from datasketch import MinHash

    perms = MinHash(num_perm=NUM_PERM, seed=SEED, scheme=scheme).permutations

    def run():
        for doc in shingles:
            m = MinHash(num_perm=NUM_PERM, seed=SEED, permutations=perms, scheme=scheme)
            m.update_batch(doc)

    return best_of(repeats, run)


def datatrove_time(docs: list[str], repeats: int) -> float:
    import importlib.util

    import datatrove
    from datatrove.utils.hashing import HashConfig

    # datatrove.pipeline.dedup's __init__ imports its exact-substring steps, which need the `tokenizers`
    # package; the MinHash module itself does not, so load just that file
    path = Path(datatrove.__file__).parent / "pipeline" / "dedup" / "minhash.py"
    spec = importlib.util.spec_from_file_location("datatrove_dedup_minhash", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    MinhashConfig, MinhashDedupSignature = module.MinhashConfig, module.MinhashDedupSignature

    config = MinhashConfig(n_grams=5, num_buckets=BANDS, hashes_per_bucket=ROWS, seed=SEED,
                           hash_config=HashConfig(precision=64, hash_fc="xxhash"))
    with tempfile.TemporaryDirectory() as tmp:
        step = MinhashDedupSignature(output_folder=tmp, config=config)
        step.get_signature(step.get_shingles(docs[0]))  # loads spaCy

        def run():
            for text in docs:
                shingles = step.get_shingles(text)
                if shingles.size:
                    step.get_signature(shingles)

        return best_of(repeats, run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--web", action="store_true", help="add the corpus's extracted web pages")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sample", type=int, default=1500, help="documents for datasketch and datatrove")
    ap.add_argument("--workdir", default="/tmp/smelter-bench-minhash")
    args = ap.parse_args()

    sets = documents(args.web, Path(args.workdir))
    docs = [d for s in sets.values() for d in s]
    step = max(1, len(docs) // args.sample)
    sample = docs[::step][:args.sample]
    for name, s in sets.items():
        print(f"{name}: {len(s)} documents, mean {np.mean([len(d) for d in s]):.0f} characters")
    print(f"all: {len(docs)} documents, mean {np.mean([len(d) for d in docs]):.0f} characters, "
          f"mean {np.mean([len(d.encode('utf-8', 'surrogatepass')) for d in docs]):.0f} bytes; "
          f"sample for the slow implementations: {len(sample)} documents, "
          f"mean {np.mean([len(d) for d in sample]):.0f} characters")
    print(f"load average before: {os.getloadavg()[0]:.2f} (cpus: {os.cpu_count()})", flush=True)

    shingles = [[s.encode("utf-8") for s in minhash.shingles(minhash.words(d))] for d in sample]
    # a correctness check on the sample: ours == datasketch with our shingle hash
    from datasketch import MinHash

    sig = minhash.signatures(sample[:200], NUM_PERM, SEED)
    for row, doc in zip(sig, sample[:200], strict=True):
        m = MinHash(num_perm=NUM_PERM, seed=SEED, scheme="legacy", hashfunc=minhash.shingle_hash)
        m.update_batch(minhash.shingles(minhash.words(doc)))
        assert np.array_equal(m.hashvalues, row)

    rows = []
    for scheme in ("legacy", "affine32"):
        t = ours(docs, scheme, args.repeats)
        rows.append((f"smelter `{scheme}` (numba, batches of 1000)", len(docs) / t))
    for scheme in ("legacy", "affine32"):
        t = datasketch_time(shingles, scheme, args.repeats)
        rows.append((f"datasketch `{scheme}` update_batch, sha1", len(sample) / t))
    t = datatrove_time(sample, args.repeats)
    rows.append(("datatrove MinhashDedupSignature (spaCy, xxhash64)", len(sample) / t))
    print(f"load average after: {os.getloadavg()[0]:.2f}\n")

    ours_legacy, ours_affine = rows[0][1], rows[1][1]
    print(f"{NUM_PERM} permutations ({BANDS} x {ROWS}), word 5-grams, one core\n")
    print("| implementation | docs/s | µs/doc | smelter legacy ÷ it | smelter affine32 ÷ it |")
    print("|---|---:|---:|---:|---:|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:,.0f} | {ours_legacy / rate:.1f}x | {ours_affine / rate:.1f}x |")


if __name__ == "__main__":
    main()
