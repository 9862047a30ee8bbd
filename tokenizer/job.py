"""The tokenize job: a run's Arrow shards -> one Megatron ``.bin``/``.idx`` pair per shard + ``tokens.json``.

Driver side (``tokenize_run``): read the run's ``manifest.json``, train or load the tokenizer and save
it as ``OUTPUT/tokenizer.json``, encode every shard (on Spark, one task per shard, or in this process
with ``master="local"``, no JVM), then write ``tokens.json``. Executor side (``encode_shard``): load the
tokenizer once per Python worker, stream the shard's record batches through the encoder and append
each batch's ids to the ``.bin`` (numpy arrays per batch; a shard's ids are never held whole).

Output layout (``OUTPUT/``)::

    tokenizer.json                   the tokenizer every shard was encoded with (HF format)
    <source>/part-NNNNN.bin / .idx   one pair per input shard, same source and part number
    tokens.json                      the tokenizer (hash, vocab size, EOD id), every shard, totals

Nothing in the outputs depends on the time or the machine: a rerun gives byte-identical files.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from operators.writers import write_json_atomic
from pipelines.errors import UserError
from tokenizer import bpe
from tokenizer.indexed import IndexedWriter, sha256_file, token_dtype
from tokenizer.spec import TokenizerSpec

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "tokens.json"
#: UTF-8 bytes of text handed to the encoder at once: bounds the ids held in memory per shard
CHUNK_BYTES = 8 << 20
#: text of the first shards both engines encode before the tiktoken path is trusted (``engine: auto``)
PROBE_CHARS = 100_000


@dataclass(frozen=True)
class ShardIn:
    """One input shard of the run, as its manifest lists it."""

    source: str
    part: int
    path: str  # relative to the run folder
    rows: int
    sha256: str


def read_run(run_dir: str, text_column: str = "text") -> tuple[dict[str, Any], list[ShardIn]]:
    """The run's manifest and its shards, in manifest order (sources in YAML order, then part)."""
    path = os.path.join(run_dir, "manifest.json")
    if not os.path.isfile(path):
        raise UserError(f"{run_dir}: not a pipeline run folder (no manifest.json)")
    try:
        with open(path) as fh:
            manifest = json.load(fh)
        shards = [ShardIn(s["source"], int(s["part"]), s["path"], int(s["rows"]), s["sha256"])
                  for s in manifest["shards"]]
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{path}: not a smelter run manifest ({e})") from None
    for s in shards:
        shard_path = os.path.join(run_dir, s.path)
        if not os.path.isfile(shard_path):
            raise UserError(f"{path}: shard {s.path} is missing in {run_dir}")
        try:  # the schema only: a damaged or foreign file fails here, before any work starts
            with pa.memory_map(shard_path) as src:
                names = pa.ipc.open_file(src).schema.names
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{shard_path}: not an Arrow IPC shard ({e})") from None
        if text_column not in names:
            raise UserError(f"{shard_path}: no `{text_column}` column (columns: {', '.join(names)})")
    return manifest, shards


# ---------------------------------------------------------------------------------------------------
# tokenizer


def prepare_tokenizer(spec: TokenizerSpec, run_dir: str, shards: list[ShardIn], out_dir: str):
    """Train or load the tokenizer, add the special tokens, save ``OUTPUT/tokenizer.json``; return its
    description (for tokens.json) and the tokenizer itself."""
    specials = spec.specials()
    if spec.train is not None:
        from tokenizer.train import sample_texts, train_bpe

        t0 = time.time()
        texts = sample_texts([os.path.join(run_dir, s.path) for s in shards], spec.train.sample_docs,
                             spec.train.seed, spec.train.max_doc_chars)
        if not texts:
            raise UserError(f"{run_dir}: no documents to train a tokenizer on")
        tok = train_bpe(texts, spec.train.vocab_size, specials, spec.train.min_frequency)
        source = "trained"
        log.info("trained on %d documents in %.1fs", len(texts), time.time() - t0)
    else:
        tok = bpe.load_pretrained(spec.pretrained, spec.pattern)
        bpe.add_special_tokens(tok, specials)
        source = spec.pretrained
    path = os.path.join(out_dir, TOKENIZER_FILE)
    os.makedirs(out_dir, exist_ok=True)
    tmp = path + ".tmp"
    tok.save(tmp, pretty=True)
    os.replace(tmp, path)
    vocab_size = tok.get_vocab_size(with_added_tokens=True)
    eod_id = tok.token_to_id(spec.eod)
    return {
        "path": TOKENIZER_FILE,
        "source": source,
        "sha256": sha256_file(path),
        "vocab_size": vocab_size,
        "eod_token": spec.eod,
        "eod_id": eod_id,
        "special_tokens": {t: tok.token_to_id(t) for t in specials},
        "dtype": token_dtype(vocab_size).name,
        "spec": spec.describe(),
    }, tok


def choose_engine(tok_path: str, sha256: str, wanted: str, probe_texts: list[str],
                  threads: int = 1, loaded=None) -> tuple[str, str]:
    """The engine shards are encoded with, and why. ``auto`` takes tiktoken only when it is expressible
    and gives HF's ids on ``probe_texts`` (the head of the run's first shards)."""
    if wanted == "hf":
        return "hf", "asked for"
    enc = get_encoder(tok_path, sha256, wanted, threads, loaded)
    if enc.engine == "hf":
        return "hf", f"tiktoken cannot express it: {enc.reason}"
    fast = enc.encode_batch(probe_texts)
    ref = enc.encode_hf(probe_texts)
    for text, a, b in zip(probe_texts, fast, ref, strict=True):
        if a.tolist() != b:
            if wanted == "tiktoken":
                raise UserError(f"{tok_path}: tiktoken's ids differ from HF tokenizers' on "
                                f"{text[:40]!r}...; use engine: hf")
            log.warning("tiktoken's ids differ from HF tokenizers' on %r...: encoding with HF", text[:40])
            return "hf", "tiktoken differed from HF on the probe"
    _encoders[(tok_path, sha256, "tiktoken", threads)] = enc  # the same encoder serves the local run
    return "tiktoken", "a byte-level BPE tiktoken expresses (probe equal to HF)"


def _probe_texts(run_dir: str, shards: list[ShardIn], limit: int = PROBE_CHARS) -> list[str]:
    texts: list[str] = []
    size = 0
    for s in shards:
        with pa.memory_map(os.path.join(run_dir, s.path)) as src:
            reader = pa.ipc.open_file(src)
            for b in range(reader.num_record_batches):
                for t in reader.get_batch(b).column("text").to_pylist():
                    t = (t or "")[:20_000]
                    texts.append(t)
                    size += len(t)
                    if size >= limit:
                        return texts
    return texts


# ---------------------------------------------------------------------------------------------------
# executor side

_encoders: dict[tuple[str, str, str, int], bpe.Encoder] = {}


def get_encoder(tok_path: str, sha256: str, engine: str, threads: int, loaded=None) -> bpe.Encoder:
    """One encoder per Python worker and tokenizer (keyed by the file's hash, so a changed file reloads)."""
    key = (tok_path, sha256, engine, threads)
    if key not in _encoders:
        _encoders[key] = bpe.Encoder(tok_path, engine=engine, threads=threads, loaded=loaded)
    return _encoders[key]


def _byte_lengths(texts: pa.Array) -> np.ndarray:
    """UTF-8 bytes per row (0 for a null) from the offsets buffer (no compute kernel to load)."""
    if len(texts) == 0:
        return np.zeros(0, np.int64)
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise UserError(f"the text column is {texts.type}, not a string column")
    width = np.int64 if pa.types.is_large_string(texts.type) else np.int32
    offsets = np.frombuffer(texts.buffers()[1], width)[texts.offset:texts.offset + len(texts) + 1]
    return np.diff(offsets).astype(np.int64)


def encode_shard(run_dir: str, out_dir: str, shard: ShardIn, tok: dict[str, Any], engine: str,
                 threads: int, text_column: str = "text") -> dict[str, Any]:
    """Encode one shard into ``OUTPUT/<source>/part-NNNNN.bin/.idx``; return its manifest entry.

    Record batches are read one at a time; their texts flow through the encoder's rolling window and
    the ids go to the ``.bin`` in groups of about ``CHUNK_BYTES`` of text (numpy arrays, in order).
    """
    t0 = time.time()
    enc = get_encoder(os.path.join(out_dir, tok["path"]), tok["sha256"], engine, threads)
    rel = os.path.join(shard.source, f"part-{shard.part:05d}")
    prefix = os.path.join(out_dir, rel)
    in_path = os.path.join(run_dir, shard.path)
    nbytes = 0

    with pa.memory_map(in_path) as src, IndexedWriter(prefix, np.dtype(tok["dtype"])) as writer:
        reader = pa.ipc.open_file(src)
        if text_column not in reader.schema.names:
            raise UserError(f"{in_path}: no `{text_column}` column")

        def texts():
            nonlocal nbytes
            for b in range(reader.num_record_batches):
                column = reader.get_batch(b).column(text_column)
                nbytes += int(_byte_lengths(column).sum())
                yield from (t or "" for t in column.to_pylist())

        group: list[np.ndarray] = []
        size = 0
        for ids in enc.encode_stream(texts(), CHUNK_BYTES):
            group.append(ids)
            size += len(ids)
            if size * 4 >= CHUNK_BYTES:  # ~4 bytes of text per token: flush about every chunk
                writer.add_documents(group, append=tok["eod_id"])
                group, size = [], 0
        writer.add_documents(group, append=tok["eod_id"])
        bin_path, _ = writer.close()
        documents, tokens = writer.documents, writer.tokens
    return {
        "source": shard.source,
        "part": shard.part,
        "input": shard.path,
        "input_sha256": shard.sha256,
        "documents": documents,
        "tokens": tokens,
        "bin": rel + ".bin",
        "idx": rel + ".idx",
        "bin_bytes": os.path.getsize(bin_path),
        "bin_sha256": writer.bin_sha256,
        "idx_sha256": writer.idx_sha256,
        "_bytes": nbytes,
        "_seconds": round(time.time() - t0, 3),
    }


# ---------------------------------------------------------------------------------------------------
# driver


def _run_local(run_dir, out_dir, shards, tok, engine, threads) -> list[dict[str, Any]]:
    return [encode_shard(run_dir, out_dir, s, tok, engine, threads) for s in shards]


def _run_spark(master, run_dir, out_dir, shards, tok, engine, threads) -> list[dict[str, Any]]:
    """One Spark task per shard, biggest first (``spark.range``: partition i holds row i)."""
    import sys

    from pipelines.session import get_session

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    log4j = "-Dlog4j2.configurationFile=file:" + os.path.join(root, "pipelines", "log4j2.properties")
    conf = {"spark.executorEnv.PYTHONPATH": root, "spark.pyspark.python": sys.executable,
            "spark.driver.extraJavaOptions": log4j, "spark.executor.extraJavaOptions": log4j}
    if master.startswith("local"):
        conf["spark.driver.extraJavaOptions"] += " -XX:TieredStopAtLevel=1"  # see pipelines/cli.py
    spark = get_session("smelter:tokenize", master=master, conf=conf)
    ordered = sorted(shards, key=lambda s: (-os.path.getsize(os.path.join(run_dir, s.path)), s.source, s.part))

    def work(batches):
        for batch in batches:
            for i in batch.column("id").to_pylist():
                record = encode_shard(run_dir, out_dir, ordered[i], tok, engine, threads)
                yield pa.RecordBatch.from_pydict({"record": [json.dumps(record)]})

    df = spark.range(0, len(ordered), 1, numPartitions=max(1, len(ordered)))
    return [json.loads(r["record"]) for r in df.mapInArrow(work, "record string").collect()]


def _clear_outputs(out_dir: str, sources: set[str]) -> None:
    """Remove what a previous tokenize run left in ``out_dir`` (only files this job writes)."""
    for name in (MANIFEST_FILE, TOKENIZER_FILE):
        p = os.path.join(out_dir, name)
        if os.path.exists(p):
            os.remove(p)
    for source in sources:
        for pattern in ("part-*.bin", "part-*.idx", "part-*.tmp-*"):
            for p in glob.glob(os.path.join(out_dir, source, pattern)):
                os.remove(p)


def tokenize_run(run_dir: str, spec: TokenizerSpec, out_dir: str, master: str = "local",
                 threads: int | None = None) -> dict[str, Any]:
    """Tokenize every shard of ``run_dir`` into ``out_dir``; return ``tokens.json``'s content plus a
    ``_timing`` entry (not written) for the CLI summary."""
    t0 = time.time()
    run_dir, out_dir = os.path.abspath(run_dir), os.path.abspath(out_dir)
    manifest, shards = read_run(run_dir)
    for s in shards:
        if os.path.sep in s.source or s.source.startswith("."):
            raise UserError(f"{run_dir}/manifest.json: odd source name {s.source!r}")
    _clear_outputs(out_dir, {s.source for s in shards})
    tok, loaded = prepare_tokenizer(spec, run_dir, shards, out_dir)
    if tok["eod_id"] is None:
        raise UserError(f"the tokenizer has no end-of-document token {tok['eod_token']!r}")
    local_threads = threads or os.cpu_count() or 1
    engine, why = choose_engine(os.path.join(out_dir, TOKENIZER_FILE), tok["sha256"], spec.engine,
                                _probe_texts(run_dir, shards), local_threads, loaded)
    log.info("tokenizer: %d entries, EOD %s = %d, %s; engine %s (%s)", tok["vocab_size"], tok["eod_token"],
             tok["eod_id"], tok["dtype"], engine, why)
    tok["engine"] = engine
    t1 = time.time()
    if master in ("none", "local"):
        records = _run_local(run_dir, out_dir, shards, tok, engine, local_threads)
    else:
        records = _run_spark(master, run_dir, out_dir, shards, tok, engine, threads or 1)
    encode_seconds = time.time() - t1
    order = {(s.source, s.part): i for i, s in enumerate(shards)}
    records.sort(key=lambda r: order[(r["source"], r["part"])])
    text_bytes = sum(r.pop("_bytes") for r in records)
    task_seconds = sum(r.pop("_seconds") for r in records)
    sources: dict[str, dict[str, int]] = {}
    for r in records:
        t = sources.setdefault(r["source"], {"shards": 0, "documents": 0, "tokens": 0})
        t["shards"] += 1
        t["documents"] += r["documents"]
        t["tokens"] += r["tokens"]
    out = {
        "schema_version": SCHEMA_VERSION,
        "run": {"path": run_dir, "pipeline": manifest.get("pipeline"), "config_hash": manifest.get("config_hash")},
        "tokenizer": tok,
        "format": {"kind": "megatron-indexed-dataset", "version": 1, "dtype": tok["dtype"],
                   "eod_appended": True, "sequences_per_document": 1},
        "shards": records,
        "totals": {"documents": sum(r["documents"] for r in records),
                   "tokens": sum(r["tokens"] for r in records),
                   "sources": sources},
    }
    write_json_atomic(os.path.join(out_dir, MANIFEST_FILE), out)
    out["_timing"] = {"seconds": time.time() - t0, "encode_seconds": encode_seconds, "task_seconds": task_seconds,
                      "text_bytes": text_bytes}
    return out
