"""The Spark runner in-process (shared session): outputs, the rows invariant, determinism, resume."""

from __future__ import annotations

import json
import os
import textwrap

import pyarrow as pa
import pytest

from operators.writers import read_arrow, sha256_file
from pipelines import runner
from pipelines import spec as specmod
from pipelines.errors import UserError
from tests.conftest import CORPUS


def make_inputs(folder, books=6):
    """JSONL inputs cut from the real books: one file per book, paragraphs as documents, one bad line."""
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(os.listdir(CORPUS / "books"))[:books]
    total = 0
    for i, name in enumerate(names):
        text = (CORPUS / "books" / name).read_text(encoding="utf-8", errors="replace")
        paras = [p.strip() for p in text.split("\n\n") if p.strip()][:300]
        with open(folder / f"book-{i:02d}.jsonl", "w") as fh:
            for j, p in enumerate(paras):
                fh.write(json.dumps({"text": p, "book": name, "n": j}) + "\n")
                total += 1
            if i == 0:
                fh.write('{"text": broken json\n')
    return total


def pipeline(folder, out):
    return specmod.load_text(textwrap.dedent(f"""\
        name: books-jsonl
        sources:
          books:
            read: {{jsonl: {{paths: "{folder}/*.jsonl"}}}}
        output: {{path: {out}, batch_rows: 64}}
    """), "books.yaml")


def shard_digests(out):
    manifest = json.loads((out / "manifest.json").read_text())
    return {s["path"]: s["sha256"] for s in manifest["shards"]}


@pytest.fixture(scope="module")
def first_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("runner")
    total = make_inputs(base / "in")
    out = base / "out"
    stats = runner.run(pipeline(base / "in", out), str(out), spark=spark, progress=False)
    return base, out, stats, total


def test_outputs_manifest_and_rows_invariant(first_run):
    base, out, stats, total = first_run
    assert stats["rows_read"] == total
    assert stats["rows_kept"] + stats["rows_dropped"] == stats["rows_read"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["path"] for s in manifest["shards"]] == [f"shards/books/part-{i:05d}.arrow" for i in range(6)]
    kept = 0
    ids = []
    for s in manifest["shards"]:
        path = out / s["path"]
        assert sha256_file(path) == s["sha256"] and path.stat().st_size == s["bytes"]
        t = read_arrow(str(path))
        assert t.num_rows == s["rows"]
        assert t.column_names == ["id", "source", "text", "book", "n"]
        col = t.column("id").to_pylist()
        assert col == sorted(col)
        ids += col
        kept += t.num_rows
    assert kept == stats["rows_kept"] == total
    assert len(set(ids)) == len(ids)
    # the bad JSON line is reported with file and line, and loses nothing else
    errors = stats["sources"]["books"]["errors"]
    assert len(errors) == 1 and errors[0]["file"].endswith("book-00.jsonl") and "invalid JSON" in errors[0]["error"]
    assert not list(out.rglob("*.tmp-*"))


def test_rerun_gives_byte_identical_shards(first_run, spark):
    base, out, _, _ = first_run
    out2 = base / "out2"
    runner.run(pipeline(base / "in", out2), str(out2), spark=spark, progress=False)
    assert shard_digests(out) == shard_digests(out2)
    for rel in shard_digests(out):
        assert (out / rel).read_bytes() == (out2 / rel).read_bytes()


def test_resume_skips_finished_files_and_redoes_torn_ones(first_run, spark):
    base, out, _, _ = first_run
    out3 = base / "out3"
    spec = pipeline(base / "in", out3)
    runner.run(spec, str(out3), spark=spark, progress=False)
    # simulate a driver killed mid-run: two tasks never finished, one left a torn temporary file
    for part in (1, 4):
        (out3 / "_tasks" / "books" / f"part-{part:05d}.json").unlink()
        (out3 / "shards" / "books" / f"part-{part:05d}.arrow").unlink()
    (out3 / "shards" / "books" / "part-00001.arrow.tmp-deadbeef").write_bytes(b"torn")
    (out3 / "manifest.json").unlink()
    stats = runner.run(spec, str(out3), resume=True, spark=spark, progress=False)
    assert stats["input_files_resumed"] == 4
    assert shard_digests(out3) == shard_digests(out)
    assert not list(out3.rglob("*.tmp-*"))


def test_resume_refuses_a_changed_pipeline(first_run, spark):
    base, out, _, _ = first_run
    changed = specmod.load_text(textwrap.dedent(f"""\
        name: books-jsonl
        sources:
          books:
            read: {{jsonl: {{paths: "{base / 'in'}/*.jsonl", text_field: other}}}}
        output: {{path: {out}, batch_rows: 64}}
    """))
    with pytest.raises(UserError, match="cannot --resume: the pipeline changed"):
        runner.run(changed, str(out), resume=True, spark=spark, progress=False)


def test_a_fresh_run_clears_only_its_own_outputs(first_run, spark, tmp_path):
    base, _, _, _ = first_run
    out = tmp_path / "o"
    (out / "shards" / "books").mkdir(parents=True)
    (out / "shards" / "books" / "part-00099.arrow").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    runner.run(pipeline(base / "in", out), str(out), spark=spark, progress=False)
    assert not (out / "shards" / "books" / "part-00099.arrow").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_ledger_schema_is_stable_when_nothing_is_dropped(first_run):
    _, out, _, _ = first_run
    t = read_arrow(str(out / "ledger" / "books" / "part-00000.arrow"))
    assert t.num_rows == 0
    assert t.schema.names == ["id", "source", "url", "path", "step", "reason", "detail", "dup_of", "length", "text_head"]
    assert isinstance(t, pa.Table)


def test_a_reader_can_skip_an_input_with_a_reason():
    """Rows a reader emits with ``drop_reason`` set get the reader as their step; the rest stay live."""
    from operators.base import DROP_DETAIL, DROP_REASON, DROP_STEP
    from pipelines.task import _ledger_rows, _with_base_columns

    batch = pa.RecordBatch.from_pydict({
        "id": ["a", "b", "c"], "path": ["x.py", "lib.min.js", "y.py"], "text": ["print(1)", None, "pass"],
        DROP_REASON: [None, "minified", None], DROP_DETAIL: [None, "mean line 412", None]})
    out = _with_base_columns(batch, "code", "source_tree")
    assert out.schema.names == ["id", "source", "path", "text", DROP_REASON, DROP_STEP, DROP_DETAIL]
    assert out.column(DROP_STEP).to_pylist() == [None, "source_tree", None]
    ledger = _ledger_rows(out, out, out.column(DROP_REASON).is_valid(), 100)
    assert ledger.to_pylist()[0] | {"length": 0} == {
        "id": "b", "source": "code", "url": None, "path": "lib.min.js", "step": "source_tree",
        "reason": "minified", "detail": "mean line 412", "dup_of": None, "length": 0, "text_head": None}
    # without a drop column the reader's rows are all live
    plain = _with_base_columns(batch.drop_columns([DROP_REASON, DROP_DETAIL]), "code", "source_tree")
    assert plain.column(DROP_REASON).null_count == 3 and plain.schema.names[-2:] == [DROP_REASON, DROP_STEP]
