"""``pipelines/examples/mix.yaml``: web, code and books through their recipes, dedup, quality scores."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from operators.writers import read_arrow

pytestmark = pytest.mark.filterwarnings("ignore:The 'registered_domain' property is deprecated")

#: text of Project Gutenberg's header, footer and licence that must not survive in a book shard
GUTENBERG_MARKERS = ("*** START OF", "*** END OF", "START OF THE PROJECT GUTENBERG",
                     "END OF THE PROJECT GUTENBERG", "END OF THIS PROJECT GUTENBERG", "Project Gutenberg-tm",
                     "PROJECT GUTENBERG LICENSE", "Project Gutenberg License", "www.gutenberg.org",
                     "gutenberg.net", "Gutenberg Literary Archive Foundation", "SMALL PRINT!")


def _tables(out, key: str) -> dict[str, list]:
    manifest = json.loads((out / "manifest.json").read_text())
    by_source: dict[str, list] = {}
    for part in manifest[key]:
        table = read_arrow(str(out / part["path"]))
        by_source.setdefault(part["source"], []).append(table)
    return by_source


def test_every_source_has_shards_and_rows_read_equal_kept_plus_ledger(mix_run):
    out, stats = mix_run
    shards, ledger = _tables(out, "shards"), _tables(out, "ledger")
    assert set(shards) == {"web", "code", "books"}
    for source, s in stats["sources"].items():
        kept = sum(t.num_rows for t in shards[source])
        dropped = sum(t.num_rows for t in ledger.get(source, []))
        assert kept > 0, source
        assert s["rows_read"] == kept + dropped == s["rows_kept"] + s["rows_dropped"], source
    # each source went through its own recipe; the reader's skips and both dedups are in the ledger
    reasons = {(src, r) for src, tables in ledger.items() for t in tables
               for r in t.column("reason").unique().to_pylist()}
    assert ("code", "generated") in reasons  # source_tree: CPython's generated token.py
    assert ("code", "near_duplicate") in reasons  # one module across six CPython versions
    assert ("books", "exact_duplicate") in reasons  # the works filed under two authors' names
    assert ("web", "wrong_language") in reasons


def test_every_kept_document_has_a_quality_score(mix_run):
    out, _ = mix_run
    for source, tables in _tables(out, "shards").items():
        for t in (t for t in tables if t.num_rows):
            score = t.column("quality_score")
            assert score.null_count == 0, source
            assert 0.0 <= pc.min(score).as_py() and pc.max(score).as_py() <= 1.0
    books = pc.mean(pa.concat_arrays([t.column("quality_score").combine_chunks()
                                      for t in _tables(out, "shards")["books"]])).as_py()
    assert books > 0.9  # the positives of the classifier score high


def test_no_gutenberg_licence_text_in_any_book_shard(mix_run):
    out, _ = mix_run
    books = _tables(out, "shards")["books"]
    texts = [x for t in books for x in t.column("text").to_pylist()]
    assert len(texts) > 100
    found = {m: sum(m.lower() in x.lower() for x in texts) for m in GUTENBERG_MARKERS}
    assert not any(found.values()), {m: n for m, n in found.items() if n}
