"""Bad input is normal input: one run over every damaged WARC/ARC file completes and reports each."""

from __future__ import annotations

import json
import shutil

from operators.writers import read_arrow
from tests.conftest import WEB
from tests.e2e.helpers import run_pipeline


def test_one_run_over_all_damaged_files(tmp_path):
    data = tmp_path / "in"
    data.mkdir()
    for f in sorted((WEB / "broken").iterdir()):
        shutil.copy(f, data / f.name)
    shutil.copy(WEB / "cc-2020-08-sample.warc.gz", data / "cc-2020-08-sample.warc.gz")
    # a real page file cut in the middle of a record, and an empty file
    raw = (WEB / "eval-pages-00002.warc.gz").read_bytes()
    (data / "cut.warc.gz").write_bytes(raw[: len(raw) // 2])
    (data / "empty.warc.gz").write_bytes(b"")
    (data / "plain-text.warc").write_text("this is not a WARC file\n" * 10)
    out = tmp_path / "out"
    stats = run_pipeline("pipelines/examples/extract.yaml", out,
                         "--set", f"sources.web.read.warc.paths=[{data}/*.warc*, {data}/*.arc]")
    web = stats["sources"]["web"]
    assert web["input_files"] == 10
    damaged = {e["file"].rsplit("/", 1)[-1] for e in web["errors"]}
    assert damaged == {"bad.arc", "clipped.warc.gz", "example-bad-non-chunked.warc.gz", "example-trunc.warc",
                       "example-wget-bad-target-uri.warc.gz", "example-wrong-chunks.warc.gz", "cut.warc.gz",
                       "empty.warc.gz", "plain-text.warc"}
    for e in web["errors"]:
        assert e["error"] and "\n" not in e["error"]
        assert e["offset"] is not None or e["file"].endswith(("empty.warc.gz", "plain-text.warc"))
    cut = next(e for e in web["errors"] if e["file"].endswith("cut.warc.gz"))
    assert 0 < cut["offset"] < len(raw) // 2
    # records before the damage are kept: the cut file keeps about half its 173 pages
    manifest = {s["input"]: s for s in json.loads((out / "manifest.json").read_text())["shards"]}
    ledger = {p.name: read_arrow(str(p)).num_rows for p in (out / "ledger" / "web").glob("*.arrow")}
    cut_part = manifest["cut.warc.gz"]
    assert 80 <= cut_part["rows"] + ledger[f"part-{cut_part['part']:05d}.arrow"] <= 90
    assert manifest["cc-2020-08-sample.warc.gz"]["rows"] >= 10
    assert stats["rows_read"] == stats["rows_kept"] + stats["rows_dropped"]
