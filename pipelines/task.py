"""Executor side: one task = one input file through its reader, the fused row steps and the writer.

Everything here runs inside a Spark Python worker (``mapInArrow``), never on the driver. A task writes
its shard, its ledger part and, last, its task record (``_tasks/<source>/part-NNNNN.json``); the
record's presence is what ``--resume`` trusts, so a task killed half-way is simply run again.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from operators import registry
from operators.base import DROP_DETAIL, DROP_REASON, DROP_STEP, InputFile, TaskContext
from operators.writers import sort_by_id, write_arrow, write_json_atomic

#: ledger columns, in order
LEDGER_SCHEMA = pa.schema([
    ("id", pa.string()), ("source", pa.string()), ("url", pa.string()), ("path", pa.string()),
    ("step", pa.string()), ("reason", pa.string()), ("detail", pa.string()), ("dup_of", pa.string()),
    ("length", pa.int64()), ("text_head", pa.string()),
])
PROGRESS_EVERY_S = 1.0
SAMPLES_PER_REASON = 3


@dataclass(frozen=True)
class Task:
    source: str
    input: InputFile


def part_name(index: int) -> str:
    return f"part-{index:05d}"


def task_record_path(out_dir: str, source: str, index: int) -> str:
    return os.path.join(out_dir, "_tasks", source, part_name(index) + ".json")


# Operators are built once per Python worker and per pipeline (heavy state loads lazily in setup()).
_operators: dict[tuple[str, str], tuple[Any, list[Any]]] = {}


def _build(spec, source: str):
    key = (spec.config_hash(), source)
    if key not in _operators:
        src = spec.sources[source]
        reader = registry.reader(src.read.name)(src.read.params)
        steps = [registry.row_step(s.name)(s.params) for s in src.steps]
        _operators[key] = (reader, steps)
    return _operators[key]


def _with_base_columns(batch: pa.RecordBatch, source: str, reader_name: str) -> pa.RecordBatch:
    """Insert ``source`` after ``id``; add the drop columns, keeping a reader's own ``drop_reason``.

    A reader may skip an input with a reason (a binary file, a vendored one) by emitting its row with
    ``drop_reason`` set (and optionally ``drop_detail``): the row then goes to the ledger, with the
    reader's name as its step, like a step's drop.
    """
    n = batch.num_rows
    names = batch.schema.names
    arrays = list(batch.columns)
    fields = list(batch.schema)
    i = names.index("id") + 1
    arrays.insert(i, pa.array([source] * n, pa.string()))
    fields.insert(i, pa.field("source", pa.string()))
    if DROP_REASON in names:
        j = names.index(DROP_REASON) + 1  # +1: source was inserted before it
        reason = arrays.pop(j)
        fields.pop(j)
        step = pc.if_else(pc.is_valid(reason), pa.scalar(reader_name, pa.string()), pa.scalar(None, pa.string()))
        arrays += [reason.cast(pa.string()), step]
    else:
        arrays += [pa.nulls(n, pa.string()), pa.nulls(n, pa.string())]
    fields += [pa.field(DROP_REASON, pa.string()), pa.field(DROP_STEP, pa.string())]
    if DROP_DETAIL in names:  # keep it last, where update_batch puts it
        j = [f.name for f in fields].index(DROP_DETAIL)
        arrays.append(arrays.pop(j).cast(pa.string()))
        fields.append(pa.field(DROP_DETAIL, pa.string()))
        fields.pop(j)
    return pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))


def _ledger_rows(before: pa.RecordBatch, after: pa.RecordBatch, mask: pa.Array, head_chars: int) -> pa.Table:
    """Ledger rows for the rows ``mask`` selects: identity from ``before``, reason from ``after``."""
    dropped = before.filter(mask)
    decided = after.filter(mask)
    n = dropped.num_rows

    def col(name: str, batch: pa.RecordBatch = dropped) -> pa.Array:
        return batch.column(name) if name in batch.schema.names else pa.nulls(n, pa.string())

    if "text" in dropped.schema.names:
        text = dropped.column("text")
        length = pc.fill_null(pc.utf8_length(text), 0).cast(pa.int64())
        head = pc.utf8_slice_codeunits(text, 0, head_chars)
    elif "html" in dropped.schema.names:
        length = pc.fill_null(pc.binary_length(dropped.column("html")), 0).cast(pa.int64())
        head = pa.nulls(n, pa.string())
    else:
        length, head = pa.array([0] * n, pa.int64()), pa.nulls(n, pa.string())
    return pa.table([col("id"), col("source"), col("url").cast(pa.string()), col("path").cast(pa.string()),
                     col(DROP_STEP, decided), col(DROP_REASON, decided), col(DROP_DETAIL, decided),
                     pa.nulls(n, pa.string()), length, head],
                    schema=LEDGER_SCHEMA)


def run_task(spec, task: Task, out_dir: str) -> dict[str, Any]:
    """Read one input file, apply the source's steps, write shard + ledger + task record."""
    t_start = time.time()
    reader, steps = _build(spec, task.source)
    out = spec.output
    ctx = TaskContext(source=task.source, input=task.input)
    step_stats = [{"step": s.name, "rows_in": 0, "rows_out": 0, "drops": {}, "counters": {}, "seconds": 0.0}
                  for s in steps]
    # each step counts into its own stats (e.g. pii replacements); damage reports go to one list
    step_ctxs = [TaskContext(source=task.source, input=task.input, counters=st["counters"], errors=ctx.errors)
                 for st in step_stats]
    kept: list[pa.Table] = []
    ledger: list[pa.Table] = []
    samples: dict[str, list[dict[str, Any]]] = {}
    rows_read = 0
    reader_drops: dict[str, int] = {}  # inputs the reader skipped with a reason
    read_seconds = 0.0
    progress_path = os.path.join(out_dir, "_progress", task.source, part_name(task.input.index) + ".json")
    last_progress = 0.0

    batches = reader.read(ctx, out.batch_rows)
    while True:
        t0 = time.perf_counter()
        try:
            batch = next(batches)
        except StopIteration:
            break
        except Exception as e:  # a reader bug or unexpected damage: keep what was read so far
            ctx.error(f"reader failed: {type(e).__name__}: {e}")
            break
        finally:
            read_seconds += time.perf_counter() - t0
        if batch.num_rows == 0:
            continue
        batch = _with_base_columns(batch, task.source, reader.name)
        rows_read += batch.num_rows
        skipped = pc.is_valid(batch.column(DROP_REASON))
        if pc.any(skipped).as_py():
            rows = _ledger_rows(batch, batch, skipped, out.ledger_text_chars)
            ledger.append(rows)
            for reason, count in zip(*_value_counts(rows.column("reason")), strict=True):
                reader_drops[reason] = reader_drops.get(reason, 0) + count
            _take_samples(samples, rows)
            batch = batch.filter(pc.invert(skipped))
        for step, st, step_ctx in zip(steps, step_stats, step_ctxs, strict=True):
            if batch.num_rows == 0:
                break
            st["rows_in"] += batch.num_rows
            t0 = time.perf_counter()
            after = step(batch, step_ctx)
            st["seconds"] += time.perf_counter() - t0
            dropped = pc.is_valid(after.column(DROP_REASON))
            n_drop = pc.sum(dropped).as_py() or 0
            if n_drop:
                rows = _ledger_rows(batch, after, dropped, out.ledger_text_chars)
                ledger.append(rows)
                for reason, count in zip(*_value_counts(rows.column("reason")), strict=True):
                    st["drops"][reason] = st["drops"].get(reason, 0) + count
                _take_samples(samples, rows)
                after = after.filter(pc.invert(dropped))
            st["rows_out"] += after.num_rows
            batch = after
        if batch.num_rows:
            meta = [c for c in (DROP_REASON, DROP_STEP, DROP_DETAIL) if c in batch.schema.names]
            kept.append(pa.Table.from_batches([batch.drop_columns(meta)]))
        now = time.time()
        if now - last_progress >= PROGRESS_EVERY_S:
            write_json_atomic(progress_path, {"rows": rows_read})
            last_progress = now

    part = part_name(task.input.index)
    table = pa.concat_tables(kept, promote_options="permissive") if kept else _empty_shard(reader, steps)
    shard_rel = os.path.join("shards", task.source, part + ".arrow")
    shard = write_arrow(os.path.join(out_dir, shard_rel), sort_by_id(table), out.compression)
    ledger_table = pa.concat_tables(ledger) if ledger else LEDGER_SCHEMA.empty_table()
    ledger_rel = os.path.join("ledger", task.source, part + ".arrow")
    ledger_info = write_arrow(os.path.join(out_dir, ledger_rel), sort_by_id(ledger_table), out.compression)
    record = {
        "source": task.source,
        "part": task.input.index,
        "input": {"path": task.input.path, "name": task.input.name},
        "config_hash": spec.config_hash(),
        "rows_read": rows_read,
        "rows_kept": shard["rows"],
        "rows_dropped": ledger_info["rows"],
        "reader": {"name": reader.name, "counters": ctx.counters, "errors": ctx.errors,
                   "drops": reader_drops, "seconds": round(read_seconds, 3)},
        "steps": step_stats,
        "shard": {"path": shard_rel, **shard},
        "ledger": {"path": ledger_rel, **ledger_info},
        "samples": samples,
        "seconds": round(time.time() - t_start, 3),
    }
    write_json_atomic(task_record_path(out_dir, task.source, task.input.index), record)
    write_json_atomic(progress_path, {"rows": rows_read, "done": True})
    return record


def _value_counts(arr: pa.ChunkedArray | pa.Array) -> tuple[list[str], list[int]]:
    vc = pc.value_counts(arr)
    return vc.field("values").to_pylist(), vc.field("counts").to_pylist()


def _take_samples(samples: dict[str, list[dict[str, Any]]], rows: pa.Table) -> None:
    for row in rows.to_pylist():
        key = f"{row['step']}:{row['reason']}"
        bucket = samples.setdefault(key, [])
        if len(bucket) < SAMPLES_PER_REASON:
            bucket.append({k: row[k] for k in ("id", "url", "path", "detail", "length", "text_head")
                           if row[k] is not None})


def _empty_shard(reader, steps) -> pa.Table:
    """The schema of a shard with no kept rows: the reader's columns as the steps leave them."""
    cols = ["id", "source", *reader.produces]
    for s in steps:
        cols = [c for c in cols if c not in s.consumes] + [c for c in s.added(s.params) if c not in cols]
    types = {c: pa.string() for c in cols}
    types.update({"html": pa.binary()} if "html" in cols else {})
    types.update({c: t for c, t in reader.column_types.items() if c in cols})
    for s in steps:
        types.update(s.added(s.params))
    return pa.schema([(c, types[c]) for c in cols]).empty_table()


def load_task_record(out_dir: str, source: str, index: int) -> dict[str, Any] | None:
    """A finished task's record, if its shard and ledger are still there as recorded."""
    path = task_record_path(out_dir, source, index)
    try:
        with open(path) as fh:
            rec = json.load(fh)
    except (OSError, ValueError):
        return None
    for key in ("shard", "ledger"):
        f = os.path.join(out_dir, rec[key]["path"])
        if not os.path.exists(f) or os.path.getsize(f) != rec[key]["bytes"]:
            return None
    return rec

