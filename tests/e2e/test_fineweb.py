"""``pipelines/examples/fineweb.yaml`` beside datatrove's own FineWeb pipeline on the same WARC files."""

from __future__ import annotations

import json

import pyarrow.compute as pc
import pytest

from operators.writers import read_arrow
from tests.conftest import WEB
from tests.e2e.helpers import run_pipeline

pytestmark = pytest.mark.filterwarnings("ignore:The 'registered_domain' property is deprecated")


#: two of the four eval WARC files (time budget: datatrove's pipeline beside ours takes ~35 s a file)
FILES = "eval-pages-0000[02].warc.gz"


def test_fineweb_recipe_keeps_the_same_urls_as_datatrove(tmp_path):
    from tests.reference import fineweb_kept_urls

    out = tmp_path / "out"
    stats = run_pipeline("pipelines/examples/fineweb.yaml", out,
                         "--set", f"sources.web.read.warc.paths={WEB}/{FILES}")
    ours: set[str] = set()
    for shard in json.loads((out / "manifest.json").read_text())["shards"]:
        ours |= set(read_arrow(str(out / shard["path"])).column("url").to_pylist())
    theirs = fineweb_kept_urls(str(WEB), FILES, str(tmp_path / "assets"))

    jaccard = len(ours & theirs) / len(ours | theirs)
    assert len(theirs) > 30
    assert jaccard >= 0.95, (jaccard, sorted(ours - theirs)[:5], sorted(theirs - ours)[:5])

    # every step ran and reported, drops per rule per source, pii counts in stats
    steps = {s["step"]: s for s in stats["sources"]["web"]["steps"]}
    assert list(steps) == ["url_filter", "extract", "langid", "gopher_repetition", "gopher_quality",
                           "c4_quality", "fineweb_quality", "pii"]
    assert steps["langid"]["drops"].get("wrong_language", 0) > 0
    assert sum(steps["gopher_quality"]["drops"].values()) > 0
    assert set(steps["pii"]["counters"]) >= {"emails", "ips"}
    # the ledger names step and rule for every dropped document
    ledger = [read_arrow(str(out / part["path"])) for part in
              json.loads((out / "manifest.json").read_text())["ledger"]]
    rows = sum(t.num_rows for t in ledger)
    assert rows == stats["rows_dropped"]
    for t in ledger:
        assert pc.all(pc.is_valid(t.column("step"))).as_py() and pc.all(pc.is_valid(t.column("reason"))).as_py()
    by_rule = {(s["step"], r): n for s in stats["sources"]["web"]["steps"] for r, n in s["drops"].items()}
    assert sum(by_rule.values()) == rows
