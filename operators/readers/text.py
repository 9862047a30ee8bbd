"""Readers for corpora that are already text: JSON Lines and Parquet.

The text field becomes ``text``; ``id_field`` (optional) sets the row id, otherwise the id is a hash of
source, file and line (or row) number. Every other field passes through as a column.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pyarrow as pa

from operators.base import Params, Reader, TaskContext, doc_id
from operators.readers.files import list_files


class TextParams(Params):
    paths: str | list[str]
    text_field: str = "text"
    id_field: str | None = None


def _ids(ctx: TaskContext, values: list[Any], positions: list[int]) -> list[str]:
    return [str(v) if v is not None else doc_id(ctx.source, ctx.input.name, pos)
            for v, pos in zip(values, positions, strict=True)]


class JsonlReader(Reader):
    """One JSON object per line (``.jsonl`` or ``.jsonl.gz``). A bad line is an error entry, not a crash."""

    name = "jsonl"
    Params = TextParams
    produces = ("text",)

    def list_inputs(self, base_dir: str = "."):
        return list_files(self.params.paths, base_dir)

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        p: TextParams = self.params
        opener = gzip.open if ctx.input.path.endswith(".gz") else open
        rows: list[dict[str, Any]] = []
        positions: list[int] = []
        schema: pa.Schema | None = None
        try:
            with opener(ctx.input.path, "rb") as fh:
                for lineno, line in enumerate(fh, 1):
                    if not line.strip():
                        continue
                    ctx.count("lines")
                    try:
                        obj = json.loads(line)
                    except ValueError as e:
                        ctx.error(f"line {lineno}: invalid JSON: {e}", offset=lineno)
                        continue
                    if not isinstance(obj, dict) or not isinstance(obj.get(p.text_field), str):
                        ctx.error(f"line {lineno}: no string field '{p.text_field}'", offset=lineno)
                        continue
                    rows.append(obj)
                    positions.append(lineno)
                    if len(rows) >= batch_size:
                        batch, schema = self._batch(ctx, rows, positions, schema)
                        yield batch
                        rows, positions = [], []
        except (OSError, EOFError, UnicodeDecodeError) as e:
            ctx.error(f"unreadable: {e}", offset=positions[-1] if positions else None)
        if rows:
            batch, schema = self._batch(ctx, rows, positions, schema)
            yield batch

    def _batch(self, ctx, rows, positions, schema):
        p: TextParams = self.params
        ids = _ids(ctx, [r.get(p.id_field) if p.id_field else None for r in rows], positions)
        texts = [r.pop(p.text_field) for r in rows]
        for r in rows:
            r.pop("id", None)
            r.pop(p.id_field, None) if p.id_field else None
            for reserved in ("source", "drop_reason", "drop_step"):
                r.pop(reserved, None)
        extras = _extras_table(rows, schema, ctx)
        cols = {"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())}
        for name in extras.column_names:
            cols[name] = extras.column(name).combine_chunks()
        batch = pa.RecordBatch.from_pydict(cols)
        return batch, extras.schema


def _extras_table(rows: list[dict[str, Any]], schema: pa.Schema | None, ctx: TaskContext) -> pa.Table:
    """Pass-through fields as a table; later batches are held to the first batch's schema."""
    if schema is None:
        try:
            return pa.Table.from_pylist(rows)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            # mixed types inside one field: keep such fields as JSON text
            keys = sorted({k for r in rows for k in r})
            return pa.table({k: pa.array([None if r.get(k) is None else json.dumps(r.get(k)) for r in rows],
                                         pa.string()) for k in keys})
    cols = {}
    for field in schema:
        values = [r.get(field.name) for r in rows]
        try:
            cols[field.name] = pa.array(values, field.type)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            fixed = []
            for v in values:
                try:
                    pa.array([v], field.type)
                    fixed.append(v)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    ctx.count(f"field_type_mismatch:{field.name}")
                    fixed.append(None)
            cols[field.name] = pa.array(fixed, field.type)
    extra_keys = {k for r in rows for k in r} - set(schema.names)
    for k in extra_keys:
        ctx.count(f"field_not_in_first_batch:{k}")
    return pa.table(cols, schema=schema)


class ParquetReader(Reader):
    """Parquet files, read in row batches."""

    name = "parquet"
    Params = TextParams
    produces = ("text",)

    def list_inputs(self, base_dir: str = "."):
        return list_files(self.params.paths, base_dir)

    def read(self, ctx: TaskContext, batch_size: int) -> Iterator[pa.RecordBatch]:
        import pyarrow.parquet as pq

        p: TextParams = self.params
        start = 0
        try:
            pf = pq.ParquetFile(ctx.input.path)
            if p.text_field not in pf.schema_arrow.names:
                ctx.error(f"no column '{p.text_field}'", offset=0)
                return
            for batch in pf.iter_batches(batch_size=batch_size):
                n = batch.num_rows
                positions = list(range(start, start + n))
                start += n
                ctx.count("rows", n)
                ids = _ids(ctx, batch.column(p.id_field).to_pylist() if p.id_field else [None] * n, positions)
                cols = {"id": pa.array(ids, pa.string()),
                        "text": batch.column(p.text_field).cast(pa.string())}
                skip = {p.text_field, p.id_field, "id", "source", "drop_reason", "drop_step"}
                for name in batch.schema.names:
                    if name not in skip:
                        cols[name] = batch.column(name)
                yield pa.RecordBatch.from_pydict(cols)
        except (OSError, pa.ArrowException) as e:
            ctx.error(f"unreadable parquet: {e}", offset=start)
