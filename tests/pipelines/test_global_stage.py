"""Global steps in the runner: the row pass stages its shards, global steps remove documents, the
final shards and ledger parts keep the rows invariant; exact_dedup on the corpus's duplicate books."""

from __future__ import annotations

import json
import textwrap

import pyarrow.compute as pc
import pytest

from operators.writers import read_arrow
from pipelines import runner
from pipelines import spec as specmod
from tests.conftest import CORPUS


def books_jsonl(folder):
    """The 40 books in two JSONL files (20 each), plus a whitespace-and-case variant of one of them."""
    folder.mkdir(parents=True, exist_ok=True)
    books = sorted((CORPUS / "books").glob("*.txt"))
    texts = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in books}
    for k in range(2):
        with open(folder / f"books-{k}.jsonl", "w") as fh:
            for name in list(texts)[k * 20:(k + 1) * 20]:
                fh.write(json.dumps({"text": texts[name], "title": name}) + "\n")
            if k == 1:
                variant = "  " + texts[books[0].name].upper().replace("\n", "\n\n") + "\n"
                fh.write(json.dumps({"text": variant, "title": "variant of " + books[0].name}) + "\n")
    return texts


def pipeline(folder, out, keep="first"):
    return specmod.load_text(textwrap.dedent(f"""\
        name: books-dedup
        sources:
          books:
            read: {{jsonl: {{paths: "{folder}/*.jsonl"}}}}
        steps:
          - exact_dedup: {{keep: {keep}}}
        output: {{path: {out}}}
    """), "dedup.yaml")


@pytest.fixture(scope="module")
def dedup_run(spark, tmp_path_factory):
    base = tmp_path_factory.mktemp("global")
    texts = books_jsonl(base / "in")
    out = base / "out"
    stats = runner.run(pipeline(base / "in", out), str(out), spark=spark, progress=False)
    return base, out, stats, texts


def _table(out, kind):
    manifest = json.loads((out / "manifest.json").read_text())
    import pyarrow as pa

    return pa.concat_tables([read_arrow(str(out / e["path"])) for e in manifest[kind]])


def test_exact_duplicate_books_leave_one_copy(dedup_run):
    _, out, stats, texts = dedup_run
    # three works are in the corpus under two names each, one more is our re-flowed, upper-cased copy
    by_text: dict[str, list[str]] = {}
    for name, text in texts.items():
        by_text.setdefault(text, []).append(name)
    expected = sum(len(v) - 1 for v in by_text.values()) + 1
    assert expected == 4
    kept, ledger = _table(out, "shards"), _table(out, "ledger")
    assert stats["rows_read"] == 41 == kept.num_rows + ledger.num_rows
    assert ledger.num_rows == expected
    assert set(ledger.column("reason").to_pylist()) == {"exact_duplicate"}
    assert set(ledger.column("step").to_pylist()) == {"exact_dedup"}
    # dup_of names a kept document with the same normalized text
    kept_text = dict(zip(kept.column("id").to_pylist(), kept.column("text").to_pylist(), strict=True))
    norm = lambda t: " ".join(t.lower().split())  # noqa: E731
    for row in ledger.to_pylist():
        assert row["dup_of"] in kept_text
        assert row["length"] > 100_000 and row["text_head"]
    assert len({norm(t) for t in kept_text.values()}) == kept.num_rows
    g = stats["global_steps"][0]
    assert g["step"] == "exact_dedup" and g["rows_in"] == 41 and g["rows_out"] == 37
    assert g["drops"] == {"books": {"exact_duplicate": 4}} and g["duplicate_groups"] == 4
    assert not (out / "_stage").exists()


def test_first_keeps_the_earliest_input_and_longest_the_longest(dedup_run, spark):
    base, out, _, texts = dedup_run
    ledger = _table(out, "ledger")
    kept = _table(out, "shards")
    titles = dict(zip(kept.column("id").to_pylist(), kept.column("title").to_pylist(), strict=True))
    # the variant is in the second file: with keep=first the original (first file) survives
    assert not any(t.startswith("variant of") for t in titles.values())
    out2 = base / "out-longest"
    runner.run(pipeline(base / "in", out2, keep="longest"), str(out2), spark=spark, progress=False)
    kept2 = _table(out2, "shards")
    assert any(t.startswith("variant of") for t in kept2.column("title").to_pylist())  # longer: blank lines
    assert _table(out2, "ledger").num_rows == ledger.num_rows


def test_shards_are_sorted_and_deterministic(dedup_run, spark):
    base, out, _, _ = dedup_run
    manifest = json.loads((out / "manifest.json").read_text())
    for e in manifest["shards"]:
        ids = read_arrow(str(out / e["path"])).column("id")
        assert pc.all(pc.equal(ids, pc.sort_indices(ids).to_pylist() and ids.take(pc.sort_indices(ids)))).as_py()
    out3 = base / "out-again"
    runner.run(pipeline(base / "in", out3), str(out3), spark=spark, progress=False)
    again = json.loads((out3 / "manifest.json").read_text())
    assert [s["sha256"] for s in again["shards"]] == [s["sha256"] for s in manifest["shards"]]
    assert [s["sha256"] for s in again["ledger"]] == [s["sha256"] for s in manifest["ledger"]]


def test_minhash_scope_source_keeps_sources_apart_and_highest_quality_survives(spark, tmp_path):
    """The same five books in two sources: global scope merges across them (keeping the copy with the
    higher quality_score), source scope leaves both sources whole."""
    books = sorted((CORPUS / "books").glob("*.txt"))[:5]
    for name, score in (("a", 0.2), ("b", 0.9)):
        (tmp_path / name).mkdir()
        with open(tmp_path / name / "books.jsonl", "w") as fh:
            for p in books:
                text = p.read_text(encoding="utf-8", errors="replace")
                fh.write(json.dumps({"text": text, "quality_score": score, "title": p.name}) + "\n")

    def run(scope):
        out = tmp_path / f"out-{scope}"
        spec = specmod.load_text(textwrap.dedent(f"""\
            name: scopes
            sources:
              a: {{read: {{jsonl: {{paths: "{tmp_path}/a/*.jsonl"}}}}}}
              b: {{read: {{jsonl: {{paths: "{tmp_path}/b/*.jsonl"}}}}}}
            steps:
              - minhash_dedup: {{scope: {scope}, keep: highest_quality}}
            output: {{path: {out}}}
        """), "scopes.yaml")
        stats = runner.run(spec, str(out), spark=spark, progress=False)
        return stats, _table(out, "shards"), _table(out, "ledger")

    stats, kept, ledger = run("global")
    assert kept.num_rows == 5 and set(kept.column("source").to_pylist()) == {"b"}
    assert set(ledger.column("reason").to_pylist()) == {"near_duplicate"} and ledger.num_rows == 5
    assert stats["global_steps"][0]["drops"] == {"a": {"near_duplicate": 5}}
    stats, kept, ledger = run("source")
    assert kept.num_rows == 10 and ledger.num_rows == 0
