"""Global steps (dedup): after the fused row pass, over the documents of all sources at once.

With global steps the row pass writes its shards and ledger parts to ``_stage/`` instead of the final
folders. Then, on Spark:

1. the staged shards become one DataFrame (``id``, ``source``, ``part`` and the columns the global
   steps read; a source lacking a column gives nulls), read by one task per shard;
2. each global step returns the documents it removes (``id``, ``source``, ``part``, ``reason``,
   ``detail``, ``dup_of``), written at once to ``_stage/removed/<n>-<step>/`` (Parquet), so a step runs
   once however often its result is read; the next step sees the documents not removed so far;
3. the removals are regrouped by input file (``_stage/removed/by_part/source=S/part=N/``) and one task
   per input file filters its staged shard and writes the final shard, and its ledger part: the row
   pass's drops plus the global steps' removals with their URL/path, length and text head.

The text never goes through a shuffle unless a step needs it to (dedup hashes it where it lies); the
driver only collects per-step counts and each step's small ``stats``.
"""

from __future__ import annotations

import glob
import json
import os
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from operators import registry
from operators.writers import read_arrow, sort_by_id, write_arrow
from pipelines.spec import PipelineSpec
from pipelines.task import LEDGER_SCHEMA, SAMPLES_PER_REASON, part_name

REMOVED_SCHEMA = "id string, source string, part int, step string, reason string, detail string, dup_of string"
READ_BATCH = 4096


def stage_dir(out_dir: str) -> str:
    return os.path.join(out_dir, "_stage")


def _shard_schema(path: str) -> pa.Schema:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).schema


def documents_frame(spark, spec: PipelineSpec, records: list[dict[str, Any]], columns: list[str]):
    """The staged shards of every source as one DataFrame: id, source, part and ``columns``."""
    from pyspark.sql.pandas.types import from_arrow_schema

    frames = []
    for source in spec.sources:
        recs = [r for r in records if r["source"] == source]
        if not recs:
            continue
        paths = [r["_stage_shard"] for r in recs]
        parts = [r["part"] for r in recs]
        schema = _shard_schema(paths[0])
        cols = [c for c in columns if c in schema.names]
        out_schema = pa.schema([schema.field("id"), schema.field("source"), pa.field("part", pa.int32()),
                                *(schema.field(c) for c in cols)])

        def read(batches, paths=paths, parts=parts, cols=cols, out_schema=out_schema):
            for b in batches:
                for i in b.column("id").to_pylist():
                    table = read_arrow(paths[i]).select(["id", "source", *cols])
                    table = table.add_column(2, "part", pa.array([parts[i]] * table.num_rows, pa.int32()))
                    yield from table.cast(out_schema).to_batches(READ_BATCH)

        df = spark.range(0, len(paths), 1, numPartitions=len(paths)).mapInArrow(read, from_arrow_schema(out_schema))
        frames.append(df)
    if not frames:
        return None
    out = frames[0]
    for f in frames[1:]:
        out = out.unionByName(f, allowMissingColumns=True)
    return out


def run_global(spark, spec: PipelineSpec, out_dir: str, records: list[dict[str, Any]]
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run the global steps over the staged shards; write the final shards and ledger parts.

    Returns the final task records (one per input file) and the per-step stats.
    """
    from pyspark.sql import functions as F

    sdir = stage_dir(out_dir)
    for r in records:
        r["_stage_shard"] = os.path.join(sdir, r["shard"]["path"])
    steps = [registry.global_step(s.name)(s.params) for s in spec.steps]
    for step in steps:
        step.source_order = list(spec.sources)
    columns: list[str] = []
    for step in steps:
        columns += [c for c in (*step.reads, *step.optional_reads) if c not in columns]
    docs = documents_frame(spark, spec, records, columns)

    removed_dirs: list[str] = []
    step_stats: list[dict[str, Any]] = []
    rows_in = sum(r["rows_kept"] for r in records)
    for i, step in enumerate(steps):
        t0 = time.time()
        path = os.path.join(sdir, "removed", f"{i}-{step.name}")
        if docs is None:
            step_stats.append({"step": step.name, "rows_in": 0, "rows_out": 0, "drops": {}, "seconds": 0.0})
            continue
        live = docs
        if removed_dirs:
            gone = spark.read.parquet(*removed_dirs).select("id")
            live = docs.join(gone, "id", "left_anti")
        removed = step.apply(live).select("id", "source", F.col("part").cast("int"), F.lit(step.name).alias("step"),
                                          "reason", "detail", "dup_of")
        removed.write.mode("overwrite").parquet(path)
        removed_dirs.append(path)
        counts = spark.read.parquet(path).groupBy("source", "reason").count().collect()
        drops: dict[str, dict[str, int]] = {}
        for row in counts:
            drops.setdefault(row["source"], {})[row["reason"]] = row["count"]
        n_removed = sum(n for d in drops.values() for n in d.values())
        step_stats.append({"step": step.name, "rows_in": rows_in, "rows_out": rows_in - n_removed,
                           "drops": {s: dict(sorted(d.items())) for s, d in sorted(drops.items())},
                           "seconds": round(time.time() - t0, 3), **step.stats})
        rows_in -= n_removed

    by_part = os.path.join(sdir, "removed", "by_part")
    if removed_dirs:
        (spark.read.parquet(*removed_dirs).repartition("source", "part")
         .write.mode("overwrite").partitionBy("source", "part").parquet(by_part))
    final = _write_final(spark, spec, out_dir, records, by_part)
    return final, step_stats


def _write_final(spark, spec: PipelineSpec, out_dir: str, records: list[dict[str, Any]], by_part: str
                 ) -> list[dict[str, Any]]:
    """One task per input file: staged shard minus removals -> final shard; ledger part + removals."""
    sdir = stage_dir(out_dir)
    ordered = sorted(records, key=lambda r: -r["shard"]["bytes"])
    compression = spec.output.compression
    head_chars = spec.output.ledger_text_chars

    def work(batches):
        for b in batches:
            for i in b.column("id").to_pylist():
                yield pa.RecordBatch.from_pydict(
                    {"record": [json.dumps(finish_part(ordered[i], sdir, out_dir, by_part, compression,
                                                       head_chars))]})

    df = spark.range(0, len(ordered), 1, numPartitions=max(1, len(ordered)))
    rows = df.mapInArrow(work, "record string").collect() if ordered else []
    return [json.loads(r["record"]) for r in rows]


def _removed_for(by_part: str, source: str, part: int) -> pa.Table | None:
    import pyarrow.parquet as pq

    files = sorted(glob.glob(os.path.join(by_part, f"source={source}", f"part={part}", "*.parquet")))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=["id", "step", "reason", "detail", "dup_of"]) for f in files])


def finish_part(record: dict[str, Any], sdir: str, out_dir: str, by_part: str, compression: str,
                head_chars: int) -> dict[str, Any]:
    """Executor side: the final shard and ledger part of one input file."""
    source, part = record["source"], record["part"]
    shard = read_arrow(os.path.join(sdir, record["shard"]["path"]))
    ledger = read_arrow(os.path.join(sdir, record["ledger"]["path"]))
    removed = _removed_for(by_part, source, part)
    samples = {k: list(v) for k, v in record["samples"].items()}
    if removed is not None and removed.num_rows:
        gone = pc.is_in(shard.column("id"), value_set=removed.column("id"))
        dropped = shard.filter(gone)
        shard = shard.filter(pc.invert(gone))
        # the removal rows in the order of the dropped shard rows
        order = pc.index_in(dropped.column("id"), value_set=removed.column("id"))
        info = removed.take(order)
        n = dropped.num_rows

        def col(name: str) -> pa.Array:
            return dropped.column(name).cast(pa.string()) if name in dropped.schema.names else pa.nulls(n, pa.string())

        if "text" in dropped.schema.names:
            length = pc.fill_null(pc.utf8_length(dropped.column("text")), 0).cast(pa.int64())
            head = pc.utf8_slice_codeunits(dropped.column("text"), 0, head_chars)
        else:
            length, head = pa.array([0] * n, pa.int64()), pa.nulls(n, pa.string())
        rows = pa.table([dropped.column("id"), dropped.column("source"), col("url"), col("path"),
                         info.column("step"), info.column("reason"), info.column("detail"), info.column("dup_of"),
                         length, head], schema=LEDGER_SCHEMA)
        ledger = pa.concat_tables([ledger.cast(LEDGER_SCHEMA), rows])
        for row in rows.to_pylist():
            bucket = samples.setdefault(f"{row['step']}:{row['reason']}", [])
            if len(bucket) < SAMPLES_PER_REASON:
                bucket.append({k: row[k] for k in ("id", "url", "path", "detail", "dup_of", "length", "text_head")
                               if row[k] is not None})
    shard_rel = os.path.join("shards", source, part_name(part) + ".arrow")
    ledger_rel = os.path.join("ledger", source, part_name(part) + ".arrow")
    shard_info = write_arrow(os.path.join(out_dir, shard_rel), sort_by_id(shard), compression)
    ledger_info = write_arrow(os.path.join(out_dir, ledger_rel), sort_by_id(ledger), compression)
    out = {k: v for k, v in record.items() if k != "_stage_shard"}
    out.update({"rows_kept": shard_info["rows"], "rows_dropped": ledger_info["rows"],
                "shard": {"path": shard_rel, **shard_info}, "ledger": {"path": ledger_rel, **ledger_info},
                "samples": samples})
    return out
