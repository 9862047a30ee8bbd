"""``jsonl`` and ``parquet`` readers: text, ids, pass-through fields, bad lines."""

from __future__ import annotations

import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from operators.base import InputFile, TaskContext
from operators.readers.text import JsonlReader, ParquetReader, TextParams
from tests.conftest import CORPUS


@pytest.fixture(scope="module")
def paragraphs():
    text = (CORPUS / "books" / "Hesse, Hermann -- Siddhartha.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()][:250]


def read_all(reader, path, batch_size=64):
    ctx = TaskContext(source="books", input=InputFile(0, str(path), path.name))
    batches = list(reader.read(ctx, batch_size))
    assert all(b.num_rows <= batch_size for b in batches)
    return pa.Table.from_batches(batches), ctx


def test_jsonl_gz_with_id_field_extras_and_bad_lines(tmp_path, paragraphs):
    path = tmp_path / "siddhartha.jsonl.gz"
    with gzip.open(path, "wt") as fh:
        for i, p in enumerate(paragraphs):
            fh.write(json.dumps({"body": p, "key": f"sid-{i}", "n": i, "tags": ["hesse"]}) + "\n")
            if i == 10:
                fh.write("not json at all\n")
            if i == 20:
                fh.write(json.dumps({"key": "no-body"}) + "\n")
    table, ctx = read_all(JsonlReader(TextParams(paths=str(path), text_field="body", id_field="key")), path)
    assert table.num_rows == len(paragraphs)
    assert table.column_names == ["id", "text", "n", "tags"]
    assert table.column("id").to_pylist()[:2] == ["sid-0", "sid-1"]
    assert table.column("text").to_pylist() == paragraphs
    assert [e["offset"] for e in ctx.errors] == [12, 23]
    assert "invalid JSON" in ctx.errors[0]["error"] and "no string field 'body'" in ctx.errors[1]["error"]


def test_jsonl_ids_are_stable_hashes_without_id_field(tmp_path, paragraphs):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": p}) + "\n" for p in paragraphs[:50]))
    t1, _ = read_all(JsonlReader(TextParams(paths=str(path))), path)
    t2, _ = read_all(JsonlReader(TextParams(paths=str(path))), path)
    ids = t1.column("id").to_pylist()
    assert ids == t2.column("id").to_pylist() and len(set(ids)) == 50 and all(len(i) == 16 for i in ids)


def test_parquet_text_field_and_passthrough(tmp_path, paragraphs):
    path = tmp_path / "s.parquet"
    pq.write_table(pa.table({"content": paragraphs, "chapter": [i // 20 for i in range(len(paragraphs))]}), path,
                   row_group_size=100)
    table, ctx = read_all(ParquetReader(TextParams(paths=str(path), text_field="content")), path)
    assert table.column_names == ["id", "text", "chapter"]
    assert table.column("text").to_pylist() == paragraphs and not ctx.errors
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(path.read_bytes()[:500])
    ctx = TaskContext(source="books", input=InputFile(0, str(bad), bad.name))
    assert list(ParquetReader(TextParams(paths=str(bad), text_field="content")).read(ctx, 64)) == []
    assert len(ctx.errors) == 1 and "unreadable parquet" in ctx.errors[0]["error"]


def test_inputs_from_several_globs_never_share_a_name(tmp_path):
    from operators.readers.files import list_files

    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        (tmp_path / d / "x.jsonl").write_text("{}\n")
    files = list_files([str(tmp_path / "a" / "*.jsonl"), str(tmp_path / "b" / "*.jsonl"),
                        str(tmp_path / "a" / "x.jsonl")])
    assert [f.name for f in files] == ["a/x.jsonl", "b/x.jsonl"]
    assert [f.name for f in list_files(str(tmp_path / "a" / "*.jsonl"))] == ["x.jsonl"]
